"""Artifact manifests: a JSON file beside every artifact (``<artifact>.json``).

A manifest says what an artifact is and where it came from: kind, file hash, model
config, source hash, precision, calibration, tool versions and, for engines, the GPU
and TensorRT it was built for. Loading code checks it and says why an artifact does
not fit. The suffix is appended (``model.onnx.json``) rather than replaced so that
``model.pt`` and ``model.onnx`` in one folder never share a manifest.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from swinedge.errors import SwinedgeError
from swinedge.io import atomic_paths, sha256_file, write_json_atomic

MANIFEST_FORMAT = 1
_TRACKED_PACKAGES = ("swinedge", "torch", "onnx", "onnxruntime", "nvidia-modelopt", "triton", "tensorrt", "timm")


def manifest_path(artifact: str | Path) -> Path:
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".json")


def tool_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for pkg in _TRACKED_PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return versions


def build_manifest(kind: str, artifact: str | Path, *, sha256: str | None = None, **fields: Any) -> dict[str, Any]:
    artifact = Path(artifact)
    return {
        "format": MANIFEST_FORMAT,
        "kind": kind,
        "file": artifact.name,
        "sha256": sha256 or sha256_file(artifact),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": tool_versions(),
        **fields,
    }


def write_manifest(kind: str, artifact: str | Path, **fields: Any) -> dict[str, Any]:
    """Hash ``artifact`` and write its manifest atomically; returns the manifest."""
    manifest = build_manifest(kind, artifact, **fields)
    write_json_atomic(manifest_path(artifact), manifest)
    return manifest


def write_artifact_with_manifest(kind: str, artifact: str | Path, data: bytes, **fields: Any) -> dict[str, Any]:
    """Write ``data`` to ``artifact`` and its manifest as one unit: both or neither.

    The manifest is renamed into place first: an interruption between the two renames
    leaves a manifest whose hash names no file, never an artifact nobody describes."""
    manifest = build_manifest(kind, artifact, sha256=hashlib.sha256(data).hexdigest(), **fields)
    with atomic_paths(manifest_path(artifact), artifact) as (tmp_manifest, tmp_artifact):
        tmp_artifact.write_bytes(data)
        tmp_manifest.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_manifest(artifact: str | Path, *, required: bool = False) -> dict[str, Any] | None:
    path = manifest_path(artifact)
    if not path.exists():
        if required:
            raise SwinedgeError(f"no manifest beside {artifact} (expected {path.name}): rebuild the artifact with swinedge")
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SwinedgeError(f"manifest {path} is not valid JSON ({e}): delete it and rebuild the artifact") from None
    if not isinstance(data, dict) or "kind" not in data:
        raise SwinedgeError(f"manifest {path} is not a swinedge manifest: delete it and rebuild the artifact")
    return data

"""Artifact manifests: a JSON file beside every artifact (``<artifact>.json``).

A manifest says what an artifact is and where it came from: kind, file hash, model
config, source hash, precision, calibration, tool versions and, for engines, the GPU
and TensorRT it was built for. Loading code checks it and says why an artifact does
not fit. The suffix is appended (``model.onnx.json``) rather than replaced so that
``model.pt`` and ``model.onnx`` in one folder never share a manifest.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
from dataclasses import dataclass
import platform
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from swinedge.errors import SwinedgeError
from swinedge.io import atomic_paths, sha256_file

MANIFEST_FORMAT = 1
# What to run when an artifact no longer matches its manifest.
KIND_NAMES = {"checkpoint": "a checkpoint", "onnx": "an ONNX graph", "tensorrt-engine": "a TensorRT engine"}
REBUILD = {
    "checkpoint": "rebuild it with swinedge build",
    "onnx": "re-create it with swinedge export (or swinedge quantize)",
    "tensorrt-engine": "rebuild it with swinedge build-engine",
}
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


@dataclass
class PendingArtifact:
    """An artifact being written: its temporary path and the manifest fields to record."""

    path: Path
    fields: dict[str, Any]
    manifest: dict[str, Any] | None = None  # set once both files are in place


@contextlib.contextmanager
def artifact_with_manifest(kind: str, artifact: str | Path) -> Iterator[PendingArtifact]:
    """Write an artifact and its manifest as one unit: both or neither.

    The caller writes the artifact to ``pending.path`` and fills ``pending.fields``; on
    success the manifest (with the artifact's hash) and the artifact are renamed into
    place together, with Ctrl-C and SIGTERM held for those two renames."""
    artifact = Path(artifact)
    with atomic_paths(manifest_path(artifact), artifact) as (tmp_manifest, tmp_artifact):
        pending = PendingArtifact(tmp_artifact, {})
        yield pending
        manifest = build_manifest(kind, artifact, sha256=sha256_file(tmp_artifact), **pending.fields)
        tmp_manifest.write_text(json.dumps(manifest, indent=2) + "\n")
    pending.manifest = manifest


def write_artifact_with_manifest(kind: str, artifact: str | Path, data: bytes, **fields: Any) -> dict[str, Any]:
    """Write ``data`` to ``artifact`` and its manifest as one unit (see :func:`artifact_with_manifest`)."""
    with artifact_with_manifest(kind, artifact) as pending:
        pending.path.write_bytes(data)
        pending.fields.update(fields)
    return pending.manifest


def read_manifest(artifact: str | Path, *, required: bool = False, kind: str | None = None) -> dict[str, Any] | None:
    """The manifest beside ``artifact`` (None when there is none, unless ``required``),
    checked: valid JSON of a swinedge manifest, of ``kind`` when given, and describing
    these very bytes (its hash)."""
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
    if kind is not None and data["kind"] != kind:
        raise SwinedgeError(
            f"manifest {path} describes {KIND_NAMES.get(data['kind'], repr(data['kind']))}, but {Path(artifact).name} is read as "
            f"{KIND_NAMES.get(kind, kind)}: it belongs to another file; delete it or put the right one beside the artifact"
        )
    if data.get("sha256") and Path(artifact).is_file() and sha256_file(artifact) != data["sha256"]:
        redo = REBUILD.get(data["kind"], "rebuild it with swinedge")
        raise SwinedgeError(f"{artifact} does not match its manifest {path.name} (changed or half-copied since swinedge wrote it): {redo}")
    return data

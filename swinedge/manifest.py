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
    if not isinstance(data["kind"], str):
        redo = REBUILD.get(kind, "rebuild the artifact with swinedge") if kind else "rebuild the artifact with swinedge"
        raise SwinedgeError(f"manifest {path}: 'kind' must be a string, got {_shown(data['kind'])}: {redo}")
    if kind is not None and data["kind"] != kind:
        raise SwinedgeError(
            f"manifest {path} describes {KIND_NAMES.get(data['kind'], repr(data['kind']))}, but {Path(artifact).name} is read as "
            f"{KIND_NAMES.get(kind, kind)}: it belongs to another file; delete it or put the right one beside the artifact"
        )
    check_manifest(data, path)
    if data.get("sha256") and Path(artifact).is_file() and sha256_file(artifact) != data["sha256"]:
        redo = REBUILD.get(data["kind"], "rebuild it with swinedge")
        raise SwinedgeError(f"{artifact} does not match its manifest {path.name} (changed or half-copied since swinedge wrote it): {redo}")
    return data


# -- the schema every manifest read goes through -----------------------------------------------------
# Names of the resampling filters (swinedge.data.INTERPOLATIONS, which imports numpy).
INTERPOLATIONS = ("bicubic", "bilinear", "nearest")
PREPROCESS_MODES = ("center-crop", "fit-pad")
MAX_IMAGE_SIDE = 16384  # a resize or crop beyond this is a typo (and an allocation nobody wants)


class _Bad(Exception):
    """One field of a manifest that does not fit the schema: (field, what it must be, value)."""


def _shown(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, (set, tuple)) else repr(value)
    kind = {list: "a list", dict: "a mapping", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value))
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{kind} {text}" if kind in ("a list", "a mapping") else text


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    import math

    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _need(ok: bool, field: str, must: str, value: Any) -> None:
    if not ok:
        raise _Bad(field, must, value)


def _mapping(data: dict, field: str, *, nullable: bool = True) -> dict | None:
    value = data.get(field.rsplit(".", 1)[-1])
    if value is None and nullable:
        return None
    _need(isinstance(value, dict), field, "must be a mapping", value)
    return value


def _check_str(d: dict, key: str, field: str, *, nullable: bool = False) -> None:
    if key in d and not (d[key] is None and nullable):
        _need(isinstance(d[key], str), field, "must be a string", d[key])


def _check_pos_int(d: dict, key: str, field: str, *, top: int | None = None) -> None:
    if key in d and d[key] is not None:
        v = d[key]
        must = f"must be a whole number 1..{top}" if top else "must be a positive whole number"
        _need(_is_int(v) and v > 0 and (top is None or v <= top), field, must, v)


def _check_shape(shape: Any, field: str) -> None:
    """A tensor shape: a list of positive ints, with named (str) or unknown (null) dims."""
    ok = isinstance(shape, list) and all(d is None or isinstance(d, str) or (_is_int(d) and d > 0) for d in shape)
    _need(ok, field, "must be a list of positive whole numbers (or dim names)", shape)


def _check_preprocess(pre: dict, channels: Any) -> None:
    _check_str(pre, "mode", "preprocess.mode")
    if "mode" in pre:
        _need(pre["mode"] in PREPROCESS_MODES, "preprocess.mode", f"must be one of {', '.join(PREPROCESS_MODES)}", pre["mode"])
    for key in ("resize", "crop"):
        _check_pos_int(pre, key, f"preprocess.{key}", top=MAX_IMAGE_SIDE)
    if "size" in pre and pre["size"] is not None:
        size = pre["size"]
        ok = isinstance(size, list) and len(size) == 2 and all(_is_int(v) and 0 < v <= MAX_IMAGE_SIDE for v in size)
        _need(ok, "preprocess.size", f"must be [height, width], whole numbers 1..{MAX_IMAGE_SIDE}", size)
    if "interpolation" in pre:
        v = pre["interpolation"]
        _need(isinstance(v, str) and v in INTERPOLATIONS, "preprocess.interpolation", f"must be one of {', '.join(INTERPOLATIONS)}", v)
    counts = sorted({1, 3, *([channels] if _is_int(channels) and channels > 0 else [])})
    many = " or ".join(str(c) for c in counts)
    for key in ("mean", "std"):
        if key not in pre:
            continue
        v = pre[key]
        positive = key == "std"
        ok = isinstance(v, list) and len(v) in counts and all(_is_number(x) and (x > 0 or not positive) for x in v)
        _need(ok, f"preprocess.{key}", f"must be a list of {many} finite numbers" + (" > 0" if positive else ""), v)


def _check_fields(data: dict) -> None:
    for key in ("file", "sha256", "created", "precision", "attention", "task", "input_size"):
        _check_str(data, key, key, nullable=key in ("precision", "task"))
    _check_str(data, "model", "model", nullable=True)
    _check_pos_int(data, "format", "format")
    _check_pos_int(data, "opset", "opset")
    _check_pos_int(data, "params", "params")
    if data.get("batch") is not None:
        v = data["batch"]
        _need(v == "dynamic" or (_is_int(v) and v > 0), "batch", "must be 'dynamic' or a positive whole number", v)
    for key in ("versions", "source", "parity", "quantization", "plugin", "tensorrt", "onnx", "build"):
        _mapping(data, key)
    config = _mapping(data, "config")
    channels = None
    if config is not None:
        for key in ("num_classes", "img_size", "in_chans", "embed_dim", "patch_size", "window_size"):
            _check_pos_int(config, key, f"config.{key}")
        _check_str(config, "family", "config.family")
        channels = config.get("in_chans")
    inp = _mapping(data, "input")
    if inp is not None:
        _check_str(inp, "name", "input.name")
        if "shape" in inp:
            _check_shape(inp["shape"], "input.shape")
            if isinstance(inp["shape"], list) and len(inp["shape"]) > 1 and _is_int(inp["shape"][1]):
                channels = inp["shape"][1]
    output = _mapping(data, "output")
    if output is not None:
        _check_str(output, "name", "output.name")
        _check_pos_int(output, "classes", "output.classes")
    if data.get("outputs") is not None:
        outs = data["outputs"]
        _need(isinstance(outs, list), "outputs", "must be a list of {name, shape}", outs)
        for i, o in enumerate(outs):
            _need(isinstance(o, dict), f"outputs[{i}]", "must be a mapping {name, shape}", o)
            _check_str(o, "name", f"outputs[{i}].name")
            if "shape" in o:
                _check_shape(o["shape"], f"outputs[{i}].shape")
    if data.get("input_sizes") is not None:
        v = data["input_sizes"]
        _need(isinstance(v, list) and all(isinstance(t, str) for t in v), "input_sizes", "must be a list of HEIGHTxWIDTH strings", v)
    pre = _mapping(data, "preprocess")
    if pre is not None:
        _check_preprocess(pre, channels)
    profiles = ([data["profile"]] if data.get("profile") is not None else []) + list(
        data["profiles"] if isinstance(data.get("profiles"), list) else ([] if data.get("profiles") is None else [data["profiles"]])
    )
    for i, prof in enumerate(profiles):
        field = "profile" if i == 0 and data.get("profile") is not None else "profiles"
        _need(isinstance(prof, dict), field, "must be a mapping of min, opt, max shapes", prof)
        for key in ("min", "opt", "max"):
            if key in prof:
                v = prof[key]
                _need(isinstance(v, list) and all(_is_int(d) and d > 0 for d in v), f"{field}.{key}", "must be a list of positive whole numbers", v)


def check_manifest(data: dict[str, Any], path: str | Path) -> None:
    """The one schema of swinedge's manifests: the fields the code reads, where present,
    have the types and ranges it relies on (std > 0, sizes positive, a known filter...).
    A field that does not fit is a one-line error naming the file, the field and the
    command that rebuilds the artifact."""
    try:
        _check_fields(data)
    except _Bad as e:
        field, must, value = e.args
        redo = REBUILD.get(data.get("kind"), "rebuild the artifact with swinedge")
        raise SwinedgeError(f"manifest {path}: '{field}' {must}, got {_shown(value)}: {redo}") from None

"""Fault cases of issue #24 item 1 (and item 8's graph without a manifest): every artifact
is checked where it is read.

* weights holding NaN or Inf are refused where a checkpoint is read (``build --weights``,
  ``export`` of a checkpoint), naming the first such tensor;
* an export whose parity with torch is not finite is a failure, with no graph left;
* every manifest read goes through one schema (types and ranges of the fields the code
  reads), and the names it gives must be the graph's: a one-line error naming the file,
  the field and the command that rebuilds the artifact;
* a graph without a manifest is calibrated only when its preprocessing is given.

Run like ``tests/test_fuzz_cli.py`` (its sandbox and assertions): exit code 2, exactly one
``error:`` line naming the problem, inputs byte-identical, nothing new in the work folder
or TMPDIR. Inputs are the tiny ``swin_micro_patch4_window4_64``, made once per module.
"""

from __future__ import annotations

import gc
import json
import shlex
import tempfile
from pathlib import Path
from typing import Callable

import pytest

from test_fuzz_cli import MICRO, Case, Sandbox, _write_small_files, case, run_case, runner
from swinedge.cli import app

NAN_KEY = "layers.1.blocks.0.mlp.fc1.weight"
INF_KEY = "layers.2.blocks.1.attn.qkv.bias"


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """m.onnx and m.pt (with manifests), weights with NaN / Inf, the small inputs."""
    import torch

    from swinedge.models import create_model

    d = tmp_path_factory.mktemp("faults-made")
    scratch = tmp_path_factory.mktemp("faults-made-tmp")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tempfile, "tempdir", str(scratch))
        mp.setenv("TMPDIR", str(scratch))
        for args in (["export", MICRO, "--out", d / "m.onnx"], ["build", MICRO, "--out", d / "m.pt"]):
            r = runner.invoke(app, [str(a) for a in args])
            assert r.exit_code == 0, r.output
        gc.collect()
    torch.manual_seed(0)
    state = create_model(MICRO).state_dict()
    nan = {k: v.clone() for k, v in state.items()}
    nan[NAN_KEY].view(-1)[7] = float("nan")
    torch.save(nan, d / "nan.pth")
    inf = {k: v.clone() for k, v in state.items()}
    inf[INF_KEY].view(-1)[3] = float("-inf")
    torch.save({"model": inf}, d / "inf.pth")
    meta = torch.load(d / "m.pt", weights_only=True)["swinedge"]
    torch.save({"swinedge": meta, "state_dict": nan}, d / "nanself.pt")  # self-describing, no manifest
    # finite weights whose logits overflow float32: torch and onnxruntime both give inf
    big = {k: v.clone() for k, v in state.items()}
    big["head.fc.weight"].fill_(3e38)
    big["head.fc.bias"].fill_(3e38)
    torch.save({"swinedge": meta, "state_dict": big}, d / "overflow.pt")
    small = d / "small"
    small.mkdir()
    _write_small_files(small)
    return d


# -- setups ---------------------------------------------------------------------------------------------
def copy_made(*names: str) -> Callable[[Sandbox], None]:
    def setup(box: Sandbox) -> None:
        for name in names:
            (box.work / name).write_bytes((box.made / name).read_bytes())

    return setup


def edit_manifest(artifact: str, edit: Callable[[dict], None]) -> Callable[[Sandbox], None]:
    """``artifact`` (m.onnx or m.pt) with its manifest changed in place by ``edit``."""

    def setup(box: Sandbox) -> None:
        box.need(artifact)
        target = box.work / f"{artifact}.json"
        manifest = json.loads(target.read_text())
        edit(manifest)
        target.write_text(json.dumps(manifest, indent=2))

    return setup


def put(*keys_value) -> Callable[[dict], None]:
    *keys, value = keys_value

    def edit(m: dict) -> None:
        for k in keys[:-1]:
            m = m[k]
        m[keys[-1]] = value

    return edit


def onnx_edit(*keys_value) -> Callable[[Sandbox], None]:
    return edit_manifest("m.onnx", put(*keys_value))


def no_manifest(box: Sandbox) -> None:
    box.need("m.onnx")
    (box.work / "m.onnx.json").unlink()


Q = "quantize m.onnx --out q.onnx --calib imgs --calib-size 3"
V = f"verify {MICRO} m.onnx --size 2"
S = "serve-repo m.onnx --out repo"
RE_EXPORT = "swinedge export"

CASES = [
    # 1. weights that are not finite are refused where the checkpoint is read
    case("build-weights-nan", f"build {MICRO} --weights nan.pth --out x.pt", f"'{NAN_KEY}' holds NaN", setup=copy_made("nan.pth")),
    case("build-weights-inf", f"build {MICRO} --weights inf.pth --out x.pt", f"'{INF_KEY}' holds Inf", setup=copy_made("inf.pth")),
    case("build-features-weights-nan", f"build {MICRO} --features --input-size 64x64 --weights nan.pth --out x.pt", f"'{NAN_KEY}' holds NaN",
         setup=copy_made("nan.pth")),
    case("export-checkpoint-nan", "export nanself.pt --out x.onnx", f"'{NAN_KEY}' holds NaN", setup=copy_made("nanself.pt")),
    # ... and an export whose parity is not finite fails, with no graph left
    case("export-parity-not-finite", "export overflow.pt --out x.onnx", "not finite", absent="wrote", setup=copy_made("overflow.pt")),
    # 2. manifests of the wrong types or out of range, one schema for every read
    case("quantize-manifest-kind-a-list", Q, "m.onnx.json: 'kind' must be a string", setup=onnx_edit("kind", ["onnx"])),
    case("verify-manifest-kind-a-list", V, "m.onnx.json: 'kind' must be a string", setup=onnx_edit("kind", ["onnx"])),
    case("export-checkpoint-manifest-kind-a-dict", "export m.pt --out x.onnx", "m.pt.json: 'kind' must be a string",
         setup=edit_manifest("m.pt", put("kind", {"name": "checkpoint"}))),
    case("export-checkpoint-manifest-config-a-string", "export m.pt --out x.onnx", "m.pt.json: 'config' must be a mapping",
         setup=edit_manifest("m.pt", put("config", "swin"))),
    case("quantize-manifest-config-a-string", Q, "m.onnx.json: 'config' must be a mapping", setup=onnx_edit("config", "swin")),
    case("verify-manifest-config-a-string", V, "m.onnx.json: 'config' must be a mapping", setup=onnx_edit("config", "swin")),
    case("quantize-manifest-precision-a-number", Q, "'precision' must be a string", setup=onnx_edit("precision", 32)),
    case("quantize-manifest-mean-a-string", Q, "'preprocess.mean' must be", setup=onnx_edit("preprocess", "mean", "0.485,0.456,0.406")),
    case("verify-manifest-mean-a-string", V, "'preprocess.mean' must be", setup=onnx_edit("preprocess", "mean", "0.485")),
    case("quantize-manifest-mean-two-values", Q, "'preprocess.mean' must be", setup=onnx_edit("preprocess", "mean", [0.5, 0.5])),
    case("quantize-manifest-mean-nan", Q, "'preprocess.mean' must be", setup=onnx_edit("preprocess", "mean", [0.5, "NaN", 0.5])),
    case("quantize-manifest-std-zero", Q, "'preprocess.std' must be", setup=onnx_edit("preprocess", "std", [0, 0.224, 0.225])),
    case("verify-manifest-std-zero", V, "'preprocess.std' must be", setup=onnx_edit("preprocess", "std", [0, 0.224, 0.225])),
    case("serve-repo-manifest-std-zero", S, "'preprocess.std' must be", setup=onnx_edit("preprocess", "std", [0, 0.224, 0.225])),
    case("quantize-manifest-std-negative", Q, "'preprocess.std' must be", setup=onnx_edit("preprocess", "std", [-0.2, 0.224, 0.225])),
    case("quantize-manifest-resize-a-string", Q, "'preprocess.resize' must be", setup=onnx_edit("preprocess", "resize", "224")),
    case("verify-manifest-resize-a-string", V, "'preprocess.resize' must be", setup=onnx_edit("preprocess", "resize", "224")),
    case("quantize-manifest-resize-zero", Q, "'preprocess.resize' must be", setup=onnx_edit("preprocess", "resize", 0)),
    case("quantize-manifest-resize-float", Q, "'preprocess.resize' must be", setup=onnx_edit("preprocess", "resize", 73.5)),
    case("quantize-manifest-resize-a-bool", Q, "'preprocess.resize' must be", setup=onnx_edit("preprocess", "resize", True)),
    case("quantize-manifest-crop-negative", Q, "'preprocess.crop' must be", setup=onnx_edit("preprocess", "crop", -64)),
    case("quantize-manifest-interpolation-unknown", Q, "'preprocess.interpolation' must be one of bicubic, bilinear, nearest",
         setup=onnx_edit("preprocess", "interpolation", "lanczos")),
    case("verify-manifest-interpolation-unknown", V, "'preprocess.interpolation' must be one of",
         setup=onnx_edit("preprocess", "interpolation", "lanczos")),
    case("quantize-manifest-input-name-a-number", Q, "'input.name' must be a string", setup=onnx_edit("input", "name", 0)),
    case("quantize-manifest-input-shape-a-string", Q, "'input.shape' must be", setup=onnx_edit("input", "shape", "1,3,64,64")),
    case("quantize-manifest-input-shape-floats", Q, "'input.shape' must be", setup=onnx_edit("input", "shape", ["batch", 3.0, 64, 64])),
    case("quantize-manifest-num-classes-a-string", Q, "'config.num_classes' must be", setup=onnx_edit("config", "num_classes", "1000")),
    case("serve-repo-manifest-num-classes-a-string", S, "'config.num_classes' must be", setup=onnx_edit("config", "num_classes", "1000")),
    case("serve-repo-manifest-classes-a-string", S, "'output.classes' must be", setup=onnx_edit("output", "classes", "1000")),
    case("serve-repo-manifest-task-a-list", S, "'task' must be a string", setup=onnx_edit("task", ["backbone"])),
    case("serve-repo-manifest-outputs-a-string", S, "'outputs' must be a list", setup=onnx_edit("outputs", "stage0")),
    # ... and the names it gives must be the graph's
    case("quantize-manifest-input-name-not-the-graphs", Q, "m.onnx.json gives input 'image', but the graph's input is 'input'",
         setup=onnx_edit("input", "name", "image")),
    case("verify-manifest-input-name-not-the-graphs", V, "the graph's input is 'input'", setup=onnx_edit("input", "name", "image")),
    case("serve-repo-manifest-input-name-not-the-graphs", S, "the graph's input is 'input'", setup=onnx_edit("input", "name", "image")),
    case("quantize-manifest-output-name-not-the-graphs", Q, "m.onnx.json gives output 'probs', but the graph's outputs are 'logits'",
         setup=onnx_edit("output", "name", "probs")),
    case("quantize-manifest-input-size-not-the-graphs", Q, "m.onnx.json gives input shape", setup=onnx_edit("input", "shape", ["batch", 3, 96, 96])),
    # 3. a graph without a manifest: its preprocessing is given, or it is refused
    case("quantize-no-manifest", Q, "no manifest", setup=no_manifest),
    case("quantize-no-manifest-mean-only", f"{Q} --mean 0.5 --std 0.5", "--resize", setup=no_manifest),
]


def c_id(c: Case) -> str:
    return next(p.id for p in CASES if p.values[0] is c)


def test_case_ids_are_unique() -> None:
    ids = [p.id for p in CASES]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})


@pytest.mark.parametrize("c", CASES)
def test_bad_artifact_is_a_one_line_error_that_touches_nothing(c: Case, made: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def names_a_rebuild(result) -> list[str]:
        if "manifest" in c_id(c) and RE_EXPORT not in result.stderr and "swinedge build" not in result.stderr:
            return [f"the error names no command that rebuilds the artifact: {result.stderr.strip()!r}"]
        return []

    run_case(c, made, tmp_path, monkeypatch, names_a_rebuild)


def test_graph_without_manifest_is_calibrated_with_the_preprocessing_given(made: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--mean, --std and --resize make a manifest-less graph quantizable, and the quantized
    graph's manifest records the preprocessing it was calibrated with."""
    box = Sandbox(tmp_path, made, monkeypatch)
    no_manifest(box)
    args = f"{Q} --mean 0.5,0.5,0.5 --std 0.5 --resize 64"
    result = box.invoke(Case(tuple(shlex.split(args)), ""))
    assert result.exit_code == 0, result.output
    manifest = json.loads((box.work / "q.onnx.json").read_text())
    assert manifest["preprocess"]["mean"] == [0.5, 0.5, 0.5]
    assert manifest["preprocess"]["std"] == [0.5, 0.5, 0.5]
    assert manifest["preprocess"]["resize"] == 64

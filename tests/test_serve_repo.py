"""``swinedge serve-repo``: the Triton model repository it writes, checked with Triton's
own ``model_config`` schema (tritonclient's protobuf), without a server.

A plan cannot be made here (no TensorRT), so the plan case writes opaque bytes with an
engine manifest as ``build-engine`` writes it: what is tested is the repository written
from that manifest, not a TensorRT plan. The real server tests are in
``test_triton_server.py``.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli_helpers import one_line_error
from swinedge.cli import app
from swinedge.errors import SwinedgeError
from swinedge.export import export_onnx, preprocess_spec
from swinedge.manifest import write_artifact_with_manifest
from swinedge.serving.repository import RepositoryOptions, check_repository, read_config, write_model_repository

NAME = "swin_micro_patch4_window4_64"
PLAN_BYTES = b"not a real plan: opaque bytes the writer must copy unchanged" * 10


def fake_plan(folder: Path, *, plugin: bool = True, batch="batch", name: str = "swin_t.int8.plan") -> Path:
    """Opaque bytes + the manifest build-engine writes for a dynamic-batch Swin-T classifier."""
    plan = folder / name
    shape = [batch, 3, 224, 224]
    write_artifact_with_manifest(
        "tensorrt-engine", plan, PLAN_BYTES,
        model="swin_tiny_patch4_window7_224", precision="int8", config={"num_classes": 1000, "img_size": 224, "in_chans": 3},
        input={"name": "input", "shape": shape}, output={"name": "logits", "classes": 1000}, preprocess=preprocess_spec(224),
        tensorrt={"version": "10.13.3", "gpu": "NVIDIA H100 80GB HBM3", "compute_capability": 90, "strongly_typed": True},
        profile={"min": [1, 3, 224, 224], "opt": [4, 3, 224, 224], "max": [16, 3, 224, 224]},
        plugin={"used": plugin, "note": "plugin"},
    )  # fmt: skip
    return plan


@pytest.fixture(scope="module")
def micro_onnx(tmp_path_factory) -> Path:
    return export_onnx(NAME, tmp_path_factory.mktemp("serve") / "micro.onnx").onnx_path


def test_plan_repository_follows_the_engine_manifest(tmp_path: Path) -> None:
    plan = fake_plan(tmp_path)
    result = write_model_repository([plan], tmp_path / "repo")
    repo = tmp_path / "repo"
    assert sorted(p.name for p in repo.iterdir() if p.is_dir()) == ["swin_t_int8", "swin_t_int8_image", "swin_t_int8_postprocess", "swin_t_int8_preprocess"]
    cfg = read_config(repo / "swin_t_int8" / "config.pbtxt")
    assert cfg.platform == "tensorrt_plan"
    assert cfg.max_batch_size == 16  # the profile's max
    assert list(cfg.dynamic_batching.preferred_batch_size) == [4, 16]  # profile opt and max
    assert [g.kind for g in cfg.instance_group] == [1]  # KIND_GPU
    assert (cfg.input[0].name, list(cfg.input[0].dims), cfg.input[0].data_type) == ("input", [3, 224, 224], 11)  # TYPE_FP32
    assert (cfg.output[0].name, list(cfg.output[0].dims)) == ("logits", [1000])
    assert (repo / "swin_t_int8" / "1" / "model.plan").read_bytes() == PLAN_BYTES
    readme = (repo / "swin_t_int8" / "README.md").read_text()
    assert "TensorRT 10.13.3" in readme and "NVIDIA H100 80GB HBM3" in readme and "compute capability 90" in readme
    assert "No plugin library is needed" in readme and "AOT PTX" in readme
    ens = read_config(repo / "swin_t_int8_image" / "config.pbtxt")
    assert ens.platform == "ensemble" and ens.max_batch_size == 16
    assert [s.model_name for s in ens.ensemble_scheduling.step] == ["swin_t_int8_preprocess", "swin_t_int8", "swin_t_int8_postprocess"]
    assert [(o.name, list(o.dims)) for o in ens.output] == [("labels", [5]), ("scores", [5]), ("class_ids", [5])]
    post = json.loads((repo / "swin_t_int8_postprocess" / "1" / "postprocess.json").read_text())
    assert post["labels"][0] == "n01440764" and len(post["labels"]) == 1000  # ImageNet-1k synsets for a 1000-class model
    pre = json.loads((repo / "swin_t_int8_preprocess" / "1" / "preprocess.json").read_text())
    # Swin V1 at 224: shorter side to floor(224 / 0.875) = 256, bicubic, center crop 224.
    assert pre["transform"] == {"mode": "center-crop", "img_size": 224, "resize": 256, "interpolation": "bicubic",
                                "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "channels": 3}  # fmt: skip
    assert result["models"][0]["ensemble"]["name"] == "swin_t_int8_image"
    assert json.loads((repo / "repository.json").read_text())["models"][0]["name"] == "swin_t_int8"


def test_native_plan_readme_says_no_plugin_and_static_batch_has_no_batching(tmp_path: Path) -> None:
    plan = fake_plan(tmp_path, plugin=False, batch=1, name="fixed.plan")
    write_model_repository([plan], tmp_path / "repo", RepositoryOptions(ensemble=False))
    cfg = read_config(tmp_path / "repo" / "fixed" / "config.pbtxt")
    assert cfg.max_batch_size == 0 and not cfg.HasField("dynamic_batching")
    assert list(cfg.input[0].dims) == [1, 3, 224, 224] and list(cfg.output[0].dims) == [1, 1000]
    assert "TensorRT's own layers only" in (tmp_path / "repo" / "fixed" / "README.md").read_text()
    with pytest.raises(SwinedgeError, match="dynamic batch"):
        write_model_repository([plan], tmp_path / "repo2")


def test_onnx_repository_for_gpu_cpu_and_the_python_backend(tmp_path: Path, micro_onnx: Path) -> None:
    write_model_repository([micro_onnx], tmp_path / "gpu", RepositoryOptions(ensemble=False, max_batch=32, instances=2))
    cfg = read_config(tmp_path / "gpu" / "micro" / "config.pbtxt")
    assert cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 32
    assert [(g.kind, g.count) for g in cfg.instance_group] == [(1, 2)]  # KIND_GPU x2
    assert list(cfg.input[0].dims) == [3, 64, 64] and list(cfg.output[0].dims) == [1000]
    assert (tmp_path / "gpu" / "micro" / "1" / "model.onnx").read_bytes() == micro_onnx.read_bytes()
    write_model_repository([micro_onnx], tmp_path / "cpu", RepositoryOptions(onnx_device="cpu", labels=tuple(f"c{i}" for i in range(1000))))
    assert [g.kind for g in read_config(tmp_path / "cpu" / "micro" / "config.pbtxt").instance_group] == [2]  # KIND_CPU
    assert json.loads((tmp_path / "cpu" / "micro_postprocess" / "1" / "postprocess.json").read_text())["labels"][:2] == ["c0", "c1"]
    write_model_repository([micro_onnx], tmp_path / "py", RepositoryOptions(onnx_backend="python", onnx_device="cpu"))
    cfg = read_config(tmp_path / "py" / "micro" / "config.pbtxt")
    assert cfg.backend == "python" and not cfg.platform
    record = json.loads((tmp_path / "py" / "micro" / "1" / "onnxruntime.json").read_text())
    assert record == {"input": "input", "outputs": ["logits"], "basic_optimizations": False, "threads": 0}


def test_served_transform_is_swinedges_own(tmp_path: Path, micro_onnx: Path) -> None:
    """The preprocessing model's module, loaded from the written repository, gives the
    bytes verify's Preprocess gives, on a real photograph."""
    from PIL import Image

    from swinedge.data import Preprocess, default_photo_paths

    write_model_repository([micro_onnx], tmp_path / "repo")
    folder = tmp_path / "repo" / "micro_preprocess" / "1"
    spec = importlib.util.spec_from_file_location("served_transforms", folder / "swinedge_transforms.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    transform = module.transform_from_record(json.loads((folder / "preprocess.json").read_text())["transform"])
    with Image.open(default_photo_paths()[0]) as im:
        image = im.copy()
    expected = Preprocess(64)(image)  # crop 0.875: resize 73, bicubic, ImageNet mean/std
    got = transform(image)
    assert got.shape == (3, 64, 64) and np.array_equal(got, expected)


def test_backbone_has_stage_outputs_and_no_ensemble(tmp_path: Path) -> None:
    runner = CliRunner()
    ckpt = tmp_path / "bb.pt"
    assert runner.invoke(app, ["build", "swin_micro_patch4_window4_64", "--features", "--input-size", "150x222", "--out", str(ckpt)]).exit_code == 0
    graph = export_onnx(ckpt, tmp_path / "bb.onnx").onnx_path
    result = write_model_repository([graph], tmp_path / "repo")
    assert "ensemble" not in result["models"][0]
    cfg = read_config(tmp_path / "repo" / "bb" / "config.pbtxt")
    assert [o.name for o in cfg.output] == ["stage0", "stage1", "stage2", "stage3"]
    # micro: patch 4 (padded up), dims 32/64/128/256; 150x222 -> 38x56, 19x28, 10x14, 5x7
    assert [list(o.dims) for o in cfg.output] == [[32, 38, 56], [64, 19, 28], [128, 10, 14], [256, 5, 7]]
    assert list(cfg.input[0].dims) == [3, 150, 222]


def test_schema_and_wiring_errors_are_caught(tmp_path: Path, micro_onnx: Path) -> None:
    write_model_repository([micro_onnx], tmp_path / "repo")
    cfg_path = tmp_path / "repo" / "micro" / "config.pbtxt"
    good = cfg_path.read_text()
    cfg_path.write_text(good + "not_a_triton_field: 3\n")
    with pytest.raises(SwinedgeError, match="not a valid Triton model config"):
        check_repository(tmp_path / "repo")
    cfg_path.write_text(good.replace("KIND_GPU", "KIND_TPU"))
    with pytest.raises(SwinedgeError, match="not a valid Triton model config"):
        check_repository(tmp_path / "repo")
    cfg_path.write_text(good)
    ens_path = tmp_path / "repo" / "micro_image" / "config.pbtxt"
    ens = ens_path.read_text()
    ens_path.write_text(ens.replace('model_name: "micro_postprocess"', 'model_name: "micro_missing"'))
    with pytest.raises(SwinedgeError, match="micro_missing"):
        check_repository(tmp_path / "repo")
    ens_path.write_text(ens.replace('key: "logits"\n      value: "logits"', 'key: "logit"\n      value: "logits"', 1))
    with pytest.raises(SwinedgeError, match="has no output logit"):
        check_repository(tmp_path / "repo")
    ens_path.write_text(ens)
    assert set(check_repository(tmp_path / "repo")) == {"micro", "micro_image", "micro_preprocess", "micro_postprocess"}


def test_failed_write_leaves_no_repository_and_keeps_the_old_one(tmp_path: Path, micro_onnx: Path, monkeypatch) -> None:
    import swinedge.serving.repository as repository

    out = tmp_path / "repo"
    write_model_repository([micro_onnx], out, RepositoryOptions(ensemble=False))
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))

    def broken(folder):
        raise KeyboardInterrupt  # as Ctrl-C during the final check

    monkeypatch.setattr(repository, "check_repository", broken)
    with pytest.raises(KeyboardInterrupt):
        write_model_repository([micro_onnx], out)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before  # the earlier repository, whole
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no partial folder left
    with pytest.raises(KeyboardInterrupt):
        write_model_repository([micro_onnx], tmp_path / "new")
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(
    "args,fragment",
    [
        ([], "Missing argument"),
        (["{onnx}", "--top-k", "0"], "--top-k must be an integer 1..1000"),
        (["{onnx}", "--top-k", "1001"], "--top-k must be an integer 1..1000"),
        (["{onnx}", "--max-image-mb", "nan"], "--max-image-mb must be > 0"),
        (["{onnx}", "--max-image-mb", "0"], "--max-image-mb must be > 0"),
        (["{onnx}", "--instances", "0"], "--instances must be an integer 1..64"),
        (["{onnx}", "--max-batch", "100000"], "--max-batch must be an integer 1..4096"),
        (["{onnx}", "--queue-delay-us", "-1"], "--queue-delay-us must be an integer"),
        (["{onnx}", "--onnx-backend", "tensorflow"], "--onnx-backend must be one of onnxruntime, python"),
        (["{onnx}", "--onnx-backend", "python"], "use --onnx-device cpu"),
        (["{onnx}", "--onnx-device", "tpu"], "--onnx-device must be one of gpu, cpu"),
        (["{onnx}", "--name", "a", "--name", "b"], "--name was given 2 time(s) for 1 artifact(s)"),
        (["{onnx}", "--name", "bad name"], "--name 'bad name'"),
        (["{onnx}", "{onnx}"], "two models would be named 'micro'"),
        (["{onnx}", "--labels", "{labels}"], "--labels lists 3 classes but micro.onnx has 1000"),
        (["{missing}"], "artifact not found"),
        (["{ckpt}"], "Triton serves TensorRT plans (.plan/.engine) and ONNX graphs (.onnx)"),
        (["{plugin}"], "plugin nodes, which only TensorRT runs"),
    ],
)
def test_bad_input_is_one_line_before_any_work(tmp_path: Path, micro_onnx: Path, args, fragment: str) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\nc\n")
    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes(b"x")
    plugin = tmp_path / "plugin.onnx"
    if "{plugin}" in args:
        export_onnx(NAME, plugin, attention="plugin")
    fill = {"{onnx}": str(micro_onnx), "{labels}": str(labels), "{missing}": str(tmp_path / "nope.onnx"), "{ckpt}": str(ckpt), "{plugin}": str(plugin)}
    out = tmp_path / "repo"
    result = CliRunner().invoke(app, ["serve-repo", *[fill.get(a, a) for a in args], "--out", str(out)])
    if fragment == "Missing argument":
        assert result.exit_code != 0 and "Missing argument" in result.output
    else:
        assert fragment in one_line_error(result)
    assert not out.exists()


def test_output_over_an_input_or_into_a_foreign_folder_is_refused(tmp_path: Path, micro_onnx: Path) -> None:
    runner = CliRunner()
    assert "is a file" in one_line_error(runner.invoke(app, ["serve-repo", str(micro_onnx), "--out", str(micro_onnx)]))
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert "other files in it" in one_line_error(runner.invoke(app, ["serve-repo", str(micro_onnx), "--out", str(foreign)]))
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_cli_writes_the_repository_with_a_table_and_json(tmp_path: Path, micro_onnx: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["serve-repo", str(micro_onnx), "--out", str(tmp_path / "repo"), "--name", "swin_micro", "--top-k", "3"])
    assert result.exit_code == 0, result.output
    assert "swin_micro_image" in result.stdout and "tritonserver --model-repository=" in result.stdout
    result = runner.invoke(app, ["serve-repo", str(micro_onnx), "--out", str(tmp_path / "repo"), "--name", "swin_micro", "--json"])
    record = json.loads(result.stdout)
    assert record["models"][0]["ensemble"]["top_k"] == 5 and record["models"][0]["max_batch_size"] == 8
    assert micro_onnx.read_bytes() == (tmp_path / "repo" / "swin_micro" / "1" / "model.onnx").read_bytes()


def test_a_plan_of_several_sizes_serves_every_profile_with_dynamic_height_and_width(tmp_path: Path) -> None:
    """An engine built from an ``export --sizes`` backbone: Triton gets -1 for height and
    width and every optimization profile in the instance group (it picks the request's)."""
    plan = tmp_path / "bb.plan"
    profiles = [{"min": [1, 3, h, w], "opt": [2, 3, h, w], "max": [8, 3, h, w]} for h, w in ((640, 640), (800, 1333))]
    write_artifact_with_manifest(
        "tensorrt-engine", plan, PLAN_BYTES, model="swin_tiny_patch4_window7_224", precision="int8", config={},
        input={"name": "input", "shape": ["batch", 3, 640, 640]}, task="backbone", input_size="640x640",
        input_sizes=["640x640", "800x1333"], outputs=[{"name": "stage0", "shape": ["batch", 96, 160, 160]}],
        tensorrt={"version": "11.4.0", "gpu": "NVIDIA H100 80GB HBM3", "compute_capability": 90, "strongly_typed": True},
        profile=profiles[0], profiles=profiles, plugin={"used": True, "note": "plugin"},
    )  # fmt: skip
    write_model_repository([plan], tmp_path / "repo")
    cfg = read_config(tmp_path / "repo" / "bb" / "config.pbtxt")
    assert list(cfg.input[0].dims) == [3, -1, -1] and list(cfg.output[0].dims) == [96, -1, -1]
    assert [list(g.profile) for g in cfg.instance_group] == [["0", "1"]]
    assert cfg.max_batch_size == 8

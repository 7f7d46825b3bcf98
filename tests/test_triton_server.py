"""A repository written by ``swinedge serve-repo``, served by a real ``tritonserver``.

The server is the one the ``nvidia-pytriton`` wheel bundles (Triton 2.51): real HTTP,
gRPC, dynamic batching, ensembles and the Python backend, on CPU. It has no onnxruntime
or TensorRT backend, so the classifier here is written with ``--onnx-backend python``:
ONNX Runtime inside the Python backend. What this proves: the configs load in Triton, the
ensemble wiring, the preprocessing and top-k models, the request/response formats and
error codes. What it cannot: Triton's onnxruntime and TensorRT backends (GPU machine).

The model is the embedded digits classifier (trained once per session); the images are
held-out handwritten digits as PNG files and scikit-image's photographs, compared image
by image with the ONNX Runtime runner under swinedge's own preprocessing, and as top-1
with ``swinedge verify`` on the same files.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from swinedge.benchmarks.triton_load import bad_requests, post_json
from swinedge.cli import app

pytestmark = [pytest.mark.triton_server, pytest.mark.slow]
DIGITS = 40


@pytest.fixture(scope="module")
def served(digits_cache, tmp_path_factory):
    from swinedge.benchmarks.triton_load import digit_pngs
    from swinedge.data import default_photo_paths
    from swinedge.export import export_onnx
    from swinedge.serving.server import LocalTritonServer

    _, checkpoint, _ = digits_cache
    work = tmp_path_factory.mktemp("served")
    graph = export_onnx(checkpoint, work / "digits.onnx").onnx_path
    result = CliRunner().invoke(
        app,
        ["serve-repo", str(graph), "--out", str(work / "repo"), "--name", "digits", "--onnx-backend", "python", "--onnx-device", "cpu",
         "--top-k", "3", "--max-image-mb", "1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    pngs, labels = digit_pngs(DIGITS, seed=3)
    digits_dir = work / "digits"
    for i, (png, label) in enumerate(zip(pngs, labels)):
        (digits_dir / str(int(label))).mkdir(parents=True, exist_ok=True)
        (digits_dir / str(int(label)) / f"{i:03d}.png").write_bytes(png)
    photos_dir = work / "photos"
    photos_dir.mkdir()
    for p in default_photo_paths():
        shutil.copy(p, photos_dir / p.name)
    server = LocalTritonServer(work / "repo").start()
    try:
        yield {"server": server, "checkpoint": checkpoint, "graph": graph, "digits": digits_dir, "photos": photos_dir}
    finally:
        server.stop()
    assert server.process.returncode == 0, "tritonserver did not stop cleanly on SIGINT"


def reference_predictions(graph: Path, files: list[Path]) -> np.ndarray:
    """Logits of the ONNX graph for each file, preprocessed as verify preprocesses."""
    from PIL import Image

    from swinedge.runners.ort_runner import OnnxRuntimeRunner
    from swinedge.verify import preprocess_for

    with OnnxRuntimeRunner(graph) as runner:
        preprocess = preprocess_for(runner)
        batch = []
        for f in files:
            with Image.open(f) as im:
                im.load()
                batch.append(preprocess(im.copy()))
        return runner.infer(np.stack(batch))


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x.astype(np.float64) - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_http_and_grpc_answers_equal_the_runner_image_by_image(served) -> None:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    server = served["server"]
    files = _files(served["digits"]) + _files(served["photos"])
    logits = reference_predictions(served["graph"], files)
    expected_top = np.argsort(-logits, axis=1, kind="stable")[:, :3]
    expected_scores = np.take_along_axis(softmax(logits), expected_top, axis=1)

    http = httpclient.InferenceServerClient(server.http_url)
    got_http = []
    for start in range(0, len(files), 4):  # 4 images a request: the ensemble's batch dimension
        chunk = files[start : start + 4]
        inp = httpclient.InferInput("image", [len(chunk), 1], "BYTES")
        inp.set_data_from_numpy(np.array([f.read_bytes() for f in chunk], dtype=np.object_).reshape(-1, 1))
        res = http.infer("digits_image", [inp])
        got_http.append((res.as_numpy("class_ids"), res.as_numpy("scores"), res.as_numpy("labels")))
    ids = np.concatenate([g[0] for g in got_http])
    scores = np.concatenate([g[1] for g in got_http])
    names = np.concatenate([g[2] for g in got_http])
    assert ids.shape == (len(files), 3)
    assert np.array_equal(ids, expected_top)
    np.testing.assert_allclose(scores, expected_scores, atol=2e-6)
    assert [[n.decode() for n in row] for row in names] == [[str(i) for i in row] for row in expected_top]  # digits: class index

    grpc = grpcclient.InferenceServerClient(server.grpc_url)
    for f, top in zip(files, expected_top):
        inp = grpcclient.InferInput("image", [1, 1], "BYTES")
        inp.set_data_from_numpy(np.array([[f.read_bytes()]], dtype=np.object_))
        assert np.array_equal(grpc.infer("digits_image", [inp]).as_numpy("class_ids")[0], top)
    grpc.close()


def test_served_top1_equals_swinedge_verify_on_the_same_files(served) -> None:
    import tritonclient.http as httpclient

    result = CliRunner().invoke(app, ["verify", str(served["checkpoint"]), str(served["graph"]), "--data", str(served["digits"]), "--json"])
    report = json.loads(result.stdout)
    assert report["images"] == DIGITS
    http = httpclient.InferenceServerClient(served["server"].http_url)
    correct = 0
    for f in _files(served["digits"]):
        inp = httpclient.InferInput("image", [1, 1], "BYTES")
        inp.set_data_from_numpy(np.array([[f.read_bytes()]], dtype=np.object_))
        correct += int(http.infer("digits_image", [inp]).as_numpy("class_ids")[0, 0] == int(f.parent.name))
    assert 100.0 * correct / DIGITS == report["top1_candidate"]
    assert report["top1_candidate"] > 50.0  # the model reads these PNGs (chance is 10%)


@pytest.mark.parametrize("index", range(len(bad_requests(1 << 20))), ids=[c[0].replace(" ", "-") for c in bad_requests(1 << 20)])
def test_malformed_requests_are_refused_and_the_server_keeps_serving(served, index: int) -> None:
    case, model, body, fragment = bad_requests(1 << 20)[index]  # the repository is written with --max-image-mb 1
    server = served["server"]
    status, text = post_json(server.http_url, model, body)
    assert (status == 500) if case == "body not JSON" else (400 <= status < 500), (status, text)
    assert fragment in text
    good = next(iter(_files(served["digits"])))
    import tritonclient.http as httpclient

    inp = httpclient.InferInput("image", [1, 1], "BYTES")
    inp.set_data_from_numpy(np.array([[good.read_bytes()]], dtype=np.object_))
    assert httpclient.InferenceServerClient(server.http_url).infer("digits_image", [inp]).as_numpy("class_ids").shape == (1, 3)
    assert server.alive()


def test_corrupt_image_over_grpc_is_invalid_argument(served) -> None:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(served["server"].grpc_url)
    inp = grpcclient.InferInput("image", [1, 1], "BYTES")
    inp.set_data_from_numpy(np.array([[b"\x89PNG broken"]], dtype=np.object_))
    with pytest.raises(InferenceServerException) as e:
        client.infer("digits_image", [inp])
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT" and "does not decode" in e.value.message()
    client.close()


def test_bounded_load_at_concurrency_1_4_8_has_no_failures_and_steady_memory(served) -> None:
    from swinedge.benchmarks.triton_load import digit_pngs, load_level

    server = served["server"]
    payloads, _ = digit_pngs(16)
    load_level(server.grpc_url, "digits_image", payloads, 2, 10)  # warm-up
    start_memory = server.memory_bytes()
    for concurrency in (1, 4, 8):
        row = load_level(server.grpc_url, "digits_image", payloads, concurrency, 40, timeout_s=120)
        assert row["failed"] == 0, row["failures"]
        assert row["completed"] == 40
        assert row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"]
    growth = server.memory_bytes() - start_memory
    assert growth < 64 * 2**20, f"server memory grew {growth / 2**20:.0f} MiB over 120 requests"
    assert server.alive()


def test_server_refuses_to_start_without_its_python_environment(tmp_path: Path) -> None:
    from swinedge.errors import MissingDependencyError
    from swinedge.serving.server import LocalTritonServer

    with pytest.raises(MissingDependencyError, match="python_env"):
        LocalTritonServer(tmp_path, python_env=tmp_path / "nowhere").start()
    assert os.listdir(tmp_path) == []


def test_a_backbone_graph_of_several_sizes_is_served_at_each(tmp_path: Path) -> None:
    """``export --sizes`` graph in a repository (dynamic height and width), on the real
    server: stage maps over HTTP equal ONNX Runtime's at both exported sizes and one never
    named."""
    import tritonclient.http as http

    from swinedge.export import export_onnx, run_onnx_cpu
    from swinedge.models.backbone import BackboneConfig, SwinBackbone
    from swinedge.models.swin import MODEL_SPECS
    from swinedge.serving.server import LocalTritonServer

    cfg = BackboneConfig(MODEL_SPECS["swin_micro_patch4_window4_64"].config, (150, 222))
    info = {"model": "swin_micro_patch4_window4_64", "config": cfg.to_dict(), "source": None}
    graph = export_onnx(SwinBackbone(cfg).eval(), tmp_path / "bb.onnx", info=info, sizes=[(150, 222), (192, 176)]).onnx_path
    result = CliRunner().invoke(app, ["serve-repo", str(graph), "--out", str(tmp_path / "repo"), "--onnx-backend", "python", "--onnx-device", "cpu"])
    assert result.exit_code == 0, result.output
    with LocalTritonServer(tmp_path / "repo") as server:
        client = http.InferenceServerClient(server.http_url)
        for i, size in enumerate([(150, 222), (192, 176), (161, 133)]):
            x = np.random.default_rng(i).standard_normal((2, 3, *size)).astype(np.float32)
            request = http.InferInput("input", list(x.shape), "FP32")
            request.set_data_from_numpy(x)
            answer = client.infer("bb", [request], outputs=[http.InferRequestedOutput(f"stage{k}") for k in range(4)])
            for k, want in enumerate(run_onnx_cpu(graph, x, all_outputs=True)):
                np.testing.assert_allclose(answer.as_numpy(f"stage{k}"), want, rtol=1e-5, atol=1e-5)

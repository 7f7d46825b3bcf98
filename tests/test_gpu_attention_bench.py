"""The GPU benchmark's "TensorRT native MHA" column, checked on CPU.

The column times an engine TensorRT builds from :func:`write_attention_onnx`'s graph. That
graph is checked here on ONNX Runtime against an independent brute-force window attention
(per token, from coordinates: no roll, partition or mask helper of swinedge), and its
TensorRT calls are checked to be names the contract test verifies in every TensorRT
version. What needs a GPU (the build, TensorRT's kernels, the timing) runs only in
``python -m swinedge.benchmarks.gpu_attention``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from swinedge.benchmarks.gpu_attention import ATTENTION_INPUT, ATTENTION_OUTPUT, stage_geometries, write_attention_onnx
from swinedge.ops.window_attention import MASK_VALUE, WindowGeometry, window_attention_reference

REPO = Path(__file__).resolve().parents[1]
BENCH_FILE = "swinedge/benchmarks/gpu_attention.py"

GEOMETRIES = {
    "w7-shifted": WindowGeometry(14, 14, 7, 3, 3, 16),
    "w7-unshifted": WindowGeometry(14, 14, 7, 0, 2, 32),
    "w12-shifted": WindowGeometry(24, 24, 12, 6, 2, 16),
    "w7-shifted-padded": WindowGeometry(10, 13, 7, 3, 2, 16),  # pads 10x13 -> 14x14, not square
    # 28 -> 36: pad rows 28..29 share region 1 with image rows 24..27, so the pad row's
    # value reaches real outputs (at 30 -> 36 every pad token is masked off from them)
    "w12-shifted-padded": WindowGeometry(28, 28, 12, 6, 2, 16),
    "w7-unshifted-padded": WindowGeometry(9, 9, 7, 0, 2, 16),
}


def brute_force(qkv: np.ndarray, bias: np.ndarray, pad: np.ndarray, g: WindowGeometry) -> np.ndarray:
    """Swin window attention one window at a time in float64, from coordinates.

    Token (y, x) of the shifted frame holds image token ((y + s) % H, (x + s) % W) where
    y < H and x < W, else the pad row (timm pads after the shift); windows are w x w blocks
    of the padded frame; along each axis of length P, coordinates < P - w, in
    [P - w, P - s) and >= P - s are three regions, and a query sees a key of another
    region (in either axis) with -100 added; output goes back to the image token."""
    batch, hw, _ = qkv.shape
    H, W, w, s, heads, hd = g.height, g.width, g.window, g.shift, g.num_heads, g.head_dim
    C = heads * hd
    P_h, P_w = -(-H // w) * w, -(-W // w) * w

    def region(c: int, size: int) -> int:
        if s == 0:
            return 0
        return 0 if c < size - w else (1 if c < size - s else 2)

    out = np.zeros((batch, hw, C))
    for b in range(batch):
        for wy in range(0, P_h, w):
            for wx in range(0, P_w, w):
                coords = [(wy + r, wx + c) for r in range(w) for c in range(w)]
                rows, source = [], []
                for y, x in coords:
                    if y < H and x < W:
                        token = ((y + s) % H) * W + (x + s) % W
                        rows.append(qkv[b, token])
                        source.append(token)
                    else:
                        rows.append(pad)
                        source.append(None)
                t = np.asarray(rows, dtype=np.float64)  # [N, 3C]
                regions = [(region(y, P_h), region(x, P_w)) for y, x in coords]
                mask = np.array([[0.0 if rq == rk else MASK_VALUE for rk in regions] for rq in regions])
                for h in range(heads):
                    q = t[:, h * hd : (h + 1) * hd]
                    k = t[:, C + h * hd : C + (h + 1) * hd]
                    v = t[:, 2 * C + h * hd : 2 * C + (h + 1) * hd]
                    scores = q @ k.T * hd**-0.5 + bias[h] + mask
                    p = np.exp(scores - scores.max(-1, keepdims=True))
                    o = (p / p.sum(-1, keepdims=True)) @ v
                    for i, token in enumerate(source):
                        if token is not None:
                            out[b, token, h * hd : (h + 1) * hd] = o[i]
    return out


def _inputs(g: WindowGeometry, batch: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = g.tokens_per_window
    qkv = rng.standard_normal((batch, g.height * g.width, 3 * g.dim)).astype(np.float32)
    bias = rng.standard_normal((g.num_heads, n, n)).astype(np.float32)
    pad = rng.standard_normal(3 * g.dim).astype(np.float32)
    return qkv, bias, pad


def _session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _assert_native(path: Path, elem_type: int) -> onnx.ModelProto:
    """Standard ONNX only, the named I/O of the expected type, a dynamic batch, no Shape op."""
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert {n.domain for n in proto.graph.node} <= {"", "ai.onnx"}, "a custom-domain (plugin) node is in the graph"
    assert {o.domain for o in proto.opset_import} <= {"", "ai.onnx"}
    assert not any(n.op_type == "SwinWindowAttention" for n in proto.graph.node)
    assert not any(n.op_type == "Shape" for n in proto.graph.node)  # static geometry: TensorRT gets no shape arithmetic
    assert [i.name for i in proto.graph.input] == [ATTENTION_INPUT] and [o.name for o in proto.graph.output] == [ATTENTION_OUTPUT]
    for value in (*proto.graph.input, *proto.graph.output):
        assert value.type.tensor_type.elem_type == elem_type
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch"
    return proto


def test_brute_force_agrees_with_swinedge_reference() -> None:
    """The test's own reference and swinedge's torch reference are two implementations of
    one thing (so a shared misreading of Swin would have to be made twice)."""
    for name in ("w7-shifted", "w12-shifted-padded"):
        g = GEOMETRIES[name]
        qkv, bias, pad = _inputs(g, 2, seed=1)
        expected = window_attention_reference(torch.from_numpy(qkv).double(), torch.from_numpy(bias).double(), torch.from_numpy(pad).double(), g)
        np.testing.assert_allclose(brute_force(qkv, bias, pad, g), expected.numpy(), rtol=0, atol=1e-10, err_msg=name)


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_fp32_graph_computes_window_attention(name: str, tmp_path: Path) -> None:
    g = GEOMETRIES[name]
    qkv, bias, pad = _inputs(g, 3, seed=7)
    path = write_attention_onnx(g, tmp_path / "attn.onnx", bias=torch.from_numpy(bias), pad_qkv=torch.from_numpy(pad), dtype=torch.float32)
    _assert_native(path, onnx.TensorProto.FLOAT)
    sess = _session(path)
    for batch in (1, 3):  # the batch is dynamic: one graph serves every profile
        got = sess.run(None, {ATTENTION_INPUT: qkv[:batch]})[0]
        assert got.shape == (batch, g.height * g.width, g.dim) and got.dtype == np.float32
        expected = brute_force(qkv[:batch], bias, pad, g)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=2e-5, err_msg=name)


@pytest.mark.parametrize("name", ["w7-shifted", "w12-shifted-padded"])
def test_fp16_graph_is_fp16_throughout_and_computes_window_attention(name: str, tmp_path: Path) -> None:
    """The graph TensorRT builds (strongly typed, so its types are the engine's precision):
    FP16 I/O and constants, no float32 tensor anywhere, and the same attention to FP16
    accuracy (inputs rounded to FP16 first, so only the FP16 arithmetic differs)."""
    g = GEOMETRIES[name]
    qkv, bias, pad = (a.astype(np.float16) for a in _inputs(g, 2, seed=3))
    path = write_attention_onnx(g, tmp_path / "attn16.onnx", bias=torch.from_numpy(bias), pad_qkv=torch.from_numpy(pad), dtype=torch.float16)
    proto = _assert_native(path, onnx.TensorProto.FLOAT16)
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}
    assert not [i.name for i in proto.graph.initializer if i.data_type in floats]
    for node in proto.graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                assert attr.t.data_type not in floats, node.name
            if node.op_type == "Cast" and attr.name == "to":
                assert attr.i not in floats, node.name
    inferred = onnx.shape_inference.infer_shapes(proto)
    assert not [v.name for v in inferred.graph.value_info if v.type.tensor_type.elem_type in floats]
    got = _session(path).run(None, {ATTENTION_INPUT: qkv})[0]
    assert got.dtype == np.float16
    expected = brute_force(qkv.astype(np.float32), bias.astype(np.float32), pad.astype(np.float32), g)
    np.testing.assert_allclose(got.astype(np.float64), expected, rtol=0, atol=1e-2, err_msg=name)


def test_benchmark_geometries_export(tmp_path: Path) -> None:
    """Every geometry the benchmark times has a graph (the column's first step on a GPU)."""
    for geoms in stage_geometries().values():
        for g in geoms:
            bias = torch.zeros(g.num_heads, g.tokens_per_window, g.tokens_per_window)
            path = write_attention_onnx(g, tmp_path / "g.onnx", bias=bias, pad_qkv=torch.zeros(3 * g.dim))
            proto = onnx.load(str(path), load_external_data=False)
            assert {n.domain for n in proto.graph.node} <= {"", "ai.onnx"}
            dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim[1:]]
            assert dims == [g.height * g.width, 3 * g.dim]


def test_bad_bias_or_pad_shape_is_refused(tmp_path: Path) -> None:
    from swinedge.errors import SwinedgeError

    g = GEOMETRIES["w7-shifted"]
    with pytest.raises(SwinedgeError, match="bias must be"):
        write_attention_onnx(g, tmp_path / "x.onnx", bias=torch.zeros(g.num_heads, 4, 4))
    with pytest.raises(SwinedgeError, match="pad_qkv must be"):
        write_attention_onnx(g, tmp_path / "x.onnx", bias=torch.zeros(g.num_heads, 49, 49), pad_qkv=torch.zeros(5))
    assert not (tmp_path / "x.onnx").exists()


# -- the TensorRT calls of the column ------------------------------------------------------------
# Variables that hold TensorRT objects in gpu_attention.py (the contract test's roots, plus
# the engine and context its runner keeps on self).
BENCH_TRT_ROOTS = {"trt", "builder", "network", "parser", "config", "profile", "cache", "runtime", "logger", "parse_error", "engine", "context"}


def _bench_tensorrt_names() -> set[str]:
    tree = ast.parse((REPO / BENCH_FILE).read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            parts = []
            inner: ast.AST = node
            while isinstance(inner, ast.Attribute):
                parts.append(inner.attr)
                inner = inner.value
            if isinstance(inner, ast.Name) and inner.id in BENCH_TRT_ROOTS:
                names.update(parts)
    return {n for n in names if not n.startswith("__")}


def test_tensorrt_names_are_ones_the_contract_test_checks() -> None:
    """The benchmark is not in the contract test's scan list, so it may only use TensorRT
    names that the scanned build and run code already uses: those are checked against
    NVIDIA's bindings of every version in CONTRACT_VERSIONS (tests/test_trt_contract.py)."""
    from test_trt_contract import _all_touched

    used = _bench_tensorrt_names()
    assert {"Builder", "OnnxParser", "build_serialized_network", "deserialize_cuda_engine", "execute_async_v3", "set_tensor_address"} <= used
    checked, gated, _, _ = _all_touched()
    assert sorted(used - (checked - gated)) == [], "TensorRT names not verified in every version by tests/test_trt_contract.py"

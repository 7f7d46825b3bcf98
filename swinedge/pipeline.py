"""Stage chains: the digits accuracy table, and (later stages) the full `run`."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from swinedge.data import ImageStream, Preprocess, load_image_set, open_images
from swinedge.errors import SwinedgeError
from swinedge.export import export_onnx
from swinedge.quantize import QuantizeOptions, calibration_set_for, quantize_onnx
from swinedge.runners.ort_runner import OnnxRuntimeRunner
from swinedge.runners.torch_runner import TorchRunner
from swinedge.verify import (
    MAX_TOP1_DROP,
    MIN_COSINE,
    Comparison,
    LogitComparer,
    check_thresholds,
    compare_logits,
    infer_chunk,
    open_eval_images,
    runner_batch,
    stream_logits,
)


def default_cache_dir(warn: Callable[[str], None] | None = None) -> Path:
    """Where trained embedded models are cached: $SWINEDGE_CACHE, $XDG_CACHE_HOME/swinedge
    or ~/.cache/swinedge. With no home folder (HOME unset and no passwd entry for the uid,
    a container started with ``--user``): a folder for this user in the temp dir, with one
    warning (the model is trained again when the temp dir is cleared)."""
    env = os.environ.get("SWINEDGE_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg) / "swinedge"
    from swinedge.io import home_folder, outer_tempdir

    home = home_folder()
    if home is not None:
        return home / ".cache" / "swinedge"

    uid = os.getuid() if hasattr(os, "getuid") else "user"
    fallback = outer_tempdir() / f"swinedge-cache-{uid}"
    if warn is not None:
        warn(f"no home folder (HOME is unset and uid {uid} has no passwd entry): caching the digits model in {fallback}; "
             "set SWINEDGE_CACHE to keep it elsewhere")  # fmt: skip
    return fallback


def digits_accuracy(
    workdir: str | Path,
    *,
    checkpoint: str | Path | None = None,
    calib_size: int = 128,
    method: str = "entropy",
    status: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """FP32 / FP16 / INT8 top-1 of the digits model on its held-out split.

    Trains (or reuses) the digits checkpoint, exports it, quantizes INT8 (calibrated on
    the training split) and FP16, and runs each graph on ONNX Runtime CPU. INT8 keeps
    FP32 for the non-quantized ops here (a CPU verification graph); TensorRT graphs use
    FP16 there.
    """
    from swinedge.digits import digits_checkpoint

    from swinedge.digits import check_cache_dir

    say = status or (lambda _msg: None)
    workdir = Path(workdir)
    if checkpoint is None:
        cache = check_cache_dir(default_cache_dir())
        say("training the digits model (cached after the first run)")
        checkpoint, _ = digits_checkpoint(cache)
    say("exporting")
    fp32 = export_onnx(checkpoint, workdir / "digits.fp32.onnx").onnx_path
    pre = Preprocess(32)
    test = open_images("digits", pre)
    calib = load_image_set("digits-train", pre, size=calib_size, seed=0)
    say(f"quantizing int8 ({method}, {calib_size} training images)")
    int8 = quantize_onnx(
        fp32, workdir / "digits.int8.onnx", QuantizeOptions(precision="int8", method=method, high_precision_dtype="fp32"), images=calib
    ).onnx_path
    say("converting fp16")
    fp16 = quantize_onnx(fp32, workdir / "digits.fp16.onnx", QuantizeOptions(precision="fp16", calib_size=8), images=calib).onnx_path
    say("evaluating on the held-out split")
    graphs = [("torch fp32", None), ("onnxruntime fp32", fp32), ("onnxruntime fp16", fp16), ("onnxruntime int8", int8)]
    rows = [
        {"runtime": label, "artifact": str(path or checkpoint), **_metrics(c)}
        for label, path, c in compare_graphs(checkpoint, graphs, test)
    ]
    return {
        "task": "sklearn digits, held-out split",
        "images": len(test),
        "checkpoint": str(checkpoint),
        "calibration": {"source": "digits-train", "count": calib_size, "method": method},
        "rows": rows,
        "artifacts": {"fp32": str(fp32), "fp16": str(fp16), "int8": str(int8)},
    }


def compare_graphs(
    checkpoint: str | Path, graphs: list[tuple[str, Path | None]], images: ImageStream, warn: Callable[[str], None] | None = None
) -> list[tuple[str, Path | None, Comparison]]:
    """Each ONNX graph against the float torch model on ``images``, streamed: the
    reference runs once into a scratch file, then each graph batch by batch.

    A ``None`` path compares the reference with itself (a row for the table)."""
    with tempfile.TemporaryDirectory(prefix="swinedge-compare-") as scratch:
        with TorchRunner(checkpoint) as torch_runner:
            reference, labels = stream_logits(torch_runner, images, Path(scratch) / "reference.npy", 128, warn=warn)  # skipped images said once
        out = []
        for label, path in graphs:
            comparer = LogitComparer()
            if path is None:
                for i in range(0, len(reference), 4096):
                    chunk = reference[i : i + 4096]
                    comparer.update(chunk, chunk, None if labels is None else labels[i : i + 4096])
                out.append((label, path, comparer.result()))
                continue
            done = 0
            with OnnxRuntimeRunner(path) as r:
                for chunk in images.batches(runner_batch(r, 128)):
                    comparer.update(reference[done : done + len(chunk)], infer_chunk(r, chunk.images), chunk.labels)
                    done += len(chunk)
            out.append((label, path, comparer.result()))
        del reference  # the memory map, before its folder goes
    return out


def _metrics(c: Comparison) -> dict[str, Any]:
    return {"top1": c.top1_candidate, "top1_drop": c.top1_drop, "top1_agreement": c.top1_agreement, "cosine_mean": c.cosine_mean}


def tensorrt_available() -> tuple[bool, str]:
    """(usable, reason when not): TensorRT importable and a CUDA GPU visible."""
    import importlib.util

    import torch

    if importlib.util.find_spec("tensorrt") is None:
        return False, "TensorRT is not installed"
    if not torch.cuda.is_available():
        return False, "no CUDA GPU is visible"
    return True, ""


def run_pipeline(
    out_dir: str | Path,
    *,
    model: str | None = None,
    weights: str | Path | None = None,
    calib: str | None = None,
    calib_size: int | None = None,
    data: str | None = None,
    batches: list[int] | None = None,
    iters: int = 10,
    labels_file: str | Path | None = None,
    status: Callable[[str], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """build -> export -> quantize INT8 + FP16 -> verify -> engines (where TensorRT is)
    -> benchmark -> one report (JSON + markdown + chart) in ``out_dir``.

    With no model: the embedded digits task (trained once, cached), whose held-out split
    gives a real FP32 / FP16 / INT8 top-1 table. ``data`` is the evaluation set (default:
    the digits test split, or for a MODEL the calibration set).
    """
    import torch

    from swinedge.bench import write_report
    from swinedge.io import write_bytes_atomic, write_json_atomic

    say = status or (lambda _m: None)
    from swinedge.io import atomic_folder, check_output_folder

    out_dir = check_output_folder(out_dir, weights, calib, data, labels_file, replaces="report.json")
    # Every option is checked before the first step: a mistake costs no build.
    if calib_size is not None:
        QuantizeOptions(calib_size=calib_size).validate()
    from swinedge.bench import MAX_ITERS
    from swinedge.data import check_image_source

    if not 1 <= iters <= MAX_ITERS:
        raise SwinedgeError(f"--iters must be 1..{MAX_ITERS}, got {iters}")
    check_image_source(calib, "--calib")
    check_image_source(data, "--data")
    if model is None and weights is not None:
        raise SwinedgeError("--weights needs a MODEL name to load them into")
    if weights is not None:
        from swinedge.io import require_file

        require_file(weights, "checkpoint")
    cache = None
    if model is None:  # the cache is checked before training, not after it
        from swinedge.digits import check_cache_dir

        cache = check_cache_dir(default_cache_dir(warn))
    cuda = torch.cuda.is_available()
    batches = batches or ([1, 8, 32] if cuda else [1, 8])
    # Everything is made in a private folder beside --out that becomes --out only when
    # the run is complete: a failed or interrupted run leaves no half report behind.
    with atomic_folder(out_dir) as work:
        summary = _run_in(work, model, weights, calib, calib_size, data, batches, iters, labels_file, say, cache, warn)
        summary = _relocated(summary, str(work), str(out_dir))
        files = write_report(summary["benchmark"], work, title=f"swinedge run: {summary['model']}")
        md = _run_markdown(summary) + "\n" + Path(files["markdown"]).read_text()
        write_bytes_atomic(work / "report.md", md.encode())
        write_json_atomic(work / "report.json", summary)
    summary["files"] = {**_relocated(files, str(work), str(out_dir)), "report": str(out_dir / "report.md"), "report_json": str(out_dir / "report.json")}
    return summary


def _relocated(obj: Any, old: str, new: str) -> Any:
    """``obj`` with every path under ``old`` rewritten to lie under ``new``."""
    if isinstance(obj, str):
        return new + obj[len(old) :] if obj == old or obj.startswith(old + os.sep) else obj
    if isinstance(obj, dict):
        return {k: _relocated(v, old, new) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_relocated(v, old, new) for v in obj]
    return obj


def _run_in(
    work: Path,
    model: str | None,
    weights: str | Path | None,
    calib: str | None,
    calib_size: int | None,
    data: str | None,
    batches: list[int],
    iters: int,
    labels_file: str | Path | None,
    say: Callable[[str], None],
    cache: Path | None = None,
    warn: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    from swinedge.bench import benchmark_artifacts
    from swinedge.models import build_checkpoint

    if model is None:
        say("digits model: training once, then cached")
        from swinedge.digits import digits_checkpoint

        checkpoint, train = digits_checkpoint(cache or default_cache_dir())
        eval_data, calib_data, model_name = data or "digits", calib or "digits-train", "digits (swin_nano_patch2_window4_32)"
        calib_size = calib_size or 128
    else:
        say(f"building {model}")
        built = build_checkpoint(model, work / f"{model}.pt", weights=weights)
        checkpoint, train = Path(built["checkpoint"]), None
        eval_data, calib_data, model_name = data or calib or "default", calib or "default", model
        calib_size = calib_size or 64
    with TorchRunner(checkpoint) as ref:  # the evaluation set's labels checked before any long work
        eval_images = open_eval_images(ref, eval_data, labels_file=labels_file)
    say("exporting ONNX")
    fp32 = export_onnx(checkpoint, work / "model.fp32.onnx").onnx_path
    say("quantizing INT8 (calibrating on CPU)")
    pre_images = calibration_set_for(fp32, calib_data, calib_size, 0)
    int8 = quantize_onnx(fp32, work / "model.int8.onnx", QuantizeOptions(precision="int8", high_precision_dtype="fp32"), images=pre_images, warn=warn).onnx_path
    say("guarded INT8: aggressive placement, blocks restored until within budget")
    from swinedge.guard import Budget, guarded_quantize

    aggressive = QuantizeOptions(
        precision="int8", calib=calib_data, calib_size=calib_size, high_precision_dtype="fp32",
        quantize_residual=True, quantize_softmax=True, quantize_attention_matmuls=True,
    )  # fmt: skip
    # Measured on other picks of the calibration source, never on the evaluation images.
    # A budget no graph meets is a finding of the report, not the end of the run.
    try:
        guarded, guard = guarded_quantize(fp32, work / "model.int8.guarded.onnx", aggressive, Budget(data=calib_data), images=pre_images)
    except SwinedgeError as e:
        guarded, guard = None, {"error": str(e)}
    say("converting FP16")
    fp16 = quantize_onnx(fp32, work / "model.fp16.onnx", QuantizeOptions(precision="fp16", calib_size=8), images=pre_images).onnx_path
    say("verifying against the float model")
    graphs = [("fp32 onnx", fp32), ("fp16 onnx", fp16), ("int8 onnx", int8)]
    if guarded is not None:
        graphs.append(("int8 guarded onnx", guarded.onnx_path))
    accuracy = [
        {"precision": label, "artifact": str(path), "top1_reference": c.top1_reference, **_metrics(c), "passed": not check_thresholds(c, MAX_TOP1_DROP, MIN_COSINE)}
        for label, path, c in compare_graphs(checkpoint, graphs, eval_images, warn)
    ]
    artifacts = [str(checkpoint), str(fp32), str(fp16), str(int8), *([str(guarded.onnx_path)] if guarded is not None else [])]
    engines: list[dict[str, Any]] = []
    ok, why = tensorrt_available()
    if ok:
        from swinedge.engine import BuildOptions, build_engine

        int8_trt = quantize_onnx(fp32, work / "model.int8.trt.onnx", QuantizeOptions(precision="int8"), images=pre_images).onnx_path
        for name, src, plugin in (("fp16-native", fp16, "off"), ("fp16-plugin", fp16, "auto"), ("int8-plugin", int8_trt, "auto")):
            say(f"building TensorRT engine {name}")
            r = build_engine(src, work / f"{name}.plan", BuildOptions(max_batch=max(batches), opt_batch=max(batches), plugin=plugin))
            engines.append({"name": name, "plan": str(r.plan), "plugin": r.plugin_used, "note": r.note, "warnings": list(r.warnings), "seconds": r.seconds})
            artifacts.append(str(r.plan))
    say("benchmarking")
    report = benchmark_artifacts(
        artifacts, batches=batches, iters=iters, warmup=2, data=eval_data, reference=str(checkpoint), labels_file=labels_file,
        on_step=lambda m, _n=None: say(m),
    )  # fmt: skip
    if not ok:
        report["skipped"].insert(0, f"TensorRT engines: {why}")
    say("writing the Triton model repository")
    triton = _triton_repository(work / "triton", [fp32, fp16, int8, *(Path(e["plan"]) for e in engines)], labels_file)
    if "error" in triton:
        report["skipped"].append(f"Triton model repository: {triton['error']}")
    return {
        "model": model_name,
        "checkpoint": str(checkpoint),
        "training": train,
        "eval_data": eval_data,
        "calibration": {"source": calib_data, "count": len(pre_images)},
        "accuracy": accuracy,
        "guard": {k: guard[k] for k in ("budget", "data", "high_precision_blocks", "path", "error") if k in guard},
        "engines": engines,
        "triton": triton,
        "benchmark": report,
    }


def _triton_repository(folder: Path, artifacts: list[Path], labels_file: str | Path | None) -> dict[str, Any]:
    """The run's graphs and engines as a Triton model repository (GPU instances, with
    image ensembles); what could not be written is a finding, not the end of the run."""
    from swinedge.data import read_class_names
    from swinedge.serving.repository import RepositoryOptions, write_model_repository

    labels = tuple(read_class_names(labels_file)) if labels_file is not None else None
    try:
        written = write_model_repository(artifacts, folder, RepositoryOptions(labels=labels))
    except SwinedgeError as e:
        return {"error": str(e)}
    return {"repository": written["repository"], "models": [m["name"] for m in written["models"]]}


def _run_markdown(summary: dict[str, Any]) -> str:
    lines = [f"# swinedge run: {summary['model']}", "", f"Evaluation images: {summary['eval_data']}; calibration: "
             f"{summary['calibration']['count']} images from {summary['calibration']['source']}.", "",
             "| precision | top-1 | top-1 drop | top-1 agreement | logit cosine | verify |", "|---|---:|---:|---:|---:|---|"]  # fmt: skip
    for a in summary["accuracy"]:
        top1 = f"{a['top1']:.2f}%" if a["top1"] is not None else "-"
        drop = f"{a['top1_drop']:+.2f}" if a["top1_drop"] is not None else "-"
        lines.append(f"| {a['precision']} | {top1} | {drop} | {a['top1_agreement']:.2f}% | {a['cosine_mean']:.6f} | {'pass' if a['passed'] else 'FAIL'} |")
    guard = summary.get("guard")
    if guard and "error" in guard:
        lines += ["", f"int8 guarded: no graph within budget: {guard['error']}"]
    elif guard:
        budget = ", ".join(f"{k} {v}" for k, v in guard["budget"].items())
        kept = ", ".join(guard["high_precision_blocks"]) or "none"
        lines += ["", f"int8 guarded: residual Adds and attention matmuls quantized too; budget {budget} on {guard['data']['size']} "
                  f"images of {guard['data']['source']}; blocks kept in high precision: {kept}."]  # fmt: skip
    triton = summary.get("triton") or {}
    if triton.get("models"):
        lines += ["", f"Triton model repository: {triton['repository']} ({', '.join(triton['models'])}); start it with `tritonserver --model-repository=...`."]
    if summary["engines"]:
        lines += ["", "Engines: " + ", ".join(f"{e['name']} ({e['note']})" for e in summary["engines"])]
    return "\n".join(lines) + "\n"

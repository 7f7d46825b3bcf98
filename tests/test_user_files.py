"""The user's files: never written, nothing left behind, bad input a one-line error.

Every case runs the real `swinedge` command in its own process, with a private TMPDIR,
and asserts: the exit code, one `error:` line and no traceback for a mistake, the input
files byte-identical afterwards, and no stray file in the output folder or the temp dir.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

MICRO = "swin_micro_patch4_window4_64"
SWINEDGE = [sys.executable, "-c", "from swinedge.cli import run; run()"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): (_sha(p) if p.is_file() else "dir") for p in sorted(folder.rglob("*"))}


class Sandbox:
    """A work folder and a private TMPDIR; runs swinedge there and snapshots both."""

    def __init__(self, root: Path):
        self.work = root / "work"
        self.tmp = root / "tmp"
        self.work.mkdir()
        self.tmp.mkdir()
        self.env = {**os.environ, "TMPDIR": str(self.tmp), "COLUMNS": "200"}
        self.env.pop("TRITON_INTERPRET", None)

    def start(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([*SWINEDGE, *args], cwd=self.work, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def run(self, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
        return subprocess.run([*SWINEDGE, *args], cwd=self.work, env=self.env, capture_output=True, text=True, timeout=timeout)

    def snapshot(self) -> tuple[dict, dict]:
        return _tree(self.work), _tree(self.tmp)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """A dynamic-batch and a fixed-batch (1) export, with manifests, made once."""
    d = tmp_path_factory.mktemp("exports")
    for args in (["--out", "m.onnx"], ["--batch", "1", "--out", "b1.onnx"]):
        proc = subprocess.run([*SWINEDGE, "export", MICRO, *args], cwd=d, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
    return d


@pytest.fixture
def box(tmp_path: Path, exported: Path) -> Sandbox:
    sb = Sandbox(tmp_path)
    for name in ("m.onnx", "m.onnx.json", "b1.onnx", "b1.onnx.json"):
        (sb.work / name).write_bytes((exported / name).read_bytes())
    return sb


# -- inputs are never written --------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_quantize_leaves_its_input_and_the_temp_dir_as_they_were(box: Sandbox, precision: str) -> None:
    before_work, before_tmp = box.snapshot()
    proc = box.run("quantize", "m.onnx", "--precision", precision, "--calib-size", "8", "--out", "q/q.onnx")
    assert proc.returncode == 0, proc.stderr
    after_work, after_tmp = box.snapshot()
    assert after_tmp == before_tmp  # modelopt's copies went with the private folder
    new = {k: v for k, v in after_work.items() if k not in before_work}
    assert sorted(new) == ["q", "q/q.onnx", "q/q.onnx.json"]
    assert {k: after_work[k] for k in before_work} == before_work  # m.onnx byte-identical


@pytest.mark.slow
def test_two_quantize_runs_on_one_input_at_once(box: Sandbox) -> None:
    before = _sha(box.work / "m.onnx")
    runs = [box.start("quantize", "m.onnx", "--calib-size", "8", "--out", f"q{i}.onnx") for i in range(2)]
    for p in runs:
        _, stderr = p.communicate(timeout=600)
        assert p.returncode == 0, stderr
    assert _sha(box.work / "m.onnx") == before
    assert (box.work / "q0.onnx").exists() and (box.work / "q1.onnx").exists()
    assert list(box.tmp.iterdir()) == []


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["quantize", "m.onnx", "--calib-size", "4", "--out", "m.onnx"], "--out m.onnx is the input m.onnx"),
        (["quantize", "m.onnx", "--calib-size", "4", "--out", "./m.onnx"], "is the input m.onnx"),
        (["quantize", "m.onnx", "--calib", "imgs", "--calib-size", "4", "--out", "imgs/q.onnx"], "is inside the input folder imgs"),
        (["export", "m.onnx.json", "--out", "x.onnx"], ""),  # not a checkpoint: its own one-line error
        (["build-engine", "m.onnx", "--out", "m.onnx"], "ending in .plan or .engine"),
        (["benchmark", MICRO, "--out", "m.onnx"], "--out m.onnx is a file"),
        (["run", "--out", "m.onnx"], "--out m.onnx is a file"),
    ],
)
def test_outputs_over_inputs_are_refused_before_any_work(box: Sandbox, args: list[str], fragment: str) -> None:
    (box.work / "imgs").mkdir()
    before = box.snapshot()
    message = one_line_error(box.run(*args))
    assert fragment in message
    assert box.snapshot() == before


def _interrupt_leaves_nothing(box: Sandbox, proc: subprocess.Popen, sig: int, before) -> None:
    """Send ``sig``: the command says it was interrupted (exit 130, no traceback) and the
    work folder and temp dir are as ``before``."""
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in stderr and "interrupted" in stderr, stderr[-800:]
    assert box.snapshot() == before


# -- interrupted runs leave nothing ------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupted_quantize_leaves_the_file_system_as_it_found_it(box: Sandbox, sig: int) -> None:
    before = box.snapshot()
    proc = box.start("quantize", "m.onnx", "--calib-size", "64", "--out", "out/q.onnx")
    deadline = time.monotonic() + 120
    while not any(p.name.startswith("swinedge-quantize-") for p in box.tmp.rglob("swinedge-quantize-*")):  # calibration has begun
        assert proc.poll() is None and time.monotonic() < deadline, "quantize ended before it could be interrupted"
        time.sleep(0.05)
    time.sleep(1.0)
    _interrupt_leaves_nothing(box, proc, sig, before)


def _wait_for(proc: subprocess.Popen, ready, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"the command ended before {what}: {proc.communicate()[1][-500:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize(
    "args,point",
    [
        (["export", MICRO, "--out", "out/e.onnx"], "partial export file"),
        (["run", MICRO, "--calib-size", "8", "--iters", "1", "--batch", "1", "--out", "r"], "run folder holds the FP32 graph"),
        (["run", MICRO, "--calib-size", "8", "--iters", "1", "--batch", "1", "--out", "r"], "run folder holds the INT8 graph"),
        (["verify", MICRO, "m.onnx", "--size", "400", "--batch", "1"], "verification has begun"),
    ],
    ids=["export-writing", "run-after-export", "run-after-int8", "verify-streaming"],
)
def test_ctrl_c_at_several_points_leaves_the_file_system_as_it_found_it(box: Sandbox, args: list[str], point: str) -> None:
    before = box.snapshot()
    proc = box.start(*args)
    partial = lambda pattern: list(box.work.rglob(pattern))  # noqa: E731
    ready = {
        "partial export file": lambda: partial(".e.onnx.*.partial"),
        "run folder holds the FP32 graph": lambda: partial(".r.*.partial/model.fp32.onnx"),
        "run folder holds the INT8 graph": lambda: partial(".r.*.partial/model.int8.onnx"),
        "verification has begun": lambda: any(box.tmp.glob("swinedge-run-*")) and time.sleep(3.0) is None,
    }[point]
    _wait_for(proc, ready, point)
    _interrupt_leaves_nothing(box, proc, signal.SIGINT, before)


# -- fixed-batch graphs ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_fixed_batch_graph_quantizes_verifies_and_benchmarks(box: Sandbox) -> None:
    proc = box.run("quantize", "b1.onnx", "--calib-size", "5", "--out", "b1.q.onnx")  # 5 images, batch 1
    assert proc.returncode == 0, proc.stderr
    proc = box.run("verify", MICRO, "b1.q.onnx", "--size", "5")
    assert proc.returncode == 0 and "PASS" in proc.stdout, proc.stdout + proc.stderr
    proc = box.run("benchmark", MICRO, "b1.q.onnx", "--batch", "1,4", "--iters", "2", "--warmup", "0", "--out", "bench")
    assert proc.returncode == 0, proc.stderr
    assert "b1.q.onnx: batch 4 is outside its fixed batch 1" in proc.stderr


# -- absurd numbers and broken files ------------------------------------------------------------------
@pytest.mark.parametrize(
    "args,fragment",
    [
        (["build", MICRO, "--img-size", "100000", "--out", "x.pt"], "img_size 100000 is larger than 4096"),
        (["build", MICRO, "--img-size", "-4", "--out", "x.pt"], "unsupported img_size -4"),
        (["quantize", "m.onnx", "--calib-size", "100000000", "--out", "z.onnx"], "--calib-size must be 1..4096"),
        (["quantize", "m.onnx", "--calib-size", "0", "--out", "z.onnx"], "--calib-size must be 1..4096"),
        (["run", MICRO, "--calib-size", "0", "--out", "r"], "--calib-size must be 1..4096"),
        (["build-engine", "m.onnx", "--out", "e.plan", "--workspace", "0"], "--workspace must be > 0"),
        (["build-engine", "m.onnx", "--out", "e.plan", "--opt-level", "9"], "--opt-level must be 0..5"),
        (["benchmark", MICRO, "--batch", "0", "--out", "b"], "--batch"),
    ],
)
def test_absurd_numbers_are_one_line_errors(box: Sandbox, args: list[str], fragment: str) -> None:
    before = box.snapshot()
    assert fragment in one_line_error(box.run(*args))
    assert box.snapshot() == before


def test_an_artifact_changed_after_swinedge_wrote_it_is_refused(box: Sandbox) -> None:
    import onnx

    onnx_file = box.work / "m.onnx"
    proto = onnx.load(str(onnx_file))
    proto.doc_string = "edited by hand"  # still a valid graph; no longer what the manifest describes
    onnx.save(proto, str(onnx_file))
    message = one_line_error(box.run("verify", MICRO, "m.onnx", "--size", "2"))
    assert "m.onnx does not match its manifest m.onnx.json" in message and "swinedge export" in message


def test_benchmark_with_nothing_to_run_fails(box: Sandbox) -> None:
    (box.work / "junk.plan").write_bytes(b"not an engine")
    message = one_line_error(box.run("benchmark", "junk.plan", "--reference", MICRO, "--batch", "1", "--iters", "1", "--out", "b"))
    assert "nothing was benchmarked" in message
    assert not (box.work / "b").exists()


# -- two writers at once ------------------------------------------------------------------------------------
def _write_pair(args: tuple[str, int, int]) -> int:
    """One writer: artifact i and a 'manifest' naming its hash, ``rounds`` times; after
    each, it looks at the pair under the same folder lock and counts mismatches."""
    from swinedge.io import atomic_paths, folder_lock

    folder, i, rounds = args
    art_path, man_path = Path(folder) / "a.bin", Path(folder) / "a.bin.json"
    mismatches = 0
    for r in range(rounds):
        data = f"writer {i} round {r} ".encode() * 20_000
        with atomic_paths(art_path, man_path) as (art, man):
            art.write_bytes(data)
            man.write_text(hashlib.sha256(data).hexdigest())
        with folder_lock(Path(folder)):
            mismatches += man_path.read_text() != _sha(art_path)
    return mismatches


def test_concurrent_writers_of_one_artifact_leave_one_writers_pair(tmp_path: Path) -> None:
    """Four processes write the same artifact + manifest pair 40 times each, at once, and
    after each write look at the pair under the folder lock: it always belongs to one
    writer (the renames of a set hold that lock; without it this sees dozens of mixed
    pairs), and no temporary file is left."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        mismatches = sum(pool.imap_unordered(_write_pair, [(str(tmp_path), i, 40) for i in range(4)]))
    assert mismatches == 0
    assert (tmp_path / "a.bin.json").read_text() == _sha(tmp_path / "a.bin")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "a.bin.json"]


@pytest.mark.slow
def test_two_quantize_runs_to_one_output_leave_one_complete_artifact(box: Sandbox) -> None:
    runs = [box.start("quantize", "m.onnx", "--calib-size", str(n), "--out", "q.onnx") for n in (4, 8)]
    for p in runs:
        _, stderr = p.communicate(timeout=600)
        assert p.returncode == 0, stderr
    import json

    manifest = json.loads((box.work / "q.onnx.json").read_text())
    assert manifest["sha256"] == _sha(box.work / "q.onnx")  # the pair is one writer's
    assert manifest["quantization"]["calibration"]["count"] in (4, 8)
    assert sorted(p.name for p in box.work.iterdir()) == ["b1.onnx", "b1.onnx.json", "m.onnx", "m.onnx.json", "q.onnx", "q.onnx.json"]
    assert list(box.tmp.iterdir()) == []

"""CLI fuzz suite: bad input to every command is a one-line error that touches nothing.

311 cases, run in-process through ``typer.testing.CliRunner`` on ``swinedge.cli.app``, each
in its own work folder (the current directory) and its own TMPDIR. Every case asserts:

* exit code 2 (a user error), no exception escaping the command, no "Traceback";
* exactly one non-empty stderr line, starting with ``error:``, that contains a fragment
  naming the problem (and, where noted, not a misleading one);
* every input file byte-identical afterwards (sha256), no new file or folder in the work
  folder and none in the temp dir.

Like ``swinedge.cli.run`` (the console script), each command runs inside a private temp
folder under TMPDIR that is removed afterwards, with ``gc.collect()`` before it goes, and
with Python's default warning filters (pytest's warning capture would hide what a user
sees). A watchdog stops a command that runs longer than its limit or grows memory by more
than 3 GiB (absurd sizes that are not refused would otherwise hang or swap).

A case that finds a bug can be marked with ``bug=`` (a strict xfail naming it) until it is
fixed; none is marked today. A few cases
pair a bad flag with an input that fails only after work has begun (``+late-failure`` in
the id): the flag must be refused first, before any work.

Inputs are the tiny ``swin_micro_patch4_window4_64`` (exported and built once per module)
and small broken files written at test time.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest
from typer.testing import CliRunner

from swinedge.cli import app

MICRO = "swin_micro_patch4_window4_64"
NANO = "swin_nano_patch2_window4_32"
HUGE = "1000000000000"  # 1e12 as an integer
runner = CliRunner()

# Artifacts made once per module and copied into a case's work folder when its command
# line names them (with the manifest beside them).
BIG = {
    "m.onnx": ("m.onnx", "m.onnx.json"),
    "m.pt": ("m.pt", "m.pt.json"),
    "m10.pt": ("m10.pt", "m10.pt.json"),
    "nano.pt": ("nano.pt", "nano.pt.json"),
    "half.onnx": ("half.onnx",),
    "half.pt": ("half.pt",),
    "half.safetensors": ("half.safetensors",),
    "w10.pth": ("w10.pth",),
    "wdim.pth": ("wdim.pth",),
    "nano.pth": ("nano.pth",),
    "wok.pth": ("wok.pth",),
}


# -- the artifacts and broken files ------------------------------------------------------------------
class Evil:
    """A class instance in a pickle: what weights_only loading must refuse."""


def _write_small_files(d: Path) -> None:
    """Small broken (and a few good) inputs, copied into every case's work folder."""
    import numpy as np
    import onnx
    import torch
    from onnx import TensorProto, helper
    from PIL import Image

    rng = np.random.RandomState(0)
    (d / "imgs").mkdir()
    for i in range(3):
        Image.fromarray((rng.rand(40, 50, 3) * 255).astype("uint8")).save(d / "imgs" / f"i{i}.png")
    Image.fromarray((rng.rand(40, 50, 3) * 255).astype("uint8")).save(d / "pic.png")
    png = (d / "pic.png").read_bytes()
    rand = rng.bytes(4096)
    (d / "empty").mkdir()
    (d / "txtonly").mkdir()
    (d / "txtonly" / "notes.txt").write_text("no images here\n")
    (d / "txtonly" / "data.csv").write_text("a,b\n1,2\n")
    (d / "bad").mkdir()
    for i in range(3):
        (d / "bad" / f"b{i}.png").write_bytes(rng.bytes(500))
    (d / "bad" / "zero.jpg").write_bytes(b"")
    (d / "bad" / "text.bmp").write_text("not a bitmap")
    (d / "missing.txt").write_text("gone/a.png\ngone/b.png\n")
    (d / "strlab.txt").write_text("imgs/i0.png,cat\nimgs/i1.png,dog\n")
    (d / "mixed.txt").write_text("imgs/i0.png,1\nimgs/i1.png\n")
    (d / "obj.json").write_text('{"images": ["imgs/i0.png"]}')
    (d / "nopath.json").write_text('[{"file": "imgs/i0.png", "label": 1}]')
    (d / "broken.json").write_text('[{"path": "imgs/i0.png"')
    (d / "binary.txt").write_bytes(rand)
    for name, data in {"empty": b"", "rand": rand, "pic": png, "json": b'{"kind": "onnx"}'}.items():  # as .onnx
        (d / f"{name}.onnx").write_bytes(data)
    (d / "empty.pt").write_bytes(b"")
    (d / "rand.pt").write_bytes(rand)
    (d / "empty.safetensors").write_bytes(b"")
    (d / "empty.plan").write_bytes(b"")
    (d / "dir.onnx").mkdir()
    (d / "dir.pt").mkdir()
    (d / "dir.plan").mkdir()
    onnx.save(helper.make_model(helper.make_graph([], "empty", [], [])), str(d / "nograph.onnx"))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "add", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(d / "foreign.onnx"))
    tiny = {"w": torch.zeros(2)}
    torch.save({"swinedge": {"config": {"foo": 1}}, "state_dict": tiny}, d / "unknown_key.pt")
    torch.save({"swinedge": {"config": {"img_size": "abc"}}, "state_dict": tiny}, d / "str_img_size.pt")
    torch.save({"swinedge": {"config": {"embed_dim": 0}}, "state_dict": tiny}, d / "zero_dim.pt")
    torch.save({"swinedge": {"config": {}}, "state_dict": {}}, d / "no_state.pt")
    torch.save({"a": 1, "b": "x"}, d / "no_tensors.pt")
    torch.save({"w": Evil()}, d / "evil.pt")


@pytest.fixture(scope="module", autouse=True)
def _unfreeze_gc() -> Iterator[None]:
    """Cases freeze what exists before each command (see ``Sandbox.invoke``); give it back."""
    yield
    gc.unfreeze()


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """The micro model exported and built once, checkpoints of other models, halves."""
    import torch
    from safetensors.torch import save_file

    from swinedge.models import create_model

    d = tmp_path_factory.mktemp("fuzz-made")
    scratch = tmp_path_factory.mktemp("fuzz-made-tmp")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tempfile, "tempdir", str(scratch))  # what onnxruntime or torch leave goes there
        mp.setenv("TMPDIR", str(scratch))
        for args in (
            ["export", MICRO, "--out", d / "m.onnx"],
            ["build", MICRO, "--out", d / "m.pt"],
            ["build", MICRO, "--num-classes", "10", "--out", d / "m10.pt"],
            ["build", NANO, "--out", d / "nano.pt"],
        ):
            r = runner.invoke(app, [str(a) for a in args])
            assert r.exit_code == 0, r.output
        gc.collect()
    torch.manual_seed(0)
    torch.save({"model": create_model(MICRO, num_classes=10).state_dict()}, d / "w10.pth")
    torch.save(create_model(MICRO, embed_dim=64).state_dict(), d / "wdim.pth")
    torch.save(create_model(NANO).state_dict(), d / "nano.pth")
    ok = create_model(MICRO).state_dict()
    torch.save(ok, d / "wok.pth")
    save_file({k: v.contiguous() for k, v in ok.items()}, str(scratch / "w.safetensors"))
    for src, dst in ((d / "m.onnx", "half.onnx"), (d / "m.pt", "half.pt"), (scratch / "w.safetensors", "half.safetensors")):
        data = src.read_bytes()
        (d / dst).write_bytes(data[: len(data) // 2])
    small = d / "small"
    small.mkdir()
    _write_small_files(small)
    return d


# -- running one case --------------------------------------------------------------------------------
def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(folder: Path) -> dict[str, str]:
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_symlink():
            out[rel] = f"link:{os.readlink(p)}"
        elif p.is_file():
            out[rel] = _sha(p)
        else:
            out[rel] = "dir"
    return out


class Hung(BaseException):
    """Raised in the command by the watchdog (a BaseException: no ``except Exception`` eats it)."""


def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


@contextlib.contextmanager
def watchdog(limit_s: float, max_growth: int = 3 << 30) -> Iterator[None]:
    """Raise :class:`Hung` in the main thread when the block runs longer than ``limit_s``
    or the process grows by more than ``max_growth`` bytes."""
    import _thread

    reason: list[str] = []
    done = threading.Event()
    base = _rss()
    start = time.monotonic()

    def on_signal(signum, frame):  # noqa: ARG001
        raise Hung(reason[0] if reason else "stopped by the watchdog")

    def watch() -> None:
        while not done.wait(0.1):
            if time.monotonic() - start > limit_s:
                reason.append(f"still running after {limit_s:.0f}s")
            elif base and _rss() - base > max_growth:
                reason.append(f"memory grew by more than {max_growth / 2**30:g} GiB")
            else:
                continue
            _thread.interrupt_main(signal.SIGUSR1)
            return

    previous = signal.signal(signal.SIGUSR1, on_signal)
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        signal.signal(signal.SIGUSR1, previous)


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ARG001
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


@contextlib.contextmanager
def user_process_conditions(tmp: Path) -> Iterator[None]:
    """What ``swinedge.cli.run`` gives the command: a private temp folder under TMPDIR,
    removed afterwards (after a ``gc.collect()``), and Python's default warning filters
    with warnings printed to stderr as in a fresh process."""
    folder = tempfile.mkdtemp(prefix="swinedge-run-", dir=tmp)
    with warnings.catch_warnings():
        warnings.resetwarnings()
        warnings.simplefilter("default")
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.filterwarnings("ignore", category=category)
        warnings.showwarning = _print_warning
        tempfile.tempdir = folder
        os.environ["TMPDIR"] = folder
        try:
            yield
        finally:
            gc.collect()
            tempfile.tempdir = str(tmp)
            os.environ["TMPDIR"] = str(tmp)
            shutil.rmtree(folder, ignore_errors=True)


class Sandbox:
    """A work folder (the current directory) and a private TMPDIR for one case."""

    def __init__(self, root: Path, made: Path, monkeypatch: pytest.MonkeyPatch):
        self.made = made
        self.work = root / "work"
        self.tmp = root / "tmp"
        self.tmp.mkdir()
        shutil.copytree(made / "small", self.work, symlinks=True)
        monkeypatch.chdir(self.work)
        monkeypatch.setenv("TMPDIR", str(self.tmp))
        monkeypatch.setenv("SWINEDGE_CACHE", str(root / "cache"))  # never the user's cache
        monkeypatch.setenv("COLUMNS", "200")
        monkeypatch.setattr(tempfile, "tempdir", str(self.tmp))

    def need(self, name: str) -> Path:
        for file in BIG[name]:
            if not (self.work / file).exists():
                shutil.copyfile(self.made / file, self.work / file)
        return self.work / name

    def need_named_in(self, args: tuple[str, ...]) -> None:
        for arg in args:
            for part in re.split(r"[/,=]", arg):
                part = part[: -len(".json")] if part.endswith(".json") else part
                if part in BIG:
                    self.need(part)

    def snapshot(self) -> tuple[dict[str, str], dict[str, str]]:
        return _tree(self.work), _tree(self.tmp)

    def invoke(self, c: Case):
        gc.collect()
        gc.freeze()  # what exists now is never garbage of this command: the collect after it stays cheap
        with user_process_conditions(self.tmp), watchdog(c.limit_s, int(c.max_growth_gib * 2**30)):
            return runner.invoke(app, list(c.args))


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    fragment: str  # the one error line must contain it
    absent: Optional[str] = None  # ... and must not contain this (a misleading message)
    setup: Optional[Callable[[Sandbox], None]] = None
    limit_s: float = 30.0  # the watchdog's limits (see ``watchdog``)
    max_growth_gib: float = 3.0


def case(id: str, args: str, fragment: str, *, bug: str | None = None, absent: str | None = None,
         setup: Callable[[Sandbox], None] | None = None, limit_s: float = 30.0, max_growth_gib: float = 3.0):  # fmt: skip
    """One bad command line (``args`` split as a shell would) and the fragment its error must name."""
    marks = [pytest.mark.xfail(strict=True, reason=f"bug: {bug}")] if bug else []
    return pytest.param(Case(tuple(shlex.split(args)), fragment, absent, setup, limit_s, max_growth_gib), id=id, marks=marks)


def problems_of(result, fragment: str, absent: str | None) -> list[str]:
    """Everything a bad-input run did wrong (empty when it was a clean one-line error)."""
    found = []
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        where = ""
        if result.exc_info is not None:
            frames = [f for f in traceback.extract_tb(result.exc_info[2]) if "swinedge" in f.filename and "tests" not in f.filename]
            where = f" (last swinedge frame {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
        found.append(f"exception escaped{where}: {type(result.exception).__name__}: {str(result.exception).strip()[:300]}")
    if result.exit_code != 2:
        found.append(f"exit code {result.exit_code}, expected 2")
    if "Traceback" in result.output:
        found.append("traceback in the output")
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    if len(lines) != 1 or not lines[0].startswith("error:"):
        found.append(f"stderr is not one 'error:' line: {lines[:8]}")
    elif fragment not in lines[0]:
        found.append(f"{fragment!r} not in {lines[0]!r}")
    elif absent and absent in lines[0]:
        found.append(f"misleading {absent!r} in {lines[0]!r}")
    return found


# -- setups: files placed before the snapshot ----------------------------------------------------------
def onnx_manifest(text: str | bytes | Callable[[dict], object]) -> Callable[[Sandbox], None]:
    """Replace m.onnx's manifest with ``text``, or with ``text(manifest)`` dumped as JSON."""

    def setup(box: Sandbox) -> None:
        box.need("m.onnx")
        target = box.work / "m.onnx.json"
        if callable(text):
            target.write_text(json.dumps(text(json.loads(target.read_text()))))
        elif isinstance(text, bytes):
            target.write_bytes(text)
        else:
            target.write_text(text)

    return setup


def manifest_folder(box: Sandbox) -> None:
    box.need("m.onnx")
    (box.work / "m.onnx.json").unlink()
    (box.work / "m.onnx.json").mkdir()


def checkpoint_manifest(text: str) -> Callable[[Sandbox], None]:
    def setup(box: Sandbox) -> None:
        box.need("m.pt")
        (box.work / "m.pt.json").write_text(text)

    return setup


def checkpoint_with_onnx_manifest(box: Sandbox) -> None:
    box.need("m.pt")
    box.need("m.onnx")
    shutil.copyfile(box.work / "m.onnx.json", box.work / "m.pt.json")


def onnx_with_checkpoint_manifest(box: Sandbox) -> None:
    box.need("m.onnx")
    box.need("m.pt")
    shutil.copyfile(box.work / "m.pt.json", box.work / "m.onnx.json")


def plan_manifest(make: Callable[[Sandbox], object]) -> Callable[[Sandbox], None]:
    """junk.plan (random bytes) with the manifest ``make(box)`` beside it."""

    def setup(box: Sandbox) -> None:
        (box.work / "junk.plan").write_bytes(b"\x00not an engine\x00" * 64)
        content = make(box)
        target = box.work / "junk.plan.json"
        target.write_text(content if isinstance(content, str) else json.dumps(content))

    return setup


def engine_manifest_of_another_plan(box: Sandbox) -> dict:
    return {"format": 1, "kind": "tensorrt-engine", "file": "junk.plan", "sha256": "0" * 64,
            "profile": {"min": [1, 3, 64, 64], "opt": [1, 3, 64, 64], "max": [1, 3, 64, 64]}}  # fmt: skip


def onnx_manifest_beside_plan(box: Sandbox) -> str:
    box.need("m.onnx")
    return (box.work / "m.onnx.json").read_text()


def link(name: str, target: str, *, hard: bool = False) -> Callable[[Sandbox], None]:
    def setup(box: Sandbox) -> None:
        box.need(target)
        if hard:
            os.link(box.work / target, box.work / name)
        else:
            os.symlink(target, box.work / name)

    return setup


def labels(text: str) -> Callable[[Sandbox], None]:
    def setup(box: Sandbox) -> None:
        (box.work / "labels.txt").write_text(text)

    return setup


# -- the cases ---------------------------------------------------------------------------------------------
CLICK = "typer prints a multi-line 'Usage / Error' panel instead of one 'error:' line"
PICKLE = "a file that is no pickle at all is said to hold 'pickled objects other than tensors'"
TWO_LINES = "a 'warning: skipped N unreadable file(s) ...' line comes before the 'no readable images' error (two stderr lines)"
CALIB = "--calib imgs --calib-size 2"  # calibration on 2 images, for cases that get that far
FAST_BENCH = "--data imgs --batch 1 --iters 1 --warmup 0"

# 1. Broken files as each input kind ------------------------------------------------------------------
BROKEN_FILES = [
    # checkpoints given to build --weights
    case("build-weights-empty", f"build {MICRO} --weights empty.pt --out x.pt", "empty.pt is not a readable checkpoint"),
    case("build-weights-truncated", f"build {MICRO} --weights half.pt --out x.pt", "half.pt is not a readable checkpoint"),
    case("build-weights-random-bytes", f"build {MICRO} --weights rand.pt --out x.pt", "rand.pt is not a readable checkpoint", absent="pop from empty list"),
    case("build-weights-png", f"build {MICRO} --weights pic.png --out x.pt", "pic.png is not a readable checkpoint", absent="pickled"),
    case("build-weights-onnx", f"build {MICRO} --weights m.onnx --out x.pt", "m.onnx is not a readable checkpoint", absent="pickled"),
    case("build-weights-json", f"build {MICRO} --weights m.pt.json --out x.pt", "m.pt.json is not a readable checkpoint", absent="pickled"),
    case("build-weights-folder", f"build {MICRO} --weights imgs --out x.pt", "checkpoint imgs is a folder"),
    case("build-weights-missing", f"build {MICRO} --weights nope.pth --out x.pt", "checkpoint not found: nope.pth"),
    case("build-weights-safetensors-empty", f"build {MICRO} --weights empty.safetensors --out x.pt", "empty.safetensors is not a readable checkpoint"),
    case("build-weights-safetensors-truncated", f"build {MICRO} --weights half.safetensors --out x.pt", "half.safetensors is not a readable checkpoint"),
    case("build-features-size-text", f"build {MICRO} --features --input-size big --out x.pt", "--input-size 'big' is not a size"),
    case("build-features-size-zero", f"build {MICRO} --features --input-size 0x640 --out x.pt", "each side must be 1..8192"),
    case("build-features-size-huge", f"build {MICRO} --features --input-size {HUGE}x640 --out x.pt", "each side must be 1..8192"),
    case("build-features-size-negative", f"build {MICRO} --features --input-size -5x640 --out x.pt", "is not a size"),
    case("build-features-size-three", f"build {MICRO} --features --input-size 2x3x4 --out x.pt", "is not a size"),
    case("build-features-size-small", f"build {MICRO} --features --input-size 64x256 --out x.pt", "smaller than the window"),
    case("build-features-stages-text", f"build {MICRO} --features --stages a,b --out x.pt", "--stages 'a,b'"),
    case("build-features-stages-range", f"build {MICRO} --features --stages 0,7 --out x.pt", "the model has stages 0..3"),
    case("build-features-vit", "build vit_tiny_patch16_224 --features --out x.pt", "builds Swin V1/V2 backbones only"),
    case("build-features-img-size", f"build {MICRO} --features --img-size 64 --out x.pt", "a backbone takes --input-size"),
    case("build-stage-norms-no-features", f"build {MICRO} --stage-norms --out x.pt", "add --features"),
    case("export-input-size-classifier", f"export {MICRO} --input-size 256x256 --out e.onnx", "is a classifier"),
    case("export-input-size-text", "export m.pt --input-size wide --out e.onnx", "is not a size"),
    case("export-sizes-classifier", "export m.pt --sizes 150x222,192x176 --out e.onnx", "m.pt is a classifier: --input-size and --sizes are for backbones"),
    case("export-sizes-text", "export m.pt --sizes 150x222,wide --out e.onnx", "--sizes 'wide' is not a size"),
    case("export-sizes-empty", "export m.pt --sizes , --out e.onnx", "--sizes is empty"),
    case("export-sizes-repeated", "export m.pt --sizes 150x222,150x222 --out e.onnx", "lists 150x222 more than once"),
    case("export-sizes-huge", f"export m.pt --sizes 150x{HUGE} --out e.onnx", "each side must be 1..8192"),
    case("export-sizes-and-input-size", "export m.pt --sizes 150x222 --input-size 150x222 --out e.onnx", "exclude each other"),
    case("build-engine-sizes-one-size-graph", "build-engine m.onnx --sizes 64x64,96x96 --out e.plan", "exported for 64x64 only"),
    case("build-engine-sizes-text", "build-engine m.onnx --sizes 0x0 --out e.plan", "each side must be 1..8192"),
    case("verify-max-rel-err-classifier", f"verify {MICRO} m.onnx --max-rel-err 0.1", "--max-rel-err is for backbones"),
    case("build-weights-pickled-object", f"build {MICRO} --weights evil.pt --out x.pt", "refused for safety"),
    case("build-weights-no-tensors", f"build {MICRO} --weights no_tensors.pt --out x.pt", "holds no tensors"),
    case("build-weights-other-num-classes", f"build {MICRO} --weights w10.pth --out x.pt", "mis-shaped 2 e.g. 'head.fc.weight'"),
    case("build-weights-other-embed-dim", f"build {MICRO} --weights wdim.pth --out x.pt", "check the model name"),
    case("build-weights-other-variant", f"build {MICRO} --weights nano.pth --out x.pt", "nano.pth does not fit the model"),
    case("build-weights-num-classes-mismatch", f"build {MICRO} --weights m.pt --num-classes 10 --out x.pt", "pass --adapt"),
    # checkpoints given to export
    case("export-checkpoint-truncated", "export half.pt --out x.onnx", "half.pt is not a readable checkpoint"),
    case("export-checkpoint-is-onnx", "export m.onnx --out x.onnx", "m.onnx is not a readable checkpoint", absent="pickled"),
    case("export-checkpoint-folder", "export imgs --out x.onnx", "checkpoint imgs is a folder"),
    case("export-checkpoint-raw-weights", "export w10.pth --out x.onnx", "does not describe its architecture"),
    case("export-checkpoint-pickled-object", "export evil.pt --out x.onnx", "refused for safety"),
    case("export-checkpoint-no-state-dict", "export no_state.pt --out x.onnx", "holds no state dict"),
    case("export-checkpoint-unknown-config-key", "export unknown_key.pt --out x.onnx", "unknown model config keys ['foo']"),
    case("export-checkpoint-config-str-img-size", "export str_img_size.pt --out x.onnx", "img_size"),
    case("export-checkpoint-config-zero-embed-dim", "export zero_dim.pt --out x.onnx", "embed_dim"),
    # a checkpoint's manifest beside it
    case("export-checkpoint-manifest-not-json", "export m.pt --out x.onnx", "m.pt.json", setup=checkpoint_manifest("not json {")),
    case("export-checkpoint-manifest-of-another-file", "export m.pt --out x.onnx", "m.pt.json describes an ONNX graph, but m.pt is read as a checkpoint", setup=checkpoint_with_onnx_manifest),
    # checkpoints of other models
    case("verify-checkpoint-truncated", f"verify {MICRO} half.pt", "half.pt is not a readable checkpoint"),
    case("verify-checkpoint-other-variant", f"verify {MICRO} nano.pt", "differ in img_size: 32 vs 64"),
    case("verify-checkpoint-other-num-classes", f"verify {MICRO} m10.pt", "differ in num_classes: 10 vs 1000"),
    case("verify-checkpoint-raw-weights", f"verify {MICRO} w10.pth", "does not describe its architecture"),
    case("verify-reference-other-variant", "verify nano.pt m.onnx", "differ in img_size: 64 vs 32"),
    case("benchmark-checkpoint-truncated", f"benchmark half.pt {FAST_BENCH} --out b", "half.pt is not a readable checkpoint"),
    case("benchmark-reference-other-variant", f"benchmark m.onnx --reference nano.pt {FAST_BENCH} --out b", "img_size"),
    case("benchmark-reference-other-num-classes", f"benchmark m.onnx --reference m10.pt {FAST_BENCH} --out b", "differ in num_classes: 1000 vs 10"),

    # ONNX files given to quantize
    case("quantize-onnx-empty", "quantize empty.onnx --out q.onnx", "empty.onnx is not a valid ONNX model"),
    case("quantize-onnx-truncated", "quantize half.onnx --out q.onnx", "half.onnx is not a valid ONNX model"),
    case("quantize-onnx-random-bytes", "quantize rand.onnx --out q.onnx", "rand.onnx is not a valid ONNX model"),
    case("quantize-onnx-is-png", "quantize pic.onnx --out q.onnx", "pic.onnx is not a valid ONNX model"),
    case("quantize-onnx-is-json", "quantize json.onnx --out q.onnx", "json.onnx is not a valid ONNX model"),
    case("quantize-onnx-is-checkpoint", "quantize m.pt --out q.onnx", "m.pt is not a valid ONNX model"),
    case("quantize-onnx-folder", "quantize imgs --out q.onnx", "ONNX file imgs is a folder"),
    case("quantize-onnx-missing", "quantize nope.onnx --out q.onnx", "ONNX file not found: nope.onnx"),
    case("quantize-onnx-no-nodes", "quantize nograph.onnx --out q.onnx", "is an empty ONNX graph"),
    case("quantize-onnx-not-an-image-model", f"quantize foreign.onnx --out q.onnx {CALIB}", "foreign.onnx"),
    # ONNX files given to verify
    case("verify-onnx-truncated", f"verify {MICRO} half.onnx", "half.onnx is not a valid ONNX model"),
    case("verify-onnx-is-png", f"verify {MICRO} pic.onnx", "pic.onnx is not a valid ONNX model"),
    case("verify-onnx-missing", f"verify {MICRO} nope.onnx", "ONNX file not found: nope.onnx"),
    case("verify-onnx-folder", f"verify {MICRO} dir.onnx", "dir.onnx is a folder"),
    case("verify-candidate-png", f"verify {MICRO} pic.png", "unknown artifact type '.png'"),
    case("verify-candidate-is-a-manifest", f"verify {MICRO} m.onnx.json", "unknown artifact type '.json'"),
    case("verify-candidate-folder", f"verify {MICRO} imgs", "imgs: unknown artifact type"),
    case("verify-reference-truncated-onnx", "verify half.onnx m.onnx", "half.onnx is not a valid ONNX model"),
    case("verify-onnx-not-an-image-model", f"verify {MICRO} foreign.onnx --size 2", "foreign.onnx"),
    # ONNX files given to build-engine (all refused before TensorRT is needed)
    case("build-engine-onnx-truncated", "build-engine half.onnx --out e.plan", "half.onnx is not a valid ONNX model"),
    case("build-engine-onnx-is-checkpoint", "build-engine m.pt --out e.plan", "m.pt is not a valid ONNX model"),
    case("build-engine-onnx-missing", "build-engine nope.onnx --out e.plan", "ONNX file not found: nope.onnx"),
    case("build-engine-onnx-no-nodes", "build-engine nograph.onnx --out e.plan", "is an empty ONNX graph"),
    # ONNX files and plans given to benchmark
    case("benchmark-onnx-truncated", f"benchmark half.onnx --reference {MICRO} {FAST_BENCH} --out b", "half.onnx is not a valid ONNX model"),
    case("benchmark-onnx-missing", f"benchmark nope.onnx --reference {MICRO} {FAST_BENCH} --out b", "artifact not found: nope.onnx"),
    case("benchmark-artifact-png", f"benchmark pic.png --reference {MICRO} {FAST_BENCH} --out b", "unknown artifact type '.png'"),
    case("benchmark-artifact-folder", f"benchmark imgs --reference {MICRO} {FAST_BENCH} --out b", "imgs: unknown artifact type"),
    case("benchmark-onnx-not-an-image-model", f"benchmark foreign.onnx --reference {MICRO} {FAST_BENCH} --out b", "foreign.onnx"),
    case("benchmark-plan-empty-no-manifest", f"benchmark empty.plan --reference {MICRO} {FAST_BENCH} --out b", "no manifest beside empty.plan"),
    # plans given to verify
    case("verify-plan-empty-no-manifest", f"verify {MICRO} empty.plan", "no manifest beside empty.plan"),
    case("verify-plan-missing", f"verify {MICRO} nope.plan", "engine not found: nope.plan"),
    case("verify-plan-folder", f"verify {MICRO} dir.plan", "engine dir.plan is a folder"),
    case("verify-plan-manifest-not-json", f"verify {MICRO} junk.plan", "junk.plan.json is not valid JSON", setup=plan_manifest(lambda box: "{not json")),
    case("verify-plan-manifest-of-another-plan", f"verify {MICRO} junk.plan", "rebuild it with swinedge build-engine", setup=plan_manifest(engine_manifest_of_another_plan)),
    case("verify-plan-with-onnx-manifest", f"verify {MICRO} junk.plan", "junk.plan.json describes an ONNX graph, but junk.plan is read as a TensorRT engine", setup=plan_manifest(onnx_manifest_beside_plan)),

    # the manifest beside an ONNX file
    case("quantize-manifest-not-json", "quantize m.onnx --out q.onnx", "m.onnx.json is not valid JSON", setup=onnx_manifest("not json {")),
    case("quantize-manifest-not-utf8", "quantize m.onnx --out q.onnx", "m.onnx.json is not valid JSON", setup=onnx_manifest(b"\xff\xfe\x00garbage")),
    case("quantize-manifest-is-a-folder", "quantize m.onnx --out q.onnx", "m.onnx.json", setup=manifest_folder),
    case("quantize-manifest-a-list", "quantize m.onnx --out q.onnx", "is not a swinedge manifest", setup=onnx_manifest("[1, 2]")),
    case("quantize-manifest-kind-only", f"quantize m.onnx --out q.onnx {CALIB}", "m.onnx.json", setup=onnx_manifest('{"kind": "onnx"}')),
    case("quantize-manifest-short-input-shape", f"quantize m.onnx --out q.onnx {CALIB}", "m.onnx.json",
         setup=onnx_manifest('{"kind": "onnx", "input": {"shape": [1]}}')),
    case("quantize-manifest-input-not-a-mapping", f"quantize m.onnx --out q.onnx {CALIB}", "m.onnx.json",
         setup=onnx_manifest('{"kind": "onnx", "input": "x"}')),
    case("quantize-manifest-preprocess-not-a-mapping", f"quantize m.onnx --out q.onnx {CALIB}", "m.onnx.json",
         setup=onnx_manifest(lambda m: {**m, "preprocess": "x"})),
    case("quantize-manifest-of-a-checkpoint", "quantize m.onnx --out q.onnx", "m.onnx.json describes a checkpoint, but m.onnx is read as an ONNX graph", setup=onnx_with_checkpoint_manifest),
    case("quantize-manifest-says-int8", "quantize m.onnx --out q.onnx", "is already int8", setup=onnx_manifest(lambda m: {**m, "precision": "int8"})),
    case("quantize-manifest-says-plugin", "quantize m.onnx --out q.onnx", "has plugin attention nodes", setup=onnx_manifest(lambda m: {**m, "attention": "plugin"})),
    case("verify-manifest-not-json", f"verify {MICRO} m.onnx", "m.onnx.json is not valid JSON", setup=onnx_manifest("not json {")),
    case("verify-manifest-a-list", f"verify {MICRO} m.onnx", "is not a swinedge manifest", setup=onnx_manifest("[]")),
    case("verify-manifest-other-hash", f"verify {MICRO} m.onnx", "swinedge export", setup=onnx_manifest(lambda m: {**m, "sha256": "0" * 64})),
    case("verify-manifest-of-a-checkpoint", f"verify {MICRO} m.onnx", "m.onnx.json describes a checkpoint", setup=onnx_with_checkpoint_manifest),

    case("verify-manifest-short-input-shape", f"verify {MICRO} m.onnx --size 2", "m.onnx.json",
         setup=onnx_manifest('{"kind": "onnx", "input": {"shape": [1]}}')),
    case("verify-manifest-input-not-a-mapping", f"verify {MICRO} m.onnx --size 2", "m.onnx.json",
         setup=onnx_manifest('{"kind": "onnx", "input": "x"}')),
    case("build-engine-manifest-not-json", "build-engine m.onnx --out e.plan", "m.onnx.json is not valid JSON", setup=onnx_manifest("not json {")),
    case("benchmark-manifest-not-json", f"benchmark m.onnx --reference {MICRO} {FAST_BENCH} --out b", "m.onnx.json is not valid JSON", setup=onnx_manifest("not json {")),
    case("benchmark-manifest-kind-only-no-reference", f"benchmark m.onnx {FAST_BENCH} --out b", "pass --reference", setup=onnx_manifest('{"kind": "onnx"}')),
]

# 2. Image folders and manifests -------------------------------------------------------------------------------
IMAGES = [
    case("quantize-calib-all-corrupt", "quantize m.onnx --out q.onnx --calib bad", "lists 5"),

    case("quantize-calib-empty-folder", "quantize m.onnx --out q.onnx --calib empty", "no readable images found in empty"),
    case("quantize-calib-non-images-only", "quantize m.onnx --out q.onnx --calib txtonly", "no readable images found in txtonly"),
    case("quantize-calib-manifest-missing-files", "quantize m.onnx --out q.onnx --calib missing.txt", "lists 2"),

    case("quantize-calib-manifest-str-labels", "quantize m.onnx --out q.onnx --calib strlab.txt", "labels must be integer class indices"),
    case("quantize-calib-manifest-mixed-labels", "quantize m.onnx --out q.onnx --calib mixed.txt", "either every line has a label or none does"),
    case("quantize-calib-manifest-json-object", "quantize m.onnx --out q.onnx --calib obj.json", "expected a JSON list"),
    case("quantize-calib-manifest-json-no-path", "quantize m.onnx --out q.onnx --calib nopath.json", "entries need a 'path'"),
    case("quantize-calib-manifest-broken-json", "quantize m.onnx --out q.onnx --calib broken.json", "cannot read manifest broken.json"),
    case("quantize-calib-manifest-binary", "quantize m.onnx --out q.onnx --calib binary.txt", "cannot read manifest binary.txt"),
    case("quantize-calib-missing", "quantize m.onnx --out q.onnx --calib nope", "--calib nope: not found"),
    case("quantize-calib-too-few-images", "quantize m.onnx --out q.onnx --calib imgs --calib-size 5", "asked for 5 images but"),
    case("quantize-calib-one-image-file", "quantize m.onnx --out q.onnx --calib pic.png", "pic.png"),
    case("quantize-calib-the-model", "quantize m.onnx --out q.onnx --calib m.onnx", "cannot read manifest m.onnx"),
    case("quantize-calib-empty-name", "quantize m.onnx --out q.onnx --calib ''", "--calib"),
    case("quantize-calib-unknown-builtin", "quantize m.onnx --out q.onnx --calib digits-test", "--calib digits-test: not found"),
    case("verify-data-all-corrupt", f"verify {MICRO} m.onnx --data bad", "no readable images found in bad"),
    case("verify-data-manifest-missing-files", f"verify {MICRO} m.onnx --data missing.txt", "no readable images"),
    case("verify-data-manifest-float-labels", f"verify {MICRO} m.onnx --data labels.txt", "labels must be integer class indices",
         setup=labels("imgs/i0.png,1.5\nimgs/i1.png,2\n")),
    case("verify-data-missing", f"verify {MICRO} m.onnx --data nope", "--data nope: not found"),
    case("verify-data-empty-name", f"verify {MICRO} m.onnx --data '' --size 2", "--data"),
    case("benchmark-data-all-corrupt", f"benchmark {MICRO} --data bad --batch 1 --iters 1 --out b", "no readable images found in bad"),
    case("benchmark-data-empty-name", f"benchmark {MICRO} --data '' --batch 1 --iters 1 --out b", "--data"),
    case("run-calib-missing", f"run {MICRO} --calib nope --out r", "--calib nope: not found"),
    case("run-calib-missing+late-failure", f"run {MICRO} --calib nope --weights w10.pth --out r", "--calib nope: not found"),
    case("run-data-missing+late-failure", f"run {MICRO} --data nope --weights w10.pth --out r", "--data nope: not found"),
]


# 3. Absurd numbers ---------------------------------------------------------------------------------------------
# Every numeric option: negative, zero, 1e12, nan/inf, and a non-number. Non-numbers for an int
# or float option all go through typer's parser (one bug, CLICK): every value for --opset,
# 'abc' for one option of each other command.
BUILD, EXPORT, QUANT = f"build {MICRO} --out x.pt", f"export {MICRO} --out x.onnx", "quantize m.onnx --out q.onnx"
VERIFY, ENGINE, BENCH, RUN = f"verify {MICRO} m.onnx", "build-engine m.onnx --out e.plan", f"benchmark {MICRO} --out b", f"run {MICRO} --out r"
NUMBERS = [
    # build
    case("build--num-classes--1", f"{BUILD} --num-classes -1", "num_classes must be >= 0, got -1"),
    case("build--num-classes-1e12", f"{BUILD} --num-classes {HUGE}", "classes"),
    case("build--num-classes-abc", f"{BUILD} --num-classes abc", "--num-classes"),
    case("build--img-size--1", f"{BUILD} --img-size -1", "unsupported img_size -1"),
    case("build--img-size-0", f"{BUILD} --img-size 0", "unsupported img_size 0"),
    case("build--img-size-66", f"{BUILD} --img-size 66", "use a multiple of 4"),
    case("build--img-size-1e12", f"{BUILD} --img-size {HUGE}", "img_size 1000000000000 is larger than 4096"),
    case("build--seed-1e24", f"{BUILD} --seed 1000000000000000000000000", "--seed"),
    # export
    case("export--opset--1", f"{EXPORT} --opset -1", "--opset -1 is outside the supported range 14..21"),
    case("export--opset-0", f"{EXPORT} --opset 0", "--opset 0 is outside the supported range 14..21"),
    case("export--opset-13", f"{EXPORT} --opset 13", "--opset 13 is outside the supported range 14..21"),
    case("export--opset-1e12", f"{EXPORT} --opset {HUGE}", "--opset 1000000000000 is outside the supported range"),
    *[case(f"export--opset-{name}", f"{EXPORT} --opset {value}", "--opset")
      for name, value in (("nan", "nan"), ("inf", "inf"), ("-inf", "-inf"), ("abc", "abc"), ("empty", "''"), ("1e12-float", "1e12"))],
    case("export--batch-0", f"{EXPORT} --batch 0", "--batch must be 'dynamic' or an integer 1..4096, got 0"),
    case("export--batch--1", f"{EXPORT} --batch -1", "--batch must be 'dynamic' or an integer 1..4096"),
    case("export--batch-1e12", f"{EXPORT} --batch {HUGE}", "--batch"),
    case("export--batch-1e12-float", f"{EXPORT} --batch 1e12", "got '1e12'"),
    case("export--batch-empty", f"{EXPORT} --batch ''", "--batch is empty"),
    # quantize
    case("quantize--calib-size--1", f"{QUANT} --calib-size -1", "--calib-size must be 1..4096, got -1"),
    case("quantize--calib-size-0", f"{QUANT} --calib-size 0", "--calib-size must be 1..4096, got 0"),
    case("quantize--calib-size-1e12", f"{QUANT} --calib-size {HUGE}", "--calib-size must be 1..4096, got 1000000000000"),
    case("quantize--calib-size-abc", f"{QUANT} --calib-size abc", "--calib-size"),
    case("quantize--resize--1", f"{QUANT} --resize -1", "--resize must be 64..256 (the crop is 64px), got -1"),
    case("quantize--resize-0", f"{QUANT} --resize 0", "--resize must be 64..256 (the crop is 64px), got 0"),
    case("quantize--resize-63", f"{QUANT} --resize 63", "--resize must be 64..256 (the crop is 64px), got 63"),
    case("quantize--resize-1e12", f"{QUANT} --resize {HUGE}", "--resize"),
    case("quantize--mean-wrong-length", f"{QUANT} --mean 1,2", "--mean needs 3 comma-separated values, got 2"),
    case("quantize--mean-letters", f"{QUANT} --mean a,b,c", "--mean takes comma-separated numbers"),
    case("quantize--mean-empty", f"{QUANT} --mean ''", "--mean is empty"),
    case("quantize--mean-nan+late-failure", f"{QUANT} --calib nope --mean nan,nan,nan", "--mean"),
    case("quantize--std-zero", f"{QUANT} --std 0,0,0", "--std values must be > 0"),
    case("quantize--std-negative", f"{QUANT} --std -1,1,1", "--std values must be > 0"),
    case("quantize--std-empty-item", f"{QUANT} --std 1,,2", "--std takes comma-separated numbers"),
    case("quantize--std-nan+late-failure", f"{QUANT} --calib nope --std nan,1,1", "--std"),
    case("quantize--std-inf+late-failure", f"{QUANT} --calib nope --std inf,1,1", "--std"),
    # verify
    case("verify--size--1", f"{VERIFY} --size -1", "--size"),
    case("verify--size-0", f"{VERIFY} --size 0", "--size"),
    case("verify--size-1e12", f"{VERIFY} --size {HUGE}", "--size", limit_s=15, max_growth_gib=1),
    case("verify--batch--1", f"{VERIFY} --batch -1", "--batch must be"),
    case("verify--batch-0", f"{VERIFY} --batch 0", "--batch must be"),
    case("verify--batch-abc", f"{VERIFY} --batch abc", "--batch"),
    case("verify--max-top1-drop-nan", f"{VERIFY} --size 2 --max-top1-drop nan", "--max-top1-drop"),
    case("verify--max-top1-drop--inf", f"{VERIFY} --size 2 --max-top1-drop -inf", "--max-top1-drop"),
    case("verify--min-cosine-nan", f"{VERIFY} --size 2 --min-cosine nan", "--min-cosine"),
    case("verify--min-cosine-inf", f"{VERIFY} --size 2 --min-cosine inf", "--min-cosine"),
    case("verify--min-cosine-2", f"{VERIFY} --size 2 --min-cosine 2", "--min-cosine"),
    case("verify--min-cosine-abc", f"{VERIFY} --min-cosine abc", "--min-cosine"),
    case("verify--resize-1e12", f"{VERIFY} --size 2 --resize {HUGE}", "--resize"),
    case("verify--std-zero", f"{VERIFY} --std 0,0,0", "--std values must be > 0"),
    case("verify--std-nan", f"{VERIFY} --size 2 --std nan,1,1", "--std"),
    # build-engine: all refused before TensorRT is looked for (no GPU needed)
    case("build-engine--min-batch-0", f"{ENGINE} --min-batch 0", "batch sizes must be >= 1"),
    case("build-engine--opt-batch-0", f"{ENGINE} --opt-batch 0", "batch sizes must be >= 1"),
    case("build-engine--max-batch-0", f"{ENGINE} --max-batch 0", "batch sizes must be >= 1"),
    case("build-engine--max-batch-1e12", f"{ENGINE} --max-batch {HUGE}", "--max-batch"),
    case("build-engine--max-batch-abc", f"{ENGINE} --max-batch abc", "--max-batch"),
    case("build-engine-min-above-max", f"{ENGINE} --min-batch 8 --max-batch 4", "min <= opt <= max, got 8 / 4 / 4"),
    case("build-engine--opt-level--1", f"{ENGINE} --opt-level -1", "--opt-level must be 0..5, got -1"),
    case("build-engine--opt-level-6", f"{ENGINE} --opt-level 6", "--opt-level must be 0..5, got 6"),
    case("build-engine--opt-level-1e12", f"{ENGINE} --opt-level {HUGE}", "--opt-level must be 0..5, got 1000000000000"),
    case("build-engine--workspace--1", f"{ENGINE} --workspace -1", "--workspace must be > 0 and <= 1024.0 GiB, got -1.0"),
    case("build-engine--workspace-0", f"{ENGINE} --workspace 0", "--workspace must be > 0 and <= 1024.0 GiB, got 0.0"),
    case("build-engine--workspace--inf", f"{ENGINE} --workspace -inf", "--workspace must be > 0 and <= 1024.0 GiB, got -inf"),
    case("build-engine--workspace-nan", f"{ENGINE} --workspace nan", "--workspace"),
    case("build-engine--workspace-inf", f"{ENGINE} --workspace inf", "--workspace"),
    case("build-engine--workspace-1e12", f"{ENGINE} --workspace 1e12", "--workspace"),
    case("build-engine--workspace-abc", f"{ENGINE} --workspace abc", "--workspace"),
    # benchmark
    case("benchmark--batch-0", f"{BENCH} --batch 0", "--batch takes comma-separated integers 1..4096"),
    case("benchmark--batch--1", f"{BENCH} --batch -1", "--batch takes comma-separated integers 1..4096"),
    case("benchmark--batch-letters", f"{BENCH} --batch a,b", "got 'a,b'"),
    case("benchmark--batch-empty", f"{BENCH} --batch ''", "--batch is empty"),
    case("benchmark--batch-zero-in-list", f"{BENCH} --batch 1,0,8", "got '1,0,8'"),
    case("benchmark--batch-empty-item", f"{BENCH} --batch 1,,2 --data imgs --iters 1 --warmup 0", "--batch"),
    case("benchmark--batch-1e12", f"{BENCH} --batch {HUGE} --data imgs --iters 1 --warmup 0", "--batch"),
    case("benchmark--iters--1", f"{BENCH} --iters -1", "--iters must be"),
    case("benchmark--iters-0", f"{BENCH} --iters 0", "--iters must be"),
    case("benchmark--iters-1e12+late-failure", f"benchmark nope.onnx --reference {MICRO} --iters {HUGE} --out b", "--iters"),
    case("benchmark--iters-abc", f"{BENCH} --iters abc", "--iters"),
    case("benchmark--warmup--1", f"{BENCH} --warmup -1", "--warmup"),
    case("benchmark--warmup-1e12+late-failure", f"benchmark nope.onnx --reference {MICRO} --warmup {HUGE} --out b", "--warmup"),
    # run: a bad flag must fail before anything is built (--weights w10.pth fails the first stage, after r/ is made)
    case("run--calib-size--1", f"{RUN} --calib-size -1", "--calib-size must be 1..4096, got -1"),
    case("run--calib-size-0", f"{RUN} --calib-size 0", "--calib-size must be 1..4096, got 0"),
    case("run--calib-size-1e12", f"{RUN} --calib-size {HUGE}", "--calib-size must be 1..4096, got 1000000000000"),
    case("run--batch-0", f"{RUN} --batch 0", "--batch takes comma-separated integers 1..4096"),
    case("run--batch-letters", f"{RUN} --batch a,b", "got 'a,b'"),
    case("run--batch-empty+late-failure", f"{RUN} --batch '' --weights w10.pth", "--batch"),
    case("run--batch-empty-item+late-failure", f"{RUN} --batch 1,,2 --weights w10.pth", "--batch"),
    case("run--batch-1e12+late-failure", f"{RUN} --batch {HUGE} --weights w10.pth", "--batch"),
    case("run--iters-0+late-failure", f"{RUN} --iters 0 --weights w10.pth", "--iters"),
    case("run--iters--1+late-failure", f"{RUN} --iters -1 --weights w10.pth", "--iters"),
    case("run--iters-1e12+late-failure", f"{RUN} --iters {HUGE} --weights w10.pth", "--iters"),
    case("run--iters-abc", f"{RUN} --iters abc", "--iters"),
]

# 4. Names: ops, precisions, methods, attention kinds ---------------------------------------------------------
NAMES = [
    case("quantize-keep-high-precision-unknown-op", f"quantize m.onnx --out q.onnx {CALIB} --keep-high-precision Nope", "'Nope' is not an op type of m.onnx"),
    case("quantize-keep-high-precision-wrong-case", f"quantize m.onnx --out q.onnx {CALIB} --keep-high-precision layernorm", "'layernorm' is not an op type"),
    case("quantize-keep-high-precision-one-unknown", f"quantize m.onnx --out q.onnx {CALIB} --keep-high-precision Softmax,Nope", "'Nope' is not an op type"),
    case("quantize-precision-unknown", "quantize m.onnx --out q.onnx --precision int4", "--precision must be one of int8, fp8, fp16, got 'int4'"),
    case("quantize-precision-empty", "quantize m.onnx --out q.onnx --precision ''", "--precision is empty"),
    case("quantize-precision-upper-case", "quantize m.onnx --out q.onnx --precision INT8", "got 'INT8'"),
    case("quantize-method-unknown", "quantize m.onnx --out q.onnx --method minmax", "--method must be one of entropy, max, got 'minmax'"),
    case("quantize-high-precision-dtype-unknown", "quantize m.onnx --out q.onnx --high-precision-dtype bf16", "got 'bf16'"),
    case("quantize-interpolation-unknown", "quantize m.onnx --out q.onnx --interpolation lanczos", "--interpolation must be one of bicubic, bilinear, nearest"),
    case("verify-interpolation-empty", f"verify {MICRO} m.onnx --interpolation ''", "--interpolation is empty"),
    case("export-attention-unknown", f"export {MICRO} --out x.onnx --attention flash", "--attention must be one of native, plugin, got 'flash'"),
    case("build-engine-plugin-unknown", "build-engine m.onnx --out e.plan --plugin maybe", "--plugin must be one of auto, on, off, got 'maybe'"),
    case("benchmark-torch-precision-unknown", f"benchmark {MICRO} {FAST_BENCH} --torch-precision int8 --out b", "--torch-precision takes fp32 and/or fp16, got 'int8'"),
    case("benchmark-torch-precision-one-unknown", f"benchmark {MICRO} {FAST_BENCH} --torch-precision fp32,bf16 --out b", "got 'bf16'"),
    case("benchmark-torch-precision-empty", f"benchmark {MICRO} {FAST_BENCH} --torch-precision '' --out b", "--torch-precision"),
    case("benchmark-torch-precision-commas-only", f"benchmark {MICRO} {FAST_BENCH} --torch-precision ,, --out b", "--torch-precision"),
    case("benchmark-torch-attention-unknown", f"benchmark {MICRO} {FAST_BENCH} --torch-attention flash --out b", "--torch-attention takes reference and/or fused, got 'flash'"),
    case("benchmark-torch-attention-upper-case", f"benchmark {MICRO} {FAST_BENCH} --torch-attention REFERENCE --out b", "got 'REFERENCE'"),
    case("benchmark-torch-attention-empty", f"benchmark {MICRO} {FAST_BENCH} --torch-attention '' --out b", "--torch-attention"),
]

# 5. Outputs: equal to or inside inputs, under a file, wrong suffix ------------------------------------------------
OUTPUTS = [
    case("export-out-wrong-suffix", f"export {MICRO} --out x.pt", "--out x.pt: use a file name ending in .onnx"),
    case("export-out-is-the-checkpoint", "export m.pt --out m.pt", "use a file name ending in .onnx"),
    case("export-out-is-its-manifest", "export m.pt --out m.pt.json", "use a file name ending in .onnx"),
    case("export-out-is-a-folder", f"export {MICRO} --out dir.onnx", "output path dir.onnx is a folder"),
    case("export-out-under-a-file", f"export {MICRO} --out pic.png/x.onnx", "cannot create output folder pic.png"),
    case("build-out-wrong-suffix", f"build {MICRO} --out x.onnx", "--out x.onnx: use a .pt, .pth or .safetensors file name"),
    case("build-out-no-suffix", f"build {MICRO} --out x", "--out x: use a .pt, .pth or .safetensors file name"),
    case("build-out-is-the-weights", f"build {MICRO} --weights wok.pth --out wok.pth", "--out wok.pth is the input wok.pth"),
    case("build-out-is-the-weights-dotted", f"build {MICRO} --weights wok.pth --out ./wok.pth", "is the input wok.pth"),
    case("build-out-symlink-to-the-weights", f"build {MICRO} --weights wok.pth --out link.pth", "is the input wok.pth", setup=link("link.pth", "wok.pth")),
    case("build-out-hardlink-to-the-weights", f"build {MICRO} --weights wok.pth --out hard.pth", "is the input wok.pth", setup=link("hard.pth", "wok.pth", hard=True)),
    case("build-out-is-a-folder", f"build {MICRO} --out dir.pt", "output path dir.pt is a folder"),
    case("build-out-under-a-file", f"build {MICRO} --out pic.png/x.pt", "cannot create output folder pic.png"),
    case("quantize-out-is-the-input", "quantize m.onnx --out m.onnx", "--out m.onnx is the input m.onnx"),
    case("quantize-out-is-the-input-dotted", "quantize m.onnx --out ./m.onnx", "is the input m.onnx"),
    case("quantize-out-symlink-to-the-input", "quantize m.onnx --out link.onnx", "is the input m.onnx", setup=link("link.onnx", "m.onnx")),
    case("quantize-out-hardlink-to-the-input", "quantize m.onnx --out hard.onnx", "is the input m.onnx", setup=link("hard.onnx", "m.onnx", hard=True)),
    case("quantize-input-symlink-to-the-out", "quantize link.onnx --out m.onnx", "is the input link.onnx", setup=link("link.onnx", "m.onnx")),
    case("quantize-out-inside-calib", "quantize m.onnx --calib imgs --out imgs/q.onnx", "is inside the input folder imgs"),
    case("quantize-out-inside-calib-dotdot", "quantize m.onnx --calib imgs --out imgs/../imgs/q.onnx", "is inside the input folder imgs"),
    case("quantize-out-wrong-suffix", "quantize m.onnx --out q.pt", "--out q.pt: use a file name ending in .onnx"),
    case("quantize-out-is-a-folder", "quantize m.onnx --out dir.onnx", "output path dir.onnx is a folder"),
    case("quantize-out-under-a-file", "quantize m.onnx --out pic.png/q.onnx", "cannot create output folder pic.png"),
    case("build-engine-out-is-the-input", "build-engine m.onnx --out m.onnx", "use a file name ending in .plan or .engine"),
    case("build-engine-out-wrong-suffix", "build-engine m.onnx --out e.onnx", "--out e.onnx: use a file name ending in .plan or .engine"),
    case("build-engine-timing-cache-is-the-input", "build-engine m.onnx --out e.plan --timing-cache m.onnx", "--timing-cache m.onnx is the input m.onnx"),
    case("build-engine-timing-cache-is-a-folder", "build-engine m.onnx --out e.plan --timing-cache imgs", "--timing-cache"),
    case("build-engine-timing-cache-is-the-out", "build-engine m.onnx --out e.plan --timing-cache e.plan", "--timing-cache"),
    case("build-engine-out-under-a-file", "build-engine m.onnx --out pic.png/e.plan", "pic.png"),
    case("build-engine-out-is-a-folder", "build-engine m.onnx --out dir.plan", "dir.plan is a folder"),
    case("benchmark-out-is-a-file", f"benchmark {MICRO} --out m.onnx", "--out m.onnx is a file"),
    case("benchmark-out-is-the-artifact", "benchmark m.pt --out m.pt", "--out m.pt is a file"),
    case("benchmark-out-is-the-data", f"benchmark {MICRO} --data imgs --out imgs", "--out imgs is the input imgs"),
    case("benchmark-out-inside-the-data", f"benchmark {MICRO} --data imgs --out imgs/sub", "is inside the input folder imgs"),
    case("benchmark-out-under-a-file", f"benchmark {MICRO} --out pic.png/b", "pic.png", absent="permissions"),
    case("benchmark-out-empty", f"benchmark {MICRO} {FAST_BENCH} --out ''", "--out"),
    case("run-out-is-a-file", f"run {MICRO} --out m.onnx", "--out m.onnx is a file"),
    case("run-out-is-the-calib", f"run {MICRO} --calib imgs --out imgs", "--out imgs"),
    case("run-out-inside-the-data", f"run {MICRO} --data imgs --out imgs/r", "is inside the input folder imgs"),
    case("run-out-is-the-weights", f"run {MICRO} --weights wok.pth --out wok.pth", "--out wok.pth is a file"),
    case("run-out-under-a-file", f"run {MICRO} --out pic.png/r", "pic.png", absent="permissions"),
]

# 6. Model names ---------------------------------------------------------------------------------------------------
MODELS = [
    case("build-model-unknown", "build swin_nope --out x.pt", "unknown model 'swin_nope'"),
    case("build-model-prefix", "build swin_tiny --out x.pt", "choose one of swin_tiny_patch4_window7_224"),
    case("build-model-upper-case", "build SWIN_MICRO_PATCH4_WINDOW4_64 --out x.pt", "unknown model 'SWIN_MICRO_PATCH4_WINDOW4_64'"),
    case("build-model-empty", "build '' --out x.pt", "an argument is empty"),
    case("build-model-is-a-checkpoint", "build m.pt --out x.pt", "unknown model 'm.pt'"),
    case("export-model-unknown", "export swin_nope --out x.onnx", "unknown model 'swin_nope'"),
    case("export-model-prefix", "export swin_nano --out x.onnx", "choose one of swin_nano_patch2_window4_32"),
    case("export-model-empty", "export '' --out x.onnx", "an argument is empty", absent="inside the input folder"),
    case("export-model-with-slash", f"export {MICRO}/ --out x.onnx", f"{MICRO}"),
    case("export-model-with-suffix", f"export {MICRO}.pt --out x.onnx", f"checkpoint not found: {MICRO}.pt"),
    case("verify-reference-unknown", "verify swin_nope m.onnx", "unknown model 'swin_nope'"),
    case("verify-candidate-unknown", f"verify {MICRO} swin_nope", "unknown model 'swin_nope'"),
    case("verify-reference-empty", "verify '' m.onnx", "an argument is empty", absent="error: .:"),

    case("benchmark-model-unknown", f"benchmark swin_nope {FAST_BENCH} --out b", "unknown model 'swin_nope'"),
    case("benchmark-reference-unknown", f"benchmark m.onnx --reference swin_nope {FAST_BENCH} --out b", "unknown model 'swin_nope'"),
    case("benchmark-model-empty", f"benchmark '' {FAST_BENCH} --out b", "an argument is empty", absent="inside the input folder"),

    case("run-model-unknown", "run swin_nope --out r", "unknown model 'swin_nope'"),
    case("run-model-empty", "run '' --out r", "an argument is empty"),
    case("run-weights-missing", f"run {MICRO} --weights nope.pth --out r", "checkpoint not found: nope.pth"),
    case("run-weights-without-model", "run --weights wok.pth --out r", "--weights needs a MODEL name"),
]

# Command-line shape errors (reported by typer/click, before swinedge runs) ---------------------------------
SHAPE = [
    case("verify-missing-candidate", f"verify {MICRO}", "candidate"),
    case("benchmark-no-artifacts", "benchmark --out b", "artifacts"),
    case("build-missing-out", f"build {MICRO}", "--out"),
    case("quantize-unknown-option", "quantize m.onnx --out q.onnx --calibration imgs", "--calibration"),
    case("unknown-command", "convert m.onnx", "convert"),
]

ALL = [*BROKEN_FILES, *IMAGES, *NUMBERS, *NAMES, *OUTPUTS, *MODELS, *SHAPE]


def test_case_ids_are_unique() -> None:
    ids = [p.id for p in ALL]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})


def run_case(c: Case, made: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: Callable | None = None) -> None:
    """Run one case in its own sandbox and assert what every case asserts (exit 2, one
    ``error:`` line with the fragment, inputs unchanged, nothing left in the work folder or
    the temp dir); ``extra(result)`` may name more problems."""
    box = Sandbox(tmp_path, made, monkeypatch)
    box.need_named_in(c.args)
    if c.setup is not None:
        c.setup(box)
    before = box.snapshot()
    try:
        result = box.invoke(c)
        problems = problems_of(result, c.fragment, c.absent)
        if not problems and extra is not None:
            problems += extra(result)
    except Hung as e:
        problems = [f"stopped by the test: {e}"]
    after = box.snapshot()
    work_before, tmp_before = before
    work_after, tmp_after = after
    changed = sorted(k for k in work_before if work_after.get(k) != work_before[k])
    new_work = sorted(k for k in work_after if k not in work_before)
    new_tmp = sorted(k for k in tmp_after if k not in tmp_before)
    if changed:
        problems.append(f"inputs changed or removed: {changed}")
    if new_work:
        problems.append(f"left in the work folder: {new_work}")
    if new_tmp:
        problems.append(f"left in the temp dir: {new_tmp}")
    assert not problems, f"swinedge {shlex.join(c.args)}\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("c", ALL)
def test_bad_input_is_a_one_line_error_that_touches_nothing(c: Case, made: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_case(c, made, tmp_path, monkeypatch)

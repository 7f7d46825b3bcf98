"""Faults of the machine, not of the input: every OS error is a user error, nothing hangs,
nothing is left behind.

In the spirit of ``test_fuzz_cli.py`` and ``test_user_files.py``: each case runs the real
command (in its own process where the fault needs one: a full stdout, SIGKILL, SIGHUP;
in-process through ``CliRunner`` where the fault is simulated by monkeypatching) in a
work folder with a private TMPDIR and asserts exit code 2, exactly one stderr line
starting with ``error:`` that names the problem, inputs byte-identical (sha256) and
nothing new left in the work folder or TMPDIR.

Faults: a full disk (ENOSPC) while ``build`` and ``serve-repo`` write, permission denied
and a read-only file system, stdout on a full device, an output name that is not UTF-8,
a missing ``--weights`` (refused before the model is built), a cache path that is a file
(refused before training), no HOME and no passwd entry (a temp cache, one warning),
outputs created with the user's umask, SIGHUP handled like SIGTERM, and SIGKILL's
leftovers (partial outputs, temp folders, both named by the owning process id) listed by
``doctor`` and removed by the next command.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from test_user_files import MICRO, SWINEDGE, Sandbox, _interrupt_leaves_nothing, _sha, _tree, _wait_for, one_line_error

from swinedge.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def micro_onnx(tmp_path_factory) -> Path:
    """The micro model exported once (graph + manifest)."""
    d = tmp_path_factory.mktemp("faults-export")
    proc = subprocess.run([*SWINEDGE, "export", MICRO, "--out", "m.onnx"], cwd=d, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return d


@pytest.fixture
def box(tmp_path: Path, micro_onnx: Path) -> Sandbox:
    sb = Sandbox(tmp_path)
    sb.env["SWINEDGE_CACHE"] = str(tmp_path / "cache")
    for name in ("m.onnx", "m.onnx.json"):
        shutil.copyfile(micro_onnx / name, sb.work / name)
    return sb


@pytest.fixture
def here(tmp_path: Path, micro_onnx: Path, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    """An in-process sandbox: the current folder is the work folder, TMPDIR private."""
    import tempfile

    sb = Sandbox(tmp_path)
    for name in ("m.onnx", "m.onnx.json"):
        shutil.copyfile(micro_onnx / name, sb.work / name)
    monkeypatch.chdir(sb.work)
    monkeypatch.setenv("TMPDIR", str(sb.tmp))
    monkeypatch.setenv("SWINEDGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(tempfile, "tempdir", str(sb.tmp))
    return sb


def in_process_error(result) -> str:
    """CliRunner's result of a user mistake: exit 2, one ``error:`` line, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    return lines[0]


# -- a full disk, permissions, a read-only file system ----------------------------------------------
def test_disk_full_during_build_is_one_line_and_leaves_nothing(here: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch's zip writer reports a full disk as a RuntimeError with no errno ("unexpected
    pos ..."): seen with a full file system, it is the one-line ENOSPC error."""
    import torch

    import swinedge.io

    def full_save(obj, f, *a, **k):
        Path(f).write_bytes(b"PK\x03\x04" + b"\0" * 4096)  # half a checkpoint, then the device is full
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 2026496 vs 2026384")

    class Full:
        f_bavail = f_favail = 0
        f_frsize = 4096
        f_files = 1000

    monkeypatch.setattr(torch, "save", full_save)
    monkeypatch.setattr(swinedge.io.os, "statvfs", lambda _p: Full())
    before = here.snapshot()
    message = in_process_error(runner.invoke(app, ["build", MICRO, "--out", "out/x.pt"]))
    assert "cannot write out/x.pt" in message and "no space left" in message
    assert here.snapshot() == before


@pytest.mark.parametrize(
    "code,fragment",
    [(errno.ENOSPC, "no space left"), (errno.EACCES, "permission denied"), (errno.EROFS, "read-only file system"), (errno.EDQUOT, "quota")],
    ids=["enospc", "eacces", "erofs", "edquot"],
)
def test_os_error_while_serve_repo_copies_is_one_line_and_leaves_nothing(
    here: Sandbox, monkeypatch: pytest.MonkeyPatch, code: int, fragment: str
) -> None:
    import swinedge.serving.repository as repository

    real = shutil.copyfile

    def failing_copy(src, dst, *a, **k):
        real(src, dst)  # the copy got as far as the whole file; the close reports the failure
        raise OSError(code, os.strerror(code), str(src), None, str(dst))

    monkeypatch.setattr(repository.shutil, "copyfile", failing_copy)
    before = here.snapshot()
    inputs = {n: _sha(here.work / n) for n in ("m.onnx", "m.onnx.json")}
    message = in_process_error(runner.invoke(app, ["serve-repo", "m.onnx", "--out", "repo"]))
    assert fragment in message and "repo" in message
    assert here.snapshot() == before  # no repository, no .repo.*.partial folder
    assert {n: _sha(here.work / n) for n in inputs} == inputs


def test_any_os_error_reaching_a_command_is_one_line(here: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """The backstop: an OSError from anywhere in a command (here: listing the variants)."""
    import swinedge.models

    def denied():
        raise PermissionError(errno.EACCES, "Permission denied", "/etc/swinedge/variants")

    monkeypatch.setattr(swinedge.models, "list_models", denied)
    message = in_process_error(runner.invoke(app, ["models"]))
    assert message == "error: /etc/swinedge/variants: permission denied: check the folder's permissions or write elsewhere"


# -- stdout on a full device, names that are not UTF-8 ---------------------------------------------------
@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("args", [["models"], ["models", "--json"]], ids=["table", "json"])
def test_stdout_on_a_full_device_is_one_line(box: Sandbox, args: list[str]) -> None:
    before = box.snapshot()
    with open("/dev/full", "w") as full:
        proc = subprocess.run([*SWINEDGE, *args], cwd=box.work, env=box.env, stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert proc.returncode == 2
    message = one_line_error(subprocess.CompletedProcess(proc.args, proc.returncode, "", proc.stderr))
    assert "cannot write to standard output" in message and "no space left" in message
    assert box.snapshot() == before


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS file systems refuse non-UTF-8 names themselves")
@pytest.mark.parametrize("command", [["build", MICRO], ["export", MICRO], ["quantize", "m.onnx", "--calib-size", "2"]])
def test_an_output_name_that_is_not_utf8_is_refused_before_any_work(box: Sandbox, command: list[str]) -> None:
    before = box.snapshot()
    suffix = b".pt" if command[0] == "build" else b".onnx"
    argv = [os.fsencode(a) for a in [*SWINEDGE, *command]] + [b"--out", b"caf\xe9" + suffix]
    proc = subprocess.run(argv, cwd=box.work, env=box.env, capture_output=True, timeout=120)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode("utf-8", "replace"))
    assert proc.returncode == 2
    message = one_line_error(result)
    assert "--out 'caf\\xe9" in message and "not a UTF-8 name" in message
    assert box.snapshot() == before


# -- checks that come first --------------------------------------------------------------------------
def test_build_with_missing_weights_fails_before_the_model_is_built(here: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    import swinedge.models

    def no_build(*a, **k):
        raise AssertionError("the model was built before --weights was checked")

    monkeypatch.setattr(swinedge.models, "create_model", no_build)
    before = here.snapshot()
    message = in_process_error(runner.invoke(app, ["build", MICRO, "--weights", "missing.pth", "--out", "x.pt"]))
    assert "checkpoint not found: missing.pth" in message
    assert here.snapshot() == before


def _no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    import swinedge.digits

    def no_training(*a, **k):
        raise AssertionError("training started before the cache was checked")

    monkeypatch.setattr(swinedge.digits, "train_digits_model", no_training)


def test_a_cache_path_that_is_a_file_is_refused_before_training(here: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = here.work / "cache-file"
    cache.write_text("not a folder\n")
    monkeypatch.setenv("SWINEDGE_CACHE", str(cache))
    _no_training(monkeypatch)
    before = here.snapshot()
    start = time.monotonic()
    message = in_process_error(runner.invoke(app, ["run", "--out", "r"]))
    assert time.monotonic() - start < 20
    assert f"the cache {cache} is a file" in message and "SWINEDGE_CACHE" in message
    assert here.snapshot() == before


def test_no_home_and_no_passwd_entry_falls_back_to_a_temp_cache_with_one_warning(
    here: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A container started with --user: HOME unset, no passwd entry for the uid."""
    import pwd

    import swinedge.digits
    from swinedge.errors import SwinedgeError

    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.delenv("SWINEDGE_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)

    def no_entry(uid):
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    with pytest.raises(RuntimeError):
        Path.home()  # what today's code called: a traceback
    used: list[Path] = []

    def cached(cache_dir, **k):
        used.append(Path(cache_dir))
        raise SwinedgeError("stop here (the test does not train)")

    monkeypatch.setattr(swinedge.digits, "digits_checkpoint", cached)
    result = runner.invoke(app, ["run", "--out", "r"])
    assert result.exit_code == 2 and "Traceback" not in result.output, (result.output, result.exception)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 2 and lines[0].startswith("warning: no home folder") and "SWINEDGE_CACHE" in lines[0], result.stderr
    assert lines[1] == "error: stop here (the test does not train)"
    assert used == [here.tmp / f"swinedge-cache-{os.getuid()}"]


# -- the user's umask -----------------------------------------------------------------------------------
def test_serve_repo_folder_gets_the_mode_the_umask_implies(here: Sandbox) -> None:
    previous = os.umask(0o022)
    try:
        result = runner.invoke(app, ["serve-repo", "m.onnx", "--out", "repo"])
    finally:
        os.umask(previous)
    assert result.exit_code == 0, result.output
    repo = here.work / "repo"
    assert repo.stat().st_mode & 0o777 == 0o755  # mkdtemp made it 0700
    for p in repo.rglob("*"):
        assert p.stat().st_mode & 0o777 == (0o755 if p.is_dir() else 0o644), p


def test_atomic_folder_and_files_follow_the_umask(tmp_path: Path) -> None:
    from swinedge.io import atomic_folder, write_bytes_atomic

    previous = os.umask(0o027)
    try:
        with atomic_folder(tmp_path / "out") as work:
            write_bytes_atomic(work / "a.txt", b"a")
            (work / "sub").mkdir()
            fd = os.open(work / "sub" / "b.txt", os.O_CREAT | os.O_WRONLY, 0o600)  # a library's private file
            os.close(fd)
    finally:
        os.umask(previous)
    out = tmp_path / "out"
    assert out.stat().st_mode & 0o777 == 0o750
    assert (out / "a.txt").stat().st_mode & 0o777 == 0o640
    assert (out / "sub" / "b.txt").stat().st_mode & 0o777 == 0o640


# -- signals: SIGHUP like SIGTERM, SIGKILL's leftovers collected -------------------------------------------
def _export_partial(box: Sandbox, folder: str = "out") -> list[Path]:
    return list((box.work / folder).glob(".e.onnx.*.partial")) if (box.work / folder).is_dir() else []


@pytest.mark.slow
def test_sighup_during_export_cleans_up_like_sigterm(box: Sandbox) -> None:
    before = box.snapshot()
    proc = box.start("export", MICRO, "--out", "out/e.onnx")
    _wait_for(proc, lambda: _export_partial(box), "the partial export file")
    _interrupt_leaves_nothing(box, proc, signal.SIGHUP, before)


@pytest.mark.slow
def test_sigkill_leftovers_carry_the_pid_are_listed_by_doctor_and_removed_by_the_next_command(box: Sandbox) -> None:
    before_work, before_tmp = box.snapshot()
    inputs = {n: _sha(box.work / n) for n in ("m.onnx", "m.onnx.json")}
    proc = box.start("export", MICRO, "--out", "e.onnx")  # in the work folder, where doctor looks
    _wait_for(proc, lambda: _export_partial(box, "."), "the partial export file")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    partials = _export_partial(box, ".")
    temps = list(box.tmp.glob("swinedge-run-*"))
    assert partials and temps  # what SIGKILL leaves: nothing can run on the way out
    assert all(f".{proc.pid}." in p.name for p in partials), partials
    assert all(p.name.startswith(f"swinedge-run-{proc.pid}-") for p in temps), temps

    doctor = box.run("doctor", "--json", timeout=300)
    assert doctor.returncode == 0, doctor.stderr
    check = next(c for c in json.loads(doctor.stdout) if c["name"] == "leftovers")
    assert check["status"] == "warn" and f"process {proc.pid} gone" in check["detail"]
    assert all(p.exists() for p in partials + temps)  # doctor lists, never removes

    again = box.run("export", MICRO, "--out", "e2.onnx", timeout=300)
    assert again.returncode == 0, again.stderr
    notes = [ln for ln in again.stderr.splitlines() if ln.startswith("note: removed")]
    assert len(notes) == 2 and all(str(proc.pid) in n for n in notes), again.stderr
    assert not any(p.exists() for p in partials + temps)
    after_work, after_tmp = box.snapshot()
    assert after_tmp == before_tmp
    assert sorted(set(after_work) - set(before_work)) == ["e2.onnx", "e2.onnx.json"]
    assert {n: _sha(box.work / n) for n in inputs} == inputs


def test_leftovers_of_live_processes_and_other_names_are_kept(tmp_path: Path) -> None:
    """Only names with the id of a process that is gone are removed: a running command's
    partial file, the user's own dot files and older names stay."""
    from swinedge import io

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    keep = [tmp_path / f".a.onnx.{os.getpid()}.abcd1234.partial", tmp_path / ".a.onnx.abcd1234.partial", tmp_path / ".hidden"]
    gone = tmp_path / f".a.onnx.{dead.pid}.abcd1234.partial"
    for p in [*keep, gone]:
        p.write_bytes(b"x")
    lines: list[str] = []
    previous, io.leftover_report = io.leftover_report, lines.append
    try:
        assert io.remove_stale_leftovers(tmp_path) == [gone]
    finally:
        io.leftover_report = previous
    assert all(p.exists() for p in keep) and not gone.exists()
    assert len(lines) == 1 and str(dead.pid) in lines[0]
    assert [pid for _, pid in io.find_leftovers(tmp_path)] == [None]  # the older name: doctor lists it
    assert _tree(tmp_path)  # still there

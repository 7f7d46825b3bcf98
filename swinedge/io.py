"""Atomic writes and file hashing.

An interrupted run must never leave a half-written ONNX, engine or checkpoint where a
later run would pick it up: everything is written to a temporary file in the target
folder and renamed into place (rename is atomic within one filesystem).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from swinedge.errors import SwinedgeError


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it onto ``target``."""
    with atomic_paths(target) as (tmp,):
        yield tmp


@contextlib.contextmanager
def atomic_paths(*targets: str | os.PathLike[str]) -> Iterator[list[Path]]:
    """Like :func:`atomic_path` for files that belong together (an artifact and its
    manifest): temporary paths beside each target, renamed into place in the order given
    once the block succeeds. If a rename fails, the targets already renamed are removed,
    so the set is complete or absent."""
    paths = [Path(t) for t in targets]
    with contextlib.ExitStack() as stack:
        temps = [stack.enter_context(_temp_beside(p)) for p in paths]
        yield temps
        done: list[Path] = []
        # Another process writing the same targets renames its set under the same lock,
        # so the set on disk is always one writer's (last complete writer wins).
        with folder_lock(paths[0].parent), signals_deferred():
            for tmp, target in zip(temps, paths):
                try:
                    os.replace(tmp, target)
                except OSError as e:
                    for written in done:
                        written.unlink(missing_ok=True)
                    raise SwinedgeError(f"cannot write {target}: {e.strerror or e}") from None
                done.append(target)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block is done (a few renames), so a set of
    outputs is never left half renamed; the signal takes effect right after."""
    import signal
    import threading

    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``folder`` itself (no lock file is left behind),
    held by one swinedge process at a time; a no-op where ``flock`` does not exist."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def _temp_beside(target: Path) -> Iterator[Path]:
    """A temporary file beside ``target`` (removed on exit unless renamed away). Folders
    created for it are removed again when nothing was written into them."""
    parent = target.parent
    created = [p for p in [parent, *parent.parents] if not p.exists()]
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SwinedgeError(f"cannot create output folder {parent}: {e.strerror}") from None
    if target.is_dir():
        raise SwinedgeError(f"output path {target} is a folder: give a file name")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=parent)
    except OSError as e:
        raise SwinedgeError(f"cannot write in {parent}: {e.strerror or e}") from None
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600; give the artifact the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
    except OSError as e:  # disk full, quota, permissions: nothing is left at the target
        raise SwinedgeError(f"cannot write {target}: {e.strerror or e}") from None
    finally:
        tmp_path.unlink(missing_ok=True)
        for folder in created:  # deepest first; only the ones still empty
            with contextlib.suppress(OSError):
                folder.rmdir()


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; when the block succeeds it becomes
    ``target`` (a previous folder there is replaced whole), otherwise it is removed with
    everything in it. Two runs writing the same folder: the last to finish wins, and
    the folder is always one run's complete output."""
    import shutil

    target = Path(target)
    parent = target.parent
    created = [p for p in [parent, *parent.parents] if not p.exists()]
    try:
        parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=parent))
    except OSError as e:
        raise SwinedgeError(f"cannot create output folder {target}: {e.strerror or e}") from None
    try:
        yield work
        with folder_lock(parent), signals_deferred():
            _replace_folder(work, target)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
        for folder in created:
            with contextlib.suppress(OSError):
                folder.rmdir()


def _replace_folder(work: Path, target: Path) -> None:
    """Under the folder lock: move a previous ``target`` aside, rename ``work`` onto it,
    then delete the previous one (put back if the rename fails)."""
    import shutil

    old = None
    try:
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            os.replace(target, old / "previous")
        try:
            os.rename(work, target)
        except OSError as e:
            if old is not None:
                os.replace(old / "previous", target)
            raise SwinedgeError(f"cannot write {target}: {e.strerror or e}") from None
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def write_bytes_atomic(target: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def write_json_atomic(target: str | os.PathLike[str], obj: Any) -> Path:
    return write_bytes_atomic(target, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def refuse_output_over_input(out: str | os.PathLike[str], *inputs: str | os.PathLike[str] | None, flag: str = "--out") -> None:
    """Refuse, before any work, an output that is one of the inputs or lies inside an
    input folder: the user's inputs are never written."""
    target = Path(out).resolve()
    for given in inputs:
        if given is None:
            continue
        source = Path(given)
        if not source.exists():  # a variant name, or a missing file reported elsewhere
            continue
        src = source.resolve()
        if target == src or (target.exists() and os.path.samefile(target, src)):
            raise SwinedgeError(f"{flag} {out} is the input {given}: choose another output path (inputs are never overwritten)")
        if src.is_dir() and target.is_relative_to(src):
            raise SwinedgeError(f"{flag} {out} is inside the input folder {given}: write outputs elsewhere")


def check_output_file(out: str | os.PathLike[str], flag: str = "--out") -> Path:
    """A file output, checked before any work: not a folder, and under folders (existing
    ones, or ones that can be created where a folder exists)."""
    target = Path(out)
    if target.is_dir():
        raise SwinedgeError(f"{flag} {out} is a folder: give a file name")
    _check_creatable(target.parent, out, flag)
    return target


def _check_creatable(folder: Path, out: str | os.PathLike[str], flag: str) -> None:
    parent = folder
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise SwinedgeError(f"{flag} {out}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SwinedgeError(f"{flag} {out}: cannot create or write in {parent} (check its permissions)")


def check_output_folder(
    out_dir: str | os.PathLike[str], *inputs: str | os.PathLike[str] | None, replaces: str | None = None
) -> Path:
    """Validate a report/output folder before any work: not a file, not an input or
    inside one, and creatable (its nearest existing parent is a writable folder). The
    folder itself is created only when there is something complete to put in it.

    ``replaces``: the folder will be replaced whole, so an existing non-empty one must
    be an earlier output of the same command (it holds the file named ``replaces``)."""
    folder = Path(out_dir)
    if folder.exists() and not folder.is_dir():
        raise SwinedgeError(f"--out {out_dir} is a file: give a folder for the outputs")
    if replaces and folder.is_dir() and any(folder.iterdir()) and not (folder / replaces).is_file():
        raise SwinedgeError(
            f"--out {out_dir} is a folder with other files in it (no {replaces} of an earlier run): give a new or empty folder"
        )
    refuse_output_over_input(folder, *inputs)
    _check_creatable(folder, out_dir, "--out")
    return folder


@contextlib.contextmanager
def private_workspace(prefix: str = "swinedge-") -> Iterator[Path]:
    """A private temporary folder, removed on every exit path (error, Ctrl-C, SIGTERM via
    the CLI's handler). Libraries called inside get it as their temp dir too, so what
    they leave behind (modelopt's shape-inferred copies, tmp*.onnx) goes with it."""
    previous_tempdir, previous_env = tempfile.tempdir, os.environ.get("TMPDIR")
    with tempfile.TemporaryDirectory(prefix=prefix, ignore_cleanup_errors=True) as folder:
        tempfile.tempdir = folder
        os.environ["TMPDIR"] = folder
        try:
            yield Path(folder)
        finally:
            tempfile.tempdir = previous_tempdir
            if previous_env is None:
                os.environ.pop("TMPDIR", None)
            else:
                os.environ["TMPDIR"] = previous_env


def private_copy(path: str | os.PathLike[str], folder: Path) -> Path:
    """A copy of an input in ``folder``: what a library is given, so it can never write
    the user's file (modelopt writes shape-inferred models beside its input)."""
    import shutil

    copy = folder / f"input{Path(path).suffix}"
    shutil.copyfile(path, copy)
    return copy


def require_file(path: str | os.PathLike[str], what: str = "file") -> Path:
    """Return ``path`` as a Path, or raise a one-line error if it is not a readable file."""
    p = Path(path)
    if not p.exists():
        raise SwinedgeError(f"{what} not found: {p}")
    if p.is_dir():
        raise SwinedgeError(f"{what} {p} is a folder, expected a file")
    if not os.access(p, os.R_OK):
        raise SwinedgeError(f"{what} {p} is not readable (check its permissions)")
    return p

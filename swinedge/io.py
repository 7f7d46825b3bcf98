"""Atomic writes and file hashing.

An interrupted run must never leave a half-written ONNX, engine or checkpoint where a
later run would pick it up: everything is written to a temporary file in the target
folder and renamed into place (rename is atomic within one filesystem).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from swinedge.errors import SwinedgeError, os_error_text

# Partial outputs (``.NAME.PID.XXXX.partial``, ``.NAME.PID.XXXX.old``) and temp folders
# (``swinedge-STAGE-PID-XXXX``) carry the id of the process that owns them: one killed
# (SIGKILL, the OOM killer, a cancelled CI job) leaves them behind, and the next command
# removes those whose process is gone (see :func:`remove_stale_leftovers`).
_PARTIAL = re.compile(r"^\..+\.(\d+)\.[^./]+\.(partial|old)$")
_TEMP = re.compile(r"^swinedge-[a-z0-9]+(?:-[a-z0-9]+)*?-(\d+)-[^/]+$")
# The older names, without a process id: listed by `swinedge doctor`, never removed.
_OLD_PARTIAL = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.(partial|old)$")
_OLD_TEMP = re.compile(r"^swinedge-(run|quantize|guard|errmap|compare|build|bench)-[A-Za-z0-9_]{8}$")


def _pid_tag() -> str:
    return str(os.getpid())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _disk_full(folder: Path) -> bool:
    """Whether the file system holding ``folder`` has (almost) no space left: libraries
    that write through their own code (torch's zip writer) report a full disk as a
    RuntimeError without an errno."""
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):
        return False
    return st.f_bavail * st.f_frsize < (1 << 20) or (st.f_files > 0 and st.f_favail == 0)


def _write_failure(target: Path, e: BaseException) -> SwinedgeError | None:
    """The one-line error for a failed write of ``target``, or None if it is not an
    OS-level failure (a bug, which keeps its traceback)."""
    if isinstance(e, OSError):
        return SwinedgeError(f"cannot write {target}: {os_error_text(e)}")
    if isinstance(e, RuntimeError) and _disk_full(target.parent):
        return SwinedgeError(f"cannot write {target}: {os_error_text(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))}")
    return None


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
                    raise SwinedgeError(f"cannot write {target}: {os_error_text(e)}") from None
                done.append(target)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C, SIGTERM and SIGHUP until the block is done (a few renames), so a set of
    outputs is never left half renamed; the signal takes effect right after."""
    import signal
    import threading

    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM, *([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])}
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
    remove_stale_leftovers(parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{_pid_tag()}.", suffix=".partial", dir=parent)
    except OSError as e:
        raise SwinedgeError(f"cannot write in {parent}: {os_error_text(e)}") from None
    tmp_path = Path(tmp)
    try:
        # mkstemp creates 0600; give the artifact the permissions a plain open() would.
        os.fchmod(fd, 0o666 & ~_umask())
    finally:
        os.close(fd)
    try:
        yield tmp_path
    except (OSError, RuntimeError) as e:  # disk full, quota, permissions: nothing is left at the target
        failure = _write_failure(target, e)
        if failure is None:
            raise
        raise failure from None
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
    target = Path(target)
    parent = target.parent
    created = [p for p in [parent, *parent.parents] if not p.exists()]
    try:
        parent.mkdir(parents=True, exist_ok=True)
        remove_stale_leftovers(parent)
        work = Path(tempfile.mkdtemp(prefix=f".{target.name}.{_pid_tag()}.", suffix=".partial", dir=parent))
    except OSError as e:
        raise SwinedgeError(f"cannot create output folder {target}: {os_error_text(e)}") from None
    try:
        try:
            yield work
            _give_umask_modes(work)
        except (OSError, RuntimeError) as e:  # disk full, quota, permissions
            failure = _write_failure(target, e)
            if failure is None:
                raise
            raise failure from None
        with folder_lock(parent), signals_deferred():
            _replace_folder(work, target)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
        for folder in created:
            with contextlib.suppress(OSError):
                folder.rmdir()


def _give_umask_modes(folder: Path) -> None:
    """``mkdtemp`` makes 0700 folders (and ``mkstemp`` 0600 files): give the folder that
    becomes an output, and what in it came out that way, the modes a plain ``mkdir`` /
    ``open`` would under the user's umask, so a colleague or a container started with
    ``--user`` can read it as they could any other output."""
    mask = _umask()
    dir_mode, file_mode = 0o777 & ~mask, 0o666 & ~mask
    os.chmod(folder, dir_mode)
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            p = os.path.join(root, name)
            if not os.path.islink(p) and os.stat(p).st_mode & 0o777 == 0o700:
                os.chmod(p, dir_mode)
        for name in files:
            p = os.path.join(root, name)
            if not os.path.islink(p):
                mode = os.stat(p).st_mode & 0o777
                if mode in (0o600, 0o700):
                    os.chmod(p, dir_mode if mode & 0o100 else file_mode)


def _replace_folder(work: Path, target: Path) -> None:
    """Under the folder lock: move a previous ``target`` aside, rename ``work`` onto it,
    then delete the previous one (put back if the rename fails)."""
    old = None
    try:
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.{_pid_tag()}.", suffix=".old", dir=target.parent))
            os.replace(target, old / "previous")
        try:
            os.rename(work, target)
        except OSError as e:
            if old is not None:
                os.replace(old / "previous", target)
            raise SwinedgeError(f"cannot write {target}: {os_error_text(e)}") from None
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


def home_folder() -> Path | None:
    """The user's home folder, or None where there is none (HOME unset and no passwd
    entry for the uid: a container started with ``--user``)."""
    try:
        home = Path.home()
    except (RuntimeError, KeyError, OSError):
        return None
    if (os.environ.get("HOME") or home.is_dir()) and str(home) not in ("", "/", "~"):
        return home
    return None


_outer_tempdir: str | None = None


def outer_tempdir() -> Path:
    """The temp dir the user gave (TMPDIR), not a private workspace inside it: for what
    must outlive the command (a fallback cache)."""
    return Path(_outer_tempdir or tempfile.gettempdir())


# -- leftovers of killed processes ---------------------------------------------------------------
def _process_gone(pid: int) -> bool:
    if pid == os.getpid() or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OSError):  # alive, another user's
        return False
    return False


def _owned(path: Path) -> bool:
    try:
        return path.lstat().st_uid == os.getuid() if hasattr(os, "getuid") else True
    except OSError:
        return False


def find_leftovers(folder: str | os.PathLike[str], *, temp: bool = False) -> list[tuple[Path, int | None]]:
    """Partial outputs (or, with ``temp``, swinedge temp folders) in ``folder`` whose
    owning process is gone: (path, pid). Older names without a process id come with pid
    None (they cannot be told apart from a running older swinedge's)."""
    found: list[tuple[Path, int | None]] = []
    try:
        names = os.listdir(folder)
    except OSError:
        return found
    new, old = (_TEMP, _OLD_TEMP) if temp else (_PARTIAL, _OLD_PARTIAL)
    for name in names:
        m = new.match(name)
        path = Path(folder) / name
        if m:
            if _process_gone(int(m.group(1))) and _owned(path):
                found.append((path, int(m.group(1))))
        elif old.match(name) and _owned(path):
            found.append((path, None))
    return sorted(found)


# Where removals are reported (the CLI prints one line on stderr); None: silently.
leftover_report: Callable[[str], None] | None = None
_swept: set[str] = set()


def remove_stale_leftovers(folder: str | os.PathLike[str], *, temp: bool = False) -> list[Path]:
    """Remove what killed swinedge processes left in ``folder`` (partial outputs, or with
    ``temp`` temp folders) and report it in one line. Only names that carry a process id
    that is gone, owned by this user; each folder is looked at once per process."""
    key = f"{'temp' if temp else 'out'}:{os.path.abspath(folder)}"
    if key in _swept:
        return []
    _swept.add(key)
    removed = []
    for path, pid in find_leftovers(folder, temp=temp):
        if pid is None:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
        if not os.path.lexists(path):
            removed.append(path)
    if removed and leftover_report is not None:
        what = "temp folder" if temp else "partial output"
        pids = sorted({int((_TEMP if temp else _PARTIAL).match(p.name).group(1)) for p in removed})  # type: ignore[union-attr]
        leftover_report(
            f"removed {len(removed)} {what}{'s' if len(removed) > 1 else ''} left in {folder} by interrupted swinedge "
            f"process{'es' if len(pids) > 1 else ''} {', '.join(map(str, pids))}: {', '.join(p.name for p in removed)}"
        )
    return removed


@contextlib.contextmanager
def private_workspace(prefix: str = "swinedge-") -> Iterator[Path]:
    """A private temporary folder, removed on every exit path (error, Ctrl-C, SIGTERM via
    the CLI's handler). Libraries called inside get it as their temp dir too, so what
    they leave behind (modelopt's shape-inferred copies, tmp*.onnx) goes with it."""
    global _outer_tempdir
    previous_tempdir, previous_env = tempfile.tempdir, os.environ.get("TMPDIR")
    outermost = _outer_tempdir is None
    if outermost:
        _outer_tempdir = tempfile.gettempdir()
    try:
        folder_cm = tempfile.TemporaryDirectory(prefix=f"{prefix}{_pid_tag()}-", ignore_cleanup_errors=True)
    except OSError as e:
        if outermost:
            _outer_tempdir = None
        raise SwinedgeError(f"cannot create a temporary folder in {tempfile.gettempdir()}: {os_error_text(e)} (set TMPDIR to a writable folder)") from None
    with folder_cm as folder:
        tempfile.tempdir = folder
        os.environ["TMPDIR"] = folder
        try:
            yield Path(folder)
        finally:
            if outermost:
                _outer_tempdir = None
            tempfile.tempdir = previous_tempdir
            if previous_env is None:
                os.environ.pop("TMPDIR", None)
            else:
                os.environ["TMPDIR"] = previous_env


def private_copy(path: str | os.PathLike[str], folder: Path) -> Path:
    """A copy of an input in ``folder``: what a library is given, so it can never write
    the user's file (modelopt writes shape-inferred models beside its input)."""
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

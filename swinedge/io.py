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
        for tmp, target in zip(temps, paths):
            try:
                os.replace(tmp, target)
            except OSError as e:
                for written in done:
                    written.unlink(missing_ok=True)
                raise SwinedgeError(f"cannot write {target}: {e.strerror or e}") from None
            done.append(target)


@contextlib.contextmanager
def _temp_beside(target: Path) -> Iterator[Path]:
    """A temporary file beside ``target`` (removed on exit unless renamed away)."""
    parent = target.parent
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

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
    target = Path(target)
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
        os.replace(tmp_path, target)
    except OSError as e:  # disk full, quota, permissions: nothing is left at the target
        raise SwinedgeError(f"cannot write {target}: {e.strerror or e}") from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


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

"""User-facing errors.

Anything a user can cause (a missing file, a wrong flag, an artifact that does not
fit) raises :class:`SwinedgeError` with a one-line message that names the problem
and what to do. The CLI prints it without a traceback and exits non-zero.
"""


class SwinedgeError(Exception):
    """A problem the user can fix; the message is shown as-is, on one line."""


class MissingDependencyError(SwinedgeError):
    """An optional package (TensorRT, Triton, modelopt, ...) is not importable."""


# What to do about the OS errors a user meets (the message names the path).
_OS_HINTS = {
    "ENOSPC": "no space left on the device: free some space or write elsewhere",
    "EDQUOT": "disk quota exceeded: free some space or write elsewhere",
    "EACCES": "permission denied: check the folder's permissions or write elsewhere",
    "EPERM": "operation not permitted: check the permissions or write elsewhere",
    "EROFS": "read-only file system: write elsewhere",
    "EPIPE": "the reader closed the pipe",
    "ENAMETOOLONG": "file name too long: choose a shorter one",
    "EMFILE": "too many open files: raise the limit (ulimit -n)",
    "EIO": "input/output error on the device",
}


def os_error_text(e: BaseException) -> str:
    """An OSError as a short phrase for a one-line error (no errno soup, no traceback)."""
    import errno

    if not isinstance(e, OSError):
        return str(e)
    hint = _OS_HINTS.get(errno.errorcode.get(e.errno or -1, ""))
    if hint:
        return hint
    return e.strerror.rstrip(".").lower() if e.strerror else str(e)


def os_error_message(e: OSError) -> str:
    """The one-line message for an OSError that reached the command line."""
    where = e.filename if e.filename is not None else None
    if where is not None and e.filename2 is not None:
        where = e.filename2  # a copy or rename: the destination is what failed, most often
    text = os_error_text(e)
    if where is None:
        return text[0].upper() + text[1:] if text else "an operating-system error"
    if isinstance(where, bytes):
        where = where.decode("utf-8", "backslashreplace")
    return f"{where}: {text}"

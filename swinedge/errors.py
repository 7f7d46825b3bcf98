"""User-facing errors.

Anything a user can cause (a missing file, a wrong flag, an artifact that does not
fit) raises :class:`SwinedgeError` with a one-line message that names the problem
and what to do. The CLI prints it without a traceback and exits non-zero.
"""


class SwinedgeError(Exception):
    """A problem the user can fix; the message is shown as-is, on one line."""


class MissingDependencyError(SwinedgeError):
    """An optional package (TensorRT, Triton, modelopt, ...) is not importable."""

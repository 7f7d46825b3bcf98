"""Assertions shared by the CLI tests."""

from __future__ import annotations


def one_line_error(result) -> str:
    """A user mistake: non-zero exit, no traceback, exactly one 'error:' line on stderr."""
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:"), lines[0]
    return lines[0]

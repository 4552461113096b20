"""Shared by the CLI tests: what a clean failure of a command looks like."""

from __future__ import annotations

from click.testing import Result


def one_line_error(r: Result, *needles: str, code: int = 2) -> str:
    """The command failed cleanly: the exit code, no traceback, and one ``error:`` line holding the needles."""
    assert r.exit_code == code, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output
    lines = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, r.output
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]

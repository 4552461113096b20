"""Shared by the CLI tests: what a clean failure of a command looks like."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file."""
    return [json.loads(x) for x in path.read_text().splitlines()]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    """``rows`` as a JSON-lines file at ``path`` (returned)."""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def record_serving(monkeypatch: Any) -> list[Any]:
    """Record the servers ``moai serve`` would run instead of running them (a test must fail, not hang, when serve
    goes ahead): each one's uvicorn config, its keyword options as ``config``'s attributes."""
    import moai.cli

    served: list[Any] = []

    def run(server: Any) -> None:
        served.append(server.config)
        server.started = True

    monkeypatch.setattr(moai.cli, "_run", run)
    return served

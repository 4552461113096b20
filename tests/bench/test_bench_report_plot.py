"""`moai bench report --plot` into a folder that does not exist yet: made, as the gate commands make theirs."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from moai.bench.cli import app


def test_report_plot_makes_its_folder(tmp_path: Path) -> None:
    data = tmp_path / "r.jsonl"
    data.write_text("".join(json.dumps({"id": f"b/{i}", "benchmark": "b", "prompt": "p",
                                        "scores": {"m": float(i % 2)}}) + "\n" for i in range(4)))
    target = tmp_path / "new" / "deeper" / "x.png"
    r = CliRunner().invoke(app, ["report", str(data), "--plot", str(target)])
    assert r.exit_code == 0, r.output
    assert target.is_file() and f"plot written to {target}" in " ".join(r.output.split())
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = CliRunner().invoke(app, ["report", str(data), "--plot", str(blocker / "x.png")])
    assert r.exit_code == 2 and "cannot write" in r.output and "Traceback" not in r.output

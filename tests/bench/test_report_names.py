"""``moai bench report``: model and task names are printed as written, never read as rich markup ('[/x]' crashed
the table, 'a[red]' lost its bracket and coloured the row)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from moai.bench import report as rep
from moai.bench.cli import app

NAMES = ["[/x]", "a[red]", "[bold]b"]


@pytest.fixture
def records_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # the default plot lands in the current directory
    path = tmp_path / "records.jsonl"
    scores = {name: 1.0 for name in NAMES}
    path.write_text(json.dumps({"id": "t[/y]/0", "benchmark": "t[/y]", "prompt": "q", "scores": scores}) + "\n")
    return path


def test_the_table_shows_names_as_written(records_file: Path) -> None:
    console = Console(width=200, record=True)
    console.print(rep.table(rep.summarise(rep.load(records_file))))
    text = console.export_text()
    for name in [*NAMES, "t[/y]"]:
        assert name in text, text


def test_the_report_command_prints_names_as_written(records_file: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["report", str(records_file), "--plot", str(tmp_path / "p.png")])
    assert res.exit_code == 0, res.output
    for name in [*NAMES, "t[/y]"]:
        assert name in res.output, res.output

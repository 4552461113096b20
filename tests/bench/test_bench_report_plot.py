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


def test_the_all_row_puts_records_of_mixed_scales_on_0_1_first(tmp_path: Path) -> None:
    """A 1-10 judge benchmark beside a 0/1 one averaged 9 with 1 into an "accuracy" of 5."""
    lines = [{"id": f"j{i}", "prompt": f"q{i}", "benchmark": "judge", "scores": {"big": 9, "small": 2}}
             for i in range(4)]
    lines += [{"id": f"u{i}", "prompt": f"p{i}", "benchmark": "exact", "scores": {"big": 1, "small": i % 2}}
              for i in range(4)]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    r = CliRunner().invoke(app, ["report", str(path), "--plot", str(tmp_path / "p.png")], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    rows = {(c[0], c[1]): float(c[3]) for ln in r.output.splitlines()
            if (c := [x.strip() for x in ln.split("│")[1:-1]]) and len(c) > 3 and c[1] in ("big", "small")}
    assert rows[("judge", "big")] == 9.0 and rows[("exact", "small")] == 0.5  # each task in its own scale
    assert rows[("all", "big")] == round((8 / 9 + 1) / 2, 3) and rows[("all", "small")] == round((1 / 9 + 0.5) / 2, 3)
    assert "mix the 1-10 judge scale" in r.output


def test_one_scale_throughout_is_shown_as_it_is(tmp_path: Path) -> None:
    lines = [{"id": f"j{i}", "prompt": f"q{i}", "scores": {"big": 9, "small": 3}} for i in range(3)]
    path = tmp_path / "judge.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    r = CliRunner().invoke(app, ["report", str(path), "--plot", str(tmp_path / "p.png")], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert any(ln.split("│")[1].strip() == "all" and ln.split("│")[4].strip() == "9.000"
               for ln in r.output.splitlines() if ln.count("│") > 4) and "mix the" not in r.output

"""``moai bench report``: per-model, per-task numbers from a small records file, as a table and a PNG."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from moai.bench import report as rep
from moai.bench.cli import app


def rec(rid: str, bench: str, scores: dict[str, float], lat: dict[str, float] | None = None) -> dict[str, object]:
    return {
        "id": rid, "benchmark": bench, "prompt": "q", "scores": scores,
        "latency_ms": lat or {m: 100.0 for m in scores},
        "energy_kwh": {m: 1e-5 for m in scores},
        "tokens": {m: {"input": 10, "output": 4} for m in scores},
        "cost_usd": {m: 0.001 for m in scores},
    }


RECORDS = [
    rec("gsm8k-train/0", "gsm8k", {"a": 1.0, "b": 0.0}, {"a": 100.0, "b": 300.0}),
    rec("gsm8k-train/1", "gsm8k", {"a": 0.0, "b": 0.0}, {"a": 200.0, "b": 500.0}),
    rec("mmlu-test/0", "mmlu", {"a": 1.0, "b": 1.0}),
    rec("multitask-train/0", "mmlu", {"a": 0.5}),  # a multitask slice named like a set: kept apart
]


@pytest.fixture(autouse=True)
def _in_a_scratch_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The report's default plot lands in the current directory: keep it out of the checkout."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def records_file(tmp_path: Path) -> Path:
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    return path


def test_summarise_per_task_and_overall(records_file: Path) -> None:
    rows = {(r.task, r.model): r for r in rep.summarise(rep.load(records_file))}
    assert rows[("gsm8k", "a")].score == 0.5 and rows[("gsm8k", "b")].score == 0.0
    assert rows[("gsm8k", "a")].latency_ms == 150.0 and rows[("gsm8k", "b")].latency_ms == 400.0
    assert rows[("gsm8k", "a")].n == 2 and rows[("gsm8k", "a")].cost_usd == pytest.approx(0.002)
    assert rows[("gsm8k", "a")].energy_wh == pytest.approx(0.01) and rows[("gsm8k", "a")].out_tokens == 4
    assert rows[("multitask-train:mmlu", "a")].score == 0.5 and ("multitask-train:mmlu", "b") not in rows
    assert rows[("all", "a")].n == 4 and rows[("all", "a")].score == pytest.approx(2.5 / 4)
    assert rows[("all", "b")].n == 3


def test_missing_measurements_are_nan_not_errors(tmp_path: Path) -> None:
    path = tmp_path / "bare.jsonl"
    path.write_text(json.dumps({"id": "x/0", "benchmark": "x", "prompt": "p", "scores": {"m": 1}}) + "\n")
    (row, _all) = rep.summarise(rep.load(path))
    assert row.score == 1.0 and math.isnan(row.latency_ms) and math.isnan(row.energy_wh)
    assert math.isnan(row.cost_usd)  # no price recorded is not "free": the table shows a dash, not $0.0000


def test_table_and_plot(records_file: Path, tmp_path: Path) -> None:
    rows = rep.summarise(rep.load(records_file))
    console = Console(width=200, record=True)
    console.print(rep.table(rows))
    text = console.export_text()
    assert "gsm8k" in text and "multitask-train:mmlu" in text and "0.500" in text
    png = tmp_path / "out.png"
    rep.plot(rows, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_cli_report(records_file: Path, tmp_path: Path) -> None:
    png = tmp_path / "p.png"
    res = CliRunner().invoke(app, ["report", str(records_file), "--plot", str(png)])
    assert res.exit_code == 0, res.output
    assert "gsm8k" in res.output and png.exists()


def test_cli_report_bad_input(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1}\n')
    res = CliRunner().invoke(app, ["report", str(bad)])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "bad.jsonl:1: record 1: missing or non-string 'prompt'" in res.output
    res = CliRunner().invoke(app, ["report", str(tmp_path / "nope.jsonl")])
    assert res.exit_code == 2 and "no such file" in res.output


@pytest.mark.parametrize(("fields", "says"), [
    ({"latency_ms": 5}, "'latency_ms' must be an object"),
    ({"tokens": 3}, "'tokens' must be an object"),
    ({"tokens": {"a": {"output": "four"}}}, "'tokens' must be an object"),
    ({"energy_kwh": "a"}, "'energy_kwh' must be an object"),
    ({"energy_kwh": {"a": -1}}, "'energy_kwh' must be an object"),
    ({"cost_usd": 5}, "'cost_usd' must be an object"),
    ({"scores": {"a": "1"}}, "not a finite number: '1'"),
    ({"scores": {"a": float("nan")}}, "not a finite number: nan"),
    ({"scores": {"a": float("inf")}}, "not a finite number: inf"),
])
def test_cli_report_validates_like_the_gate_commands(tmp_path: Path, fields: dict[str, object], says: str) -> None:
    """Wrong-typed optional fields were tracebacks, and a string or non-finite score was counted in n but left
    out of the mean; now each is one line naming the file and line, exit 2."""
    bad = tmp_path / "bad.jsonl"
    rows = [*RECORDS, {"id": "x/0", "benchmark": "x", "prompt": "q", "scores": {"a": 1.0}, **fields}]
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))  # json writes NaN / Infinity as Python reads them
    res = CliRunner().invoke(app, ["report", str(bad)])
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit), res.output
    assert f"bad.jsonl:{len(rows)}: record 'x/0': " in res.output and says in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_cli_report_warns_about_a_repeated_id(records_file: Path) -> None:
    text = records_file.read_text()
    records_file.write_text(text + text.splitlines()[0] + "\n")
    res = CliRunner().invoke(app, ["report", str(records_file)])
    assert res.exit_code == 0, res.output
    assert f"record id 'gsm8k-train/0' at {records_file}:5 repeats {records_file}:1" in res.output


def test_report_on_the_shipped_local_zoo_records() -> None:
    """The real collected file (latency, energy, tokens, responses) passes the stricter loader unchanged."""
    path = Path(__file__).resolve().parents[2] / "data" / "local-zoo" / "records.jsonl"
    if not path.is_file():
        pytest.skip("data/local-zoo/records.jsonl not present")
    rows = {(r.task, r.model): r for r in rep.summarise(rep.load(path))}
    overall = [r for (t, _), r in rows.items() if t == rep.ALL]
    assert len(overall) == 3 and all(r.n == 1600 and 0 <= r.score <= 1 for r in overall)
    assert all(math.isfinite(r.latency_ms) and math.isfinite(r.energy_wh) for r in overall)


def test_cli_report_writes_a_plot_by_default(records_file: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A table and a PNG plot, with no option: the PNG goes to the current directory, never beside the records
    (a shared data folder), and the output says where."""
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    res = CliRunner().invoke(app, ["report", str(records_file)])
    assert res.exit_code == 0, res.output
    assert (here / "records-report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "plot written to records-report.png" in res.output
    assert not records_file.with_name("records-report.png").exists()


def test_cli_report_without_a_writable_directory_still_gives_the_table(records_file: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the plot cannot be written, one line says so and the table still stands."""
    monkeypatch.chdir(tmp_path)

    def refuse(rows: list[rep.Row], path: Path) -> Path:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(rep, "plot", refuse)
    res = CliRunner().invoke(app, ["report", str(records_file)])
    assert res.exit_code == 0 and "gsm8k" in res.output, res.output
    assert "no plot written (records-report.png: Permission denied)" in res.output


def test_cli_report_names_the_file_it_wrote(records_file: Path, tmp_path: Path) -> None:
    """matplotlib adds .png to a name without a suffix: the message names that file, not the one given."""
    res = CliRunner().invoke(app, ["report", str(records_file), "--plot", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "o.png").is_file() and f"plot written to {tmp_path / 'o.png'}" in res.output
    res = CliRunner().invoke(app, ["report", str(records_file), "--plot", str(tmp_path / "o.xyz")])
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit), res.output
    assert "Format 'xyz' is not supported" in res.output

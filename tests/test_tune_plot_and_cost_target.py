"""`moai mix tune`: a --plot that cannot be written, and a cost_share target over records with no spend, are one
line and exit 2 before the mix instructions are touched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_support import one_line_error
from click.testing import Result
from typer.testing import CliRunner

from moai.cli import app

MIX = """\
models:
  a: {provider: openai_compat, endpoint: "http://127.0.0.1:9/v1"}
  b: {provider: openai_compat, endpoint: "http://127.0.0.1:9/v1"}
mixes:
  cheap: {strategy: route, weights: {quality: 1.0, cost: 0.7}}
"""


def _records(path: Path, priced: bool) -> Path:
    """40 records scoring models a and b 0/1, with recorded costs when ``priced``."""
    with path.open("w") as fh:
        for i in range(40):
            rec = {"id": f"q{i}", "benchmark": "bench", "prompt": f"question {i}",
                   "scores": {"a": float(i % 2), "b": float(i % 3 > 0)}}
            if priced:
                rec["cost_usd"] = {"a": 0.001, "b": 0.0001}
            fh.write(json.dumps(rec) + "\n")
    return path


@pytest.fixture()
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("MOAI_CONFIG", raising=False)
    path = tmp_path / "mix.yaml"
    path.write_text(MIX)
    return path


def _tune(cfg: Path, data: Path, *extra: str) -> Result:
    return CliRunner().invoke(app, ["mix", "tune", "--mix", "cheap", "--data", str(data), "--target",
                                    "cost_share=0.3", "--config", str(cfg), *extra])


def test_cost_share_over_records_without_spend_is_refused_and_the_config_kept(cfg: Path, tmp_path: Path) -> None:
    one_line_error(_tune(cfg, _records(tmp_path / "r.jsonl", priced=False)), "cost_share=0.3", "cost_usd")
    assert cfg.read_text() == MIX


def test_cost_share_over_priced_records_is_tuned_and_written(cfg: Path, tmp_path: Path) -> None:
    r = _tune(cfg, _records(tmp_path / "r.jsonl", priced=True))
    assert r.exit_code == 0, r.output
    assert cfg.read_text() != MIX and "mixes.cheap.weights.cost = " in r.output


def test_a_plot_path_that_cannot_be_written_is_one_line_before_tuning(cfg: Path, tmp_path: Path) -> None:
    data = _records(tmp_path / "r.jsonl", priced=True)
    (tmp_path / "x.txt").write_text("")
    (tmp_path / "somedir").mkdir()
    one_line_error(_tune(cfg, data, "--plot", str(tmp_path / "x.txt" / "p.png")), "--plot", "x.txt")
    one_line_error(_tune(cfg, data, "--plot", str(tmp_path / "p.bogus")), "--plot", "'bogus'", "not supported")
    one_line_error(_tune(cfg, data, "--plot", str(tmp_path / "somedir")), "--plot", "is a directory")
    assert cfg.read_text() == MIX
    assert not (tmp_path / "somedir.png").exists() and not (tmp_path / "p.bogus").exists()


def test_a_plot_without_a_suffix_is_written_as_png_and_named_so(cfg: Path, tmp_path: Path) -> None:
    r = _tune(cfg, _records(tmp_path / "r.jsonl", priced=True), "--plot", str(tmp_path / "sub" / "curve"))
    assert r.exit_code == 0, r.output
    png = tmp_path / "sub" / "curve.png"
    assert png.read_bytes().startswith(b"\x89PNG") and f"plot -> {png}" in r.output


def test_a_mix_named_in_brackets_is_shown_as_written(cfg: Path, tmp_path: Path) -> None:
    cfg.write_text(MIX.replace("  cheap:", '  "[/c]":'))
    r = CliRunner().invoke(app, ["mix", "tune", "--mix", "[/c]", "--data", str(_records(tmp_path / "r.jsonl", True)),
                                 "--target", "cost_share=0.3", "--config", str(cfg), "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "mix [/c]: weights.cost = " in r.output

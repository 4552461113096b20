"""`moai mix tune` on bad records: a non-numeric co2_g, and scores on mixed scales, are one line naming the record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import Result
from typer.testing import CliRunner

from moai.bench.datasets import RecordError, load_records
from moai.tuning import offline as off

MIX = """\
models:
  a: {provider: openai_compat, endpoint: "http://127.0.0.1:9/v1"}
  b: {provider: openai_compat, endpoint: "http://127.0.0.1:9/v1"}
mixes:
  cheap: {strategy: route, weights: {quality: 1.0, cost: 0.0}}
"""


def _records(path: Path, n: int = 40, score: Any = None, **extra: Any) -> Path:
    """n records scoring models a and b 0/1 (with costs); ``extra[i]`` adds fields to record i."""
    with path.open("w") as fh:
        for i in range(n):
            rec = {"id": f"q{i}", "benchmark": "bench", "prompt": f"question {i}",
                   "scores": {"a": float(i % 2), "b": float(i % 3 > 0)}, "cost_usd": {"a": 0.001, "b": 0.0001}}
            rec.update(extra.get(f"r{i}", {}))
            fh.write(json.dumps(rec) + "\n")
    return path


def _tune(tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch) -> Result:
    from moai import tune_cli

    monkeypatch.setattr(tune_cli, "_load_gate", lambda *a: object())  # the records fail before the gate is asked
    cfg = tmp_path / "mix.yaml"
    cfg.write_text(MIX)
    return CliRunner().invoke(tune_cli.app, ["--mix", "cheap", "--data", str(data), "--target", "cost_share=0.3",
                                             "--config", str(cfg), "--dry-run"])


def _one_line(r: Result, *needles: str) -> str:
    assert r.exit_code == 2, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.output
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("co2", [{"a": "x"}, "x", [1], {"a": -1}, {"a": float("inf")}])
def test_a_non_numeric_co2_is_one_line_naming_file_and_line(tmp_path: Path, co2: Any,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    data = _records(tmp_path / "r.jsonl", r2={"co2_g": co2})
    with pytest.raises(RecordError, match="co2_g"):
        off.load_extras([data])
    _one_line(_tune(tmp_path, data, monkeypatch), f"{data}:3:", "'q2'", "co2_g")


def test_extras_line_up_with_records_and_keep_good_values(tmp_path: Path) -> None:
    data = _records(tmp_path / "r.jsonl", n=3, r1={"co2_g": {"a": 0.5}, "latency_ms": {"b": 120}})
    data.write_text(data.read_text().replace("\n", "\n\n", 1))  # a blank line: skipped by both readers
    ex = off.load_extras([data])
    assert len(ex) == len(load_records(data)) == 3
    assert ex[1] == {"latency_ms": {"b": 120}, "co2_g": {"a": 0.5}} and ex[0] == {"latency_ms": {}, "co2_g": {}}


def test_one_score_off_the_benchmarks_scale_is_refused_naming_the_record(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A 7 among 0/1 scores made the whole benchmark a 1-10 judge scale: every 0/1 score became 0."""
    data = _records(tmp_path / "r.jsonl", r5={"scores": {"a": 7, "b": 1.0}})
    with pytest.raises(off.TuneError, match=r"record 'q5': score 7 for model 'a' is above 1") as e:
        off._normalised(load_records(data), ["a", "b"])
    assert f"{data}:6:" in str(e.value) and "one scale per benchmark" in str(e.value)
    _one_line(_tune(tmp_path, data, monkeypatch), f"{data}:6:", "'q5'", "score 7", "'bench'")


def test_a_judge_benchmark_is_rescaled_and_a_stray_low_score_in_it_is_refused(tmp_path: Path) -> None:
    judge = tmp_path / "judge.jsonl"
    with judge.open("w") as fh:
        for i in range(20):
            fh.write(json.dumps({"id": f"j{i}", "benchmark": "mt", "prompt": f"p{i}",
                                 "scores": {"a": 1 + i % 10, "b": 10}}) + "\n")
    y = off._normalised(load_records(judge), ["a", "b"])
    assert np.allclose(y[:, 0], [(i % 10) / 9 for i in range(20)]) and np.allclose(y[:, 1], 1.0)
    text = judge.read_text().splitlines()
    text[3] = text[3].replace('"a": 4', '"a": 0.5')
    judge.write_text("\n".join(text) + "\n")
    with pytest.raises(off.TuneError, match=r"record 'j3': score 0.5 for model 'a' is below 1"):
        off._normalised(load_records(judge), ["a", "b"])


def test_scales_are_per_benchmark_and_0_1_scores_pass_through(tmp_path: Path) -> None:
    data = _records(tmp_path / "r.jsonl", n=10)
    other = tmp_path / "j.jsonl"
    other.write_text("".join(json.dumps({"id": f"j{i}", "benchmark": "judge", "prompt": f"p{i}",
                                         "scores": {"a": 10, "b": 1}}) + "\n" for i in range(3)))
    recs = load_records([data, other])
    y = off._normalised(recs, ["a", "b"])
    assert np.array_equal(y[:10, 0], [float(i % 2) for i in range(10)])
    assert np.array_equal(y[10:], [[1.0, 0.0]] * 3)
    bad = tmp_path / "eleven.jsonl"
    bad.write_text(json.dumps({"id": "x", "benchmark": "judge", "prompt": "p", "scores": {"a": 11, "b": 1}}) + "\n")
    with pytest.raises(off.TuneError, match="off every scale"):
        off._normalised(load_records(bad), ["a", "b"])

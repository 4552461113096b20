"""The routing-record loader against good and bad files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from moai.bench.datasets import RecordError, load_records, model_names, score_matrix


def _write(p: Path, rows: list[object]) -> Path:
    p.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return p


def test_loads_many_files_with_missing_models(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.jsonl", [{"id": "a/1", "prompt": "x", "scores": {"m1": 1, "m2": 0}}])
    b = _write(tmp_path / "b.jsonl", [{"id": "b/1", "prompt": "y", "scores": {"m2": 0.5, "m3": 7},
                                        "cost_usd": {"m2": 0.01}}])
    recs = load_records([a, b])
    assert [r.id for r in recs] == ["a/1", "b/1"]
    names = model_names(recs)
    assert set(names) == {"m1", "m2", "m3"} and names[0] == "m2"
    y = score_matrix(recs, ["m1", "m3"])
    assert y[0, 0] == 1 and np.isnan(y[0, 1]) and np.isnan(y[1, 0])
    assert recs[1].cost_usd == {"m2": 0.01}


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("{not json", "invalid JSON"),
        (json.dumps({"prompt": "x", "scores": {"m": 1}}), "'id'"),
        (json.dumps({"id": "1", "scores": {"m": 1}}), "'prompt'"),
        (json.dumps({"id": "1", "prompt": "x", "scores": {"m": "high"}}), "not a finite number"),
        (json.dumps({"id": "1", "prompt": "x", "scores": {}}), "empty"),
        (json.dumps({"id": "1", "prompt": "x", "scores": {"m": 1}, "cost_usd": {"m": -1}}), "cost_usd"),
        (json.dumps([1, 2]), "JSON object"),
        ('{"id": "1", "prompt": "x", "scores": {"m": NaN}}', "not a finite number: nan"),
        ('{"id": "1", "prompt": "x", "scores": {"m": Infinity}}', "not a finite number: inf"),
        (json.dumps({"id": "1", "prompt": "x", "scores": {"m": 1}, "latency_ms": 5}), "latency_ms"),
        (json.dumps({"id": "1", "prompt": "x", "scores": {"m": 1}, "cost_usd": []}), "cost_usd"),
        (json.dumps({"id": "1", "prompt": "x", "scores": {"m": 1}, "tokens": 3}), "tokens"),
        (json.dumps({"id": "1", "prompt": "x", "scores": {"m": 1}, "tokens": {"m": {"output": "9"}}}), "tokens"),
        (json.dumps({"id": "1", "prompt": "x", "scores": {"m": 1}, "energy_kwh": "a"}), "energy_kwh"),
    ],
)
def test_bad_line_names_file_line_and_reason(tmp_path: Path, line: str, needle: str) -> None:
    good = json.dumps({"id": "0", "prompt": "ok", "scores": {"m": 1}})
    p = _write(tmp_path / "bad.jsonl", [good, line])
    with pytest.raises(RecordError) as ei:
        load_records(p)
    assert ei.value.line == 2 and "bad.jsonl" in str(ei.value) and needle in str(ei.value)


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(RecordError, match="no such file"):
        load_records(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(RecordError, match="no records"):
        load_records(tmp_path / "empty.jsonl")


def test_scores_optional_when_asked(tmp_path: Path) -> None:
    p = _write(tmp_path / "q.jsonl", [{"id": "q1", "prompt": "hello"}])
    assert load_records(p, need_scores=False)[0].scores == {}


def test_repeated_ids_are_kept_and_named_with_both_lines(tmp_path: Path) -> None:
    from moai.bench.datasets import duplicate_ids, duplicate_warning

    rows = [{"id": "a", "prompt": "x", "scores": {"m": 1}}, {"id": "b", "prompt": "y", "scores": {"m": 0}},
            {"id": "a", "prompt": "x", "scores": {"m": 0}}]
    p = _write(tmp_path / "d.jsonl", rows)
    recs = load_records(p)
    assert len(recs) == 3 and [r.line for r in recs] == [1, 2, 3]  # kept: public sets have a few
    ((first, again),) = duplicate_ids(recs)
    assert (first.line, again.line) == (1, 3)
    assert duplicate_warning(recs) == f"record id 'a' at {p}:3 repeats {p}:1; both records are used"
    assert duplicate_warning(recs[:2]) is None


def test_optional_fields_absent_or_null_are_empty(tmp_path: Path) -> None:
    p = _write(tmp_path / "n.jsonl", [{"id": "1", "prompt": "x", "scores": {"m": 1}, "cost_usd": None,
                                        "latency_ms": None, "tokens": None, "energy_kwh": {"m": 2e-6}}])
    (r,) = load_records(p)
    assert r.cost_usd == {} and r.latency_ms == {} and r.tokens == {} and r.energy_kwh == {"m": 2e-6}

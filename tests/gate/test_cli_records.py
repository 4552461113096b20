"""`moai gate eval/score/decide` on the record files users bring: ids, several files, the output file, odd pairs,
models the training lacked, prompts too long for any card, and weights the data cannot inform."""

from __future__ import annotations

import functools
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_support import read_jsonl, write_jsonl
from typer.testing import CliRunner

import moai.gate.cli as gate_cli
from moai.bench.compare import pick_pair
from moai.bench.datasets import RoutingRecord, load_records
from moai.gate.cli import app
from moai.gate.encoder import encoder_installed
from moai.gate.policy import RecordCard

pytestmark = pytest.mark.skipif(not encoder_installed(), reason="MiniLM ONNX model/tokenizer not installed")
runner = CliRunner()


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def _flat(text: str) -> str:
    """The output with the table's line wrapping undone."""
    return " ".join(text.split())


def _cells(output: str, router: str) -> list[str]:
    row = next(line for line in output.splitlines() if line.startswith(f"│ {router} "))
    return [c.strip() for c in row.split("│")[2:-1]]


def test_ids_keep_their_json_type(gate_dir: Path, synth_file: Path, tmp_path: Path) -> None:
    ids: list[Any] = [1000, "1000", 12345678901234567890, "x/7"]
    rows = [{**r, "id": i} for r, i in zip(read_jsonl(synth_file)[:4], ids, strict=True)]
    data = write_jsonl(tmp_path / "ids.jsonl", rows)
    for cmd, extra in (("score", ["--strong", "big", "--weak", "small"]), ("decide", [])):
        out = tmp_path / f"{cmd}.jsonl"
        r = runner.invoke(app, [cmd, "--gate", str(gate_dir), "--data", str(data), *extra, "--out", str(out)])
        assert r.exit_code == 0, r.output
        got = [row["id"] for row in _lines(out)]
        assert got == ids and [type(i) for i in got] == [type(i) for i in ids]


def test_every_data_file_is_used_in_order(gate_dir: Path, synth_file: Path, tmp_path: Path) -> None:
    rows = read_jsonl(synth_file)
    a, b = write_jsonl(tmp_path / "a.jsonl", rows[:30]), write_jsonl(tmp_path / "b.jsonl", rows[30:50])
    want = [r["id"] for r in rows[:50]]
    for cmd, extra in (("score", ["--strong", "big", "--weak", "small"]), ("decide", [])):
        out = tmp_path / f"{cmd}.jsonl"
        r = runner.invoke(app, [cmd, "--gate", str(gate_dir), "--data", str(a), "--data", str(b), *extra,
                                "--out", str(out)])
        assert r.exit_code == 0, r.output
        assert [row["id"] for row in _lines(out)] == want
    r = runner.invoke(app, ["eval", "--gate", str(gate_dir), "--data", str(a), "--data", str(b)])
    assert r.exit_code == 0, r.output
    assert "50 records" in _flat(r.output)


def test_out_that_is_a_data_file_is_refused(gate_dir: Path, synth_file: Path, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "recs.jsonl", read_jsonl(synth_file)[:10])
    before = data.read_bytes()
    (tmp_path / "sub").mkdir()
    hard = tmp_path / "hard.jsonl"
    os.link(data, hard)
    for out in (tmp_path / "sub" / ".." / "recs.jsonl", hard):
        for cmd, extra in (("score", ["--strong", "big", "--weak", "small"]), ("decide", [])):
            r = runner.invoke(app, [cmd, "--gate", str(gate_dir), "--data", str(data), *extra, "--out", str(out)])
            assert r.exit_code == 2 and isinstance(r.exception, SystemExit), r.output
            assert "would overwrite the records" in r.output and len(r.output.strip().splitlines()) == 1
    assert data.read_bytes() == before


def test_output_is_replaced_whole_or_not_at_all(tmp_path: Path) -> None:
    out = tmp_path / "scores.jsonl"
    out.write_text("old\n")

    def rows() -> Iterator[dict[str, Any]]:
        yield {"id": 1, "score": 0.5}
        raise RuntimeError("stopped midway")

    with pytest.raises(RuntimeError):
        gate_cli._write_lines(out, rows())
    assert out.read_text() == "old\n" and os.listdir(tmp_path) == ["scores.jsonl"]
    assert gate_cli._write_lines(out, iter([{"id": 1, "score": 0.5}])) == 1
    assert _lines(out) == [{"id": 1, "score": 0.5}]


@pytest.mark.parametrize("n", [1, 20])
def test_eval_with_no_gap_between_the_pair_shows_dashes(gate_dir: Path, synth_file: Path, tmp_path: Path,
                                                       n: int) -> None:
    rows = [{**r, "scores": {"big": 1.0, "small": 1.0}} for r in read_jsonl(synth_file)[:n]]
    data = write_jsonl(tmp_path / "equal.jsonl", rows)
    r = runner.invoke(app, ["eval", "--gate", str(gate_dir), "--data", str(data), "--baselines", "random"])
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output and "same mean score" in r.output
    assert _cells(r.output, "gate") == ["—", "—", "—"] and _cells(r.output, "random") == ["—", "—", "—"]


def test_default_pair_is_the_two_best_mean_scores(gate_dir: Path, synth_file: Path, tmp_path: Path) -> None:
    rows = read_jsonl(synth_file)
    for k, r in enumerate(rows):
        r["scores"]["alpha"] = 1.0 if k % 10 == 0 else 0.0  # covers every record, but the worst mean
        if k < 3:
            r["scores"]["rare"] = 1.0  # the best mean, on three records only
    data = write_jsonl(tmp_path / "three.jsonl", rows)
    r = runner.invoke(app, ["eval", "--gate", str(gate_dir), "--data", str(data)])
    assert r.exit_code == 0, r.output
    assert "pair: big (strong) vs small (weak)" in r.output
    assert "big (strong) vs small (weak), 80 records" in _flat(r.output)


def test_pick_pair_ranks_by_mean_among_the_covering_models() -> None:
    recs = [RoutingRecord(id=str(i), prompt="q", scores={"a": 0.0, "b": 0.5, "c": 1.0, "d": 0.9}) for i in range(10)]
    recs += [RoutingRecord(id="x", prompt="q", scores={"e": 1.0})]
    assert pick_pair(recs) == ("c", "d")
    # no second model covers nearly every record: the two most covered, still ranked by mean
    assert pick_pair(recs[:1] + [RoutingRecord(id="y", prompt="q", scores={"b": 0.1})]) == ("b", "a")


def test_eval_skips_only_the_baselines_that_lack_a_model(gate_dir: Path, synth_file: Path, tmp_path: Path) -> None:
    rows = read_jsonl(synth_file)
    for k, r in enumerate(rows):
        r["scores"]["newbie"] = 0.0 if k % 5 == 0 else 1.0  # second best, unknown to every router's training
    data = write_jsonl(tmp_path / "new.jsonl", rows)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # numpy's empty-slice warnings must not leak
        r = runner.invoke(app, ["eval", "--gate", str(gate_dir), "--data", str(data),
                                "--baselines", "random,knn,always-best"])
    assert r.exit_code == 0, r.output
    assert "big (strong) vs newbie (weak)" in _flat(r.output)
    pair_table, cost_table = r.output.split("quality vs cost")
    assert "│ gate " in pair_table and "│ random " in pair_table and "│ knn " not in pair_table
    assert "note: always-best, knn left out of the pair table: not trained on 'newbie'" in r.output
    assert "│ knn " in cost_table  # newbie has no cost: the cost table trades the priced models only


def test_eval_costs_come_from_the_evaluated_records(synth_file: Path, tmp_path: Path) -> None:
    """A gate trained on records without cost_usd still gets a quality-vs-cost table from the costs it is evaluated
    on; with no cost anywhere the table is left out, with a note."""
    bare_rows = [{k: v for k, v in r.items() if k != "cost_usd"} for r in read_jsonl(synth_file)]
    train_file = write_jsonl(tmp_path / "train.jsonl", bare_rows)
    gate = tmp_path / "gate"
    r = runner.invoke(app, ["train", "--data", str(train_file), "--out", str(gate), "--epochs", "3"])
    assert r.exit_code == 0, r.output
    rows = read_jsonl(synth_file)
    for row in rows:
        row["scores"]["small"] = 0.0 if row["scores"]["small"] == 0.0 else 0.9
        row["scores"]["mid"], row["cost_usd"]["mid"] = 0.5, 0.001
    data = write_jsonl(tmp_path / "eval.jsonl", rows)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        r = runner.invoke(app, ["eval", "--gate", str(gate), "--data", str(data), "--baselines", "random"])
    assert r.exit_code == 0, r.output
    assert "quality vs cost" in r.output
    auc = _cells(r.output.split("quality vs cost")[1], "gate")[0]
    assert auc != "—" and float(auc) > 0
    free = write_jsonl(tmp_path / "free.jsonl", [{k: v for k, v in row.items() if k != "cost_usd"} for row in rows])
    r = runner.invoke(app, ["eval", "--gate", str(gate), "--data", str(free)])
    assert r.exit_code == 0, r.output
    assert "no cost_usd in these records" in r.output and "quality vs cost" not in r.output


def test_decide_never_writes_a_null_model(gate_dir: Path, synth_file: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Prompts longer than any guessed context: the models that answered a record took its prompt; candidates
    from --models that all fall out still give the best expected quality, with one warning."""
    monkeypatch.setattr(gate_cli, "RecordCard", functools.partial(RecordCard, context=2))
    rows = read_jsonl(synth_file)[:12]
    answered = write_jsonl(tmp_path / "answered.jsonl", rows)
    out = tmp_path / "d.jsonl"
    r = runner.invoke(app, ["decide", "--gate", str(gate_dir), "--data", str(answered), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert {row["model"] for row in _lines(out)} <= {"big", "small"} and "no eligible model" not in r.output
    bare = write_jsonl(tmp_path / "bare.jsonl", [{"id": row["id"], "prompt": row["prompt"]} for row in rows])
    r = runner.invoke(app, ["decide", "--gate", str(gate_dir), "--data", str(bare), "--models", "big,small",
                            "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert {row["model"] for row in _lines(out)} <= {"big", "small"}
    assert r.output.count("no eligible model") == 1 and "12 record(s)" in r.output


def test_decide_warns_when_a_weight_has_nothing_to_weigh(gate_dir: Path, synth_file: Path, tmp_path: Path) -> None:
    prompts = [{"id": r["id"], "prompt": r["prompt"]} for r in read_jsonl(synth_file)[:10]]
    bare = write_jsonl(tmp_path / "bare.jsonl", prompts)
    out = tmp_path / "d.jsonl"
    r = runner.invoke(app, ["decide", "--gate", str(gate_dir), "--data", str(bare), "--models", "big,newbie",
                            "--weights", "quality=1,cost=0.3,latency=1,carbon=5", "--out", str(out)])
    assert r.exit_code == 0, r.output
    cost = [line for line in r.output.splitlines() if line.startswith("warning: cost=0.3")]
    assert len(cost) == 1 and "'newbie'" in cost[0] and "'big'" not in cost[0] and "free" in cost[0]
    assert "warning: latency=1 has no effect" in r.output and "warning: carbon=5 has no effect" in r.output
    timed = write_jsonl(tmp_path / "timed.jsonl", [{**row, "latency_ms": {"big": 9000.0, "small": 300.0}}
                                              for row in read_jsonl(synth_file)[:10]])
    r = runner.invoke(app, ["decide", "--gate", str(gate_dir), "--data", str(timed),
                            "--weights", "quality=1,cost=0.3,latency=1", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "warning" not in r.output  # priced by the records and the gate, timed by the records


def test_a_leading_bom_is_read(tmp_path: Path) -> None:
    p = tmp_path / "bom.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + json.dumps({"id": "a", "prompt": "q", "scores": {"m": 1}}).encode() + b"\n")
    assert [r.id for r in load_records(p)] == ["a"]


def test_an_empty_prompt_is_the_first_turn(tmp_path: Path) -> None:
    rows = [{"id": 3, "prompt": "", "turns": ["the real question", "a follow-up"], "scores": {"m": 1}},
            {"id": 4, "prompt": "", "scores": {"m": 1}}]
    assert [r.prompt for r in load_records(write_jsonl(tmp_path / "t.jsonl", rows))] == ["the real question", ""]


def test_a_directory_as_data_is_named(gate_dir: Path, tmp_path: Path) -> None:
    for cmd in (["eval", "--gate", str(gate_dir)], ["train", "--out", str(tmp_path / "g")]):
        r = runner.invoke(app, [*cmd, "--data", str(tmp_path)])
        assert r.exit_code == 2 and "is a directory" in r.output and len(r.output.strip().splitlines()) == 1


def test_decide_drops_empty_model_names(gate_dir: Path, synth_file: Path, tmp_path: Path) -> None:
    prompts = [{"id": r["id"], "prompt": r["prompt"]} for r in read_jsonl(synth_file)[:5]]
    bare = write_jsonl(tmp_path / "bare.jsonl", prompts)
    out = tmp_path / "d.jsonl"
    r = runner.invoke(app, ["decide", "--gate", str(gate_dir), "--data", str(bare), "--models", "big,,small,",
                            "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert {row["model"] for row in _lines(out)} <= {"big", "small"}
    r = runner.invoke(app, ["decide", "--gate", str(gate_dir), "--data", str(bare), "--models", " , ",
                            "--out", str(tmp_path / "none.jsonl")])
    assert r.exit_code == 2 and "names no model" in r.output and not (tmp_path / "none.jsonl").exists()


def test_eval_fixed_routers_are_one_point_each(gate_dir: Path, synth_file: Path) -> None:
    """Always one model, whatever the query: RouteLLM's normalisation makes always-weak 0 and always-strong 1
    (at 0% and 100% strong calls); always-best is whichever of the pair trained better (big here)."""
    r = runner.invoke(app, ["eval", "--gate", str(gate_dir), "--data", str(synth_file),
                            "--baselines", "always-strong,always-weak,always-best"])
    assert r.exit_code == 0, r.output
    assert _cells(r.output, "always-strong") == ["1.000", "100.0%", "100.0%"] == _cells(r.output, "always-best")
    assert _cells(r.output, "always-weak") == ["0.000", "—", "—"]
    assert _cells(r.output, "gate")[0] != "—"
    assert "left out" not in r.output


def test_eval_matches_model_names_as_the_gate_does(gate_dir: Path, synth_file: Path, tmp_path: Path) -> None:
    rows = read_jsonl(synth_file)
    for r in rows[:10]:
        r["scores"] = {"BIG": r["scores"]["big"], " Small ": r["scores"]["small"]}
    data = write_jsonl(tmp_path / "spelt.jsonl", rows)
    r = runner.invoke(app, ["eval", "--gate", str(gate_dir), "--data", str(data), "--strong", "Big",
                            "--weak", "small"])
    assert r.exit_code == 0, r.output
    assert "big (strong) vs small (weak), 80 records" in _flat(r.output)
    from moai.bench.compare import same_names

    assert [sorted(x.scores) for x in same_names(load_records(data))[:2]] == [["big", "small"]] * 2


def test_eval_on_the_training_records_warns_without_baselines(gate_dir: Path, synth_file: Path) -> None:
    r = runner.invoke(app, ["eval", "--gate", str(gate_dir), "--data", str(synth_file)])
    assert r.exit_code == 0, r.output
    assert "evaluated prompts are in the training files" in r.output

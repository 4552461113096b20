"""The four `moai gate` commands through typer's CliRunner, including bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from moai.gate.cli import app
from moai.gate.encoder import encoder_installed

HAVE_ENCODER = encoder_installed()

pytestmark = pytest.mark.skipif(not HAVE_ENCODER, reason="MiniLM ONNX model/tokenizer not installed")
runner = CliRunner()


def test_eval_prints_table(gate_dir: Path, synth_file: Path, tmp_path: Path) -> None:
    png = tmp_path / "curve.png"
    r = runner.invoke(app, ["eval", "--gate", str(gate_dir), "--data", str(synth_file),
                            "--baselines", "random,knn", "--plot", str(png)])
    assert r.exit_code == 0, r.output
    assert "APGR" in r.output and "gate" in r.output and "knn" in r.output
    assert png.is_file() and png.stat().st_size > 0


def _three_models(path: Path, synth_file: Path, local_cost: float, paid: bool = True) -> Path:
    """The synthetic set with a third model, 'local', that costs ``local_cost`` a query."""
    rows = [json.loads(x) for x in synth_file.read_text().splitlines()]
    for r in rows:
        r["scores"]["local"] = r["scores"]["small"]
        r["cost_usd"]["local"] = local_cost
        if not paid:
            r["cost_usd"] = {m: 0.0 for m in r["cost_usd"]}
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_eval_plots_quality_vs_cost_with_a_free_model(gate_dir: Path, synth_file: Path, tmp_path: Path) -> None:
    data = _three_models(tmp_path / "three.jsonl", synth_file, 0.0)
    png = tmp_path / "curves.png"
    r = runner.invoke(app, ["eval", "--gate", str(gate_dir), "--data", str(data), "--plot", str(png)])
    assert r.exit_code == 0, r.output
    assert "quality vs cost" in r.output and "nan" not in r.output.lower()
    assert "trained models: 'local'" in r.output  # priced and scored, but new to the gate: a prior, named
    row = next(line for line in r.output.splitlines() if "│ gate" in line).split("│")
    assert 0.0 < float(row[2]) <= 1.0  # the area over the paid models' costs, not over log(0)
    assert png.is_file() and (tmp_path / "curves-cost.png").stat().st_size > 0


def test_eval_on_free_answers_says_there_is_no_cost_curve(gate_dir: Path, synth_file: Path, tmp_path: Path) -> None:
    data = _three_models(tmp_path / "free.jsonl", synth_file, 0.0, paid=False)
    png = tmp_path / "curves.png"
    r = runner.invoke(app, ["eval", "--gate", str(gate_dir), "--data", str(data), "--plot", str(png)])
    assert r.exit_code == 0, r.output
    assert "every answer in this file cost nothing" in r.output and "quality vs cost" not in r.output
    assert png.is_file() and not (tmp_path / "curves-cost.png").exists()


def test_score_writes_one_line_per_record(gate_dir: Path, synth_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "scores.jsonl"
    r = runner.invoke(app, ["score", "--gate", str(gate_dir), "--data", str(synth_file),
                            "--strong", "big", "--weak", "small", "--out", str(out)])
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    ids = [json.loads(x)["id"] for x in synth_file.read_text().splitlines()]
    assert [x["id"] for x in rows] == ids
    assert all(isinstance(x["score"], float) for x in rows)


def test_score_names_an_untrained_model_and_refuses_one_pair(gate_dir: Path, synth_file: Path,
                                                            tmp_path: Path) -> None:
    out = tmp_path / "scores.jsonl"
    bare = tmp_path / "bare.jsonl"
    bare.write_text("".join(json.dumps({"id": row["id"], "prompt": row["prompt"]}) + "\n"
                            for row in map(json.loads, synth_file.read_text().splitlines()[:5])))
    r = runner.invoke(app, ["score", "--gate", str(gate_dir), "--data", str(bare),
                            "--strong", "bgi", "--weak", "small", "--out", str(out)])
    assert r.exit_code == 0, r.output  # on bare prompts an unseen model is allowed (a prior), but not silently
    assert "not among the gate's 2 trained models: 'bgi';" in r.output and "'small'" not in r.output
    r = runner.invoke(app, ["score", "--gate", str(gate_dir), "--data", str(synth_file),
                            "--strong", "bgi", "--weak", "small", "--out", str(out)])
    assert r.exit_code == 2 and "no such model in these records or the gate" in r.output  # records score big, small
    r = runner.invoke(app, ["score", "--gate", str(gate_dir), "--data", str(synth_file),
                            "--strong", "big", "--weak", "BIG", "--out", str(out)])
    assert r.exit_code == 2 and "name the same model" in r.output and "Traceback" not in r.output


def test_decide_uses_weights(gate_dir: Path, synth_file: Path, tmp_path: Path) -> None:
    out_q, out_c = tmp_path / "q.jsonl", tmp_path / "c.jsonl"
    for w, o in (("quality=1", out_q), ("quality=1,cost=100", out_c)):
        r = runner.invoke(app, ["decide", "--gate", str(gate_dir), "--data", str(synth_file),
                                "--weights", w, "--out", str(o)])
        assert r.exit_code == 0, r.output
    q = [json.loads(x)["model"] for x in out_q.read_text().splitlines()]
    c = [json.loads(x)["model"] for x in out_c.read_text().splitlines()]
    assert set(q) <= {"big", "small"} and c.count("small") > q.count("small")


def _decide(gate: Path, data: Path, weights: str, out: Path, *extra: str) -> list[str]:
    r = runner.invoke(app, ["decide", "--gate", str(gate), "--data", str(data), "--weights", weights,
                            "--out", str(out), *extra])
    assert r.exit_code == 0, r.output
    return [json.loads(x)["model"] for x in out.read_text().splitlines()]


def test_decide_weighs_latency(gate_dir: Path, synth_file: Path, tmp_path: Path) -> None:
    """A latency weight moves the choice: from each record's own latency_ms, else from the latency the gate
    learnt (it was a silent no-op: every model got the same card-default latency)."""
    rows = [json.loads(x) for x in synth_file.read_text().splitlines()]
    for r in rows:
        r["latency_ms"] = {"big": 9000.0, "small": 400.0}
    timed = tmp_path / "timed.jsonl"
    timed.write_text("".join(json.dumps(r) + "\n" for r in rows))
    quality_only = _decide(gate_dir, timed, "quality=1", tmp_path / "q.jsonl")
    assert "big" in quality_only  # the hard prompts
    assert set(_decide(gate_dir, timed, "quality=1,latency=1", tmp_path / "l.jsonl")) == {"small"}
    # no latency in the records: the gate's own estimate, learnt from records that had it
    learnt = tmp_path / "learnt"
    r = runner.invoke(app, ["train", "--data", str(timed), "--out", str(learnt), "--epochs", "10"])
    assert r.exit_code == 0, r.output
    bare = tmp_path / "bare.jsonl"
    bare.write_text("".join(json.dumps({"id": r["id"], "prompt": r["prompt"]}) + "\n" for r in rows))
    assert "big" in _decide(learnt, bare, "quality=1", tmp_path / "bq.jsonl", "--models", "big,small")
    assert set(_decide(learnt, bare, "quality=1,latency=1", tmp_path / "bl.jsonl", "--models", "big,small")) == {
        "small"}


def test_bad_inputs_are_one_line_errors(gate_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "1", "prompt": "x", "scores": {"a": 1}}\n{oops\n')
    r = runner.invoke(app, ["score", "--gate", str(gate_dir), "--data", str(bad), "--strong", "a",
                            "--weak", "b", "--out", str(tmp_path / "s.jsonl")])
    assert r.exit_code == 2
    assert "bad.jsonl:2" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["train", "--data", str(bad), "--out", str(tmp_path / "g")])
    assert r.exit_code == 2 and "invalid JSON" in r.output
    r = runner.invoke(app, ["decide", "--gate", str(tmp_path / "nogate"), "--data", str(bad),
                            "--out", str(tmp_path / "d.jsonl")])
    assert r.exit_code == 2 and "error:" in r.output
    r = runner.invoke(app, ["decide", "--gate", str(gate_dir), "--data", str(bad), "--weights", "qualty=1",
                            "--out", str(tmp_path / "d.jsonl")])
    assert r.exit_code == 2 and "unknown weight" in r.output


def test_train_settings_reach_the_saved_gate(synth_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "g"
    r = runner.invoke(app, ["train", "--data", str(synth_file), "--out", str(out), "--epochs", "5",
                            "--set", "w_domain=0", "--set", "knn_dims=0", "--set", "quantized_encoder=false"])
    assert r.exit_code == 0, r.output
    cfg = json.loads((out / "gate.json").read_text())["config"]
    assert cfg["w_domain"] == 0.0 and cfg["knn_dims"] == 0 and cfg["quantized_encoder"] is False

    from moai.gate.store import Gate

    g = Gate.load(out)
    assert g.featurizer.quantized is False and g.head.domain is None and g.head.knn.proj is None
    for bad, says in [("wdomain=0", "expected KEY=VALUE"), ("w_domain=lots", "takes a float"),
                      ("quantized_encoder=maybe", "true or false"), ("knn_dims", "expected KEY=VALUE")]:
        r = runner.invoke(app, ["train", "--data", str(synth_file), "--out", str(tmp_path / "x"), "--set", bad])
        assert r.exit_code == 2 and says in r.output and "Traceback" not in r.output
        assert len(r.output.strip().splitlines()) == 1


def test_eval_takes_strong_and_weak_together(gate_dir: Path, synth_file: Path) -> None:
    """One of the pair alone used to be ignored silently (the table still showed the automatic pair)."""
    for flag, other in (("--strong", "--weak"), ("--weak", "--strong")):
        r = runner.invoke(app, ["eval", "--gate", str(gate_dir), "--data", str(synth_file), flag, "small"])
        assert r.exit_code == 2 and isinstance(r.exception, SystemExit), r.output
        assert f"{flag} needs {other} too" in r.output and len(r.output.strip().splitlines()) == 1
    r = runner.invoke(app, ["eval", "--gate", str(gate_dir), "--data", str(synth_file), "--strong", "small",
                            "--weak", "big"])
    assert r.exit_code == 0, r.output
    assert "small (strong) vs big" in " ".join(r.output.split())  # the title wraps


@pytest.mark.parametrize("weights", ["quality=-1", "quality=1,cost=-0.5", "quality=1,latency=nan",
                                     "quality=1,cost_scale=0"])
def test_decide_rejects_negative_weights(gate_dir: Path, synth_file: Path, tmp_path: Path, weights: str) -> None:
    out = tmp_path / "d.jsonl"
    r = runner.invoke(app, ["decide", "--gate", str(gate_dir), "--data", str(synth_file), "--weights", weights,
                            "--out", str(out)])
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit), r.output
    assert "--weights:" in r.output and "must be a" in r.output and not out.exists()


def test_train_checks_out_before_training(synth_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import moai.gate.cli as gate_cli

    trained: list[int] = []
    monkeypatch.setattr(gate_cli, "_progress_train", lambda records, cfg: trained.append(len(records)))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    r = runner.invoke(app, ["train", "--data", str(synth_file), "--out", str(blocker / "gate")])
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit), r.output
    assert f"--out {blocker / 'gate'}: cannot write there" in r.output and trained == []

    def fails(records: object, cfg: object) -> None:
        raise ValueError("training went wrong")

    monkeypatch.setattr(gate_cli, "_progress_train", fails)
    r = runner.invoke(app, ["train", "--data", str(synth_file), "--out", str(tmp_path / "new" / "g")])
    assert r.exit_code == 2 and "training went wrong" in r.output
    assert not (tmp_path / "new" / "g").exists()  # the probe's directory does not outlive a failed run


def test_a_repeated_record_id_is_named_with_both_lines(gate_dir: Path, synth_file: Path, tmp_path: Path) -> None:
    data = tmp_path / "dup.jsonl"
    lines = synth_file.read_text().splitlines()
    data.write_text("\n".join([*lines, lines[0]]) + "\n")
    r = runner.invoke(app, ["score", "--gate", str(gate_dir), "--data", str(data), "--strong", "big",
                            "--weak", "small", "--out", str(tmp_path / "s.jsonl")])
    assert r.exit_code == 0, r.output
    assert f"warning: record id 'syn/0' at {data}:{len(lines) + 1} repeats {data}:1" in r.output

"""`moai gate` refusing what would give a broken gate or a meaningless number: settings no gate can score with,
gates that cannot score, scores on no scale, model names nothing scores, lax weights; and `gate eval` showing
what it leaves out, fixed routers as the single points they are, and the plot files it really writes."""

from __future__ import annotations

import json
import pickle
import shutil
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from cli_support import one_line_error, read_jsonl, write_jsonl
from typer.testing import CliRunner

import moai.gate.cli as gate_cli
from moai.bench.cli import app as bench_app
from moai.bench.datasets import RecordError, load_records
from moai.gate.cli import app
from moai.gate.encoder import encoder_installed
from moai.gate.store import Gate
from moai.gate.train import TrainConfig, fit_head

pytestmark = pytest.mark.skipif(not encoder_installed(), reason="MiniLM ONNX model/tokenizer not installed")
runner = CliRunner()


def _cells(output: str, router: str) -> list[str]:
    row = next(line for line in output.splitlines() if line.startswith(f"│ {router} "))
    return [c.strip() for c in row.split("│")[2:-1]]


def _warnings(output: str, needle: str) -> list[str]:
    return [ln for ln in output.splitlines() if ln.startswith("warning:") and needle in ln]


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Stands in for training: what reached it (nothing, when a setting is refused first)."""
    trained: list[Any] = []

    def fake(records: list[Any], cfg: Any) -> Any:
        trained.append(cfg)
        return SimpleNamespace(meta={"train_seconds": 0}, models=["big", "small"], save=lambda out: None)

    monkeypatch.setattr(gate_cli, "_progress_train", fake)
    return trained


@pytest.mark.parametrize(("args", "says"), [
    (["--set", "w_knn=inf"], "w_knn=inf must be a finite number"),
    (["--set", "w_domain=nan"], "w_domain=nan must be a finite number"),
    (["--set", "w_domain=-1"], "w_domain=-1.0 must be at least 0"),
    (["--set", "knn_k=0"], "knn_k=0 must be at least 1"),
    (["--set", "linear_c=0"], "linear_c=0.0 must be above 0"),
    (["--set", "w_knn=1_0"], "plain number"),
    (["--epochs", "0"], "--epochs 0: must be at least 1"),
    (["--epochs", "-3"], "--epochs -3: must be at least 1"),
    (["--set", "w_factor=0", "--set", "w_knn=0", "--set", "w_linear=0", "--set", "w_domain=0"], "are all 0"),
    (["--set", "w_factor=0", "--set", "w_knn=0", "--set", "w_linear=0"], "are all 0"),  # domain alone: no estimate
])
def test_train_refuses_settings_no_gate_can_score_with(args: list[str], says: str, synth_file: Path, tmp_path: Path,
                                                       no_training: list[Any]) -> None:
    out = tmp_path / "g"
    r = runner.invoke(app, ["train", "--data", str(synth_file), "--out", str(out), *args])
    one_line_error(r, says)
    assert no_training == [] and not out.exists()


def test_train_keeps_settings_that_make_sense(synth_file: Path, tmp_path: Path, no_training: list[Any]) -> None:
    r = runner.invoke(app, ["train", "--data", str(synth_file), "--out", str(tmp_path / "g"), "--epochs", "1",
                            "--set", "w_domain=0", "--set", "w_factor=0", "--set", "knn_dims=0"])
    assert r.exit_code == 0, r.output
    assert no_training[0] == TrainConfig(epochs=1, w_domain=0.0, w_factor=0.0, knn_dims=0)


def _with_weights(gate_dir: Path, out: Path, **weights: float) -> Path:
    """A copy of the gate whose blend weights were saved as given (trained before such settings were refused)."""
    shutil.copytree(gate_dir, out)
    blob = pickle.loads((out / "gate.pkl").read_bytes())
    blob["head"].weights.update(weights)
    (out / "gate.pkl").write_bytes(pickle.dumps(blob))
    return out


def _commands(gate: Path, data: Path, out: Path) -> list[list[str]]:
    return [["score", "--gate", str(gate), "--data", str(data), "--strong", "big", "--weak", "small", "--out",
             str(out)],
            ["decide", "--gate", str(gate), "--data", str(data), "--out", str(out)],
            ["eval", "--gate", str(gate), "--data", str(data)]]


@pytest.mark.parametrize("weights", [{"knn": float("inf")}, {"factor": 0.0, "knn": 0.0, "linear": 0.0, "domain": 0.0},
                                     {"domain": float("nan")}])
def test_a_gate_that_cannot_score_is_refused_when_loaded(weights: dict[str, float], gate_dir: Path,
                                                         synth_file: Path, tmp_path: Path) -> None:
    gate = _with_weights(gate_dir, tmp_path / "g", **weights)
    out = tmp_path / "out.jsonl"
    for cmd in _commands(gate, synth_file, out):
        one_line_error(runner.invoke(app, cmd), f"{gate}: not a usable gate")
    assert not out.exists()


def test_score_never_writes_a_score_that_is_not_a_number(gate_dir: Path, synth_file: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    real = Gate.quality_matrix

    def broken(self: Gate, texts: Any, names: Any, cached: bool = False) -> np.ndarray:
        q = real(self, texts, names, cached)
        q[3:5] = np.nan  # as a gate with an infinite weight gave (inf / inf)
        return q

    monkeypatch.setattr(Gate, "quality_matrix", broken)
    out = tmp_path / "out.jsonl"
    rows = read_jsonl(synth_file)
    for cmd in _commands(gate_dir, synth_file, out)[:2]:
        one_line_error(runner.invoke(app, cmd), "not a usable gate", "2 of 80 records", repr(rows[3]["id"]))
    assert not out.exists()


def test_a_broken_gate_is_named_as_not_usable(gate_dir: Path, synth_file: Path, tmp_path: Path) -> None:
    garbage = shutil.copytree(gate_dir, tmp_path / "garbage")
    (garbage / "gate.pkl").write_text("garbage\n")
    listed = shutil.copytree(gate_dir, tmp_path / "listed")
    (listed / "gate.json").write_text("[]")
    out = tmp_path / "out.jsonl"
    for gate in (garbage, listed, synth_file):
        for cmd in _commands(gate, synth_file, out):
            one_line_error(runner.invoke(app, cmd), f"{gate}:", "not a usable gate")
    assert not out.exists()


def test_scores_on_no_scale_are_refused_with_file_line_and_id(synth_file: Path, gate_dir: Path, tmp_path: Path,
                                                             no_training: list[Any]) -> None:
    rows = read_jsonl(synth_file)[:6]
    for bad in (-3.0, 250.0, 10.5):
        bent = [dict(r, scores=dict(r["scores"])) for r in rows]
        bent[1]["scores"]["small"] = bad
        data = write_jsonl(tmp_path / f"bad{bad}.jsonl", bent)
        needles = (f"{data}:2:", repr(rows[1]["id"]), "'small'", "outside every scale")
        with pytest.raises(RecordError, match="outside every scale"):
            load_records(data, check_scale=True)
        one_line_error(runner.invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "g")]), *needles)
        one_line_error(runner.invoke(app, ["eval", "--gate", str(gate_dir), "--data", str(data)]), *needles)
        one_line_error(runner.invoke(bench_app, ["report", str(data), "--plot", str(tmp_path / "r.png")]), *needles)
    assert no_training == []
    # the scales' own ends, and a 0-1 metric a little under 0 (RouterArena's NarrativeQA has -0.033), still load
    ok = [dict(r, scores={"big": v, "small": 1.0}) for r, v in zip(rows, (0.0, 10.0, -0.033, 0.5, 1.0, 7.0),
                                                                      strict=True)]
    assert len(load_records(write_jsonl(tmp_path / "ok.jsonl", ok), check_scale=True)) == 6


def _priced_three(path: Path, synth_file: Path) -> Path:
    """big (right everywhere, $0.01), small (wrong on the hard half, $0.0001) and mid (0.5 everywhere, $0.001)."""
    rows = read_jsonl(synth_file)
    for r in rows:
        r["scores"]["mid"], r["cost_usd"]["mid"] = 0.5, 0.001
    return write_jsonl(path, rows)


def test_eval_shows_fixed_routers_as_one_point_each_in_the_cost_table(gate_dir: Path, synth_file: Path,
                                                                     tmp_path: Path) -> None:
    data = _priced_three(tmp_path / "three.jsonl", synth_file)
    png = tmp_path / "e.png"
    r = runner.invoke(app, ["eval", "--gate", str(gate_dir), "--data", str(data), "--strong", "big", "--weak",
                            "small", "--baselines", "always-strong,always-weak,always-best", "--plot", str(png)])
    assert r.exit_code == 0, r.output
    pair, cost = r.output.split("quality vs cost")
    assert _cells(pair, "always-strong")[0] == "1.000" and _cells(pair, "always-weak")[0] == "0.000"
    small = np.mean([row["scores"]["small"] for row in read_jsonl(synth_file)])
    # AUC, q@50% of the best model's cost, q@100%, max q: each its own model's quality, at its own cost
    assert _cells(cost, "always-strong")[2:] == ["1.000", "1.000"]
    assert _cells(cost, "always-weak")[1:] == [f"{small:.3f}", f"{small:.3f}", f"{small:.3f}"]
    assert _cells(cost, "always-strong")[1] == "—"  # all of big's cost is over half of it
    # always-best ranks models by its training means, and 'mid' was not in training
    assert "always-best left out of the quality-vs-cost table" in " ".join(r.output.split())
    assert (tmp_path / "e-cost.png").is_file()


def test_eval_plot_prints_the_files_it_writes(gate_dir: Path, synth_file: Path, tmp_path: Path) -> None:
    data = _priced_three(tmp_path / "three.jsonl", synth_file)
    folder = tmp_path / "plots"
    folder.mkdir()
    r = runner.invoke(app, ["eval", "--gate", str(gate_dir), "--data", str(data), "--plot", str(folder)])
    one_line_error(r, f"--plot {folder} is a directory")
    assert list(folder.iterdir()) == [] and not (tmp_path / "plots.png").exists()
    r = runner.invoke(app, ["eval", "--gate", str(gate_dir), "--data", str(data), "--plot", str(folder / "noext")])
    assert r.exit_code == 0, r.output
    said = [ln.split("plot -> ", 1)[1] for ln in r.output.splitlines() if ln.startswith("plot -> ")]
    assert said == [str(folder / "noext.png"), str(folder / "noext-cost.png")]
    assert sorted(p.name for p in folder.iterdir()) == ["noext-cost.png", "noext.png"]


def test_score_warns_about_a_pair_model_no_record_scores(gate_dir: Path, synth_file: Path, tmp_path: Path) -> None:
    rows = [dict(r, scores={"big": r["scores"]["big"], "tiny": r["scores"]["small"]}) for r in read_jsonl(synth_file)]
    data = write_jsonl(tmp_path / "tiny.jsonl", rows[:10])
    out = tmp_path / "s.jsonl"
    r = runner.invoke(app, ["score", "--gate", str(gate_dir), "--data", str(data), "--strong", "big", "--weak",
                            "small", "--out", str(out)])
    assert r.exit_code == 0, r.output  # the gate trained on small: its estimate is real, but not the records'
    warned = _warnings(r.output, "--weak 'small': no record scores it")
    assert len(warned) == 1 and "'big', 'tiny'" in warned[0]
    r = runner.invoke(app, ["score", "--gate", str(gate_dir), "--data", str(data), "--strong", "gpt-9", "--weak",
                            "tiny", "--out", str(tmp_path / "s2.jsonl")])
    one_line_error(r, "--strong 'gpt-9': no such model in these records or the gate")
    assert not (tmp_path / "s2.jsonl").exists()


@pytest.mark.parametrize(("weights", "says"), [
    ("quality=1,cost=0.3,cost=5", "cost more than once"),
    ("", "names no weight"),
    (" , ", "names no weight"),
    ("=1", "a weight with no name"),
    ("quality=1_0", "not a plain number"),
])
def test_decide_refuses_lax_weights(weights: str, says: str, gate_dir: Path, synth_file: Path,
                                    tmp_path: Path) -> None:
    out = tmp_path / "d.jsonl"
    r = runner.invoke(app, ["decide", "--gate", str(gate_dir), "--data", str(synth_file), "--weights", weights,
                            "--out", str(out)])
    one_line_error(r, "--weights", says)
    assert not out.exists()


def test_decide_says_models_is_not_used_for_scored_records(gate_dir: Path, synth_file: Path,
                                                           tmp_path: Path) -> None:
    out = tmp_path / "d.jsonl"
    r = runner.invoke(app, ["decide", "--gate", str(gate_dir), "--data", str(synth_file), "--models", "other",
                            "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "note: --models is not used: every record has scores" in r.output and "warning" not in r.output
    rows = read_jsonl(synth_file)[:6]
    mixed = write_jsonl(tmp_path / "mixed.jsonl", rows[:4] + [{"id": x["id"], "prompt": x["prompt"]}
                                                               for x in rows[4:]])
    r = runner.invoke(app, ["decide", "--gate", str(gate_dir), "--data", str(mixed), "--models", "big,small",
                            "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "--models applies to the 2 record(s) without scores; the 4 with scores" in " ".join(r.output.split())


def test_eval_warns_when_strong_scores_below_weak(gate_dir: Path, synth_file: Path) -> None:
    r = runner.invoke(app, ["eval", "--gate", str(gate_dir), "--data", str(synth_file), "--strong", "small",
                            "--weak", "big"])
    assert r.exit_code == 0, r.output
    assert len(_warnings(r.output, "--strong small scores below --weak big")) == 1 and "inverted" in r.output
    r = runner.invoke(app, ["eval", "--gate", str(gate_dir), "--data", str(synth_file)])
    assert r.exit_code == 0 and "inverted" not in r.output


def test_eval_says_which_records_the_pair_leaves_out(gate_dir: Path, synth_file: Path, tmp_path: Path) -> None:
    rows = read_jsonl(synth_file)
    a = write_jsonl(tmp_path / "a.jsonl", rows[:20])
    b = write_jsonl(tmp_path / "b.jsonl", [dict(r, scores={"big": 1.0, "other": 0.0}) for r in rows[20:30]])
    r = runner.invoke(app, ["eval", "--gate", str(gate_dir), "--data", str(a), "--data", str(b), "--strong", "big",
                            "--weak", "small"])
    assert r.exit_code == 0, r.output
    warned = _warnings(r.output, "left out of the pair table")
    assert len(warned) == 1 and "10 of 30 records do not score both big and small" in warned[0]
    assert "(all of b.jsonl)" in warned[0] and "20 records" in " ".join(r.output.split())


def test_eval_names_the_gates_training_file_when_it_is_gone(gate_dir: Path, synth_file: Path,
                                                            tmp_path: Path) -> None:
    gate = shutil.copytree(gate_dir, tmp_path / "g")
    meta = json.loads((gate / "gate.json").read_text())
    meta["train_files"] = [str(tmp_path / "gone.jsonl")]
    (gate / "gate.json").write_text(json.dumps(meta))
    r = runner.invoke(app, ["eval", "--gate", str(gate), "--data", str(synth_file), "--baselines", "random"])
    one_line_error(r, "the gate's training file", "gone.jsonl", "no such file")


def test_training_progress_reaches_its_total_when_prompts_repeat(tmp_path: Path) -> None:
    """A repeated prompt is embedded once; the bar still ends at the number of records, not of distinct prompts."""
    tag = uuid.uuid4().hex  # prompts no earlier test embedded: a cold cache
    rows = [{"id": f"p/{i}", "prompt": f"question {i % 6} about {tag} number {i % 6}",
             "scores": {"big": 1.0, "small": float(i % 2)}} for i in range(12)]
    recs = load_records(write_jsonl(tmp_path / "rep.jsonl", rows))
    seen: list[tuple[str, int, int]] = []
    fit_head(recs, TrainConfig(epochs=1, w_domain=0.0), progress=lambda *a: seen.append(a))
    embed = [s for s in seen if s[0] == "embed"]
    assert embed[-1] == ("embed", 12, 12), embed

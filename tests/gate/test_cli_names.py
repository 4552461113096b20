"""`moai gate` on model names as users type them (case variants, repeats, misspellings), on a --data file given
twice, and on how close a pair's mean scores must be, whatever the score scale, for APGR to be called unstable."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cli_support import one_line_error, read_jsonl, write_jsonl
from typer.testing import CliRunner

import moai.gate.cli as gate_cli
from moai.gate.cli import app
from moai.gate.encoder import encoder_installed
from moai.gate.store import Gate

pytestmark = pytest.mark.skipif(not encoder_installed(), reason="MiniLM ONNX model/tokenizer not installed")
runner = CliRunner()


def _bare(path: Path, synth_file: Path, n: int = 10) -> Path:
    """Prompts without scores: `decide` takes its candidates from --models."""
    return write_jsonl(path, [{"id": r["id"], "prompt": r["prompt"]} for r in read_jsonl(synth_file)[:n]])


def _warnings(output: str, needle: str) -> list[str]:
    return [ln for ln in output.splitlines() if ln.startswith("warning:") and needle in ln]


def test_decide_models_are_the_known_models_each_once(gate_dir: Path, synth_file: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """'BIG' and 'big' are one model to the gate: one candidate, written as the gate (or the records) spell it."""
    seen: list[set[str]] = []
    decide = Gate.decide

    def spy(self: Gate, messages: Any, cards: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(set(cards))
        return decide(self, messages, cards, *args, **kwargs)

    monkeypatch.setattr(Gate, "decide", spy)
    out = tmp_path / "d.jsonl"
    r = runner.invoke(app, ["decide", "--gate", str(gate_dir), "--data", str(_bare(tmp_path / "b.jsonl", synth_file)),
                            "--models", "BIG,big, Small ,small,big", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert seen and all(c == {"big", "small"} for c in seen)
    assert {json.loads(x)["model"] for x in out.read_text().splitlines()} <= {"big", "small"}
    assert "warning" not in r.output


def test_decide_models_take_the_records_spelling_and_refuse_an_ambiguous_one(gate_dir: Path, synth_file: Path,
                                                                            tmp_path: Path) -> None:
    rows = read_jsonl(synth_file)[:10]
    scored = [{**row, "scores": {"GPT-4": 1.0, "small": 0.0}} for row in rows[:3]]
    bare = [{"id": row["id"], "prompt": row["prompt"]} for row in rows[3:]]
    out = tmp_path / "d.jsonl"
    data = write_jsonl(tmp_path / "mixed.jsonl", scored + bare)
    r = runner.invoke(app, ["decide", "--gate", str(gate_dir), "--data", str(data), "--models", "gpt-4,Small",
                            "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert {json.loads(x)["model"] for x in out.read_text().splitlines()} <= {"GPT-4", "small"}
    # two spellings in the records and neither exact: which one a decision should name cannot be told
    other = write_jsonl(tmp_path / "other.jsonl", [{**rows[0], "id": "o/1", "scores": {"Gpt-4": 1.0, "small": 0.0}}])
    r = runner.invoke(app, ["decide", "--gate", str(gate_dir), "--data", str(data), "--data", str(other),
                            "--models", "gpt-4,small", "--out", str(tmp_path / "amb.jsonl")])
    one_line_error(r, "--models", "'gpt-4'", "'GPT-4'", "'Gpt-4'")
    assert not (tmp_path / "amb.jsonl").exists()


def test_an_unknown_name_is_allowed_but_its_close_matches_are_named(gate_dir: Path, synth_file: Path,
                                                                    tmp_path: Path) -> None:
    """An unseen model gets the gate's prior (the documented behaviour for new models), so `decide` and `score`
    keep it on bare prompts; the warning names the trained model it is probably a misspelling of."""
    out = tmp_path / "d.jsonl"
    r = runner.invoke(app, ["decide", "--gate", str(gate_dir), "--data", str(_bare(tmp_path / "b.jsonl", synth_file)),
                            "--models", "bgi,small", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert len(_warnings(r.output, "'bgi' ~ 'big'")) == 1
    r = runner.invoke(app, ["score", "--gate", str(gate_dir), "--data", str(_bare(tmp_path / "b.jsonl", synth_file)),
                            "--strong", "bgi", "--weak", "small", "--out", str(tmp_path / "s.jsonl")])
    assert r.exit_code == 0, r.output
    assert len(_warnings(r.output, "'bgi' ~ 'big'")) == 1
    # records that score their models: a name neither they nor the gate know is refused, as `gate eval` does
    r = runner.invoke(app, ["score", "--gate", str(gate_dir), "--data", str(synth_file), "--strong", "bgi",
                            "--weak", "small", "--out", str(tmp_path / "s2.jsonl")])
    one_line_error(r, "--strong 'bgi'", "did you mean 'big'", "records' models: 'big', 'small'")
    assert not (tmp_path / "s2.jsonl").exists()


def test_eval_names_the_close_matches_of_an_unknown_pair_model(gate_dir: Path, synth_file: Path) -> None:
    """The pair needs the records' scores: a name not in them is an error naming what was probably meant."""
    for flag, other in (("--strong", "--weak"), ("--weak", "--strong")):
        r = runner.invoke(app, ["eval", "--gate", str(gate_dir), "--data", str(synth_file), flag, "smal",
                                other, "big"])
        one_line_error(r, flag, "'smal'", "did you mean 'small'")


def _same_file_thrice(synth_file: Path, tmp_path: Path) -> list[str]:
    """The synthetic file as itself, through a symbolic link and through a hard link."""
    sym, hard = tmp_path / "sym.jsonl", tmp_path / "hard.jsonl"
    sym.symlink_to(synth_file)
    os.link(synth_file, hard)
    return ["--data", str(synth_file), "--data", str(sym), "--data", str(hard)]


def test_train_reads_a_file_given_twice_once(synth_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No training needed: the records handed to training and the files the gate records are what count."""
    got: dict[str, Any] = {}

    def fake_train(records: list[Any], cfg: Any) -> Any:
        got["records"] = records
        got["gate"] = SimpleNamespace(meta={"train_seconds": 0}, models=["big", "small"], save=lambda out: None)
        return got["gate"]

    monkeypatch.setattr(gate_cli, "_progress_train", fake_train)
    r = runner.invoke(app, ["train", *_same_file_thrice(synth_file, tmp_path), "--data", str(synth_file),
                            "--out", str(tmp_path / "g")])
    assert r.exit_code == 0, r.output
    assert len(got["records"]) == len(read_jsonl(synth_file))
    assert got["gate"].meta["train_files"] == [str(synth_file.resolve())]
    assert len(_warnings(r.output, "given")) == 1 and "4 times" in r.output and "read once" in r.output
    assert "repeats" not in r.output  # no repeated-id warning: nothing was read twice


@pytest.mark.parametrize("cmd", ["score", "decide", "eval"])
def test_scoring_commands_read_a_file_given_twice_once(cmd: str, gate_dir: Path, synth_file: Path,
                                                       tmp_path: Path) -> None:
    extra = {"score": ["--strong", "big", "--weak", "small"], "decide": [], "eval": []}[cmd]
    out = [] if cmd == "eval" else ["--out", str(tmp_path / "out.jsonl")]
    r = runner.invoke(app, [cmd, "--gate", str(gate_dir), *_same_file_thrice(synth_file, tmp_path), *extra, *out])
    assert r.exit_code == 0, r.output
    n = len(read_jsonl(synth_file))
    warned = _warnings(r.output, "given")
    assert len(warned) == 1 and "3 times" in warned[0] and "sym.jsonl" in warned[0] and "read once" in warned[0]
    if cmd == "eval":
        assert f"{n} records" in " ".join(r.output.split())
    else:
        assert len((tmp_path / "out.jsonl").read_text().splitlines()) == n


def _pair(path: Path, synth_file: Path, strong: list[float], weak: float) -> Path:
    """The synthetic prompts with 'big' cycling through ``strong`` and 'small' at ``weak`` on every record."""
    rows = read_jsonl(synth_file)
    for i, r in enumerate(rows):
        r["scores"] = {"big": strong[i % len(strong)], "small": weak}
    return write_jsonl(path, rows)


def test_eval_calls_a_gap_small_relative_to_the_spread_of_the_scores(gate_dir: Path, synth_file: Path,
                                                                     tmp_path: Path) -> None:
    """A 0-1 metric between 0.90 and 1.00 where the means differ by 0.01 (a tenth of the spread) is a real gap;
    0.001 is not. The same records on the 1-10 judge scale (1 + 9x) read alike."""
    def near(strong: list[float], weak: float, name: str) -> bool:
        r = runner.invoke(app, ["eval", "--gate", str(gate_dir), "--data", str(_pair(tmp_path / name, synth_file,
                                                                                          strong, weak)),
                                "--strong", "big", "--weak", "small"])
        assert r.exit_code == 0, r.output
        return bool(_warnings(r.output, "unstable"))

    assert not near([0.90, 1.00], 0.94, "metric.jsonl")
    assert near([0.90, 1.00], 0.949, "metric-close.jsonl")
    assert not near([1 + 9 * 0.90, 1 + 9 * 1.00], 1 + 9 * 0.94, "judge.jsonl")
    assert near([1 + 9 * 0.90, 1 + 9 * 1.00], 1 + 9 * 0.949, "judge-close.jsonl")
    assert near([0.0, 1.0], 0.49, "binary.jsonl")  # 0/1 scores span 0-1: under 0.02 is close, as it was

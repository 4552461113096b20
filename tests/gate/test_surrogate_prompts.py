"""A prompt holding a lone UTF-16 surrogate (the JSON escape "\\ud800" on its own: valid JSON, no Unicode text)
is embedded as if it held U+FFFD, by every gate command: the tokenizer refused it with a TypeError."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from moai.gate.cli import app
from moai.gate.encoder import EmbeddingCache, MiniLMEncoder, embed_cached, encoder_installed

needs_encoder = pytest.mark.skipif(not encoder_installed(), reason="MiniLM ONNX model/tokenizer not installed")
LONE = "bad \ud800 surrogate"


def test_clean_text_replaces_lone_surrogates_only() -> None:
    from moai.gate.encoder import clean_text

    assert clean_text(LONE) == "bad \ufffd surrogate"
    assert clean_text("x \udfff") == "x \ufffd"
    assert clean_text("split \ud83d\ude00 pair") == "split \U0001f600 pair"
    text = "plain 🙂 text"
    assert clean_text(text) is text


@needs_encoder
def test_encoder_embeds_a_lone_surrogate_as_a_replacement_character(tmp_path: Path) -> None:
    enc = MiniLMEncoder()
    got = enc.encode([LONE, "fine"])
    np.testing.assert_allclose(got, enc.encode(["bad \ufffd surrogate", "fine"]), atol=1e-6)
    np.testing.assert_allclose(enc.encode([LONE])[0], got[0], atol=1e-6)
    assert enc.count_tokens(LONE) == enc.count_tokens("bad \ufffd surrogate")
    cache = EmbeddingCache(tmp_path / "cache")  # keys hash the text, so such a text can be stored
    first = embed_cached(enc, [LONE, "fine"], cache)
    assert list((tmp_path / "cache").glob("shard-*.npz"))
    again = embed_cached(enc, [LONE], EmbeddingCache(tmp_path / "cache"))
    np.testing.assert_allclose(again[0], first[0])


def _rows(synth_file: Path) -> list[dict[str, object]]:
    rows = [json.loads(line) for line in synth_file.read_text().splitlines() if line.strip()]
    rows.append({"id": "lone", "prompt": LONE, "scores": {"big": 1.0, "small": 0.0}})
    return rows


@needs_encoder
def test_every_gate_command_takes_a_lone_surrogate(synth_file: Path, tmp_path: Path) -> None:
    data = tmp_path / "lone.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _rows(synth_file)))  # json writes "\ud800" escaped
    runner = CliRunner()
    gate = tmp_path / "gate"
    r = runner.invoke(app, ["train", "--data", str(data), "--out", str(gate), "--epochs", "3"])
    assert r.exit_code == 0, (r.output, r.exception)
    r = runner.invoke(app, ["score", "--gate", str(gate), "--data", str(data), "--strong", "big", "--weak", "small",
                            "--out", str(tmp_path / "s.jsonl")])
    assert r.exit_code == 0, (r.output, r.exception)
    assert json.loads((tmp_path / "s.jsonl").read_text().splitlines()[-1])["id"] == "lone"
    r = runner.invoke(app, ["decide", "--gate", str(gate), "--data", str(data), "--out", str(tmp_path / "d.jsonl")])
    assert r.exit_code == 0, (r.output, r.exception)
    r = runner.invoke(app, ["eval", "--gate", str(gate), "--data", str(data)])
    assert r.exit_code == 0, (r.output, r.exception)
    assert "APGR" in r.output

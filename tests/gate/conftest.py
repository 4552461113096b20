"""A tiny synthetic routing set where the strong model only matters for 'hard' (math) prompts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

EASY = ["say hello to {}", "what colour is the {}", "name a fruit like {}", "greet {} politely", "spell {}"]
HARD = ["integrate x^{} dx from 0 to 7", "solve {} x + 3 = 11 for x", "prove that {} is prime or not",
        "compute the derivative of sin({} x)", "factor the polynomial x^2 - {}"]
WORDS = ["apple", "river", "sky", "cat", "moon", "bread", "car", "tree"]


def make_rows(n_per: int = 8) -> list[dict]:
    rows = []
    for k in range(n_per):
        for t in EASY:
            rows.append({"id": f"syn/{len(rows)}", "prompt": t.format(WORDS[k % len(WORDS)]),
                         "scores": {"big": 1.0, "small": 1.0}, "cost_usd": {"big": 0.01, "small": 0.0001}})
        for t in HARD:
            rows.append({"id": f"syn/{len(rows)}", "prompt": t.format(k + 2),
                         "scores": {"big": 1.0, "small": 0.0}, "cost_usd": {"big": 0.01, "small": 0.0001}})
    return rows


@pytest.fixture(scope="session")
def synth_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("data") / "synth.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in make_rows()) + "\n")
    return p


@pytest.fixture(scope="session")
def gate_dir(synth_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small gate trained once through the CLI on the synthetic records, shared by the CLI tests."""
    from typer.testing import CliRunner

    from moai.gate.cli import app

    out = tmp_path_factory.mktemp("cli") / "gate"
    r = CliRunner().invoke(app, ["train", "--data", str(synth_file), "--out", str(out), "--epochs", "10"])
    assert r.exit_code == 0, r.output
    assert (out / "gate.json").is_file()
    return out


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep test embeddings out of the user's cache."""
    monkeypatch.setenv("MOAI_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))

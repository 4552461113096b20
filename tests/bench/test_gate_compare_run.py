"""The comparison benchmark end to end on a slice of ../shared/data/routing: every set reported, every plot written."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from types import ModuleType

import pytest

from moai.gate.encoder import encoder_installed

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "routing"


def test_a_column_without_any_value_prints_a_dash(gate_compare: ModuleType) -> None:
    assert gate_compare.fmt([math.nan, math.nan]) == "—"
    assert gate_compare.fmt([0.5, 0.7]) == "0.600±0.100"
    assert gate_compare.fmt([20.0, 30.0], pct=True) == "25.0±5.0"


@pytest.mark.skipif(not encoder_installed(), reason="MiniLM ONNX model/tokenizer not installed")
def test_every_set_is_reported_and_plotted(gate_compare: ModuleType, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    if not (DATA / "routerarena.jsonl").is_file():
        pytest.skip(f"shared routing data not found under {DATA}")
    monkeypatch.setenv("MOAI_CACHE_DIR", str(tmp_path / "cache"))
    data = tmp_path / "routing"
    data.mkdir()
    for f in DATA.glob("*.jsonl"):
        with f.open(encoding="utf-8") as src:
            (data / f.name).write_text("".join(next(src) for _ in range(40)), encoding="utf-8")
    shutil.copy(DATA / "llmrouter-models.json", data)
    out = tmp_path / "out"
    rc = gate_compare.main(["--data", str(data), "--folds", "2", "--no-ood", "--only-gate", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0
    pairs = {short: strong for short, (_, strong, _) in gate_compare.PAIR_SETS.items()}
    for short, strong in pairs.items():
        assert f"## {short}: {strong} vs " in text
        assert (out / f"{short}.png").stat().st_size > 0
    for s in gate_compare.MULTI_SETS:
        assert f"## {s}   best single model" in text
        assert (out / f"{s}.png").stat().st_size > 0
    # RouterArena's better model is also its cheaper one: no operating point under its cost, shown as a dash
    arena = text.split("## routerarena   best single model")[1]
    assert arena.splitlines()[2].split()[2] == "—"

"""`moai gate train` stopped with Ctrl-C says so on stderr, exits 130 and leaves no gate folder behind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from moai.gate import store
from moai.gate.cli import app


def interrupted(*_a: Any, **_k: Any) -> Any:
    raise KeyboardInterrupt


@pytest.mark.parametrize("existing", [False, True], ids=["new-out", "existing-out"])
def test_ctrl_c_during_training_says_nothing_was_written(
    synth_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: bool
) -> None:
    monkeypatch.setattr(store, "train_gate", interrupted)
    out = tmp_path / "gate"
    if existing:
        out.mkdir()
        (out / "notes.txt").write_text("kept")
    r = CliRunner().invoke(app, ["train", "--data", str(synth_file), "--out", str(out)])
    assert r.exit_code == 130, r.output
    assert f"interrupted: training stopped, nothing written to {out}" in r.stderr
    assert "Traceback" not in r.output
    if existing:
        assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    else:
        assert not out.exists()  # the folder made to check it was writable is removed again

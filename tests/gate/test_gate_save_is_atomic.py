"""Saving a gate is all or nothing: Ctrl-C in the middle of a save leaves the gate folder as it was, the complete
older gate or none, never a new gate.pkl beside an old or half-written gate.json; files a killed save left are
removed by the next save."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from moai.gate.runtime import DEFAULT_GATE_DIR
from moai.gate.store import Gate, GateLoadError


@pytest.fixture(scope="module")
def gate() -> Gate:
    return Gate.load(DEFAULT_GATE_DIR)


def _marked(gate: Gate, mark: str) -> Gate:
    """The gate, told apart from its other saves in both of its files."""
    gate.meta["mark"] = mark
    gate.head.mark = mark  # type: ignore[attr-defined]
    return gate


def _snapshot(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())} if d.exists() else {}


class _CutWriter:
    """A file that takes half of what is written to it, then meets Ctrl-C."""

    def __init__(self, f: Any) -> None:
        self.f = f

    def write(self, data: Any) -> int:
        self.f.write(data[: len(data) // 2])
        self.f.flush()
        raise KeyboardInterrupt

    def __getattr__(self, name: str) -> Any:
        return getattr(self.f, name)

    def __enter__(self) -> _CutWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.f.close()


def _interrupt_write(monkeypatch: pytest.MonkeyPatch, nth: int) -> None:
    """Ctrl-C halfway through the ``nth`` file the save writes (1: gate.pkl, 2: gate.json)."""
    real = Path.open
    written: list[str] = []

    def open_(self: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        f = real(self, mode, *args, **kwargs)
        if "w" not in mode:
            return f
        written.append(self.name)
        return _CutWriter(f) if len(written) == nth else f

    monkeypatch.setattr(Path, "open", open_)


@pytest.mark.parametrize("nth", [1, 2], ids=["in-gate.pkl", "in-gate.json"])
def test_an_interrupted_save_leaves_the_older_gate_whole(gate: Gate, tmp_path: Path, nth: int,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "g"
    _marked(gate, "old").save(out)
    before = _snapshot(out)
    with monkeypatch.context() as m:
        _interrupt_write(m, nth)
        with pytest.raises(KeyboardInterrupt):
            _marked(gate, "new").save(out)
    assert _snapshot(out) == before  # nothing half-written left in it either
    loaded = Gate.load(out)
    assert loaded.meta["mark"] == loaded.head.mark == "old"
    _marked(gate, "new").save(out)  # and the next save goes through
    assert Gate.load(out).head.mark == "new"


@pytest.mark.parametrize("nth", [1, 2], ids=["in-gate.pkl", "in-gate.json"])
@pytest.mark.parametrize("made", [False, True], ids=["no-folder", "empty-folder"])
def test_an_interrupted_first_save_leaves_no_gate(gate: Gate, tmp_path: Path, nth: int, made: bool,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """``moai gate train --out`` makes the (empty) folder before training: either way no half gate is left."""
    out = tmp_path / "g"
    if made:
        out.mkdir()
    with monkeypatch.context() as m:
        _interrupt_write(m, nth)
        with pytest.raises(KeyboardInterrupt):
            _marked(gate, "new").save(out)
    assert _snapshot(out) == {}
    with pytest.raises(GateLoadError, match="not a gate directory \\(missing gate.json\\)"):
        Gate.load(out)


def test_files_left_by_a_killed_save_are_harmless_and_removed_by_the_next(gate: Gate, tmp_path: Path) -> None:
    out = tmp_path / "g"
    _marked(gate, "old").save(out)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    killed = out / f".gate.pkl.saving-{gone.stdout.strip()}-0a1b2c3d"  # its process has exited
    killed.write_bytes(b"half a gate")
    running = out / f".gate.pkl.saving-{os.getppid()}-0a1b2c3d"  # a process still running may still be writing it
    running.write_bytes(b"a gate being written")
    assert Gate.load(out).head.mark == "old"
    _marked(gate, "new").save(out)
    assert Gate.load(out).head.mark == "new"
    assert sorted(p.name for p in out.iterdir()) == sorted(["gate.json", "gate.pkl", running.name])


def test_a_folder_holding_more_than_a_gate_keeps_the_rest(gate: Gate, tmp_path: Path) -> None:
    """Not replaced as a whole: what else is in it (notes, another model's files) stays."""
    out = tmp_path / "g"
    _marked(gate, "old").save(out)
    (out / "notes.txt").write_text("kept")
    (out / "sub").mkdir()
    _marked(gate, "new").save(out)
    assert (out / "notes.txt").read_text() == "kept" and (out / "sub").is_dir()
    assert Gate.load(out).head.mark == "new"
    assert sorted(p.name for p in out.iterdir()) == ["gate.json", "gate.pkl", "notes.txt", "sub"]


SAVER = """
import sys
from moai.gate.store import Gate
gate = Gate.load(sys.argv[1])
print("ready", flush=True)
i = 0
while True:
    i += 1
    gate.meta["mark"] = gate.head.mark = f"{sys.argv[3]}-{i}"
    gate.save(sys.argv[2])
"""


def test_ctrl_c_in_a_process_saving_over_and_over_never_leaves_a_mixed_gate(gate: Gate, tmp_path: Path) -> None:
    """A real SIGINT at a moment of its own: the gate.json and gate.pkl found afterwards are of one save."""
    out = tmp_path / "g"
    _marked(gate, "first").save(out)
    for run in range(3):
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(DEFAULT_GATE_DIR), str(out), str(run)],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(0.15 + 0.1 * run)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) != 0
        loaded = Gate.load(out)
        assert loaded.meta["mark"] == loaded.head.mark
    assert [p.name for p in tmp_path.iterdir()] == ["g"]


def test_ctrl_c_between_the_renames_of_a_save_waits_for_them(gate: Gate, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The files are renamed into place one after the other: a Ctrl-C right after the first takes effect once the
    second is in place too."""
    import moai.gate.store as store

    out = tmp_path / "g"
    _marked(gate, "old").save(out)
    real, renamed = os.replace, []

    def replace(src: Any, dst: Any) -> None:
        real(src, dst)
        renamed.append(dst)
        if len(renamed) == 1:
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(store.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        _marked(gate, "new").save(out)
    loaded = Gate.load(out)
    assert loaded.meta["mark"] == loaded.head.mark == "new"
    assert sorted(p.name for p in out.iterdir()) == ["gate.json", "gate.pkl"]


def test_saves_from_two_threads_of_one_process_do_not_remove_each_other_s_files(gate: Gate, tmp_path: Path) -> None:
    """A save's files being written are no leftovers to another save of the same process."""
    import threading

    out, errors = tmp_path / "g", []

    def save_many() -> None:
        try:
            for _ in range(8):
                gate.save(out)
        except Exception as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)

    threads = [threading.Thread(target=save_many) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(p.name for p in out.iterdir()) == ["gate.json", "gate.pkl"]
    Gate.load(out)


def test_a_leftover_named_with_this_process_s_pid_is_removed_when_no_save_of_it_runs(gate: Gate,
                                                                                      tmp_path: Path) -> None:
    """A killed process's pid comes round again (a container's server is always pid 1): its file is no save of
    this process unless one is in progress."""
    out = tmp_path / "g"
    gate.save(out)
    stale = out / f".gate.pkl.saving-{os.getpid()}-deadbeef"
    stale.write_bytes(b"half a gate")
    gate.save(out)
    assert sorted(p.name for p in out.iterdir()) == ["gate.json", "gate.pkl"]

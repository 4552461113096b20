"""``moai bench collect`` on a real local model, interrupted mid-generation.

llama.cpp runs each generation on a thread of its own; an interrupted run must stop it and wait for it to leave
llama.cpp before the process exits, or the exit frees the model under a running decode and the process dies of
SIGSEGV instead of exiting 130 with its journal kept.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from moai.bench import collect as col

QUESTIONS = [{"query": f"What is {a} + {b}? Explain each step, then give the answer.", "ground_truth": str(a + b),
              "metric": "GSM8K", "task_name": "arithmetic"} for a, b in zip(range(101, 141), range(7, 47), strict=True)]


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.integration
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_local_run_interrupted_mid_generation_exits_130_with_its_journal(
    tmp_path: Path, smollm_path: Path, sig: signal.Signals
) -> None:
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    config = tmp_path / "moai.yaml"
    config.write_text(f"models:\n  smol: {{provider: local, path: {smollm_path}, privacy: local}}\n"
                      "mixes:\n  default: {strategy: route}\n")
    out = tmp_path / "records.jsonl"
    journal = col.journal_path(out)
    cmd = [sys.executable, "-m", "moai.cli", "bench", "collect", "-q", str(questions), "--config", str(config),
           "-m", "smol", "--out", str(out)]
    # as from a terminal: a background child would inherit SIGINT ignored
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "COLUMNS": "200", "PYTHONFAULTHANDLER": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None and not lines(journal):
            time.sleep(0.02)
        assert proc.poll() is None and lines(journal), "no pair graded within 60 s"
        time.sleep(0.1)  # into the next pair's generation
        proc.send_signal(sig)
        output = proc.communicate(timeout=30)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, output[-3000:]
    assert "Re-run the same command to resume." in output and "Fatal Python error" not in output, output[-3000:]
    kept = [json.loads(line) for line in lines(journal)]  # every line whole
    assert 1 <= len(kept) < len(QUESTIONS)
    assert all(e["model"] == "smol" and e["response"] for e in kept)
    assert f"interrupted: {len(kept)} graded pairs kept" in output
    records = [json.loads(line) for line in lines(out)]
    assert sum(len(r["scores"]) for r in records) == len(kept)  # records rebuilt from the journal

"""`moai bench collect` on outputs it cannot write, journals left torn by a crash, an empty --models, a question
file given twice, and records kept from earlier runs: each refused or said before a model is called or paid for."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import write_jsonl
from stub_openai import Script, StubServer
from typer.testing import CliRunner

from moai.bench import collect as col
from moai.bench.cli import app

GSM = [{"question": f"What is {i} + 3?", "answer": f"#### {i + 3}"} for i in range(4)]
MMLU = [{"id": "mmlu/x/0", "subject": "astronomy", "question": "Which?", "choices": ["a", "b", "c", "d"],
         "answer": "B"}]


def _config(tmp_path: Path, url: str) -> Path:
    cfg = tmp_path / "mix.yaml"
    cfg.write_text(f"""
models:
  alpha: {{provider: openai_compat, endpoint: {url}, privacy: private, params_b: 1.0, max_retries: 0}}
  beta: {{provider: openai_compat, endpoint: {url}, privacy: private, params_b: 7.0, max_retries: 0}}
mixes:
  default: {{strategy: route}}
""")
    return cfg


@pytest.fixture(autouse=True)
def _keep_sigterm() -> Iterator[None]:
    """A full `bench collect` in this process turns SIGTERM into KeyboardInterrupt: put the handler back."""
    before = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, before)


@pytest.fixture
def stub(tmp_path: Path) -> Iterator[tuple[StubServer, Path]]:
    with StubServer(Script(reply="#### 3")) as server:
        yield server, _config(tmp_path, server.url)


def _run(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(app, ["collect", *args])
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    return r.exit_code, r.output


def _error_line(output: str) -> str:
    lines = [ln for ln in output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in output, output
    return lines[0]


def test_an_out_that_is_a_directory_is_refused_before_any_call(tmp_path: Path,
                                                              stub: tuple[StubServer, Path]) -> None:
    server, cfg = stub
    q = write_jsonl(tmp_path / "q.jsonl", GSM)
    (tmp_path / "newdir").mkdir()
    before = sorted(os.listdir(tmp_path))
    for extra in ([], ["--overwrite"], ["--regrade"]):
        code, out = _run("-q", str(q), "-m", "alpha,beta", "-c", str(cfg), "-o", str(tmp_path / "newdir"), *extra)
        assert code == 2 and "is a directory; name the file to write" in _error_line(out)
    assert server.script.calls == 0 and sorted(os.listdir(tmp_path)) == before  # no .tmp, no journal
    with pytest.raises(col.QuestionFormatError, match="is a directory"):  # the library refuses too
        col.check_writable(tmp_path / "newdir")


def test_an_out_that_cannot_be_written_is_refused_before_any_call(tmp_path: Path,
                                                                 stub: tuple[StubServer, Path]) -> None:
    server, cfg = stub
    q = write_jsonl(tmp_path / "q.jsonl", GSM)
    before = sorted(os.listdir(tmp_path))
    for target in (q / "o.jsonl", q / "deeper" / "o.jsonl", Path("/proc/o.jsonl")):
        code, out = _run("-q", str(q), "-m", "alpha", "-c", str(cfg), "-o", str(target))
        line = _error_line(out)
        assert code == 2 and f"{target}: cannot write" in line, line
    assert server.script.calls == 0 and sorted(os.listdir(tmp_path)) == before
    # a folder that does not exist yet is still made, as before
    code, out = _run("-q", str(q), "-m", "alpha", "-c", str(cfg), "-o", str(tmp_path / "new" / "o.jsonl"))
    assert code == 0, out
    assert len(col.read_journal(col.journal_path(tmp_path / "new" / "o.jsonl"))) == len(GSM)


def test_a_resume_after_a_torn_journal_line_starts_on_a_fresh_line(tmp_path: Path,
                                                                  stub: tuple[StubServer, Path]) -> None:
    server, cfg = stub
    q, out = write_jsonl(tmp_path / "q.jsonl", GSM), tmp_path / "r.jsonl"
    args = ("-q", str(q), "-m", "alpha,beta", "-c", str(cfg), "-o", str(out))
    assert _run(*args)[0] == 0 and server.script.calls == 8
    journal = col.journal_path(out)
    journal.write_bytes(journal.read_bytes()[:-50])  # killed mid-write: the last entry is half there
    code, output = _run(*args)
    assert code == 0, output
    assert server.script.calls == 9  # the torn pair, once
    lines = journal.read_text().splitlines()
    # not glued to the fragment
    assert len(lines) == 8 and all(col.parse_entry(ln.encode()) is not None for ln in lines)
    assert "last line was cut short" in output and output.count("warning:") == 1
    code, output = _run(*args)
    assert code == 0 and server.script.calls == 9 and "warning" not in output, output  # nothing redone again


def test_a_torn_last_line_that_is_a_whole_entry_is_kept(tmp_path: Path) -> None:
    journal = tmp_path / "j.jsonl"
    whole = json.dumps({"id": "q/0", "model": "m", "benchmark": "b", "prompt": "p", "answer": "1", "category": None,
                        "score": 1.0, "response": "1", "input_tokens": 1, "output_tokens": 1, "latency_ms": 1.0,
                        "cost_usd": 0.0, "energy_kwh": 0.0, "co2_g": 0.0})
    journal.write_text(whole)  # the entry was written, its newline was not
    assert col.mend_journal(journal) == (False, 0)
    assert journal.read_text() == whole + "\n" and len(col.read_journal(journal)) == 1
    journal.write_bytes(whole.encode() + b"\n" + '{"id": "q/1", "prompt": "東'.encode()[:-1])  # torn mid-character
    assert col.mend_journal(journal) == (True, 0)
    assert journal.read_text() == whole + "\n"


def test_unreadable_journal_lines_are_counted_in_one_warning(tmp_path: Path, stub: tuple[StubServer, Path]) -> None:
    server, cfg = stub
    q, out = write_jsonl(tmp_path / "q.jsonl", GSM), tmp_path / "r.jsonl"
    args = ("-q", str(q), "-m", "alpha", "-c", str(cfg), "-o", str(out))
    assert _run(*args)[0] == 0
    journal = col.journal_path(out)
    lines = journal.read_text().splitlines()
    lines[1], lines[2] = "garbage", '{"not": "an entry"}'
    journal.write_text("\n".join(lines) + "\n")
    code, output = _run(*args)
    assert code == 0, output
    warned = [ln for ln in output.splitlines() if ln.startswith("warning:")]
    assert len(warned) == 1 and "2 unreadable line(s)" in warned[0], output
    assert server.script.calls == 4 + 2  # the two pairs whose lines were lost are run again


def test_an_empty_models_list_is_refused(tmp_path: Path, stub: tuple[StubServer, Path]) -> None:
    server, cfg = stub
    q = write_jsonl(tmp_path / "q.jsonl", GSM)
    for empty in ("", " , "):
        code, out = _run("-q", str(q), "-m", empty, "-c", str(cfg), "-o", str(tmp_path / "o.jsonl"))
        assert code == 2 and "names no model" in _error_line(out)
    assert server.script.calls == 0 and not (tmp_path / "o.jsonl").exists()


def test_a_question_file_given_twice_is_named(tmp_path: Path, stub: tuple[StubServer, Path]) -> None:
    server, cfg = stub
    q = write_jsonl(tmp_path / "q.jsonl", GSM)
    code, out = _run("-q", str(q), "-q", str(q), "-m", "alpha", "-c", str(cfg), "-o", str(tmp_path / "o.jsonl"))
    assert code == 2 and f"{q} is given twice" in _error_line(out)
    (tmp_path / "sub").mkdir()
    other = write_jsonl(tmp_path / "sub" / "q.jsonl", GSM)
    code, out = _run("-q", str(q), "-q", str(other), "-m", "alpha", "-c", str(cfg), "-o", str(tmp_path / "o.jsonl"))
    line = _error_line(out)
    assert code == 2 and str(q) in line and str(other) in line and "share the name 'q'" in line
    assert server.script.calls == 0


def test_records_from_earlier_runs_are_said_to_be_kept(tmp_path: Path, stub: tuple[StubServer, Path]) -> None:
    """The records file is the whole journal: a run asking for fewer questions or models says what else it holds."""
    server, cfg = stub
    gsm, mmlu = write_jsonl(tmp_path / "gsm.jsonl", GSM), write_jsonl(tmp_path / "mmlu.jsonl", MMLU)
    out = tmp_path / "r.jsonl"
    code, output = _run("-q", str(gsm), "-m", "alpha,beta", "-c", str(cfg), "-o", str(out))
    assert code == 0 and "note:" not in output, output
    code, output = _run("-q", str(mmlu), "-m", "alpha", "-c", str(cfg), "-o", str(out))
    assert code == 0, output
    note = " ".join(output.split())
    assert "is rebuilt from its whole journal" in note and "8 graded pair(s)" in note, output
    assert "4 other question(s)" in note and "other model(s): beta" in note
    assert len(out.read_text().splitlines()) == len(GSM) + len(MMLU)  # kept, as before: only said now

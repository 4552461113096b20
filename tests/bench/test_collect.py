"""``moai bench collect`` end to end against a scripted OpenAI-compatible stub on loopback.

Covers format detection, grading into routing records with measured tokens/latency/cost/energy, resume
(a second run makes no new calls) and interruption (SIGINT keeps the journal and the records).
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
from stub_openai import Script, StubServer
from typer.testing import CliRunner

from moai.bench import collect as col
from moai.bench.cli import app
from moai.config import load_config

GSM = [
    {"question": "Natalia sold 48 clips in April and half as many in May. How many in total?", "answer": "#### 72"},
    {"question": "What is 2 + 3?", "answer": "2+3=5\n#### 5"},
]
MMLU = [
    {"id": "mmlu/x/0", "subject": "astronomy", "question": "Which?", "choices": ["a", "b", "c", "d"], "answer": "B"},
    {"id": "mmlu/x/1", "subject": "astronomy", "question": "Which?", "choices": ["a", "b", "c", "d"], "answer": "C"},
]
MULTI = [
    {"task_name": "natural_qa", "query": "who sings i've got to be me", "ground_truth": "Sammy Davis, Jr",
     "metric": "f1_score", "choices": None, "task_id": None},
    {"task_name": "mbpp", "query": "Write a function to add one.", "metric": "code_eval", "task_id": 1,
     "ground_truth": "['assert add_one(1) == 2']", "choices": "['assert add_one(1) == 2']"},
    {"task_name": "arc_challenge", "query": "Pick", "metric": "em_mc", "ground_truth": "B", "task_id": None,
     "choices": "{'text': ['x', 'y', 'z'], 'label': ['A', 'B', 'C']}"},
    {"task_name": "agentverse-mgsm", "query": "Pets?\nAfter careful thought, put you final answer in \\boxed{...}.",
     "metric": "MATH", "ground_truth": "28", "choices": None, "task_id": None},
]
# One reply for every question: right for gsm8k/0 (72), mmlu/0 (B), arc (B); wrong for the others.
REPLY = "The answer is 72. Answer: B"


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_config(tmp_path: Path, url: str) -> Path:
    cfg = tmp_path / "mix.yaml"
    cfg.write_text(f"""
models:
  alpha:
    provider: openai_compat
    endpoint: {url}
    privacy: private
    params_b: 1.0
    max_retries: 0
    price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}
  beta:
    provider: openai_compat
    endpoint: {url}
    privacy: private
    params_b: 7.0
    max_retries: 0
mixes:
  default: {{strategy: route}}
""")
    return cfg


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    return {
        "gsm": write_jsonl(tmp_path / "gsm8k-train.jsonl", GSM),
        "mmlu": write_jsonl(tmp_path / "mmlu-test.jsonl", MMLU),
        "multi": write_jsonl(tmp_path / "multitask-train.jsonl", MULTI),
    }


def read(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------------------------ formats


def test_formats_are_detected_per_line(files: dict[str, Path]) -> None:
    gsm = col.load_questions(files["gsm"])
    assert [q.kind for q in gsm] == ["number", "number"] and gsm[0].gold == "72"
    assert gsm[0].id == "gsm8k-train/0" and gsm[0].benchmark == "gsm8k"
    mmlu = col.load_questions(files["mmlu"])
    assert mmlu[0].kind == "letter" and mmlu[0].category == "astronomy" and "B. b" in mmlu[0].prompt
    kinds = [(q.benchmark, q.kind) for q in col.load_questions(files["multi"])]
    assert kinds == [("natural_qa", "f1"), ("mbpp", "mbpp"), ("arc_challenge", "letter"),
                     ("agentverse-mgsm", "math")]
    mgsm = col.load_questions(files["multi"])[3]
    assert "After careful thought" not in mgsm.prompt and "boxed" in mgsm.prompt
    assert mgsm.messages[-1]["content"] == mgsm.prompt and mgsm.messages[0]["role"] == "user"


def test_unknown_format_is_one_clear_error(tmp_path: Path) -> None:
    bad = write_jsonl(tmp_path / "odd.jsonl", [{"text": "hello"}])
    with pytest.raises(col.QuestionFormatError, match=r"odd.jsonl:1: unknown question format \(keys: text\)"):
        col.load_questions(bad)
    metric = write_jsonl(tmp_path / "m.jsonl", [{"query": "q", "ground_truth": "a", "metric": "bleu"}])
    with pytest.raises(col.QuestionFormatError, match="unknown metric 'bleu'"):
        col.load_questions(metric)


def test_cli_bad_input_exits_2_with_one_line(tmp_path: Path, files: dict[str, Path]) -> None:
    bad = write_jsonl(tmp_path / "odd.jsonl", [{"text": "hello"}])
    runner = CliRunner()
    res = runner.invoke(app, ["collect", "-q", str(bad), "--out", str(tmp_path / "o.jsonl")])
    assert res.exit_code == 2
    assert "unknown question format" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["collect", "-q", str(files["gsm"]), "--out", str(tmp_path / "o.jsonl"),
                              "--models", "nope"])
    assert res.exit_code == 2 and "unknown model(s) nope" in res.output
    res = runner.invoke(app, ["collect", "-q", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o.jsonl")])
    assert res.exit_code == 2 and "cannot read" in res.output


def test_sampling_limits_and_interleaving(files: dict[str, Path]) -> None:
    a = col.load_questions(files["multi"], seed=3, limit=2)
    assert [q.id for q in a] == [q.id for q in col.load_questions(files["multi"], seed=3, limit=2)]
    assert col.per_file_limits([1, 2], 2) == [1, 2] and col.per_file_limits(5, 3) == [5, 5, 5]
    with pytest.raises(col.QuestionFormatError):
        col.per_file_limits([1, 2], 3)
    mixed = col.interleave([col.load_questions(files["gsm"]), col.load_questions(files["mmlu"], limit=1)])
    assert [q.id for q in mixed] == ["gsm8k-train/0", "mmlu-test/0", "gsm8k-train/1"]


# --------------------------------------------------------------------------------- end to end


def test_collect_grades_and_writes_records_then_resumes(tmp_path: Path, files: dict[str, Path]) -> None:
    out = tmp_path / "records.jsonl"
    with StubServer(Script(reply=REPLY)) as stub:
        cfg = load_config(write_config(tmp_path, stub.url))
        qfiles = [files["gsm"], files["mmlu"], files["multi"]]
        first = col.collect(qfiles, cfg, out, concurrency=3)
        assert (first.graded, first.skipped, first.failed) == (16, 0, 0)
        assert stub.script.calls == 16
        assert {b["max_tokens"] for b in stub.script.seen} >= {12, 4}  # per-task budgets reach the model

        records = {r["id"]: r for r in read(out)}
        assert len(records) == 8
        g0, g1 = records["gsm8k-train/0"], records["gsm8k-train/1"]
        assert g0["scores"] == {"alpha": 1.0, "beta": 1.0} and g1["scores"] == {"alpha": 0.0, "beta": 0.0}
        assert records["mmlu-test/0"]["scores"]["alpha"] == 1.0 and records["mmlu-test/1"]["scores"]["beta"] == 0.0
        assert records["multitask-train/2"]["scores"]["alpha"] == 1.0  # arc, gold B
        assert records["multitask-train/1"]["scores"]["alpha"] == 0.0  # mbpp: prose is not code
        assert g0["benchmark"] == "gsm8k" and g0["answer"] == "72" and "####" not in g0["prompt"]
        n_out = len(REPLY.split(" "))
        assert g0["tokens"]["alpha"] == {"input": 7, "output": n_out}
        assert g0["cost_usd"]["alpha"] == pytest.approx((7 * 1.0 + n_out * 2.0) / 1e6)
        assert g0["cost_usd"]["beta"] == 0.0
        assert g0["latency_ms"]["alpha"] > 0 and g0["energy_kwh"]["beta"] > g0["energy_kwh"]["alpha"] > 0
        assert g0["responses"]["alpha"] == REPLY
        assert records["mmlu-test/0"]["category"] == "astronomy"

        second = col.collect(qfiles, cfg, out, concurrency=3)
        assert stub.script.calls == 16  # resume: nothing new to ask
        assert (second.graded, second.skipped) == (0, 16)
        assert {r["id"]: r["scores"] for r in read(out)} == {k: v["scores"] for k, v in records.items()}

        more = col.collect([files["gsm"]], cfg, out, models=["alpha"], limit=2)
        assert more.graded == 0 and stub.script.calls == 16


def test_failed_calls_are_not_journaled_and_retried_next_run(tmp_path: Path, files: dict[str, Path]) -> None:
    out = tmp_path / "r.jsonl"
    with StubServer(Script(reply="#### 72", fail_times=1, fail_status=400)) as stub:
        cfg = load_config(write_config(tmp_path, stub.url))
        first = col.collect([files["gsm"]], cfg, out, models=["alpha"])
        assert (first.graded, first.failed) == (1, 1)
        second = col.collect([files["gsm"]], cfg, out, models=["alpha"])
        assert (second.graded, second.skipped, second.failed) == (1, 1, 0)
    assert len(read(out)) == 2


def test_a_provider_raising_an_unforeseen_exception_fails_its_pairs_only(
        tmp_path: Path, files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from moai.providers.openai_compat import OpenAICompatProvider

    real = OpenAICompatProvider.complete

    async def complete(self: OpenAICompatProvider, params: object) -> object:
        if self.name == "beta":
            raise KeyError("choices")
        return await real(self, params)  # type: ignore[arg-type]

    monkeypatch.setattr(OpenAICompatProvider, "complete", complete)
    out = tmp_path / "r.jsonl"
    with StubServer(Script(reply="#### 72")) as stub:
        summary = col.collect([files["gsm"]], load_config(write_config(tmp_path, stub.url)), out,
                              models=["alpha", "beta"])
    assert (summary.graded, summary.failed) == (2, 2)
    assert all("beta" in e and "KeyError" in e for e in summary.errors)


def test_regrade_rescores_without_calls(tmp_path: Path, files: dict[str, Path]) -> None:
    out = tmp_path / "r.jsonl"
    with StubServer(Script(reply="#### 72")) as stub:
        cfg = load_config(write_config(tmp_path, stub.url))
        col.collect([files["gsm"]], cfg, out, models=["alpha"])
        journal = col.journal_path(out)
        entries = col.read_journal(journal)
        entries[0].score = 0.0  # as if an older grader had got it wrong
        journal.write_text("".join(json.dumps(e.__dict__) + "\n" for e in entries))
        s = col.collect([files["gsm"]], cfg, out, models=["alpha"], only_regrade=True)
        assert s.errors == ["1 of 2 scores changed"] and stub.script.calls == 2
    assert read(out)[0]["scores"]["alpha"] == 1.0


def test_ctrl_c_keeps_everything_graded(tmp_path: Path, files: dict[str, Path]) -> None:
    out = tmp_path / "records.jsonl"
    journal = col.journal_path(out)
    with StubServer(Script(reply=REPLY, delay_s=1.0)) as stub:
        cfg_path = write_config(tmp_path, stub.url)
        cmd = [sys.executable, "-m", "moai.cli", "bench", "collect", "-q", str(files["gsm"]), "-q",
               str(files["mmlu"]), "--config", str(cfg_path), "--out", str(out)]
        # a run started in the background (`cmd &` without job control) inherits SIGINT ignored, and Python then
        # never turns Ctrl-C into KeyboardInterrupt: give the child the default disposition, as a terminal would
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env={**os.environ, "COLUMNS": "200"},
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.time() + 60
        while time.time() < deadline and (not journal.exists() or len(journal.read_text().splitlines()) < 2):
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=30)[0].decode()
        assert proc.returncode == 130, output
        assert "interrupted" in output and "Traceback" not in output
        kept = read(journal)
        assert 2 <= len(kept) < 8
        assert sum(len(r["scores"]) for r in read(out)) == len(kept)  # records rebuilt from the journal

        calls_before = stub.script.calls
        cfg = load_config(cfg_path)
        resumed = col.collect([files["gsm"], files["mmlu"]], cfg, out)
        assert resumed.skipped == len(kept) and resumed.graded == 8 - len(kept)
        assert stub.script.calls - calls_before == 8 - len(kept)  # only the missing pairs were asked
    assert sum(len(r["scores"]) for r in read(out)) == 8


def test_pairs_run_in_question_order_so_an_early_stop_leaves_complete_records(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    out = tmp_path / "r.jsonl"
    with StubServer(Script(reply=REPLY)) as stub:
        cfg = load_config(write_config(tmp_path, stub.url))
        col.collect([files["gsm"], files["mmlu"]], cfg, out, concurrency=2)
    ids = [e.id for e in col.read_journal(col.journal_path(out))]
    order = ["gsm8k-train/0", "mmlu-test/0", "gsm8k-train/1", "mmlu-test/1"]
    # at most one question ahead: two workers, two models, one pair per model at a time
    assert all(abs(order.index(i) - k // 2) <= 1 for k, i in enumerate(ids)), ids


def test_a_first_pairs_latency_does_not_include_loading_the_model(tmp_path: Path, files: dict[str, Path]) -> None:
    """A fresh worker (a Ray task, a new run) loads a local model on its first call: warmed before the clock
    starts, the first record's latency_ms is the answer's, not 23 s of start-up."""
    import asyncio

    from moai.providers import Provider
    from moai.providers.base import Delta, Usage

    class SlowToLoad(Provider):
        loaded = False

        async def warm(self) -> None:
            await asyncio.sleep(0.6)
            self.loaded = True

        async def stream(self, params):  # type: ignore[no-untyped-def,override]
            if not self.loaded:  # as a local model loads its weights on first use
                await self.warm()
            yield Delta(text="#### 72")
            yield Delta(finish_reason="stop", usage=Usage(5, 2))

    with StubServer(Script(reply=REPLY)) as stub:
        cfg = load_config(write_config(tmp_path, stub.url))
    card = cfg.models["alpha"]
    questions = col.load_questions(files["gsm"], limit=1)
    journal = tmp_path / "j.jsonl"
    asyncio.run(col.run_pairs(questions, [card], journal, providers={"alpha": SlowToLoad(card)}))
    (entry,) = col.read_journal(journal)
    assert entry.latency_ms < 300


# ------------------------------------------------------------------------------ bad input


@pytest.fixture
def keep_sigterm():  # type: ignore[no-untyped-def]
    """A full `bench collect` in this process turns SIGTERM into KeyboardInterrupt: put the handler back."""
    before = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, before)


@pytest.mark.parametrize(("row", "says"), [
    ({"question": 5, "answer": "#### 5"}, "got a number"),
    ({"question": None, "choices": ["a", "b"], "answer": "A"}, "got null"),
    ({"question": ["x"], "answer": "#### 5"}, "got an array"),
])
def test_a_question_that_is_not_text_is_one_line_error(tmp_path: Path, row: dict[str, object], says: str) -> None:
    good = {"question": "What is 2 + 3?", "answer": "#### 5"}
    q = write_jsonl(tmp_path / "q.jsonl", [good, row])
    with pytest.raises(col.QuestionFormatError, match=rf"q.jsonl:2: 'question' must be a string, {says}"):
        col.load_questions(q)
    res = CliRunner().invoke(app, ["collect", "-q", str(q), "--out", str(tmp_path / "o.jsonl")])
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit), res.output  # not an AttributeError
    assert "q.jsonl:2: 'question' must be a string" in res.output


def test_regrade_without_a_journal_is_one_line_error_and_touches_nothing(tmp_path: Path,
                                                                         files: dict[str, Path]) -> None:
    res = CliRunner().invoke(app, ["collect", "-q", str(files["gsm"]), "--out", str(tmp_path / "nothere" / "r.jsonl"),
                                   "--regrade"])
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit), res.output
    assert "no journal to regrade at" in res.output and not (tmp_path / "nothere").exists()
    records = tmp_path / "r.jsonl"
    records.write_text('{"id": "keep"}\n')  # records whose journal is gone: a regrade must not empty them
    res = CliRunner().invoke(app, ["collect", "-q", str(files["gsm"]), "--out", str(records), "--regrade"])
    assert res.exit_code == 2 and records.read_text() == '{"id": "keep"}\n'


def test_out_that_is_a_question_file_is_refused(tmp_path: Path, files: dict[str, Path],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    before = files["gsm"].read_text()
    monkeypatch.chdir(tmp_path)
    cases = [
        ["-q", str(files["gsm"]), "--out", "gsm8k-train.jsonl"],  # the same file, relative and absolute
        ["-q", "gsm8k-train.jsonl", "-q", str(files["mmlu"]), "--out", "./sub/../gsm8k-train.jsonl"],
        ["-q", str(files["gsm"]), "--out", "gsm8k-train.jsonl", "--regrade"],
    ]
    (tmp_path / "sub").mkdir()
    for args in cases:
        res = CliRunner().invoke(app, ["collect", *args])
        assert res.exit_code == 2 and isinstance(res.exception, SystemExit), (args, res.output)
        assert "is both a question file and --out" in res.output
    journal = col.journal_path(tmp_path / "x.jsonl")
    journal.write_text(files["gsm"].read_text())
    res = CliRunner().invoke(app, ["collect", "-q", str(journal), "--out", "x.jsonl"])
    assert res.exit_code == 2 and "--out's journal" in res.output
    assert files["gsm"].read_text() == before
    with pytest.raises(col.QuestionFormatError, match="is both a question file"):  # the library refuses too
        col.check_out([files["gsm"]], tmp_path / "gsm8k-train.jsonl")


def test_a_model_named_twice_runs_once_with_a_warning(tmp_path: Path, files: dict[str, Path],
                                                     keep_sigterm: None) -> None:
    out = tmp_path / "r.jsonl"
    with StubServer(Script(reply="#### 72")) as stub:
        cfg = write_config(tmp_path, stub.url)
        res = CliRunner().invoke(app, ["collect", "-q", str(files["gsm"]), "--config", str(cfg), "--out", str(out),
                                       "--models", "alpha,beta,alpha"])
        assert res.exit_code == 0, res.output
        assert "--models names alpha more than once" in res.output
        assert stub.script.calls == 4  # 2 questions x 2 distinct models
        assert len(col.resolve_models(load_config(cfg), ["beta", "beta"])) == 1
    assert len(col.read_journal(col.journal_path(out))) == 4


def test_an_offset_past_the_end_warns(tmp_path: Path, files: dict[str, Path], keep_sigterm: None) -> None:
    with StubServer(Script(reply="#### 72")) as stub:
        cfg = write_config(tmp_path, stub.url)
        res = CliRunner().invoke(app, ["collect", "-q", str(files["gsm"]), "-q", str(files["multi"]), "--config",
                                       str(cfg), "--out", str(tmp_path / "r.jsonl"), "--offset", "2"])
        assert res.exit_code == 0, res.output
        assert f"--offset 2 skips all 2 questions in {files['gsm']}" in res.output
        assert not any("warning" in ln and "multitask" in ln for ln in res.output.splitlines())  # 4 there: fine
        assert stub.script.calls == 4  # multitask's last 2 questions x 2 models


def test_records_without_a_journal_are_not_replaced(tmp_path: Path, files: dict[str, Path],
                                                    keep_sigterm: None) -> None:
    """A run rebuilds --out from its journal alone: records already there with no journal (collected elsewhere,
    or the journal moved away) would have been replaced by this run's, 40 records becoming 1."""
    out = tmp_path / "r.jsonl"
    kept = "".join(json.dumps({"id": f"old/{i}", "prompt": "p", "scores": {"alpha": 1.0}}) + "\n" for i in range(5))
    out.write_text(kept)
    with StubServer(Script(reply="#### 72")) as stub:
        cfg = write_config(tmp_path, stub.url)
        args = ["collect", "-q", str(files["gsm"]), "--config", str(cfg), "--out", str(out), "--models", "alpha"]
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 2 and isinstance(res.exception, SystemExit), res.output
        assert len(res.output.strip().splitlines()) == 1
        assert "already exists and has no journal" in res.output and "--overwrite" in res.output
        with pytest.raises(col.QuestionFormatError, match="has no journal"):  # the library refuses too
            col.collect([files["gsm"]], load_config(cfg), out, models=["alpha"])
        assert out.read_text() == kept and not col.journal_path(out).exists() and stub.script.calls == 0

        res = CliRunner().invoke(app, [*args, "--overwrite"])
        assert res.exit_code == 0, res.output
        assert [r["id"] for r in read(out)] == ["gsm8k-train/0", "gsm8k-train/1"]
        res = CliRunner().invoke(app, args)  # now it has a journal: resuming, as before
        assert res.exit_code == 0, res.output
        assert stub.script.calls == 2 and len(read(out)) == 2

        empty = tmp_path / "empty.jsonl"
        empty.write_text("")  # nothing to lose
        assert col.collect([files["gsm"]], load_config(cfg), empty, models=["alpha"]).graded == 2


def test_names_and_paths_in_its_lines_are_printed_as_written(tmp_path: Path, files: dict[str, Path]) -> None:
    """A failed pair's line names the model, and the summary the output path: "[...]" in them is text."""
    out = tmp_path / "r[/x].jsonl"
    with StubServer(Script(reply="#### 72", fail_times=1, fail_status=400)) as stub:
        cfg = tmp_path / "mix.yaml"
        cfg.write_text(f'models:\n  "a[/x]": {{provider: openai_compat, endpoint: "{stub.url}", max_retries: 0}}\n'
                       "mixes:\n  default: {strategy: route}\n")
        res = CliRunner().invoke(app, ["collect", "-q", str(files["gsm"]), "--out", str(out), "--config", str(cfg),
                                       "--models", "a[/x]"])
    assert "Traceback" not in res.output and "MarkupError" not in repr(res.exception)
    assert "a[/x]" in res.output and "r[/x].jsonl" in res.output

"""``moai bench``: collect a routing dataset from real models, and report on one.

Registered by the main CLI as a sub-app. Bad input gives one line on stderr and exit status 2, never a
traceback; Ctrl-C during a collection keeps everything already graded (exit status 130).
"""

from __future__ import annotations

import signal
import time
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from moai.cli_common import fail, warn

app = typer.Typer(help="Benchmarks: collect routing records from real models, report on them.",
                  no_args_is_help=True, add_completion=False)
err = Console(stderr=True, soft_wrap=True, markup=False)  # paths and names in its lines are text, not markup


@app.command()
def collect(
    questions: Annotated[list[Path], typer.Option("--questions", "-q", help="question file(s) (JSONL); repeatable")],
    out: Annotated[Path, typer.Option("--out", "-o", help="routing records to write (JSONL)")],
    models: Annotated[str | None, typer.Option("--models", "-m", help="comma-separated model names")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="mix instructions (default: embedded)")] = None,
    limit: Annotated[list[int] | None, typer.Option(
        help="questions per file; once for all files, or once per --questions in the same order", min=1)] = None,
    offset: Annotated[int, typer.Option(help="skip this many questions per file first", min=0)] = 0,
    seed: Annotated[int | None, typer.Option(help="shuffle each file with this seed (a fixed sample)")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", "-k", help="model calls in flight", min=1)] = 1,
    regrade: Annotated[bool, typer.Option(help="re-score the journaled answers with the current graders; "
                                          "no model calls")] = False,
    ray: Annotated[str | None, typer.Option(
        "--ray", help="run pairs as Ray tasks: --ray HOST:PORT joins a cluster, --ray alone starts a local one "
        "(-k: per endpoint)")] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="replace an existing --out that has no journal to resume from (else refused)")] = False,
) -> None:
    """Ask every model every question, grade the answers, write routing records (resumable)."""
    from moai.bench import collect as col
    from moai.config import ConfigError, load_config

    try:
        col.check_out(questions, out)
        col.check_writable(out)  # before any model is called: a write that fails at the end has paid for them all
        if not regrade:
            col.check_resumable(out, overwrite)
        cfg = load_config(config)
        names = None if models is None else [m.strip() for m in models.split(",") if m.strip()]
        if names == []:  # not "every model": an empty list from a script is a mistake, as in `gate decide`
            raise col.QuestionFormatError(f"--models {models!r} names no model: give comma-separated names, or leave "
                                          "--models out to run every model in the config")
        if names and len(set(names)) < len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            warn(f"--models names {', '.join(twice)} more than once; each model runs once")
            names = list(dict.fromkeys(names))
        cards = col.resolve_models(cfg, names)
        limits = col.per_file_limits(limit, len(questions))
        for q in questions:
            n_q = len(col.load_questions(q))  # fail fast on a bad file before loading any model
            if offset >= n_q:
                warn(f"--offset {offset} skips all {n_q} questions in {q}")
        asked = {q.id for q in col.select_questions(questions, limits, offset=offset, seed=seed)}
    except (ConfigError, col.QuestionFormatError) as e:
        fail(str(e))
        return
    journal = col.journal_path(out)
    try:
        cut, unreadable = col.mend_journal(journal)
    except OSError as e:
        fail(f"{journal}: cannot mend its torn last line: {e.strerror or e}")
        return
    if cut:
        warn(f"{journal}: its last line was cut short (a run stopped mid-write) and is dropped; that pair runs again")
    if unreadable:
        warn(f"{journal}: {unreadable} unreadable line(s) skipped; their pairs run again if this run asks for them"
              + (" (--regrade drops them)" if regrade else ""))

    live = err.is_terminal
    progress = Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=err, disable=not live,
    )
    state: dict[str, Any] = {"task": None, "acc": {}, "last_log": time.monotonic(), "n": 0, "total": 0,
                             "t0": time.monotonic(), "failed": 0}

    def on_start(s: col.Summary) -> None:
        remaining = s.total - s.skipped
        state["total"] = remaining
        err.print(f"{s.total} pairs, {s.skipped} already graded (journal {col.journal_path(out)}), "
                  f"{remaining} to run, concurrency {concurrency}", highlight=False)
        state["task"] = progress.add_task("collecting", total=remaining)

    def on_done(entry: col.Entry | None, error: str | None) -> None:
        state["n"] += 1
        if entry is not None:
            hits, n = state["acc"].get(entry.model, (0.0, 0))
            state["acc"][entry.model] = (hits + entry.score, n + 1)
        else:
            state["failed"] += 1
            err.print(f"[yellow]failed (retried next run):[/yellow] {escape(error)}", highlight=False, markup=True)
        accs = " · ".join(f"{m} {h / n:.2f}" for m, (h, n) in state["acc"].items())
        progress.update(state["task"], advance=1, description=accs or "collecting")
        now = time.monotonic()
        if not live and (now - state["last_log"] > 30 or state["n"] == state["total"]):
            state["last_log"] = now
            rate = state["n"] / max(now - state["t0"], 1e-9)
            eta = (state["total"] - state["n"]) / rate if rate else float("inf")
            err.print(f"{time.strftime('%H:%M:%S')} {state['n']}/{state['total']} pairs, {rate * 60:.1f}/min, "
                      f"eta {eta / 60:.1f} min, failed {state['failed']} | {accs}", highlight=False)

    if regrade:
        try:
            s = col.collect(questions, cfg, out, models=names, limit=limits, offset=offset, seed=seed,
                            only_regrade=True)
        except col.QuestionFormatError as e:
            fail(str(e))
            return
        err.print(f"regraded {s.total} journaled answers ({s.errors[0]}); records in {out}", highlight=False)
        return

    def _terminate(_sig: int, _frame: Any) -> None:
        raise KeyboardInterrupt  # SIGTERM (kill, nohup'd runs) ends like Ctrl-C: records rewritten, journal kept

    signal.signal(signal.SIGTERM, _terminate)
    interrupted = False
    try:
        with progress:
            if ray is None:
                run = partial(col.collect, overwrite=overwrite)
            else:
                from moai.scale import collect_files_with_ray

                run = partial(collect_files_with_ray, address=ray, overwrite=overwrite)
            summary = run(questions, cfg, out, models=names, limit=limits, offset=offset, seed=seed,
                          concurrency=concurrency, on_done=on_done, on_start=on_start)
    except KeyboardInterrupt:
        interrupted = True
    except (col.QuestionFormatError, ConnectionError) as e:  # ConnectionError: no Ray head at --ray ADDRESS
        fail(str(e))
        return
    n_journal = len(col.read_journal(col.journal_path(out)))
    if interrupted:
        err.print(f"interrupted: {n_journal} graded pairs kept in {col.journal_path(out)}; records in {out}. "
                  "Re-run the same command to resume.", highlight=False)
        raise typer.Exit(130)
    err.print(f"done in {summary.seconds:.0f}s: graded {summary.graded}, skipped {summary.skipped}, "
              f"failed {summary.failed}; records in {out}", highlight=False)
    _note_other_pairs(out, journal, asked, {c.name for c in cards})
    if summary.failed:
        raise typer.Exit(1)


def _note_other_pairs(out: Path, journal: Path, asked: set[str], models: set[str]) -> None:
    """The records file is rebuilt from the whole journal, earlier runs included: say so when it holds pairs this
    run did not ask for (other questions or models), which a reader of its command line would not expect."""
    from moai.bench import collect as col

    entries = col.read_journal(journal)
    other = [e for e in entries if e.id not in asked or e.model not in models]
    if other:
        what = []
        if n_ids := len({e.id for e in other if e.id not in asked}):
            what.append(f"{n_ids} other question(s)")
        if extra := sorted({e.model for e in other} - models):
            what.append(f"other model(s): {', '.join(extra)}")
        err.print(f"note: {out} is rebuilt from its whole journal: it also holds {len(other)} graded pair(s) this run "
                  f"did not ask for ({'; '.join(what)}); a new --out starts a new journal",
                  highlight=False, markup=False)


@app.command()
def report(
    records: Annotated[list[Path], typer.Argument(help="routing-record file(s) (JSONL)")],
    plot: Annotated[Path | None, typer.Option("--plot", help=(
        "write the PNG summary here (default: <first file's stem>-report.png in the current directory)"))] = None,
) -> None:
    """Accuracy, mean latency and energy per model, overall and per benchmark: a table and a PNG plot."""
    from moai.bench import report as rep
    from moai.bench.datasets import duplicate_warning

    try:
        recs = rep.load(records)
    except rep.ReportError as e:
        fail(str(e))
        return
    dup = duplicate_warning(recs)
    if dup:
        warn(dup)
    rows = rep.summarise(recs)
    if rep.mixes_scales(recs):
        warn("the records mix the 1-10 judge scale with 0/1 or 0-1 scores: each task's score is in its own scale, "
              "the 'all' row puts every record on 0-1 first")
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 140)  # logs and pipes: don't squeeze model names
    console.print(rep.table(rows))
    if plot is not None:
        try:
            written = rep.plot(rows, plot)
        except OSError as e:
            fail(f"{plot}: cannot write: {e.strerror}")
            return
        except ValueError as e:  # an image format matplotlib does not know
            fail(f"--plot {plot}: {e}")
            return
        err.print(f"plot written to {written}", highlight=False)
        return
    # by default in the current directory, as `moai report --html` does: never into a (possibly shared) data folder
    target = rep.default_plot_path(records[0])
    try:
        written = rep.plot(rows, target)
    except OSError as e:
        err.print(f"no plot written ({target}: {e.strerror or e}); --plot FILE chooses where", highlight=False)
        return
    err.print(f"plot written to {written}", highlight=False)

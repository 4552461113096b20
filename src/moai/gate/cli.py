"""`moai gate ...`: train, evaluate, score and decide from routing-record files.

Bad input (a malformed file, an unknown model, a missing gate) prints one line and exits 2.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np
import typer

from moai.gate.policy import RecordCard

app = typer.Typer(help="Train and inspect the learned gate.", no_args_is_help=True, add_completion=False)

# `gate eval` warns that APGR is unstable where the pair's mean scores differ by less than this share of the spread
# of their scores (max - min, after the 1-10 judge scale is mapped to 0-1)
NEAR_GAP = 0.02


class CliError(Exception):
    """An error meant for the user: printed as one line."""


@contextmanager
def _errors() -> Iterator[None]:
    from moai.bench.datasets import RecordError
    from moai.gate.encoder import EncoderUnavailable
    from moai.gate.store import GateLoadError

    try:
        yield
    except (CliError, RecordError, GateLoadError, EncoderUnavailable, ValueError, KeyError, OSError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        typer.echo(f"error: {msg}", err=True)
        raise typer.Exit(2) from None


def _close(name: str, known: Iterable[str]) -> list[str]:
    """The known names that look like ``name`` (case aside), best first: what a misspelt name probably meant."""
    import difflib

    by_key: dict[str, str] = {}
    for k in sorted(set(known)):
        by_key.setdefault(k.strip().casefold(), k)
    return [by_key[k] for k in difflib.get_close_matches(name.strip().casefold(), list(by_key), n=3, cutoff=0.6)]


def _warn_untrained(g: Any, names: list[str], known: Iterable[str] = ()) -> None:
    """A model the gate never saw still gets an estimate (a prior from its name's family and size), which a
    misspelt name gets too: say so instead of scoring it silently, with the trained or ``known`` names it is
    close to."""
    from moai.gate.quality import canonical

    trained = set(g.head.models)
    unseen = [n for n in names if canonical(n) not in trained]
    if unseen:
        pool = trained | set(known)
        hints = [f"{n!r} ~ {', '.join(map(repr, c))}" for n in unseen if (c := [m for m in _close(n, pool) if m != n])]
        close = f" (close: {'; '.join(hints)})" if hints else ""
        typer.echo(f"warning: not among the gate's {len(trained)} trained models: {', '.join(map(repr, unseen))}; "
                   f"their quality is a prior from the name (family, size), not learnt: check the spelling{close}",
                   err=True)


def _resolve_models(given: list[str], record_names: Iterable[str], gate_names: Iterable[str], flag: str) -> list[str]:
    """``given`` as the records (first) or the gate spell those models, each once.

    A name written exactly as the records or the gate write it is kept; otherwise the one known name equal to
    it but for case (and surrounding spaces) replaces it, so 'GPT-4,gpt-4' is one candidate, not two with the
    same estimate, and a decision names the model as the records do. Two known names equal to it but for case
    are a CliError: there is no telling which was meant. A name known to neither is kept as given (the gate has
    a prior for unseen models; ``_warn_untrained`` names it)."""
    tiers = [list(dict.fromkeys(record_names)), list(dict.fromkeys(gate_names))]
    exact = {n for tier in tiers for n in tier}
    out: list[str] = []
    seen: set[str] = set()
    for name in given:
        if name not in exact:
            key = name.strip().casefold()
            for tier in tiers:
                hits = [k for k in tier if k.strip().casefold() == key]
                if len(hits) > 1:
                    raise CliError(f"{flag}: {name!r} matches {_some(hits)} but none exactly: name one as written")
                if hits:
                    name = hits[0]
                    break
        if name.strip().casefold() not in seen:
            seen.add(name.strip().casefold())
            out.append(name)
    return out


def _distinct_files(paths: list[Path]) -> list[Path]:
    """Each --data file once, in order: the same file given twice (the same path, another path to it, a symbolic
    or hard link) would be read twice and count each of its records twice. One warning per repeated file."""
    keep: list[Path] = []
    first: dict[Any, int] = {}
    again: dict[int, list[Path]] = {}
    for p in paths:
        try:
            st = p.stat()
            key: Any = (st.st_dev, st.st_ino)
        except OSError:  # missing or unreadable: loading it names the problem
            key = os.path.realpath(p)
        if key in first:
            again.setdefault(first[key], []).append(p)
        else:
            first[key] = len(keep)
            keep.append(p)
    for i, more in again.items():
        times = "twice" if len(more) == 1 else f"{len(more) + 1} times"
        other = list(dict.fromkeys(str(p) for p in more if str(p) != str(keep[i])))
        also = f" (also as {', '.join(other)})" if other else ""
        typer.echo(f"warning: --data {keep[i]} was given {times}{also}: it is read once", err=True)
    return keep


def _load(paths: Any, need_scores: bool = True) -> list[Any]:
    """``load_records``, plus a one-line warning when an id repeats (kept: public sets have a few)."""
    from moai.bench.datasets import duplicate_warning, load_records

    recs = load_records(paths, need_scores=need_scores, check_scale=True)
    dup = duplicate_warning(recs)
    if dup:
        typer.echo(f"warning: {dup}", err=True)
    return recs


def _writable_dir(out: Path) -> Callable[[], None]:
    """Make sure the gate can be saved in ``out`` before spending the time to train it: create the directory
    and write a probe file there. Returns an undo that removes the directory again if this created it and it
    is still empty (training failed)."""
    import os
    import tempfile

    existed = out.is_dir()
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".moai-write-test-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise CliError(f"--out {out}: cannot write there: {e.strerror or e}") from None

    def undo() -> None:
        if not existed:
            with suppress(OSError):
                out.rmdir()

    return undo


def _progress_train(records: list[Any], cfg: Any) -> Any:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from moai.gate.store import train_gate

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), transient=False) as prog:
        tasks: dict[str, Any] = {}

        def cb(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = prog.add_task({"embed": "embedding queries", "train": "training heads"}
                                             .get(stage, stage), total=total)
            prog.update(tasks[stage], completed=done)

        return train_gate(records, cfg, progress=cb)


@app.command(context_settings={"allow_extra_args": True})
def train(
    ctx: typer.Context,
    data: list[Path] = typer.Option(..., "--data", help="routing-record JSONL file(s): --data a.jsonl b.jsonl"),
    out: Path = typer.Option(..., "--out", help="directory to write the gate to"),
    epochs: int = typer.Option(30, help="factor-model epochs"),
    seed: int = typer.Option(0),
    ray: str | None = typer.Option(None, "--ray", help="embed and train on Ray: --ray HOST:PORT joins a cluster, "
                                   "--ray alone starts a local one"),
    settings: list[str] = typer.Option([], "--set", help="training setting KEY=VALUE (moai.gate.train.TrainConfig), "
                                       "e.g. --set w_domain=0; repeatable"),
) -> None:
    """Train a gate on routing records and save it."""
    data = _files(data, ctx)
    with _errors():
        from moai.gate.train import TrainConfig

        base = TrainConfig(epochs=epochs, seed=seed)
        for flag, key in (("--epochs", "epochs"), ("--seed", "seed")):
            # refused here, by the flag's name, rather than as a setting the user never wrote with --set
            bad = [p.split(" ", 1)[1] for p in base.problems() if p.startswith(f"{key}=")]
            if bad:
                raise CliError(f"{flag} {getattr(base, key)}: {bad[0]}")
        cfg = base.override(settings)  # a value no gate can score with (inf, nan, negative, all weights 0) is refused
        records = _load(data)
        undo = _writable_dir(out)  # fail now, not after a long training run
        try:
            if ray is None:
                gate = _progress_train(records, cfg)
            else:
                from moai.scale import train_with_ray

                gate = train_with_ray(records, cfg, address=ray)
        except BaseException:
            undo()
            raise
        gate.meta["train_files"] = [str(p.resolve()) for p in data]
        for s in gate.meta.get("suspect_scores", []):
            if not s["masked"]:
                what = "learnt as they are; --set mask_below_chance=true ignores them"
            elif s.get("in_domain_offset") is None:
                what = "ignored; --set mask_below_chance=false learns them"
            else:
                what = "kept for that domain's own questions only; --set mask_below_chance=false learns them"
            typer.echo(f"warning: {s['model']} scores {s['mean']:.3f} on {s['domain']} ({s['n']} multiple-choice "
                       f"questions, chance {s['chance']:.2f}): a grading failure? ({what})", err=True)
        gate.save(out)
        typer.echo(f"gate with {len(gate.models)} models trained on {len(records)} records "
                   f"in {gate.meta['train_seconds']}s -> {out}")


def _files(data: list[Path], ctx: typer.Context) -> list[Path]:
    """Every --data file in order, each once: repeated --data, and `--data a b c` (shell globs)."""
    return _distinct_files([*data, *(Path(a) for a in ctx.args)])


def _title(data: list[Path]) -> str:
    return " + ".join(p.name for p in data)


def _some(names: Iterable[str], k: int = 8) -> str:
    """Up to ``k`` quoted names, and how many more: a warning stays one readable line."""
    ordered = sorted(names)
    more = f" and {len(ordered) - k} more" if len(ordered) > k else ""
    return ", ".join(map(repr, ordered[:k])) + more


def _warn_overlap(recs: list[Any], train_recs: list[Any]) -> None:
    """Scores on prompts the gate (or a baseline) trained on are not out-of-sample: say how many there are."""
    overlap = {r.prompt for r in recs} & {r.prompt for r in train_recs}
    if overlap:
        typer.echo(f"warning: {len(overlap)} evaluated prompts are in the training files", err=True)


def _able(routers: list[Any], names: list[str], table: str) -> list[Any]:
    """The routers that can score every model in ``names``; a baseline never trained on one of them is left out
    of ``table`` with a note (the gate, random, always-strong and always-weak need no training on them), instead
    of losing every row."""
    from moai.gate.quality import canonical

    ok, left, missing = [], [], set()
    for r in routers:
        if not getattr(r, "needs_training", True):
            ok.append(r)
            continue
        try:
            r.cols(names)
        except KeyError:
            left.append(r.name)
            missing.update(n for n in names if canonical(n) not in r.models)
            continue
        ok.append(r)
    if left:
        typer.echo(f"note: {', '.join(left)} left out of {table}: not trained on {_some(missing)}", err=True)
    return ok


def _plot_file(plot: Path) -> Path:
    """The PNG file ``--plot`` names, as it will be written: a name without a suffix gets ".png" (as matplotlib
    adds it), so the path printed is the file written. A directory is refused, as `gate score --out` refuses one."""
    from moai.bench.report import plot_path

    for p in (plot, plot_path(plot)):
        if p.is_dir():
            raise CliError(f"--plot {p} is a directory; name the PNG file to write")
    return plot_path(plot)


def _training_records(files: list[str]) -> list[Any]:
    """The records the gate was trained on (gate.json's train_files), to fit baselines on: a file gone since is
    named as the gate's, not as one the user gave."""
    from moai.bench.datasets import RecordError, load_records

    try:
        return load_records(files, check_scale=True)
    except RecordError as e:
        raise CliError(f"the gate's training file (train_files in its gate.json), needed to fit baselines: "
                       f"{e}") from None


def _warn_left_out(recs: list[Any], keep: np.ndarray, strong: str, weak: str) -> None:
    """The pair table reads only the records that score both models: say how many it leaves out, and which
    --data files it leaves out whole, instead of evaluating a part of the data silently."""
    from collections import Counter

    n_out = int((~keep).sum())
    if not n_out:
        return
    total = Counter(r.source for r in recs)
    left = Counter(r.source for r, k in zip(recs, keep, strict=True) if not k)
    whole = [Path(f).name for f, n in left.items() if n == total[f]]
    also = f" (all of {', '.join(whole)})" if whole else ""
    typer.echo(f"warning: {n_out} of {len(recs)} records do not score both {strong} and {weak}: left out of the "
               f"pair table{also}", err=True)


@app.command("eval", context_settings={"allow_extra_args": True})
def eval_(
    ctx: typer.Context,
    gate: Path = typer.Option(..., "--gate", help="trained gate directory"),
    data: list[Path] = typer.Option(..., "--data", help="routing records to evaluate on (repeat --data for more "
                                    "files)"),
    baselines: str = typer.Option("none", "--baselines", help="'all', 'none' or comma-separated names"),
    plot: Path | None = typer.Option(None, "--plot", help="write a PNG of the pair curves; a file with costs and more "
                                      "than two models also gets <name>-cost.png, quality vs cost"),
    strong: str | None = typer.Option(None, help="strong model; give it with --weak, as `gate score` takes both "
                                      "(default, with neither: the best mean score among the models that score "
                                      "nearly every record)"),
    weak: str | None = typer.Option(None, help="weak model; give it with --strong (default, with neither: the next "
                                    "best mean score)"),
) -> None:
    """Compare the gate (and baselines, trained on the gate's training files) on record files."""
    data = _files(data, ctx)
    with _errors(), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy's "Mean of empty slice": a model without costs
        if (strong is None) != (weak is None):
            given, missing = ("--strong", "--weak") if strong is not None else ("--weak", "--strong")
            raise CliError(f"{given} needs {missing} too: name both models of the pair, or neither to compare the "
                           "top two by mean score")
        from rich.console import Console
        from rich.table import Table

        from moai.bench.baselines import ConstantRouter, all_baselines
        from moai.bench.compare import (
            GateRouter,
            cost_sweep,
            pick_pair,
            predicted_costs,
            router_matrix,
            same_names,
        )
        from moai.bench.datasets import RecordError, cost_matrix, model_names, score_matrix
        from moai.bench.metrics import CurvePoint, cost_report, fixed_report, pair_report, routellm_curve
        from moai.gate.quality import canonical
        from moai.gate.store import Gate

        if strong is not None and canonical(strong) == canonical(weak or ""):
            raise CliError(f"--strong and --weak name the same model ({strong!r}): there is no gap to recover")
        if plot is not None:
            plot = _plot_file(plot)
        g = Gate.load(gate)
        recs = same_names(_load(data))  # one spelling per model, as the gate matches names
        models = model_names(recs)
        for flag, name in (("--strong", strong), ("--weak", weak)):
            # the pair needs the records' scores (a prior will not do): fail before fitting any baseline
            if name is not None and canonical(name) not in {canonical(m) for m in models}:
                close = _close(name, models)
                hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
                raise CliError(f"{flag} {name!r}: no such model in these records{hint} (models: {_some(models)})")
        _warn_untrained(g, models)
        routers: list[Any] = [GateRouter(g)]
        routers[0].cols(models)  # a model the gate never trained on competes with its prior, as in `decide`
        train_recs: list[Any] = []
        files = g.meta.get("train_files") or []
        if baselines != "none":
            if not files:
                raise CliError("this gate does not record its training files; cannot fit baselines")
            train_recs = _training_records(files)
            wanted = None if baselines == "all" else {b.strip() for b in baselines.split(",")}
            bl = [b for b in all_baselines() if wanted is None or b.name in wanted]
            if wanted and len(bl) != len(wanted):
                known = ", ".join(b.name for b in all_baselines())
                raise CliError(f"unknown baseline in {baselines!r}; known: {known}")
            _warn_overlap(recs, train_recs)
            for b in bl:
                b.fit(train_recs)
                routers.append(b)
        elif files:
            try:
                _warn_overlap(recs, _training_records(files))
            except (RecordError, CliError) as e:
                typer.echo(f"note: overlap with the gate's training files not checked: {e}", err=True)
        if strong is not None and weak is not None:
            spelt = {canonical(m): m for m in models}  # one spelling per model (same_names): nothing ambiguous
            s, w = spelt[canonical(strong)], spelt[canonical(weak)]
            y = score_matrix(recs, [s, w])
        else:
            s, w = pick_pair(recs)
            y = score_matrix(recs, [s, w])
            widest = max(sum(m in r.scores for r in recs) for m in models)
            why = ("the models that score nearly every record" if widest >= 0.9 * len(recs) else
                   f"the models that score the most records (none scores more than {widest} of the {len(recs)})")
            typer.echo(f"pair: {s} (strong) vs {w} (weak), the two best mean scores among {why} (--strong/--weak "
                       "choose another)", err=True)
        keep = np.isfinite(y).all(1)
        if not keep.any():
            raise CliError(f"no record scores both {s} and {w}")
        _warn_left_out(recs, keep, s, w)
        pr = [r for r, k in zip(recs, keep, strict=True) if k]
        ys, yw = y[keep, 0], y[keep, 1]
        gap = float(np.mean(ys) - np.mean(yw))
        if gap < 0:
            typer.echo(f"warning: --strong {s} scores below --weak {w} on these records (mean {np.mean(ys):.3g} < "
                       f"{np.mean(yw):.3g}): APGR and CPT are inverted here (more calls to {s} lose quality); swap "
                       "--strong and --weak", err=True)
        # "nearly equal" is relative to the scores' observed spread: score_matrix already maps 1-10 judge scores
        # to 0-1, but a 0-1 metric (or judges) may use a small part of that range, where a fixed 0.02 would call
        # a large gap small. For 0/1 scores (the spread is 1) this is 0.02, as before.
        spread = float(np.ptp(np.concatenate([ys, yw])))
        if gap == 0:
            typer.echo(f"warning: {s} and {w} have the same mean score on these records; APGR and CPT are "
                       "divided by that gap, so they are undefined here (—)", err=True)
        elif abs(gap) < NEAR_GAP * spread:
            typer.echo(f"warning: {s} and {w} differ by {gap:+.3g} in mean score on these records (scores read on "
                       f"0-1), {abs(gap) / spread:.1%} of their spread {spread:.3g}; APGR is divided by that gap, so "
                       "it is unstable here", err=True)
        table = Table(title=f"{_title(data)}: {s} (strong) vs {w} (weak), {len(pr)} records")
        for col in ("router", "APGR", "CPT(50%)", "CPT(80%)"):
            table.add_column(col)
        curves = {}
        for r in _able(routers, [s, w], "the pair table"):
            fixed = r.pick([s, w], s, w) if isinstance(r, ConstantRouter) else None
            if fixed is not None:  # one operating point: every call to one model, whatever the query
                share = 1.0 if fixed == s else 0.0
                rep = fixed_report(share, ys, yw)
                curves[r.name] = [CurvePoint(float("nan"), share * 100, rep.strong_acc if share else rep.weak_acc)]
                cells = (_num(rep.apgr), _pct(rep.cpt50), _pct(rep.cpt80))
            else:
                sc = r.score(pr, s, w)
                rep = pair_report(sc, ys, yw)
                curves[r.name] = routellm_curve(sc, ys, yw)
                # a constant score has no quantile split (RouteLLM's qcut refuses it): no APGR or CPT of its own
                cells = ("—", "—", "—") if np.ptp(sc) == 0 else (_num(rep.apgr), _pct(rep.cpt50), _pct(rep.cpt80))
            table.add_row(r.name, *cells)
        console = Console()
        console.print(table)
        fixed_rows = [r.name for r in routers if isinstance(r, ConstantRouter) and r.name in curves]
        if fixed_rows and gap != 0:
            typer.echo(f"note: {', '.join(fixed_rows)} send every call to one model: one point each, at 100% strong "
                       "calls (APGR 1) or 0% (APGR 0, and no share of strong calls recovers the gap: CPT —)",
                       err=True)
        cost = cost_matrix(recs, models)
        fronts: dict[str, tuple[Any, Any]] = {}
        ym = score_matrix(recs, models)
        if len(models) > 2 and not np.isfinite(cost).any():
            typer.echo("note: no cost_usd in these records: no quality-vs-cost table", err=True)
        elif len(models) > 2 and np.nanmax(cost) <= 0:
            typer.echo("every answer in this file cost nothing: no quality-vs-cost curve", err=True)
        elif len(models) > 2:
            cp = predicted_costs(recs, models)  # what each model cost on these records (priced training if not)
            if train_recs:
                cp = np.where(np.isfinite(cp), cp, predicted_costs(train_recs, models))
            ct = Table(title="quality vs cost (lambda sweep)")
            for col in ("router", "AUC", "q@50% best cost", "q@100%", "max q"):
                ct.add_column(col)
            priced = [m for j, m in enumerate(models) if np.isfinite(cost[:, j]).any()]
            unpriced: list[str] = []
            for r in _able(routers, priced, "the quality-vs-cost table"):
                if isinstance(r, ConstantRouter):  # its own model on every record: one point, not a sweep
                    j = models.index(r.pick(priced, s, w))
                    ok = np.isfinite(ym[:, j]) & np.isfinite(cost[:, j])
                    if not ok.any():
                        unpriced.append(f"{r.name} ({models[j]} has no cost_usd)")
                        continue
                    costs, quals = [float(cost[ok, j].mean())], [float(ym[ok, j].mean())]
                else:
                    sw = cost_sweep(router_matrix(r, recs, models), cp, ym, cost)
                    costs, quals = sw.costs, sw.quals
                rep2 = cost_report(costs, quals, ym, cost, models)
                fronts[r.name] = (costs, quals)
                ct.add_row(r.name, _num(rep2.auc), _num(rep2.q_at_50), _num(rep2.q_at_100), _num(rep2.max_quality))
            console.print(ct)
            if unpriced:
                typer.echo(f"note: {', '.join(unpriced)} left out of the quality-vs-cost table", err=True)
        if plot is not None:
            from moai.bench.plots import plot_cost_curves, plot_pair_curves

            rep = pair_report(np.zeros(len(pr)), ys, yw)
            written = plot_pair_curves(curves, rep.weak_acc, rep.strong_acc, plot, _title(data), w, s)
            typer.echo(f"plot -> {written}")
            if fronts:
                singles = {m: (float(np.nanmean(cost[:, j])), float(np.nanmean(ym[:, j])))
                           for j, m in enumerate(models) if np.isfinite(cost[:, j]).any()}
                cost_png = plot.with_name(f"{plot.stem}-cost{plot.suffix}")
                written = plot_cost_curves(fronts, singles, cost_png, f"{_title(data)}: quality vs cost")
                typer.echo(f"plot -> {written}")


def _num(x: float) -> str:
    """A table cell: three decimals, or a dash where there is no value (no budget that low, no gap to recover)."""
    return "—" if not np.isfinite(x) else f"{x:.3f}"


def _pct(x: float) -> str:
    return "—" if not np.isfinite(x) else f"{x:.1f}%"


def _check_out(out: Path, data: list[Path]) -> None:
    """Refuse an --out that is one of the --data files (same path, a link to it, or a hard link: same inode):
    writing the output would replace the records being read."""
    if out.is_dir():
        raise CliError(f"--out {out} is a directory; name the file to write")
    for d in data:
        same = out.resolve() == d.resolve()
        with suppress(OSError):
            same = same or os.path.samefile(out, d)
        if same:
            raise CliError(f"--out {out} is also --data {d}: writing it would overwrite the records; choose another "
                           "--out")


def _write_lines(out: Path, rows: Iterator[dict[str, Any]]) -> int:
    """JSON lines into a temporary file beside ``out``, renamed over it at the end: a crash or an error midway
    leaves the old file (or none), never half of one."""
    import tempfile

    out = out.resolve() if out.is_symlink() else out  # a link is written through, as open() would
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    n = 0
    try:
        mask = os.umask(0)
        os.umask(mask)
        os.fchmod(fd, 0o666 & ~mask)  # as open() would create it (mkstemp makes it private)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")
                n += 1
        os.replace(tmp, out)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
    return n


@app.command(context_settings={"allow_extra_args": True})
def score(
    ctx: typer.Context,
    gate: Path = typer.Option(..., "--gate"),
    data: list[Path] = typer.Option(..., "--data", help="routing-record JSONL file(s); repeat --data for more"),
    strong: str = typer.Option(..., "--strong"),
    weak: str = typer.Option(..., "--weak"),
    out: Path = typer.Option(..., "--out"),
) -> None:
    """One line per record: {"id", "score"}; higher = the strong model is worth it."""
    data = _files(data, ctx)
    with _errors():
        from moai.gate.quality import canonical
        from moai.gate.store import Gate

        if canonical(strong) == canonical(weak):
            raise CliError(f"--strong and --weak name the same model ({strong!r}): every score would be 0")
        _check_out(out, data)
        g = Gate.load(gate)
        recs = _load(data, need_scores=False)
        record_names = {m for r in recs for m in r.scores}
        _check_pair_known(g, record_names, strong, weak)
        # the gate matches names by their canonical form (case aside) and the output names no model: nothing to
        # resolve, but a name it never trained on may be a misspelling of one it did or of one in the records
        _warn_untrained(g, [strong, weak], known=record_names)
        q = g.quality_matrix([r.prompt for r in recs], [strong, weak])
        sc = q[:, 0] - q[:, 1]
        _check_finite(gate, sc, recs)
        n = _write_lines(out, ({"id": r.out_id, "score": float(sc[i])} for i, r in enumerate(recs)))
        typer.echo(f"{n} scores -> {out}")


def _check_pair_known(g: Any, record_names: set[str], strong: str, weak: str) -> None:
    """On records that carry scores, a --strong/--weak no record scores is probably not the model meant: a
    warning naming the records' models when the gate trained on it, an error when the gate did not either (as
    `gate eval` refuses it; on bare prompts an unseen model still gets the gate's prior, with a warning)."""
    from moai.gate.quality import canonical

    if not record_names:
        return
    in_records = {canonical(m) for m in record_names}
    for flag, name in (("--strong", strong), ("--weak", weak)):
        if canonical(name) in in_records:
            continue
        if canonical(name) in set(g.head.models):
            typer.echo(f"warning: {flag} {name!r}: no record scores it (the records' models: {_some(record_names)}); "
                       "its scores come from the gate's training alone", err=True)
            continue
        close = _close(name, record_names | set(g.models))
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise CliError(f"{flag} {name!r}: no such model in these records or the gate{hint} (records' models: "
                       f"{_some(record_names)}; the gate's: {_some(g.models)})")


def _check_finite(gate: Path, values: np.ndarray, recs: list[Any]) -> None:
    """Refuse to write what is not a number (NaN is not even JSON): the gate, not the records, is broken."""
    bad = ~np.isfinite(values)
    if bad.any():
        rows = bad if bad.ndim == 1 else bad.any(1)
        first = recs[int(np.argmax(rows))]
        raise CliError(f"{gate}: not a usable gate: no finite estimate for {int(rows.sum())} of {len(recs)} records "
                       f"(first {first.id!r}); nothing written. Retrain it with finite, non-negative --set weights")


def _check_weights_spec(spec: str) -> None:
    """What ``Weights.parse`` lets through silently: no weight at all (quality alone, which the user did not ask
    for), a weight given twice (the last won), a weight with no name, and 1_0 read as 10."""
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if not parts:
        raise CliError(f"--weights {spec!r} names no weight: give e.g. quality=1,cost=0.3")
    keys = [p.partition("=")[0].strip() for p in parts]
    if "" in keys:
        raise CliError(f"--weights {spec!r}: a weight with no name; give e.g. quality=1,cost=0.3")
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise CliError(f"--weights {spec!r} gives {', '.join(twice)} more than once: give each weight once")
    for p in parts:
        if "_" in p.partition("=")[2]:
            raise CliError(f"--weights {spec!r}: {p!r} is not a plain number")


@app.command(context_settings={"allow_extra_args": True})
def decide(
    ctx: typer.Context,
    gate: Path = typer.Option(..., "--gate"),
    data: list[Path] = typer.Option(..., "--data", help="routing-record JSONL file(s); repeat --data for more"),
    weights: str = typer.Option("quality=1", "--weights", help="e.g. quality=1,cost=0.3 (cost per cent)"),
    out: Path = typer.Option(..., "--out"),
    models: str | None = typer.Option(None, "--models", help="candidates when a record has no scores; a name is "
                                      "matched to the records' or the gate's spelling, case aside, each once"),
) -> None:
    """One line per record: {"id", "model"}, using each record's own cost_usd (and latency_ms) when present."""
    data = _files(data, ctx)
    with _errors():
        import math
        from dataclasses import asdict, replace

        from moai.gate.policy import Weights
        from moai.gate.quality import guess_card
        from moai.gate.store import Gate

        _check_weights_spec(weights)
        w = Weights.parse(weights)
        for k, v in asdict(w).items():
            if not math.isfinite(v) or v < 0 or (k == "cost_scale" and v == 0):
                need = "a positive number" if k == "cost_scale" else "a non-negative number"
                raise CliError(f"--weights: {k}={v:g} must be {need} (a weight is what one unit of that term "
                               "costs in quality)")
        default = None if models is None else [m for m in (x.strip() for x in models.split(",")) if m]
        if default == []:
            raise CliError(f"--models {models!r} names no model: give comma-separated names")
        _check_out(out, data)
        g = Gate.load(gate)
        recs = _load(data, need_scores=False)
        record_names = sorted({m for r in recs for m in r.scores})
        if default is not None:
            default = _resolve_models(default, record_names, g.models, "--models")
            n_scored = sum(1 for r in recs if r.scores)
            if n_scored == len(recs):  # resolved (an ambiguous name is still an error), but no record uses them
                typer.echo("note: --models is not used: every record has scores, and a record's candidates are the "
                           "models that scored it", err=True)
                default = None
            elif n_scored:
                typer.echo(f"note: --models applies to the {len(recs) - n_scored} record(s) without scores; the "
                           f"{n_scored} with scores choose among the models that scored them", err=True)
        names_all = sorted(set(record_names) | set(default or []))
        if not names_all:
            raise CliError("records have no scores: name the candidate models with --models")
        _warn_untrained(g, names_all, known=record_names)
        q = g.quality_matrix([r.prompt for r in recs], names_all)
        _check_finite(gate, q, recs)
        col = {m: j for j, m in enumerate(names_all)}
        # size from the name: a larger model's answer is expected to cost more energy (the carbon term)
        cards = {m: RecordCard(m, params_b=guess_card(m)["params_b"]) for m in names_all}
        # a record's own models answered its prompt, however long: no context limit guessed for them excludes one
        answered = {m: replace(c, context=sys.maxsize) for m, c in cards.items()}
        free: set[str] = set()  # candidates with no cost on some record: the cost term counts them as free there
        varies = {"latency_s": False, "co2_g": False}  # does the term tell any two candidates apart?
        stuck: list[tuple[Any, Any]] = []  # records with no eligible model

        def rows() -> Iterator[dict[str, Any]]:
            for i, r in enumerate(recs):
                cand = list(r.scores) or default or names_all
                n_tok = len(r.prompt) // 4 + 1
                costs = {m: r.cost_usd[m] for m in cand if m in r.cost_usd}
                for m in cand:
                    if m not in costs:
                        p = g.cost.predict(m, n_tok)
                        if p is not None:
                            costs[m] = p
                free.update(m for m in cand if m not in costs)
                # the record's own measured latency where it has one, else the latency the gate learnt
                latency = {m: r.latency_ms[m] / 1000.0 for m in cand if m in r.latency_ms}
                d = g.decide(r.prompt, {m: (answered if m in r.scores else cards)[m] for m in cand}, w,
                             quality={m: float(q[i, col[m]]) for m in cand}, observed_costs=costs,
                             observed_latency=latency)
                for k in varies:
                    varies[k] = varies[k] or len({e[k] for e in d.expected.values()}) > 1
                model = d.model
                if model is None:  # every candidate excluded: the best expected quality, not a null model
                    stuck.append((r, d))
                    model = max(cand, key=lambda m: q[i, col[m]])
                yield {"id": r.out_id, "model": model}

        n = _write_lines(out, rows())
        if stuck:
            r, d = stuck[0]
            why = next(iter(d.excluded.values()), "; ".join(d.reasons))
            typer.echo(f"warning: {len(stuck)} record(s) had no eligible model (first, {r.id!r}: {why}); each got "
                       "its candidate with the best expected quality", err=True)
        if w.cost > 0 and free:
            typer.echo(f"warning: cost={w.cost:g}: no cost_usd in the records (some or all) and no cost learnt by the "
                       f"gate for {_some(free)}: treated as free there, so the cost weight has little or no effect "
                       "on them", err=True)
        for k, term, what in (("latency_s", "latency", "latency (no latency_ms in the records, none learnt)"),
                              ("co2_g", "carbon", "CO2 (sizes guessed from the names alike)")):
            if getattr(w, term) > 0 and not varies[k]:
                typer.echo(f"warning: {term}={getattr(w, term):g} has no effect: every candidate has the same "
                           f"expected {what}", err=True)
        typer.echo(f"{n} decisions -> {out}")


def main(argv: list[str] | None = None) -> Callable[..., Any] | None:  # pragma: no cover
    return app(argv)


if __name__ == "__main__":
    app()
    sys.exit(0)

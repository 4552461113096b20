"""``moai gate eval``: the gate, and baselines fitted on its training files, compared on record files: APGR and
CPT for a strong/weak pair, quality against cost across every model, and their plots.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import typer

from moai.gate.cli_inputs import CliError, close_matches, data_files, load, reported_errors, some, warn_untrained

# `gate eval` warns that APGR is unstable where the pair's mean scores differ by less than this share of the spread
# of their scores (max - min, after the 1-10 judge scale is mapped to 0-1)
NEAR_GAP = 0.02


def _title(data: list[Path]) -> str:
    return " + ".join(p.name for p in data)


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
        typer.echo(f"note: {', '.join(left)} left out of {table}: not trained on {some(missing)}", err=True)
    return ok


def _plot_file(plot: Path) -> Path:
    """The PNG file ``--plot`` names, as it will be written (``plot_file``), so the path printed is the file
    written; one it cannot be is refused before the evaluation runs."""
    from moai.bench.report import PlotPathError, plot_file

    try:
        return plot_file(plot)
    except PlotPathError as e:
        raise CliError(str(e)) from None


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
    data = data_files(data, ctx)
    with reported_errors(), warnings.catch_warnings():
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
        recs = same_names(load(data))  # one spelling per model, as the gate matches names
        models = model_names(recs)
        for flag, name in (("--strong", strong), ("--weak", weak)):
            # the pair needs the records' scores (a prior will not do): fail before fitting any baseline
            if name is not None and canonical(name) not in {canonical(m) for m in models}:
                close = close_matches(name, models)
                hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
                raise CliError(f"{flag} {name!r}: no such model in these records{hint} (models: {some(models)})")
        warn_untrained(g, models)
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

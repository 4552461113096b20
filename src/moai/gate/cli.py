"""`moai gate ...`: train, evaluate, score and decide from routing-record files.

Bad input (a malformed file, an unknown model, a missing gate) prints one line and exits 2.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import numpy as np
import typer

from moai.gate.cli_inputs import (
    CliError,
    close_matches,
    data_files,
    load,
    reported_errors,
    resolve_models,
    some,
    warn_untrained,
)
from moai.gate.eval_cli import eval_
from moai.gate.policy import RecordCard

app = typer.Typer(help="Train and inspect the learned gate.", no_args_is_help=True, add_completion=False)


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
    data = data_files(data, ctx)
    with reported_errors():
        from moai.gate.train import TrainConfig

        base = TrainConfig(epochs=epochs, seed=seed)
        for flag, key in (("--epochs", "epochs"), ("--seed", "seed")):
            # refused here, by the flag's name, rather than as a setting the user never wrote with --set
            bad = [p.split(" ", 1)[1] for p in base.problems() if p.startswith(f"{key}=")]
            if bad:
                raise CliError(f"{flag} {getattr(base, key)}: {bad[0]}")
        cfg = base.override(settings)  # a value no gate can score with (inf, nan, negative, all weights 0) is refused
        records = load(data)
        undo = _writable_dir(out)  # fail now, not after a long training run
        try:
            if ray is None:
                gate = _progress_train(records, cfg)
            else:
                from moai.scale import train_with_ray

                gate = train_with_ray(records, cfg, address=ray)
        except KeyboardInterrupt:  # Ctrl-C: say so (typer would exit 130 silently), and that nothing was saved
            undo()
            typer.echo(f"interrupted: training stopped, nothing written to {out}", err=True)
            raise typer.Exit(130) from None
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


app.command("eval", context_settings={"allow_extra_args": True})(eval_)  # comparing on records: eval_cli.py


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
    data = data_files(data, ctx)
    with reported_errors():
        from moai.gate.quality import canonical
        from moai.gate.store import Gate

        if canonical(strong) == canonical(weak):
            raise CliError(f"--strong and --weak name the same model ({strong!r}): every score would be 0")
        _check_out(out, data)
        g = Gate.load(gate)
        recs = load(data, need_scores=False)
        record_names = {m for r in recs for m in r.scores}
        _check_pair_known(g, record_names, strong, weak)
        # the gate matches names by their canonical form (case aside) and the output names no model: nothing to
        # resolve, but a name it never trained on may be a misspelling of one it did or of one in the records
        warn_untrained(g, [strong, weak], known=record_names)
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
            typer.echo(f"warning: {flag} {name!r}: no record scores it (the records' models: {some(record_names)}); "
                       "its scores come from the gate's training alone", err=True)
            continue
        close = close_matches(name, record_names | set(g.models))
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise CliError(f"{flag} {name!r}: no such model in these records or the gate{hint} (records' models: "
                       f"{some(record_names)}; the gate's: {some(g.models)})")


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
    data = data_files(data, ctx)
    with reported_errors():
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
        recs = load(data, need_scores=False)
        record_names = sorted({m for r in recs for m in r.scores})
        if default is not None:
            default = resolve_models(default, record_names, g.models, "--models")
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
        warn_untrained(g, names_all, known=record_names)
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
                       f"gate for {some(free)}: treated as free there, so the cost weight has little or no effect "
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

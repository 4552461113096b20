"""``moai mix tune``: find the weights/threshold that meet a spending, quality or latency target, write them back.

Bad input (unknown mix, malformed records, an unreadable target) prints one line and exits 2; so does a
target no point on the curve can meet, naming the closest point that can be reached.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from moai.tuning.targets import HELP as TARGET_HELP

app = typer.Typer(help="Tune mixes: weights and thresholds that hold a cost, quality or latency target.",
                  no_args_is_help=True, add_completion=False)


def _fail(msg: str, code: int = 2) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


def _unwritten(cfg_path: Path | None, dry_run: bool) -> str:
    """What became of the YAML when a command stopped before writing it."""
    return "nothing written" if cfg_path is None or dry_run else f"{cfg_path} not updated"


def _load_gate(path: Path | None, cfg: Any) -> Any:
    """--gate, else the config's settings.gate, else the gate shipped with moai."""
    from moai.gate.runtime import DEFAULT_GATE_DIR
    from moai.gate.store import Gate

    d = path or (Path(cfg.settings.gate).expanduser() if cfg.settings.gate else DEFAULT_GATE_DIR)
    return Gate.load(d)


@app.command(context_settings={"allow_extra_args": True})
def tune(
    ctx: typer.Context,
    mix: str = typer.Option(..., "--mix", help="the mix to tune (route: weights; cascade: threshold; "
                            "auto: difficulty_threshold)"),
    data: list[Path] = typer.Option(..., "--data", help="routing-record JSONL file(s): --data a.jsonl b.jsonl"),
    target: str = typer.Option(..., "--target", help=TARGET_HELP),
    config: Path | None = typer.Option(None, "--config", "-c", help="mix instructions to read and update "
                                       "(default: MOAI_CONFIG, else the embedded default, which is not written)"),
    gate: Path | None = typer.Option(None, "--gate", help="trained gate directory (default: settings.gate or "
                                     "the shipped gate)"),
    plot: Path | None = typer.Option(None, "--plot", help="write the trade-off curve (PNG) here"),
    holdout: float = typer.Option(0.2, "--holdout", min=0.0, max=0.9,
                                  help="share of records (grouped by prompt) kept out of tuning to check the result"),
    seed: int = typer.Option(0, help="seed of the hold-out split"),
    dry_run: bool = typer.Option(False, "--dry-run", help="do not write the YAML"),
) -> None:
    """Sweep the mix's knob over the records, choose the best point meeting the target, write it to the YAML.

    For spending and latency targets the chosen point is the one with the highest quality; for a quality
    target, the cheapest (with free models only: the weight traded is latency, and the fastest point wins).
    Quality and cost are the records' own (the gate only decides), so the figures are what the mix would
    have done on these queries. Each benchmark's scores keep one scale (0/1, a 0-1 metric, or a 1-10 judge
    score, read as 0-1); a score on another (a 7 among 0/1 scores) is an error naming its record.
    """
    data = [*data, *(Path(a) for a in ctx.args)]
    from moai.bench.datasets import RecordError
    from moai.config import ConfigError, load_config
    from moai.gate.encoder import EncoderUnavailable
    from moai.gate.store import GateLoadError
    from moai.tuning import offline as off
    from moai.tuning.report import table
    from moai.tuning.targets import TargetError, parse_target
    from moai.tuning.yaml_io import write_mix_value

    cfg_path = config or (Path(os.environ["MOAI_CONFIG"]) if os.environ.get("MOAI_CONFIG") else None)
    if plot is not None:  # a plot that cannot be written is said before any tuning, as `gate eval --plot` does
        from moai.bench.report import PlotPathError, plot_file

        try:
            plot = plot_file(plot)
        except PlotPathError as e:
            _fail(str(e))
            return
    try:
        tg = parse_target(target)
        cfg = load_config(cfg_path)
        if mix not in cfg.mixes:
            raise off.TuneError(f"unknown mix {mix!r}; known: {', '.join(cfg.mixes)}")
        g = _load_gate(gate, cfg)
        records, mx = off.prepare(data, cfg, mix, g)
        pool = {c.name for c in cfg.pool(cfg.mixes[mix])}
        if not set(mx.models) <= pool:  # deliberate (public records of other models), but never silent
            typer.echo(f"warning: the records score fewer than two models of mix {mix!r}; tuning over the "
                       f"records' own models ({', '.join(mx.models)}) as stand-ins", err=True)
        spec = off.spec_for(cfg.mixes[mix], mix, tg, cfg, mx.models, mx)
        tune_rows, held_rows = off.split(len(records), holdout, seed, [r.prompt for r in records])
        if len(tune_rows) < 10:
            raise off.TuneError(f"only {len(tune_rows)} records left to tune on; lower --holdout or add data")
        res = off.sweep(mx.take(tune_rows), spec, tg)
    except off.Infeasible as e:
        _fail(str(e))
        return
    except (TargetError, ConfigError, RecordError, GateLoadError, EncoderUnavailable, off.TuneError, OSError) as e:
        _fail(str(e))
        return
    held = None
    if len(held_rows):
        hm = mx.take(held_rows)
        held = off.evaluate(hm, spec, res.chosen.value)
        held.measured = tg.measure(held.quality, held.cost_usd, held.p95_latency_s, hm.reference())
        held.feasible = tg.met(held.measured)
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 130)  # logs and pipes: keep the columns readable
    console.print(table(res, held, mix, len(tune_rows), len(held_rows)))
    if plot is not None:
        from moai.tuning.plot import plot_result

        try:  # what the check could not foresee (a read-only folder, a full disk): the YAML is left as it was
            plot_result(res, plot, f"mix {mix}: {tg} ({len(tune_rows)} records)")
        except (OSError, ValueError, RuntimeError) as e:
            _fail(f"--plot {plot}: cannot write: {getattr(e, 'strerror', None) or e}; {_unwritten(cfg_path, dry_run)}")
        typer.echo(f"plot -> {plot}")
    if cfg_path is None or dry_run:
        typer.echo(f"not written ({'--dry-run' if dry_run else 'no --config'}): set mixes.{mix}.{spec.knob} "
                   f"to {res.chosen.value:g}")
        return
    try:
        write_mix_value(cfg_path, mix, spec.knob, res.chosen.value)
    except (ConfigError, OSError) as e:
        _fail(f"{cfg_path}: not updated: {e}")
    typer.echo(f"{cfg_path}: mixes.{mix}.{spec.knob} = {res.chosen.value:g}")

"""``moai config check``: validate mix instructions before a server loads them."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from moai.cli_checks import warn_missing_keys, warn_missing_local
from moai.cli_common import console, fail, note, open_config, warn

config_app = typer.Typer(help="Mix instructions (YAML).", no_args_is_help=True)


@config_app.command("check")
def config_check(path: str = typer.Argument(..., help="Mix instructions YAML.")) -> None:
    """Validate a mix-instructions file; print a summary or one line naming file, line and field."""
    from moai.config import config_warnings
    from moai.config_warnings import default_mix_note

    cfg = open_config(path)
    if cfg.settings.gate:  # what `moai serve` would fall back from, with only a warning in its log
        gate_dir = Path(cfg.settings.gate).expanduser()
        if not (gate_dir / "gate.json").is_file():
            fail(f"{path}: settings.gate: no trained gate at {cfg.settings.gate} (no gate.json there); `moai serve` "
                 "would route with the shipped gate or the rule-based chooser instead")
        from moai.gate.runtime import load_gate_dir
        from moai.gate.store import GateLoadError

        try:
            load_gate_dir(gate_dir)
        except GateLoadError as e:
            fail(f"{path}: settings.gate: {e}; `moai serve` would route with the shipped gate or the rule-based "
                 "chooser instead")
    warn_missing_keys(cfg)
    warn_missing_local(cfg)
    for warning in config_warnings(cfg):
        warn(f"{path}: {warning}")
    if (text := default_mix_note(cfg)) is not None:
        note(f"{path}: {text}")
    summary = (f"{path}: {len(cfg.models)} model(s), {len(cfg.mixes)} mix(es): "
               + ", ".join(f"{n} ({m.strategy})" for n, m in cfg.mixes.items()))
    console.print(f"[green]ok[/green] {escape(summary)}", soft_wrap=True)

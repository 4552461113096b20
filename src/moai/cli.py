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
from typing import Any

import typer
from rich.text import Text

from moai.cli_checks import check_cache, check_privacy_model, warn_missing_keys, warn_missing_local
from moai.cli_common import (
    config_db_option,
    console,
    err_console,
    fail,
    open_config,
    open_existing_store,
    open_store,
    resolve_database_url,
    say,
    warn,
)
from moai.config import Config
from moai.config_cli import config_app
from moai.db_cli import db_app
from moai.keys_cli import keys_app
from moai.models_cli import models_app
from moai.serve_process import (
    Stoppable,
    check_listen,
    check_log_level,
    default_concurrency,
    draining,
    log_to_stderr,
)

app = typer.Typer(help="moai — Mixture of AI: many LLMs behind one OpenAI-compatible endpoint.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
app.add_typer(models_app, name="models")
app.add_typer(config_app, name="config")
app.add_typer(keys_app, name="keys")
app.add_typer(db_app, name="db")


def _unknown_mix(name: str, cfg: Config) -> str:
    """The CLI's words for a name the config lacks (the server's 404 speaks of models and GET /v1/models)."""
    if name.removeprefix("moai/") == "default" and cfg.default_mix is None:  # the option's default, not a typo
        return f"{cfg.source} has no mix named 'default'; pass --mix (mixes: {', '.join(cfg.mixes)})"
    return (f"unknown mix or model {name!r} in {cfg.source}; mixes: {', '.join(cfg.mixes)}; "
            f"models: {', '.join(cfg.models)}")


def _write_output(path: str, write: Callable[[Path], object]) -> None:
    """Write a report file, creating its folder as the other outputs do; an unwritable path is one line."""
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        write(p)
    except OSError as e:
        fail(f"cannot write {path}: {e.strerror or e}")


# ---------------------------------------------------------------------------- serve


@app.command()
def serve(
    config: str | None = typer.Option(None, "--config", "-c",
                                      help="Mix instructions YAML (default: MOAI_CONFIG, else embedded)."),
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
    timeout_headers: float = typer.Option(
        10.0, min=0.1, help="Seconds a connection may take to send a request's headers, from its opening or the "
        "request's first byte (a client that never sends them is disconnected: it would hold a place among "
        "--limit-concurrency)."
    ),
) -> None:
    """Serve the OpenAI-compatible API (POST /v1/chat/completions, POST /v1/responses, GET /v1/models,
    POST /v1/feedback) and Anthropic's Messages API (POST /v1/messages)."""
    log_level = check_log_level(log_level)
    if not host.strip():  # uvicorn would listen on every interface, and the banner would read http://:PORT
        fail("--host must not be empty (0.0.0.0 listens on every interface)")
    import uvicorn

    from moai.server.app import create_app
    from moai.server.http_protocol import with_headers_timeout

    cfg = open_config(config or os.environ.get("MOAI_CONFIG"))
    check_cache(cfg)
    check_privacy_model()
    check_listen(host, port)
    store = open_store(database_url or cfg.settings.database_url)
    warn_missing_local(cfg)
    warn_missing_keys(cfg)
    say(f"moai serving {len(cfg.mixes)} mix(es) over {len(cfg.models)} model(s) on http://{host}:{port}/v1")
    log_to_stderr(log_level)
    if limit_concurrency is None:
        limit_concurrency = default_concurrency()
    app = create_app(cfg, store)
    server = uvicorn.Server(uvicorn.Config(
        Stoppable(app), host=host, port=port, log_level=log_level, backlog=backlog,
        limit_concurrency=limit_concurrency or None, timeout_keep_alive=timeout_keep_alive,
        http=with_headers_timeout(timeout_headers),
        timeout_graceful_shutdown=timeout_graceful_shutdown))
    app.state.mixture.stopping = lambda: server.should_exit
    _run(server)
    if not server.started:  # it could not start (uvicorn logged why): as uvicorn.run exits
        raise typer.Exit(3)


def _run(server: Any) -> None:
    """Run the uvicorn server until it has drained (the one place ``serve`` starts serving)."""
    draining(server.run)


# ---------------------------------------------------------------------------- chat


@app.command()
def chat(
    prompt: str = typer.Argument(..., help="The user message."),
    mix: str = typer.Option("default", "--mix", "-m", help="Mix (or model) name."),
    config: str | None = typer.Option(None, "--config", "-c",
                                      help="Mix instructions YAML (default: MOAI_CONFIG, else embedded)."),
    max_tokens: int | None = typer.Option(None, min=1, max=32768, help="Completion budget."),
    show_trace: bool = typer.Option(False, "--trace", help="Print the moai summary after the answer."),
) -> None:
    """Ask a question through a mix, in-process, streaming the answer to the terminal."""
    from moai.mixture import BadRequest, Mixture, UnknownModel
    from moai.providers.base import Delta, ProviderError
    from moai.server.openai_schema import ChatCompletionRequest
    from moai.strategies.context import NoEligibleModel
    from moai.strategies.outcome import Execution, PlanFailed

    cfg = open_config(config or os.environ.get("MOAI_CONFIG"))  # as serve: the same mix instructions answer
    check_cache(cfg)
    check_privacy_model()
    if not prompt.strip():
        fail("the prompt is empty")
    name = mix.removeprefix("moai/")
    warn_missing_keys(cfg, {c.name for c in cfg.pool(cfg.mixes[name])} if name in cfg.mixes else {name})
    store = open_store(cfg.settings.database_url)
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
        line = (f"{summary['model']} · {summary['strategy']} · {summary['latency_ms']:.0f} ms · "
                f"${summary['cost_usd']:.6f} · {summary['energy_kwh'] * 1000:.3f} Wh")
        err_console.print(Text(line, style="dim"), soft_wrap=True)  # a model name's "[...]" is not markup
        if show_trace:
            err_console.print_json(json.dumps(summary))


# ---------------------------------------------------------------------------- route


@app.command()
def route(
    prompt: str = typer.Argument(..., help="The user message to route."),
    mix: str = typer.Option("default", "--mix", "-m", help="Mix name."),
    config: str | None = typer.Option(None, "--config", "-c",
                                      help="Mix instructions (default: MOAI_CONFIG, else embedded)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    database_url: str | None = typer.Option(
        None, "--database-url", help="Where the live statistics are read (default: the config's, else "
        "MOAI_DATABASE_URL, else the local SQLite: the database `moai serve` records to)."),
) -> None:
    """Show the gate's decision for a prompt — model, strategy, sensitivity, reasons — calling no model, weighing
    what the server weighs: the latency, failures and feedback recorded in its database."""
    from pydantic import ValidationError

    from moai.mixture import BadRequest, Mixture, UnknownModel
    from moai.server.openai_schema import validation_message

    cfg = open_config(config or os.environ.get("MOAI_CONFIG"))
    check_cache(cfg)
    check_privacy_model()
    if not prompt.strip():
        fail("the prompt is empty")
    mixture = Mixture(cfg)
    _read_live_stats(mixture, database_url or cfg.settings.database_url)
    try:
        decision = mixture.route([{"role": "user", "content": prompt}], mix=mix)
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


def _read_live_stats(mixture: Any, database_url: str | None) -> None:
    """The live statistics the server routes by, read from its database: without them the decision shown was the
    cards' alone, not the server's. A database not created yet has none; one that cannot be read is a warning."""
    from moai.telemetry.database import DatabaseUnavailable, default_database_url, safe_url
    from moai.telemetry.report import missing_sqlite_file
    from moai.telemetry.store import TelemetryStore

    url = database_url or default_database_url()
    if missing_sqlite_file(url) is not None:
        return
    try:
        if not _has_calls_table(url):  # an empty database (PostgreSQL): nothing to read, no schema to create there
            return
        store = TelemetryStore(url)
    except DatabaseUnavailable as e:
        warn(f"live statistics not read, the decision weighs the model cards alone: {e}")
        return
    try:
        mixture.stats.refresh(store)
    except Exception as e:  # noqa: BLE001 - a diagnostic: the cards' decision is still worth showing
        warn(f"live statistics not read from {safe_url(url)!r}, the decision weighs the model cards alone: "
             f"{type(e).__name__}")
    finally:
        store.close()


def _has_calls_table(url: str) -> bool:
    """Whether the database holds moai's tables, looked at without creating them (opening a ``TelemetryStore``
    migrates). Raises ``DatabaseUnavailable`` when it cannot be reached."""
    from sqlalchemy import create_engine, inspect
    from sqlalchemy.exc import SQLAlchemyError

    from moai.telemetry.database import DatabaseUnavailable, connect_args, safe_url

    try:
        engine = create_engine(url, connect_args=connect_args(url))  # a bounded connect, as the store's
    except Exception as e:  # noqa: BLE001 - a bad URL or a missing driver: as TelemetryStore tells it
        raise DatabaseUnavailable(f"cannot open database {safe_url(url)!r}: {e}") from None
    try:
        return inspect(engine).has_table("calls")
    except SQLAlchemyError as e:
        raise DatabaseUnavailable(f"cannot open database {safe_url(url)!r}: {type(e).__name__}") from None
    finally:
        engine.dispose()


# ---------------------------------------------------------------------------- monitoring


@app.command()
def report(
    since: str | None = typer.Option(None, help="Only requests newer than this: 30m, 24h, 7d or ISO time."),
    html_out: str | None = typer.Option(None, "--html", help="Also write a self-contained HTML page here."),
    plot: str | None = typer.Option(None, "--plot", help="Also write the plots here (PNG, or the format its suffix "
                                    "names: .pdf, .svg, ...)."),
    database_url: str | None = typer.Option(None, help="Default: the config's, else MOAI_DATABASE_URL, else SQLite."),
    config: str | None = config_db_option(),
) -> None:
    """Usage per model and mix: requests, tokens, p50/p95 latency, cost, energy, CO2, feedback."""
    from moai.telemetry.database import DatabaseUnavailable, default_database_url, safe_url
    from moai.telemetry.report import (
        Report,
        build_report,
        parse_since,
        plot_format,
        print_tables,
        sqlite_file_problem,
        write_html,
        write_plot,
    )

    try:
        start = parse_since(since)
        if plot:
            plot_format(plot)  # before the report is read: a suffix no plot can take costs nothing
    except ValueError as e:
        fail(str(e))
        return
    url = resolve_database_url(database_url, config) or default_database_url()
    if (problem := sqlite_file_problem(url)) is not None:  # a report reads: it must not create a database
        fail(f"cannot open database {safe_url(url)!r}: unable to open database file: {problem} "
             "(`moai serve` creates it when it records the first request)")
    try:
        recorded = _has_calls_table(url)
    except DatabaseUnavailable:
        recorded = True  # opening it says why, in one line
    # a database moai never wrote to (PostgreSQL's empty one) has nothing to report: read, not given moai's tables
    rep = build_report(open_store(url), start) if recorded else Report(start, [])
    print_tables(rep, console)
    if not rep.requests:
        say("no requests recorded" + (f" since {since}" if since else ""))
    if plot:
        _write_output(plot, lambda p: write_plot(rep, p))
        say(f"plots: {plot}")
    if html_out:
        _write_output(html_out, lambda p: write_html(rep, p))
        say(f"html: {html_out}")


# a negative score is an argument as written (`moai feedback ID -1`), not an unknown option "-1"
@app.command(context_settings={"ignore_unknown_options": True})
def feedback(
    request_id: str = typer.Argument(
        ..., help="The answer's id: chatcmpl-... (chat completions), resp_... (responses) or msg_... (messages)."),
    score: float = typer.Argument(..., help="-1..1 (thumbs), 0..1, or above 1 a 0-10 rating (see --scale)."),
    comment: str | None = typer.Option(None, help="Free text."),
    scale: str | None = typer.Option(
        None, help="The score's scale: thumbs (-1..1), unit (0..1) or ten (0..10, where 1 is 1/10)."),
    url: str | None = typer.Option(None, help="Send to a running server (its base URL, with or without /v1) "
                                   "instead of the database."),
    database_url: str | None = typer.Option(None, help="Default: the config's, else MOAI_DATABASE_URL, else SQLite."),
    config: str | None = config_db_option(),
) -> None:
    """Rate an answer; the gate's live quality estimate for that model moves with it."""
    if url:
        import httpx

        try:
            r = httpx.post(feedback_endpoint(url), json={"id": request_id, "score": score,
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
        say(f"recorded feedback {score:g} for {request_id}")
        return
    from moai.telemetry.feedback import stored_score
    from moai.telemetry.store import UnknownRequest, check_score

    try:
        stored = stored_score(score, scale)
        check_score(stored)  # before the database is opened
    except ValueError as e:  # a score off every accepted scale
        fail(str(e))
        return
    from moai.server.translation import chat_id

    store = open_existing_store(database_url, config, looking_for=f"no chat completion with id {request_id!r}")
    try:
        store.add_feedback(chat_id(request_id), stored, comment)
    except UnknownRequest:
        fail(f"no chat completion with id {request_id!r} in the telemetry database")
    say(f"recorded feedback {score:g} for {request_id}")


def feedback_endpoint(url: str) -> str:
    """POST /v1/feedback of the server at ``url``: its root (http://host:8000) or the base URL clients are given
    (http://host:8000/v1), never .../v1/v1/feedback."""
    base = url.strip().rstrip("/")
    if base.endswith("/v1/feedback"):
        return base
    return base + ("/feedback" if base.endswith("/v1") else "/v1/feedback")


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

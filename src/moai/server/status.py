"""What probes and operators read: liveness with the circuit breakers, readiness, live statistics, Prometheus
metrics. Once keys exist, models are named only to a key that may call them."""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
import os
import time
import weakref
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from moai import __version__
from moai.catalog import missing_files
from moai.config import Config
from moai.mixture import Mixture
from moai.server.auth import DATABASE_UNAVAILABLE, Denied, Gatekeeper, bearer_credentials, driver_reason
from moai.server.errors import denied
from moai.server.openai_schema import error_body
from moai.telemetry.adapt import LiveStats
from moai.telemetry.metrics import CONTENT_TYPE
from moai.telemetry.store import TelemetryStore

log = logging.getLogger("moai.server")
READY_DB_TIMEOUT_S = 2.0  # /readyz: a database that has not answered a trivial query by then is down


def _usable(stats: LiveStats, model: str, now: float) -> bool:
    """Closed or half-open, or open with its cool-down over (the next call will probe it). Read-only."""
    st = stats.models.get(model)
    return st is None or st.opened_at is None or st.probing or now - st.opened_at >= stats.cooldown_s


def add_status_routes(app: FastAPI, mix: Mixture, config: Config, keeper: Gatekeeper) -> None:
    """GET /healthz, /readyz, /moai/stats and /metrics."""
    # the default mix; without one (a file may name none), every mix: ready while any of them can answer
    ready_mix = config.default_mix
    ready_pool = list(dict.fromkeys(c.name for m in ([ready_mix] if ready_mix else config.mixes)
                                    for c in config.pool(config.mixes[m])))

    @app.get("/healthz")
    async def healthz(request: Request) -> dict[str, Any]:
        """Liveness, with every model's circuit breaker (closed, open, half-open) as routing sees it. Once keys
        exist, a probe without one (a liveness check) is told the counts, not the names of the models, which a
        key may see only when it may call them."""
        breakers = {m: mix.stats.state(m) for m in config.models}
        try:
            key = await keeper.check(request.headers.get("authorization"))
            names = visible(key.allowed_mixes if key is not None else None)[1]
        except Denied:
            names = set()
        body: dict[str, Any] = {"status": "ok", "version": __version__, "models": len(config.models),
                                "mixes": len(config.mixes),
                                "open_circuit_count": sum(1 for s in breakers.values() if s == "open")}
        if names:
            body["breakers"] = {m: b for m, b in breakers.items() if m in names}
            body["open_circuits"] = sorted(m for m, b in body["breakers"].items() if b == "open")
        return body

    @app.get("/readyz", response_model=None)
    async def readyz(request: Request) -> Any:
        """Ready while the telemetry database answers (no request can be recorded, nor a key checked, without it)
        and at least one model of the default mix (without one, of any mix) can be called: its circuit not open,
        or cooling off, and its model file, if it has one, in place. Once keys
        exist, the models are named only to a key that may call them (a readiness probe needs the status)."""
        if mix.store is not None:
            problem = await _database_problem(mix.store)
            if problem is not None:
                mix.metrics.observe_database_error("ready")
                log.warning("not ready: telemetry database: %s", problem)
                return JSONResponse(error_body("the telemetry database is unavailable", "server_error",
                                               code=DATABASE_UNAVAILABLE), status_code=503)
        now = time.time()
        closed = [m for m in ready_pool if _usable(mix.stats, m, now)]
        # a model whose file is not there (a GGUF not in place, a zoo package not pulled) fails every call
        missing = [m for m in closed if missing_files(config.models[m])]
        usable = [m for m in closed if m not in missing]
        try:
            key = await keeper.check(request.headers.get("authorization"))
            names = visible(key.allowed_mixes if key is not None else None)[1]
        except Denied:
            names = set()
        if usable:
            # a probe without a key gets how many, not which (an empty list read as "none usable")
            return {"status": "ready", "mix": ready_mix, "usable": [m for m in usable if m in names],
                    "usable_count": len(usable)}
        shown = [m for m in ready_pool if m in names and m not in closed]
        gone = [m for m in missing if m in names]
        what = f"mix {ready_mix!r}" if ready_mix else "any mix"
        body = error_body(f"no model of {what} is usable" + (f"; open circuits: {', '.join(shown)}" if shown else "")
                          + (f"; model files missing: {', '.join(gone)}" if gone else ""),
                          "server_error", code="no_model_available")
        body["open_circuits"] = shown
        if gone:
            body["missing_files"] = gone
        return JSONResponse(body, status_code=503)

    def visible(allowed: list[str] | None) -> tuple[set[str], set[str]]:
        """The mixes and models a key may see: those it may call (all of this deployment's, without a list)."""
        if allowed is None:
            return set(config.mixes), set(config.models)
        mixes = {m for m in allowed if m in config.mixes}
        models = {m for m in allowed if m in config.models}
        models |= {c.name for m in mixes for c in config.pool(config.mixes[m])}
        return mixes, models

    @app.get("/moai/stats", response_model=None)
    async def stats(request: Request) -> Any:
        """Live per-model statistics and circuit-breaker states, as the gate sees them now. Once keys exist it
        takes one, and shows the models and mixes that key may call, of this deployment only (the shared
        database also holds other deployments' models); a model's ``calls`` are then that key's own (through
        this process), never the model's traffic, which other tenants make too. An open gateway (no key yet) shows
        every model's calls to anyone. Health (error rate, latency, breaker) is the gate's view of the model,
        shared by all."""
        try:
            key = await keeper.check(request.headers.get("authorization"))
        except Denied as e:
            return denied(e)
        mixes, models = visible(key.allowed_mixes if key is not None else None)
        snap = mix.stats.snapshot(api_key=key.id if key is not None else None)
        tuning = {name: {"target": str(t.target), "knob": t.knob, "value": t.value,
                         "observed": t.pending, "changes": [dataclasses.asdict(c) for c in t.changes[-50:]]}
                  for name, t in mix.tuners.items() if name in mixes}
        if key is None:  # an open gateway: the calls behind each model's statistics
            calls = {m: st.calls for m, st in mix.stats.models.items()}
        else:
            calls = mix.stats.key_calls.get(key.id, {})
        return {"models": {m: {**v, "breaker": mix.stats.state(m), "calls": calls.get(m, 0)}
                           for m, v in snap.items() if m in models}, "tuning": tuning}

    metrics_token = _metrics_token(config.settings.metrics_token_env)

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        """Prometheus metrics. Each model's whole traffic is there: with ``settings.metrics_token_env`` set, only a
        scraper sending the token in that variable gets them (401 otherwise; 503 while the variable is empty or holds
        no bearer token)."""
        if metrics_token is not None:
            refused = _metrics_refusal(metrics_token, request.headers.get("authorization"))
            if refused is not None:
                return refused
        return Response(mix.metrics.render(), media_type=CONTENT_TYPE)


@dataclasses.dataclass(frozen=True)
class MetricsToken:
    """The token /metrics requires, read once at start; ``token`` is b"" when the variable gives none to compare
    (then /metrics is refused to everyone with 503 ``code``, never left open)."""

    token: bytes
    code: str = "metrics_token_unset"


def _metrics_token(env: str | None) -> MetricsToken | None:
    """The token /metrics requires, None when none is required. A value with other characters than printable
    ASCII is refused: RFC 6750's bearer tokens are ASCII (token68), and a header carries no encoding to tell how a
    scraper sent anything else, so such a token could never be matched."""
    if env is None:
        return None
    token = os.environ.get(env, "").strip()
    if not token:
        log.error("settings.metrics_token_env names %s, which is not set: GET /metrics answers 503 until the "
                  "server is restarted with it", env)
        return MetricsToken(b"")
    if not all(" " <= c <= "~" for c in token):
        log.error("settings.metrics_token_env names %s, whose value is not a bearer token: it must be printable "
                  "ASCII (RFC 6750's token68: letters, digits and -._~+/=); GET /metrics answers 503 until the "
                  "server is restarted with one", env)
        return MetricsToken(b"", "metrics_token_invalid")
    return MetricsToken(token.encode("ascii"))


def _metrics_refusal(required: MetricsToken, authorization: str | None) -> JSONResponse | None:
    """None when ``authorization`` carries the metrics token; else the 401 (or 503 without a token to compare)."""
    if not required.token:
        message = ("The metrics token is not configured on this server." if required.code == "metrics_token_unset"
                   else "The metrics token configured on this server is not a valid bearer token.")
        return JSONResponse(error_body(message, "server_error", code=required.code), status_code=503)
    sent = bearer_credentials(authorization)
    if sent is not None and sent.isascii() and hmac.compare_digest(sent.encode("ascii"), required.token):
        return None
    message, code = (("GET /metrics requires a token: send 'Authorization: Bearer <token>'.", "missing_api_key")
                     if sent is None else ("Incorrect metrics token provided.", "invalid_api_key"))
    return JSONResponse(error_body(message, "authentication_error", code=code), status_code=401,
                        headers={"www-authenticate": "Bearer"})


_PINGS: weakref.WeakKeyDictionary[TelemetryStore, asyncio.Future[None]] = weakref.WeakKeyDictionary()


async def _database_problem(store: TelemetryStore, timeout_s: float = READY_DB_TIMEOUT_S) -> str | None:
    """Why the telemetry database does not answer a trivial query now (or its SQLite file is gone), or None when it
    does. A ping that has not returned yet is awaited again rather than another one started: a database that hangs
    holds one thread, not one per probe."""
    def ping() -> None:
        store.check_file()
        with store.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    pending = _PINGS.get(store)
    if pending is None or pending.done() or pending.get_loop() is not asyncio.get_running_loop():
        pending = _PINGS[store] = asyncio.ensure_future(asyncio.to_thread(ping))
        pending.add_done_callback(lambda f: f.cancelled() or f.exception())  # read here if nobody waits any more
    try:
        await asyncio.wait_for(asyncio.shield(pending), timeout_s)
    except TimeoutError:
        return f"no answer within {timeout_s:g}s"
    except (SQLAlchemyError, OSError) as e:
        return driver_reason(e)
    return None

"""The OpenAI-compatible HTTP server: chat completions (plain and SSE), models, health.

Every error leaves as OpenAI's error envelope with the right 4xx/5xx, so that the official clients
raise their usual exceptions; nothing a client sends can produce a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import re
import time
import weakref
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from moai import __version__, deadline
from moai.config import Config
from moai.gate.privacy_learned import load_model as load_privacy_model
from moai.mixture import BadRequest, Mixture, Prepared, UnknownModel, refusal
from moai.providers.base import Delta, ProviderError, is_refusal
from moai.server.auth import DATABASE_UNAVAILABLE, Denied, Gatekeeper, driver_reason, has_budget
from moai.server.openai_schema import (
    ChatCompletionRequest,
    FeedbackRequest,
    assistant_message,
    error_body,
    fingerprint_field,
    usage_object,
    validation_message,
)
from moai.server.rate_limit import RATE_LIMIT_HEADERS
from moai.server.spend_holds import Hold
from moai.strategies.budget import worst_case_usd
from moai.strategies.context import NoEligibleModel
from moai.strategies.executor import Execution, PlanFailed
from moai.telemetry.adapt import LiveStats
from moai.telemetry.metrics import CONTENT_TYPE
from moai.telemetry.store import TelemetryStore, UnknownRequest

log = logging.getLogger("moai.server")
T = TypeVar("T")
# a chat request body larger than this is prepared (parsed messages scanned, routed) off the event loop, so that a
# long prompt does not stall every other client and the health probes; smaller ones skip the thread hop
OFFLOAD_BODY_BYTES = 32 << 10
RETENTION_EVERY_S = 3600.0  # settings.retention_days: how often old requests are deleted
READY_DB_TIMEOUT_S = 2.0  # /readyz: a database that has not answered a trivial query by then is down


def err(status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
        code: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, type_, param, code), status_code=status, headers=headers)


async def _read_body(request: Request, limit: int) -> bytes | JSONResponse:
    """The body, or a 413 as soon as it is known to exceed ``limit`` (never buffers more than limit + one chunk)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return err(413, f"request body is {int(declared)} bytes; the limit is {limit}", code="request_too_large")
    parts: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return err(413, f"request body exceeds the limit of {limit} bytes", code="request_too_large")
            parts.append(chunk)
    except ClientDisconnect:  # the client hung up while sending: nobody to answer, nothing to log as an error
        return err(499, "the client closed the connection while sending its request", code="client_closed")
    return b"".join(parts)


def _usable(stats: LiveStats, model: str, now: float) -> bool:
    """Closed or half-open, or open with its cool-down over (the next call will probe it). Read-only."""
    st = stats.models.get(model)
    return st is None or st.opened_at is None or st.probing or now - st.opened_at >= stats.cooldown_s


def _document_bodies(app: FastAPI, bodies: dict[str, type[BaseModel]]) -> None:
    """Describe request bodies that the handlers read raw (for their own 413/400 handling) in /openapi.json."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = generate()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for path, model in bodies.items():
            js = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(js.pop("$defs", {}))
            components[model.__name__] = js
            ref = {"$ref": f"#/components/schemas/{model.__name__}"}
            schema["paths"][path]["post"]["requestBody"] = {"required": True,
                                                            "content": {"application/json": {"schema": ref}}}
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(config: Config, store: TelemetryStore | None = None, mixture: Mixture | None = None,
               request_timeout_s: float | None = None) -> FastAPI:
    """The ASGI app. ``request_timeout_s`` (default: ``settings.request_timeout_s`` when the config has it)
    bounds a whole chat request; past it the client gets a 504 (or an error event on a stream)."""
    mix = mixture or Mixture(config, store=store)
    if request_timeout_s is None:
        request_timeout_s = getattr(config.settings, "request_timeout_s", None)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        refresher = asyncio.create_task(_refresh_forever(mix, config.settings.stats_refresh_s))
        retainer = None
        if mix.store is not None and config.settings.retention_days is not None:
            retainer = asyncio.create_task(_retain_forever(mix.store, config.settings.retention_days))
        await asyncio.to_thread(load_privacy_model)  # ~0.7 s, paid here rather than by the first request
        warm = getattr(mix.chooser, "warm", None)
        if warm is not None:
            try:
                await asyncio.to_thread(warm)  # the gate's encoder: ~0.3 s (a few s once, building its int8 copy)
            except Exception as e:  # noqa: BLE001 - the first request will report what is wrong
                log.warning("gate warm-up failed: %s", e)
        try:
            yield
        finally:
            refresher.cancel()
            if retainer is not None:
                retainer.cancel()
            await mix.aclose()  # flushes queued telemetry

    app = FastAPI(title="moai", version=__version__, lifespan=lifespan)
    if config.settings.cors_origins:  # browser clients (web UIs) on other origins: preflights and response headers
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=config.settings.cors_origins, allow_methods=["*"],
                           allow_headers=["*"], expose_headers=["x-request-id", "x-moai-request-id", "x-moai-model",
                                                                "x-moai-mix", "retry-after", *RATE_LIMIT_HEADERS])
    app.state.mixture = mix
    max_body = config.settings.max_body_bytes
    keeper = Gatekeeper(mix.store, on_error=lambda _e: mix.metrics.observe_database_error("keys"))
    app.state.keeper = keeper

    def denied(e: Denied) -> JSONResponse:
        headers = {"retry-after": str(int(e.retry_after + 0.999))} if e.retry_after is not None else {}
        if e.window is not None:  # a key with an RPM limit: OpenAI's x-ratelimit-*-requests
            headers.update(e.window.headers())
        type_ = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error",
                 503: "server_error"}.get(e.status, "invalid_request_error")
        return err(e.status, e.message, type_, code=e.code, headers=headers)

    def upstream_failed(prep: Prepared, e: Exception, headers: dict[str, str]) -> JSONResponse:
        """502: the cause in the log, where an operator looks; the client gets it without the upstreams' addresses
        (a private endpoint's host and port are nobody else's business)."""
        log.warning("request %s to %s: no model could answer: %s", prep.id, prep.ctx.mix_name, e)
        return err(502, f"no model could answer: {public(str(e), config)}", "server_error",
                   code="upstream_failed", headers=headers)

    def database_down(operation: str, e: Exception, headers: dict[str, str] | None = None) -> JSONResponse:
        """503 when the telemetry database (where requests, feedback and keys live) cannot be used; counted in
        ``moai_database_errors_total{operation}``."""
        mix.metrics.observe_database_error(operation)
        log.warning("telemetry database unavailable (%s): %s", operation, type(e).__name__)
        return err(503, "The gateway's telemetry database is unavailable; try again shortly.", "server_error",
                   code=DATABASE_UNAVAILABLE, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, e: RequestValidationError) -> JSONResponse:
        message, param = validation_message(e)
        return err(400, message, param=param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(req: Request, e: StarletteHTTPException) -> JSONResponse:
        type_ = "not_found_error" if e.status_code == 404 else "invalid_request_error"
        message = str(e.detail)
        if e.status_code == 404 and e.detail == "Not Found":  # e.g. an OpenAI endpoint not served (embeddings)
            message = (f"{req.url.path} is not served here: moai serves POST /v1/chat/completions, GET /v1/models "
                       "and POST /v1/feedback")
        return err(e.status_code, message, type_)

    @app.exception_handler(Exception)
    async def _crash(_req: Request, e: Exception) -> JSONResponse:  # last resort: never a traceback
        return err(500, f"internal error: {type(e).__name__}", "server_error")

    ready_mix = "default" if "default" in config.mixes else next(iter(config.mixes))

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
        and at least one model of the default mix can be called (circuit not open, or cooling off). Once keys
        exist, the models are named only to a key that may call them (a readiness probe needs the status)."""
        if mix.store is not None:
            problem = await _database_problem(mix.store)
            if problem is not None:
                mix.metrics.observe_database_error("ready")
                log.warning("not ready: telemetry database: %s", problem)
                return JSONResponse(error_body("the telemetry database is unavailable", "server_error",
                                               code=DATABASE_UNAVAILABLE), status_code=503)
        now = time.time()
        pool = [c.name for c in config.pool(config.mixes[ready_mix])]
        usable = [m for m in pool if _usable(mix.stats, m, now)]
        try:
            key = await keeper.check(request.headers.get("authorization"))
            names = visible(key.allowed_mixes if key is not None else None)[1]
        except Denied:
            names = set()
        if usable:
            return {"status": "ready", "mix": ready_mix, "usable": [m for m in usable if m in names]}
        shown = [m for m in pool if m in names]
        body = error_body(f"no model of mix {ready_mix!r} is usable" + (f"; open circuits: {', '.join(shown)}"
                                                                       if shown else ""),
                          "server_error", code="no_model_available")
        body["open_circuits"] = shown
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
        database also holds other deployments' models)."""
        try:
            key = await keeper.check(request.headers.get("authorization"))
        except Denied as e:
            return denied(e)
        mixes, models = visible(key.allowed_mixes if key is not None else None)
        snap = mix.stats.snapshot(api_key=key.id if key is not None else None)
        tuning = {name: {"target": str(t.target), "knob": t.knob, "value": t.value,
                         "observed": t.pending, "changes": [dataclasses.asdict(c) for c in t.changes[-50:]]}
                  for name, t in mix.tuners.items() if name in mixes}
        return {"models": {m: {**v, "breaker": mix.stats.state(m), "calls": mix.stats.models[m].calls}
                           for m, v in snap.items() if m in models}, "tuning": tuning}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(mix.metrics.render(), media_type=CONTENT_TYPE)

    @app.post("/v1/feedback")
    async def feedback(request: Request) -> Any:
        """Rate an answer. Once keys exist, a key rates only the requests made with it; a request rated again
        keeps only its latest rating."""
        try:
            key = await keeper.check(request.headers.get("authorization"))
        except Denied as e:
            return denied(e)
        raw = await _read_body(request, max_body)
        if isinstance(raw, JSONResponse):
            return raw
        try:
            body = FeedbackRequest.model_validate_json(raw)
        except ValidationError as e:
            message, param = validation_message(e)
            return err(400, message, param=param)
        shown = body.id if len(body.id) <= 100 else body.id[:100] + "..."
        unknown = err(404, f"No chat completion with id '{shown}'", "not_found_error", "id", "unknown_id")
        try:
            if key is not None and mix.store is not None:  # another key's request is not this one's to see
                made = await asyncio.to_thread(mix.store.get, body.id)
                if made is None or made.api_key != key.id:
                    return unknown
            return await mix.feedback(body.id, body.score, body.comment, scale=body.scale)
        except UnknownRequest:
            return unknown
        except SQLAlchemyError as e:
            return database_down("feedback", e)
        except ValueError as e:
            return err(400, str(e))
        except LookupError as e:
            return err(409, str(e))

    def model_objects(allowed: list[str] | None) -> list[dict[str, Any]]:
        """What a key may call: every mix (as ``moai/<mix>``) and model, or only the names it allows.

        A key's allowed names are checked against the resolved request name, so a model named there is callable
        directly and must be listed too.
        """
        now = int(time.time())
        data = [
            {"id": f"moai/{name}", "object": "model", "created": now, "owned_by": "moai",
             "moai": {"kind": "mix", "strategy": m.strategy, "description": m.description}}
            for name, m in config.mixes.items() if allowed is None or name in allowed
        ]
        data += [
            {"id": name, "object": "model", "created": now, "owned_by": c.provider,
             "moai": {"kind": "model", "privacy": c.privacy, "context": c.context,
                      "price": c.price.model_dump(), "params_b": c.params_b}}
            for name, c in config.models.items() if allowed is None or name in allowed
        ]
        return data

    @app.get("/v1/models", response_model=None)
    async def models(request: Request) -> Any:
        try:
            key = await keeper.check(request.headers.get("authorization"))
        except Denied as e:
            return denied(e)
        return {"object": "list", "data": model_objects(key.allowed_mixes if key is not None else None)}

    @app.get("/v1/models/{model_id:path}", response_model=None)
    async def model(model_id: str, request: Request) -> Any:
        """OpenAI's "retrieve model" (``client.models.retrieve("moai/default")``)."""
        try:
            key = await keeper.check(request.headers.get("authorization"))
        except Denied as e:
            return denied(e)
        for obj in model_objects(key.allowed_mixes if key is not None else None):
            if obj["id"] == model_id:
                return obj
        return err(404, f"The model {model_id!r} does not exist", "not_found_error", "model", "model_not_found")

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> Any:
        response = await chat_request(request)
        if response.status_code >= 400 and "x-moai-request-id" not in response.headers:
            # turned away before any mix ran (no key, a limit, an unknown model, a bad body): no request record,
            # so counted here, by its error code (a fixed vocabulary: no label grows with what clients send)
            mix.metrics.observe_rejection(response.status_code, _error_code(response))
        return response

    async def chat_request(request: Request) -> Any:
        started = time.time()
        try:  # the key first (held in memory): a caller without one is not worth reading megabytes for
            await keeper.admit(request.headers.get("authorization"))
        except Denied as e:
            if e.status == 401:
                return denied(e)  # anything else (the keys unreadable) is answered, and counted, below
        raw = await _read_body(request, max_body)
        if isinstance(raw, JSONResponse):
            return raw
        try:
            payload = json.loads(raw)
        except (ValueError, RecursionError) as e:  # JSONDecodeError, bad UTF-8, over-long ints, deep nesting
            return err(400, f"We could not parse the JSON body of your request: {e}", code="invalid_json")
        if not isinstance(payload, dict):
            return err(400, "the request body must be a JSON object")
        option_error: BadRequest | None = None  # a bad `moai` option: refused as prepare refuses one, and recorded
        try:
            body = ChatCompletionRequest.model_validate(payload)
        except ValidationError as e:
            message, param = validation_message(e)
            rest = _without_moai(payload) if (param or "").split(".")[0] == "moai" else None
            if rest is None or _mix_name(mix, rest.model) is None:
                return err(400, message, param=param)
            body, option_error = rest, BadRequest(message, param)
        try:
            known = _mix_name(mix, body.model)
            mix_name = known or body.model
            key, window = await keeper.admit(request.headers.get("authorization"), mix_name)
        except Denied as e:
            if e.code == DATABASE_UNAVAILABLE and known is not None:  # a request lost: count it
                mix.metrics.observe_refusal(mix_name, "error", DATABASE_UNAVAILABLE, time.time() - started)
            return denied(e)
        api_key, session = key.id if key is not None else None, request.headers.get("x-moai-session")
        limits = window.headers() if window is not None else {}  # this request was counted: told on every answer
        try:
            if option_error is not None:
                raise option_error
            # the session's model, looked up off the event loop (a database that hangs must not freeze the server)
            session_model = await mix.asession_model(body, session, api_key)
            if len(raw) > OFFLOAD_BODY_BYTES:  # its sensitive-data scan takes milliseconds per 10 KB: not on the loop
                prep = await asyncio.to_thread(mix.prepare, body, api_key=api_key, session=session,
                                               session_model=session_model)
            else:
                prep = mix.prepare(body, api_key=api_key, session=session, session_model=session_model)
        except UnknownModel as e:
            return err(404, str(e), param="model", code="model_not_found", headers=limits or None)
        except Exception as e:  # noqa: BLE001 - refused before any model ran: recorded like every request
            try:
                request_id = await mix.record_refusal(body, e, api_key, session, started)
            except SQLAlchemyError as db_error:
                return database_down("record", db_error, {"x-moai-mix": mix_name})
            refused = ({"x-moai-mix": mix_name, "x-moai-request-id": request_id, "x-request-id": request_id,
                        **limits} if request_id else limits or None)
            if isinstance(e, BadRequest):
                return err(400, str(e), param=e.param, code=e.code, headers=refused)
            status, code, message = refusal(e)
            if isinstance(e, NoEligibleModel):
                return err(status, message, param="model", code=code, headers=refused)
            log.error("request %s to %s failed before any model ran", request_id, mix_name, exc_info=e)
            return err(500, f"internal error: {type(e).__name__}", "server_error", headers=refused)
        # x-request-id as OpenAI sends it (its SDKs expose it as the response's request id)
        headers = {"x-moai-mix": prep.ctx.mix_name, "x-moai-request-id": prep.id, "x-request-id": prep.id, **limits}
        request.state.moai_request_id = prep.id  # for the 503 of a request the shutdown stops (cli._Stoppable)
        hold = None
        if has_budget(key):  # its worst case counts against the key's budget until it is recorded
            try:
                hold = await asyncio.to_thread(keeper.hold, key, worst_case_usd(prep.ctx, prep.plan))
            except Denied as e:
                return denied(e)
        try:
            response = await answer(request, body, prep, headers)
        except BaseException:
            if hold is not None:
                await asyncio.to_thread(keeper.release, hold)
            raise
        if hold is not None:
            if isinstance(response, StreamingResponse):  # recorded when the stream ends: released then
                response.body_iterator = _releasing(response.body_iterator, keeper, hold)
            else:
                await asyncio.to_thread(keeper.release, hold)
        return response

    async def answer(request: Request, body: ChatCompletionRequest, prep: Prepared, headers: dict[str, str]) -> Any:
        """Run a prepared request, streamed or not, to its response (recorded by then, or for a stream at its end)."""
        if prep.ctx.decision:
            headers["x-moai-model"] = prep.ctx.decision.model
        if mix.cache.enabled:  # looked up now (memoised on prep) so that a stream's headers can say it too
            look = await mix.cache.alookup(prep)
            headers["x-moai-cache"] = "hit" if look.status == "semantic" else look.status
        try:
            if body.stream:
                # wait for the first delta before answering 200: a request no model could start on gets its
                # real status (as from OpenAI), not an error event inside a successful stream
                include_usage = bool(body.stream_options and body.stream_options.include_usage)
                items = deadline.within(mix.stream(prep), request_timeout_s, prep)
                first = await _unless_gone(request, anext(items, None))
                # the model whose answer streams is known now (an aggregator, a reviser: not the gate's pick)
                answering = first.answer if isinstance(first, Execution) else prep.plan.answering()
                if answering is not None and answering.model:
                    headers["x-moai-model"] = answering.model
                return StreamingResponse(
                    _sse(mix, prep, body.model, include_usage, _prepend(first, items), request_timeout_s),
                    media_type="text/event-stream", headers=headers,
                )
            deadline.start(prep, request_timeout_s)
            async with asyncio.timeout(request_timeout_s):
                ex = await _unless_gone(request, mix.run(prep))
        except ClientGone:  # the plan was stopped; the mixture recorded the request as cancelled (499)
            return err(499, "the client closed the connection before the answer was ready", code="client_closed",
                       headers=headers)
        except SQLAlchemyError as e:  # the answer could not be recorded: it is not sent unrecorded
            return database_down("record", e, headers)
        except PlanFailed as e:
            if is_refusal(e.status):  # every model refused the request itself (400), or may not see it (422)
                return err(e.status, f"no model accepts this request: {public(str(e), config)}", param=e.param,
                           code=e.code, headers=headers)
            if e.status == 429:  # every model is rate limited: the client's SDK backs off and retries
                wait = {"retry-after": str(math.ceil(e.retry_after))} if e.retry_after is not None else {}
                return err(429, f"every model of this mix is rate limited: {public(str(e), config)}",
                           "rate_limit_error", code=e.code, headers={**headers, **wait})
            return upstream_failed(prep, e, headers)
        except ProviderError as e:  # a stream's model failed in a way no other model may retry (recorded)
            return upstream_failed(prep, e, headers)
        except TimeoutError:
            try:
                await deadline.record(mix, prep, request_timeout_s)
            except SQLAlchemyError as e:
                return database_down("record", e, headers)
            return err(deadline.STATUS, deadline.message(request_timeout_s), "server_error", code=deadline.CODE,
                       headers=headers)
        summary = mix.summary(prep, ex)
        headers.update({"x-moai-model": ex.answer.model or "", "x-moai-cost-usd": f"{ex.cost_usd:.8f}"})
        return JSONResponse(_completion(prep, body.model, ex, summary), headers=headers)

    _document_bodies(app, {"/v1/chat/completions": ChatCompletionRequest, "/v1/feedback": FeedbackRequest})
    return app


_ADDRESS = re.compile(
    r"\b[a-z][a-z0-9+.-]*://[^\s'\"\])]+"  # a URL
    r"|\(['\"][^'\"]*['\"], \d+\)"  # a socket address as Python prints it: ('10.0.0.5', 8000)
    r"|(?:\[[0-9a-f:]+\]|\b\d{1,3}(?:\.\d{1,3}){3}|\b[a-z0-9-]*[a-z][a-z0-9-]*(?:\.[a-z0-9-]+)*)"
    r":\d{1,5}\b",  # host:port, [v6]:port (a host has a letter or is an IPv4 address: 12:30:45 is a time)
    re.IGNORECASE)


def _error_code(response: Response) -> str:
    """The ``error.code`` (else ``error.type``) of one of this app's JSON error responses."""
    try:
        error = json.loads(bytes(response.body))["error"]
        return str(error.get("code") or error.get("type") or "unknown")
    except (ValueError, KeyError, TypeError, AttributeError):
        return "unknown"


# IP addresses on their own (checked with ipaddress before they are replaced)
_IP_LIKE = re.compile(r"(?<![\w:.])(?:[0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7}|\d{1,3}(?:\.\d{1,3}){3})(?![\w:]|\.\d)",
                      re.IGNORECASE)
# a credential an upstream may echo back: an Authorization value, or a key in the usual "sk-..." shapes
_CREDENTIAL = re.compile(r"\b(bearer|basic)\s+[\w.~+/=-]{8,}|\b(?:sk|pk|rk)-[\w-]{8,}", re.IGNORECASE)
# a secret-named field's value, as error messages print them: password=..., "token": "...", api_key: ...
_SECRET_FIELD = re.compile(r"""(\b(?:pass(?:word|wd)?|pwd|secret|token|api[_-]?key|access[_-]?key|credentials?)["']?"""
                           r"""\s*[=:]\s*["']?)[^\s"',;&]{6,}""", re.IGNORECASE)


def without_addresses(text: str) -> str:
    """``text`` with URLs, host:port pairs and IP addresses (as connection errors write them) replaced by
    "<upstream>"."""
    text = _ADDRESS.sub("<upstream>", text)
    return _IP_LIKE.sub(lambda m: "<upstream>" if _is_ip(m.group()) else m.group(), text)


def _is_ip(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def public(text: str, config: Config) -> str:
    """An upstream's error as a client may read it: without the upstreams' addresses, without the API keys moai
    sends them (an upstream that echoes its request's headers would hand them out), without credentials."""
    import os

    names = {c.api_key_env for c in config.models.values() if c.api_key_env}
    if any(c.provider == "anthropic" for c in config.models.values()):
        from moai.providers.anthropic import DEFAULT_KEY_ENV

        names.add(DEFAULT_KEY_ENV)
    for secret in sorted({v for n in names if len(v := os.environ.get(n, "")) >= 8}, key=len, reverse=True):
        text = text.replace(secret, "<redacted>")
    text = _CREDENTIAL.sub(lambda m: (m.group(1) + " <redacted>") if m.group(1) else "<redacted>", text)
    text = _SECRET_FIELD.sub(lambda m: m.group(1) + "<redacted>", text)
    return without_addresses(_without_secrets(text))


def _without_secrets(text: str) -> str:
    """``text`` with what the sensitive-data scan calls a secret (vendor key formats, JWTs, PEM keys, passwords in
    context, credentials in URLs) replaced by "<redacted>"."""
    from moai.gate.privacy_rules import find_secrets

    spans = sorted((h.start, h.end) for h in find_secrets(text))
    out, at = [], 0
    for start, end in spans:
        if end <= at:
            continue
        out.append(text[at:max(at, start)] + "<redacted>")
        at = end
    return "".join(out) + text[at:]


def _mix_name(mix: Mixture, model: str) -> str | None:
    """The mix (or model) a request's ``model`` names, or None when it names none."""
    try:
        return mix.resolve(model)[0]
    except UnknownModel:
        return None


def _without_moai(payload: dict[str, Any]) -> ChatCompletionRequest | None:
    """The request without its ``moai`` options, when only those were invalid (None otherwise)."""
    try:
        return ChatCompletionRequest.model_validate({k: v for k, v in payload.items() if k != "moai"})
    except ValidationError:
        return None


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


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


async def _disconnected(request: Request) -> None:
    """Return once the client has gone away. The body has been read, so the next message the server has for this
    request is its disconnect (a server that repeats an empty body is asked again a little later)."""
    while (await request.receive()).get("type") != "http.disconnect":
        await asyncio.sleep(0.1)


async def _unless_gone(request: Request, work: Awaitable[T]) -> T:
    """``work``'s result; or, when the client disconnects first, ``work`` cancelled and ClientGone raised. The
    cancellation stops the plan (no further model is called) and the mixture records the request as cancelled
    (499), as for a stream the client leaves mid-answer. ``work`` runs in this task, and only the watch is a task
    of its own, which cancels this one on a disconnect: a second task per request cost ~0.2 ms of the gateway's
    ~3 ms (benchmarks/overhead.py)."""
    this = asyncio.current_task()
    assert this is not None
    gone = False

    async def watch() -> None:
        nonlocal gone
        await _disconnected(request)
        gone = True
        this.cancel()

    watcher = asyncio.create_task(watch())
    watcher.add_done_callback(lambda t: None if t.cancelled() else t.exception())  # retrieved: never logged as lost
    try:
        return await work
    except asyncio.CancelledError:
        if not gone:  # the request's own cancellation (its time limit, the server stopping)
            raise
        this.uncancel()
        raise ClientGone from None
    finally:
        watcher.cancel()


async def _releasing(events: AsyncIterator[Any], keeper: Gatekeeper, hold: Hold) -> AsyncIterator[Any]:
    """A stream that gives its budget hold back once it has ended (finished, failed or cut by the client)."""
    try:
        async for event in events:
            yield event
    finally:
        await asyncio.to_thread(keeper.release, hold)


async def _refresh_forever(mix: Mixture, every_s: float) -> None:
    """Pull the shared statistics (other replicas' calls and feedback) from the database periodically."""
    while True:
        await asyncio.sleep(every_s)
        with contextlib.suppress(Exception):  # a database hiccup must not stop adaptation for good
            await mix.refresh_stats()


async def _retain_forever(store: TelemetryStore, days: float, every_s: float = RETENTION_EVERY_S) -> None:
    """``settings.retention_days``: delete old requests now and then every ``every_s``, off the event loop. A
    failure (the database down) is logged and tried again at the next round."""
    from moai.telemetry.retention import retain

    while True:
        try:
            gone, before = await asyncio.to_thread(retain, store, days)
            if gone.requests:
                log.info("retention: deleted %d requests (%d calls, %d feedback rows) older than %s",
                         gone.requests, gone.calls, gone.feedback, f"{before:%Y-%m-%d %H:%M} UTC")
        except Exception as e:  # noqa: BLE001 - retention must never take the server down
            log.warning("retention: could not delete old requests: %s", e)
        await asyncio.sleep(every_s)


def _completion(prep: Prepared, model: str, ex: Execution, summary: dict[str, Any]) -> dict[str, Any]:
    ans, message = ex.answer, assistant_message(ex.answer)
    return {
        "id": prep.id,
        "object": "chat.completion",
        "created": int(prep.started),
        "model": model,
        **fingerprint_field(ex.system_fingerprint),
        "choices": [{"index": 0, "message": message, "finish_reason": ans.finish_reason, "logprobs": None}],
        "usage": usage_object(ex.usage),
        "moai": summary,
    }


def _chunk(prep: Prepared, model: str, delta: dict[str, Any], finish: str | None = None,
           **extra: Any) -> str:
    obj = {
        "id": prep.id, "object": "chat.completion.chunk", "created": int(prep.started), "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra,
    }
    return f"data: {json.dumps(obj)}\n\n"


async def _prepend(first: Any, rest: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """``first`` (unless None: an empty stream) followed by ``rest``, which is closed when this is."""
    try:
        if first is not None:
            yield first
        async for item in rest:
            yield item
    finally:
        with contextlib.suppress(Exception):
            await rest.aclose()  # type: ignore[attr-defined]


async def _sse(mix: Mixture, prep: Prepared, model: str, include_usage: bool, items: AsyncIterator[Any],
               timeout_s: float | None = None) -> AsyncIterator[str]:
    """OpenAI's chunk format: a role chunk, content chunks, a finish chunk, [usage chunk], [DONE].

    ``items`` is the mix's stream (already started: its first item was waited for before the response). Every chunk
    names the answering upstream's ``system_fingerprint`` once it is known, as OpenAI's do."""
    # with include_usage, every chunk but the last carries "usage": null, as OpenAI's do (typed clients expect it)
    nulled: dict[str, Any] = {"usage": None} if include_usage else {}
    finish = "stop"
    try:
        items = aiter(items)
        head = await anext(items, None)  # at hand (waited for already): it tells the role chunk the fingerprint
        fingerprint: str | None = getattr(head, "system_fingerprint", None)
        yield _chunk(prep, model, {"role": "assistant", "content": ""}, **fingerprint_field(fingerprint), **nulled)
        async for item in _prepend(head, items):
            if isinstance(item, Execution):
                fingerprint = item.system_fingerprint or fingerprint
                fp = fingerprint_field(fingerprint)
                summary = mix.summary(prep, item)
                yield _chunk(prep, model, {}, item.answer.finish_reason or finish, moai=summary, **fp, **nulled)
                if include_usage:
                    obj = {"id": prep.id, "object": "chat.completion.chunk", "created": int(prep.started),
                           "model": model, **fp, "choices": [], "usage": usage_object(item.usage)}
                    yield f"data: {json.dumps(obj)}\n\n"
            elif isinstance(item, Delta):
                fingerprint = item.system_fingerprint or fingerprint
                if item.finish_reason:
                    finish = item.finish_reason
                if item.text or item.tool_calls or item.refusal:
                    delta: dict[str, Any] = {}
                    if item.text:
                        delta["content"] = item.text
                    if item.tool_calls:
                        delta["tool_calls"] = item.tool_calls
                    if item.refusal:
                        delta["refusal"] = item.refusal
                    yield _chunk(prep, model, delta, **fingerprint_field(fingerprint), **nulled)
    except TimeoutError:
        await deadline.record(mix, prep, timeout_s)
        body = error_body(deadline.message(timeout_s), "server_error", code=deadline.CODE)
        yield f"data: {json.dumps(body)}\n\n"
    except SQLAlchemyError:  # the answer was sent but could not be recorded
        mix.metrics.observe_database_error("record")
        body = error_body("the gateway's telemetry database is unavailable", "server_error", code=DATABASE_UNAVAILABLE)
        yield f"data: {json.dumps(body)}\n\n"
    except Exception as e:  # noqa: BLE001 - the stream has started: report in-band, as OpenAI does
        status = getattr(e, "status", 502)
        code = "rate_limit_exceeded" if status == 429 else "upstream_failed"
        failed = f"stream failed: {public(str(e), mix.config)}"
        yield f"data: {json.dumps(error_body(failed, 'server_error', code=code))}\n\n"
    yield "data: [DONE]\n\n"

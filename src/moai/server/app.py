"""The OpenAI-compatible HTTP server: chat completions (plain and SSE), models, health.

Every error leaves as OpenAI's error envelope with the right 4xx/5xx, so that the official clients
raise their usual exceptions; nothing a client sends can produce a traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from moai import __version__, deadline
from moai.config import Config
from moai.gate.privacy_learned import load_model as load_privacy_model
from moai.mixture import BadRequest, Mixture, Prepared, UnknownModel, refusal
from moai.providers.base import ProviderError, is_refusal
from moai.server import messages, responses
from moai.server.auth import DATABASE_UNAVAILABLE, Denied, Gatekeeper, check_mix, has_budget
from moai.server.connection import ClientGone, read_body, unless_gone
from moai.server.errors import denied, err, error_code, public, without_addresses
from moai.server.headers import HeadAsGet, fresh_request_id, header_value
from moai.server.housekeeping import read_keys_forever, refresh_forever, retain_forever
from moai.server.openai_schema import (
    ChatCompletionRequest,
    FeedbackRequest,
    assistant_message,
    fingerprint_field,
    usage_object,
    validation_message,
)
from moai.server.rate_limit import RATE_LIMIT_HEADERS
from moai.server.status import add_status_routes
from moai.server.streaming import EventStream, prepend, releasing, sse
from moai.server.translation import Unsupported, chat_id
from moai.strategies.budget import worst_case_usd
from moai.strategies.context import NoEligibleModel
from moai.strategies.outcome import Execution, PlanFailed
from moai.telemetry.store import TelemetryStore, UnknownRequest

log = logging.getLogger("moai.server")
# a chat request body larger than this is prepared (parsed messages scanned, routed) off the event loop, so that a
# long prompt does not stall every other client and the health probes; smaller ones skip the thread hop
OFFLOAD_BODY_BYTES = 32 << 10


def _document_bodies(app: FastAPI, bodies: dict[str, type[BaseModel] | tuple[str, dict[str, Any]]]) -> None:
    """Describe request bodies that the handlers read raw (for their own 413/400 handling) in /openapi.json: a
    pydantic model's schema, or a (name, JSON Schema) outline of a body translated by hand (Responses, Messages)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = generate()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for path, model in bodies.items():
            if isinstance(model, tuple):
                name, js = model
            else:
                name, js = model.__name__, model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(js.pop("$defs", {}))
            components[name] = js
            ref = {"$ref": f"#/components/schemas/{name}"}
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
        refresher = asyncio.create_task(refresh_forever(mix, config.settings.stats_refresh_s))
        key_reader = asyncio.create_task(read_keys_forever(keeper))
        retainer = None
        if mix.store is not None and config.settings.retention_days is not None:
            retainer = asyncio.create_task(retain_forever(mix.store, config.settings.retention_days))
        if mix.store is not None and mix.store.session_secret_source is not None:  # read when the store opened
            log.info("session digests keyed with %s", mix.store.session_secret_source)
        await asyncio.to_thread(load_privacy_model)  # ~0.7 s, paid here rather than by the first request
        await asyncio.to_thread(mix.registry.prepare)  # the protocols' libraries, imported off the event loop
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
            key_reader.cancel()
            if retainer is not None:
                retainer.cancel()
            await keeper.aclose()  # RPM counts of refused requests still running
            await mix.aclose()  # flushes queued telemetry

    app = FastAPI(title="moai", version=__version__, lifespan=lifespan)
    if config.settings.cors_origins:  # browser clients (web UIs) on other origins: preflights and response headers
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=config.settings.cors_origins, allow_methods=["*"],
                           allow_headers=["*"], expose_headers=["x-request-id", "x-moai-request-id", "x-moai-model",
                                                                "x-moai-mix", "retry-after", *RATE_LIMIT_HEADERS])
    app.add_middleware(HeadAsGet)
    app.state.mixture = mix
    max_body = config.settings.max_body_bytes
    keeper = Gatekeeper(mix.store, on_error=lambda _e: mix.metrics.observe_database_error("keys"))
    app.state.keeper = keeper

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
        return err(400, message, param=param, headers={"x-request-id": fresh_request_id()})

    @app.exception_handler(StarletteHTTPException)
    async def _http(req: Request, e: StarletteHTTPException) -> JSONResponse:
        type_ = "not_found_error" if e.status_code == 404 else "invalid_request_error"
        message = str(e.detail)
        if e.status_code == 404 and e.detail == "Not Found":  # e.g. an OpenAI endpoint not served (embeddings)
            message = (f"{req.url.path} is not served here: moai serves POST /v1/chat/completions, "
                       "POST /v1/responses, POST /v1/messages, GET /v1/models and POST /v1/feedback")
        # the exception's headers (a 405's Allow), and an id to quote, as on every answer to a chat request
        response = err(e.status_code, message, type_, headers={"x-request-id": fresh_request_id(),
                                                                **(e.headers or {})})
        if req.url.path == messages.MESSAGES_PATH or req.url.path.startswith(messages.MESSAGES_PATH + "/"):
            await messages.loaded()  # Anthropic's clients there read Anthropic's envelope (a GET, /batches)
            return messages.anthropic(response)
        return response

    @app.exception_handler(Exception)
    async def _crash(req: Request, e: Exception) -> JSONResponse:  # last resort: never a traceback
        # the request's id when it got one (its record says what happened), else one to quote
        request_id = getattr(req.state, "moai_request_id", None) or fresh_request_id()
        return err(500, f"internal error: {type(e).__name__}", "server_error",
                   headers={"x-request-id": request_id})

    add_status_routes(app, mix, config, keeper)

    @app.post("/v1/feedback")
    async def feedback(request: Request) -> Any:
        """Rate an answer. Once keys exist, a key rates only the requests made with it; a request rated again
        keeps only its latest rating."""
        try:
            key = await keeper.check(request.headers.get("authorization"))
        except Denied as e:
            return denied(e)
        raw = await read_body(request, max_body)
        if isinstance(raw, JSONResponse):
            return raw
        try:
            body = FeedbackRequest.model_validate_json(raw)
        except ValidationError as e:
            message, param = validation_message(e)
            return err(400, message, param=param)
        shown = body.id if len(body.id) <= 100 else body.id[:100] + "..."
        unknown = err(404, f"No chat completion with id '{shown}'", "not_found_error", "id", "unknown_id")
        body.id = chat_id(body.id)  # a response's id (resp_...) names its chat completion
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

    started = int(time.time())

    def model_objects(allowed: list[str] | None) -> list[dict[str, Any]]:
        """What a key may call: every mix (as ``moai/<mix>``) and model, or only the names it allows.

        A key's allowed names are checked against the resolved request name, so a model named there is callable
        directly and must be listed too.
        """
        now = started  # when this server took its mix instructions: the same on every listing, as OpenAI's is
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
        """OpenAI's "retrieve model" (``client.models.retrieve("moai/default")``). An id is read as a chat request's
        ``model`` is (``default`` is ``moai/default``): what a client may call, it may retrieve; the object is the
        one GET /v1/models lists for what the id resolves to."""
        try:
            key = await keeper.check(request.headers.get("authorization"))
        except Denied as e:
            return denied(e)
        try:
            name, resolved = mix.resolve(model_id)
        except UnknownModel:
            resolved = None
        if resolved is not None:
            listed = f"moai/{name}" if mix.config.mixes.get(name) is resolved else name
            for obj in model_objects(key.allowed_mixes if key is not None else None):
                if obj["id"] == listed:
                    return obj
        return err(404, f"The model {model_id!r} does not exist", "not_found_error", "model", "model_not_found")

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> Any:
        return await answered(request, chat_request)

    @app.post("/v1/responses", response_model=None)
    async def responses_endpoint(request: Request) -> Any:
        """OpenAI's Responses API, answered by the chat path (``responses``: the translation both ways)."""
        return await answered(request, responses_request)

    @app.post("/v1/messages", response_model=None)
    async def messages_endpoint(request: Request) -> Any:
        """Anthropic's Messages API, answered by the chat path (``messages``: the translation both ways), its
        errors in Anthropic's envelope."""
        await messages.loaded()
        return messages.anthropic(await answered(request, messages_request))

    @app.post("/v1/messages/count_tokens", response_model=None)
    async def count_tokens_endpoint(request: Request) -> Any:
        """Anthropic's token count: moai's estimate of the prompt (the one it routes by); nothing is run or
        recorded. A key may count for the models it may call."""
        await messages.loaded()
        try:
            response = await count_tokens_request(request)
        except Exception as e:  # noqa: BLE001 - answered here, as a chat request's crash is
            log.error("token count failed", exc_info=e)
            response = await _crash(request, e)
        return messages.anthropic(response)

    async def answered(request: Request, handle: Callable[[Request], Awaitable[Any]]) -> Any:
        try:
            response = await handle(request)
        except Exception as e:  # noqa: BLE001 - answered here: raised on, the server would close the connection too
            log.error("chat request failed", exc_info=e)
            response = await _crash(request, e)
        if response.status_code >= 400 and "x-moai-request-id" not in response.headers:
            # turned away before any mix ran (no key, a limit, an unknown model, a bad body): no request record,
            # so counted here, by its error code (a fixed vocabulary: no label grows with what clients send)
            mix.metrics.observe_rejection(response.status_code, error_code(response))
        if "x-request-id" not in response.headers:  # turned away before it had a completion id: one to quote
            response.headers["x-request-id"] = fresh_request_id()
        return response

    async def read_payload(request: Request) -> tuple[dict[str, Any], int] | JSONResponse:
        """A request's JSON object and its size in bytes, or the answer refusing it (no key, too large, no JSON)."""
        try:  # the key first (held in memory): a caller without one is not worth reading megabytes for
            await keeper.admit(_authorization(request))
        except Denied as e:
            if e.status == 401:
                return denied(e)  # anything else (the keys unreadable) is answered, and counted, in chat_payload
        raw = await read_body(request, max_body)
        if isinstance(raw, JSONResponse):
            return raw
        try:
            payload = json.loads(raw)
        except (ValueError, RecursionError) as e:  # JSONDecodeError, bad UTF-8, over-long ints, deep nesting
            return err(400, f"We could not parse the JSON body of your request: {e}", code="invalid_json")
        if not isinstance(payload, dict):
            return err(400, "the request body must be a JSON object")
        return payload, len(raw)

    async def chat_request(request: Request) -> Any:
        started = time.time()
        read = await read_payload(request)
        if isinstance(read, JSONResponse):
            return read
        return await chat_payload(request, *read, started)

    async def responses_request(request: Request) -> Any:
        return await translated_request(request, responses.to_chat,
                                        lambda answer, payload, _chat: responses.translate(answer, payload))

    async def messages_request(request: Request) -> Any:
        return await translated_request(request, messages.to_chat, messages.translate)

    async def translated_request(request: Request, to_chat: Callable[[dict[str, Any]], dict[str, Any]],
                                 back: Callable[[Any, dict[str, Any], dict[str, Any]], Any]) -> Any:
        """Another API's request (``to_chat``: as a chat request) answered by the chat path, its answer put back
        into that API's shape (``back``: with the request and its chat translation)."""
        started = time.time()
        read = await read_payload(request)
        if isinstance(read, JSONResponse):
            return read
        payload, size = read
        try:
            chat = to_chat(payload)
        except Unsupported as e:
            return err(400, str(e), param=e.param, code=e.code)
        return back(await chat_payload(request, chat, size, started), payload, chat)

    async def count_tokens_request(request: Request) -> Any:
        read = await read_payload(request)
        if isinstance(read, JSONResponse):
            return read
        try:
            key = await keeper.check(_authorization(request))
        except Denied as e:
            return denied(e)
        try:
            body = ChatCompletionRequest.model_validate(messages.to_chat(read[0], counting=True))
        except Unsupported as e:
            return err(400, str(e), param=e.param, code=e.code)
        except ValidationError as e:
            message, param = validation_message(e)
            return err(400, message, param=param)
        name = _mix_name(mix, body.model)
        if name is None:
            return err(404, f"The model {body.model!r} does not exist", "not_found_error", "model",
                       "model_not_found")
        try:
            check_mix(key, name)  # as a message to it would be answered
        except Denied as e:
            return denied(e)
        chat = {"messages": [m.to_provider() for m in body.messages], "tools": body.tools}
        return JSONResponse({"input_tokens": messages.count_tokens(chat)})

    async def chat_payload(request: Request, payload: dict[str, Any], size: int, started: float) -> Any:
        """A chat request from its parsed JSON (``size``: its body's bytes) to its answer."""
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
            key, window = await keeper.admit(_authorization(request), mix_name)
        except Denied as e:
            if e.code == DATABASE_UNAVAILABLE and known is not None:  # a request lost: count it
                mix.metrics.observe_refusal(mix_name, "error", DATABASE_UNAVAILABLE, time.time() - started)
            return denied(e)
        api_key, session = key.id if key is not None else None, request.headers.get("x-moai-session")
        # told on every answer: the window with this request counted (a budgeted key's: as its admission checked
        # it, until its hold counts it and tells the window then)
        limits = window.headers() if window is not None else {}
        try:
            if option_error is not None:
                raise option_error
            # the session's model, looked up off the event loop (a database that hangs must not freeze the server)
            session_model = await mix.asession_model(body, session, api_key)
            budgeted = key is not None and has_budget(key)  # its hold assumes the mix's max_tokens: sent upstream
            # its sensitive-data scan, or a local model's count of it, takes milliseconds per 10 KB: not on the loop
            counted = mix.counted_from(body.model)
            if size > OFFLOAD_BODY_BYTES or (counted is not None and size >= counted):
                prep = await asyncio.to_thread(mix.prepare, body, api_key=api_key, session=session,
                                               session_model=session_model, budgeted=budgeted)
            else:
                prep = mix.prepare(body, api_key=api_key, session=session, session_model=session_model,
                                   budgeted=budgeted)
        except UnknownModel as e:
            keeper.count_unheld(key, window)  # a budgeted key's count waits for its hold: there is none
            return err(404, str(e), param="model", code="model_not_found", headers=limits or None)
        except Exception as e:  # noqa: BLE001 - refused before any model ran: recorded like every request
            keeper.count_unheld(key, window)
            try:
                request_id = await mix.record_refusal(body, e, api_key, session, started)
            except SQLAlchemyError as db_error:
                return database_down("record", db_error, {"x-moai-mix": header_value(mix_name)})
            refused = ({"x-moai-mix": header_value(mix_name), "x-moai-request-id": request_id,
                        "x-request-id": request_id, **limits} if request_id else limits or None)
            if isinstance(e, BadRequest):
                return err(400, str(e), param=e.param, code=e.code, headers=refused)
            status, code, message = refusal(e)
            if isinstance(e, NoEligibleModel):
                return err(status, message, param="model", code=code, headers=refused)
            log.error("request %s to %s failed before any model ran", request_id, mix_name, exc_info=e)
            return err(500, f"internal error: {type(e).__name__}", "server_error", headers=refused)
        # x-request-id as OpenAI sends it (its SDKs expose it as the response's request id)
        headers = {"x-moai-mix": header_value(prep.ctx.mix_name), "x-moai-request-id": prep.id,
                   "x-request-id": prep.id, **limits}
        request.state.moai_request_id = prep.id  # for the 503 of a request the shutdown stops (serve_process.Stoppable)
        hold = None
        if key is not None and has_budget(key):  # its worst case counts against the key's budget until it is recorded
            try:  # its RPM count is made with the hold: refused, it counts nothing (a 429 does not use it up)
                hold = await keeper.ahold(key, worst_case_usd(prep.ctx, prep.plan), counted=window)
            except Denied as e:
                return denied(e)
            if hold is not None and hold.rpm is not None:  # counted now: the window as it is with this request
                headers.update(hold.rpm.headers())
        try:
            response = await answer(request, body, prep, headers)
        except BaseException:
            if hold is not None:
                await asyncio.to_thread(keeper.release, hold)
            raise
        if hold is not None:
            if isinstance(response, StreamingResponse):  # recorded when the stream ends: released then
                response.body_iterator = releasing(response.body_iterator, keeper, hold)
            else:
                await asyncio.to_thread(keeper.release, hold)
        return response

    async def answer(request: Request, body: ChatCompletionRequest, prep: Prepared, headers: dict[str, str]) -> Any:
        """Run a prepared request, streamed or not, to its response (recorded by then, or for a stream at its end).
        ``x-moai-model`` names the model that answers: an error no model answered carries none (it named the
        gate's pick, which may have failed, or taken no part in a collaboration)."""
        if mix.cache.enabled:  # looked up now (memoised on prep) so that a stream's headers can say it too
            look = await mix.cache.alookup(prep)
            headers["x-moai-cache"] = "hit" if look.status == "semantic" else look.status
        def client_left() -> None:
            prep.client_gone = True

        try:
            if body.stream:
                # wait for the first delta before answering 200: a request no model could start on gets its
                # real status (as from OpenAI), not an error event inside a successful stream
                include_usage = bool(body.stream_options and body.stream_options.include_usage)
                items = deadline.within(mix.stream(prep), request_timeout_s, prep)
                first = await unless_gone(request, anext(items, None), client_left)
                # the model whose answer streams is known now (an aggregator, a reviser: not the gate's pick)
                answering = first.answer if isinstance(first, Execution) else prep.plan.answering()
                streaming = answering.model if answering is not None and answering.model else (
                    prep.ctx.decision.model if prep.ctx.decision else None)
                if streaming:
                    headers["x-moai-model"] = header_value(streaming)
                return EventStream(
                    sse(mix, prep, body.model, include_usage, prepend(first, items), request_timeout_s),
                    client_left, media_type="text/event-stream", headers=headers,
                )
            deadline.start(prep, request_timeout_s)
            async with asyncio.timeout(request_timeout_s):
                ex = await unless_gone(request, mix.run(prep), client_left)
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
        headers.update({"x-moai-model": header_value(ex.answer.model or ""),
                        "x-moai-cost-usd": f"{ex.cost_usd:.8f}"})
        return JSONResponse(_completion(prep, body.model, ex, summary), headers=headers)

    _document_bodies(app, {"/v1/chat/completions": ChatCompletionRequest, "/v1/feedback": FeedbackRequest,
                           "/v1/responses": ("ResponsesRequest", responses.REQUEST_SCHEMA),
                           "/v1/messages": ("MessagesRequest", messages.REQUEST_SCHEMA),
                           "/v1/messages/count_tokens": ("CountTokensRequest", messages.COUNT_SCHEMA)})
    return app


def _authorization(request: Request) -> str | None:
    """The Authorization header a request's key is read from (on the Messages API, also Anthropic's x-api-key)."""
    return messages.authorization(request.url.path, request.headers)


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


__all__ = ["create_app", "public", "without_addresses"]

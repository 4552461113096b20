"""The OpenAI-compatible HTTP server: chat completions (plain and SSE), models, health.

Every error leaves as OpenAI's error envelope with the right 4xx/5xx, so that the official clients
raise their usual exceptions; nothing a client sends can produce a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from moai import __version__
from moai.config import Config
from moai.mixture import BadRequest, Mixture, Prepared, UnknownModel
from moai.providers.base import Delta
from moai.server.openai_schema import ChatCompletionRequest, FeedbackRequest, error_body
from moai.strategies.context import NoEligibleModel
from moai.strategies.executor import Execution, PlanFailed
from moai.telemetry.metrics import CONTENT_TYPE
from moai.telemetry.store import TelemetryStore, UnknownRequest


def err(status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
        code: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, type_, param, code), status_code=status, headers=headers)


def _validation_message(e: ValidationError | RequestValidationError) -> tuple[str, str | None]:
    first = e.errors()[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    msg = first.get("msg", "invalid request").removeprefix("Value error, ")
    return (f"{param}: {msg}" if param else msg), param


def create_app(config: Config, store: TelemetryStore | None = None, mixture: Mixture | None = None) -> FastAPI:
    mix = mixture or Mixture(config, store=store)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        refresher = asyncio.create_task(_refresh_forever(mix, config.settings.stats_refresh_s))
        try:
            yield
        finally:
            refresher.cancel()
            await mix.aclose()  # flushes queued telemetry

    app = FastAPI(title="moai", version=__version__, lifespan=lifespan)
    app.state.mixture = mix
    max_body = config.settings.max_body_bytes

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, e: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(e)
        return err(400, message, param=param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, e: StarletteHTTPException) -> JSONResponse:
        type_ = "not_found_error" if e.status_code == 404 else "invalid_request_error"
        return err(e.status_code, str(e.detail), type_)

    @app.exception_handler(Exception)
    async def _crash(_req: Request, e: Exception) -> JSONResponse:  # last resort: never a traceback
        return err(500, f"internal error: {type(e).__name__}", "server_error")

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "models": len(config.models), "mixes": len(config.mixes)}

    @app.get("/moai/stats")
    async def stats() -> dict[str, Any]:
        """Live per-model statistics and circuit-breaker states, as the gate sees them now."""
        snap = mix.stats.snapshot()
        return {"models": {m: {**v, "breaker": mix.stats.state(m), "calls": mix.stats.models[m].calls}
                           for m, v in snap.items()}}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(mix.metrics.render(), media_type=CONTENT_TYPE)

    @app.post("/v1/feedback")
    async def feedback(request: Request) -> Any:
        try:
            body = FeedbackRequest.model_validate_json(await request.body())
        except ValidationError as e:
            message, param = _validation_message(e)
            return err(400, message, param=param)
        try:
            return await mix.feedback(body.id, body.score, body.comment)
        except UnknownRequest:
            return err(404, f"No chat completion with id '{body.id}'", "not_found_error", "id", "unknown_id")
        except LookupError as e:
            return err(409, str(e))

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        now = int(time.time())
        data = [
            {"id": f"moai/{name}", "object": "model", "created": now, "owned_by": "moai",
             "moai": {"kind": "mix", "strategy": m.strategy, "description": m.description}}
            for name, m in config.mixes.items()
        ]
        data += [
            {"id": name, "object": "model", "created": now, "owned_by": c.provider,
             "moai": {"kind": "model", "privacy": c.privacy, "context": c.context,
                      "price": c.price.model_dump(), "params_b": c.params_b}}
            for name, c in config.models.items()
        ]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> Any:
        raw = await request.body()
        if len(raw) > max_body:
            return err(413, f"request body is {len(raw)} bytes; the limit is {max_body}", code="request_too_large")
        try:
            payload = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            return err(400, f"We could not parse the JSON body of your request: {e}", code="invalid_json")
        if not isinstance(payload, dict):
            return err(400, "the request body must be a JSON object")
        try:
            body = ChatCompletionRequest.model_validate(payload)
        except ValidationError as e:
            message, param = _validation_message(e)
            return err(400, message, param=param)
        try:
            prep = mix.prepare(body)
        except UnknownModel as e:
            return err(404, str(e), param="model", code="model_not_found")
        except BadRequest as e:
            return err(400, str(e), param=e.param, code=e.code)
        except NoEligibleModel as e:
            detail = "; ".join(f"{m}: {why}" for m, why in e.excluded.items())
            return err(422, f"{e} ({detail})", param="model", code=e.code)
        headers = {"x-moai-mix": prep.ctx.mix_name, "x-moai-request-id": prep.id}
        if prep.ctx.decision:
            headers["x-moai-model"] = prep.ctx.decision.model
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(
                _sse(mix, prep, body.model, include_usage), media_type="text/event-stream", headers=headers
            )
        try:
            ex = await mix.run(prep)
        except PlanFailed as e:
            return err(502, f"no model could answer: {e}", "upstream_error", code="upstream_failed")
        summary = mix.summary(prep, ex)
        headers.update({"x-moai-model": ex.answer.model or "", "x-moai-cost-usd": f"{ex.cost_usd:.8f}"})
        return JSONResponse(_completion(prep, body.model, ex, summary), headers=headers)

    return app


async def _refresh_forever(mix: Mixture, every_s: float) -> None:
    """Pull the shared statistics (other replicas' calls and feedback) from the database periodically."""
    while True:
        await asyncio.sleep(every_s)
        with contextlib.suppress(Exception):  # a database hiccup must not stop adaptation for good
            await mix.refresh_stats()


def _completion(prep: Prepared, model: str, ex: Execution, summary: dict[str, Any]) -> dict[str, Any]:
    ans = ex.answer
    message: dict[str, Any] = {"role": "assistant", "content": ans.text}
    if ans.tool_calls:
        message["tool_calls"] = ans.tool_calls
    usage = ex.usage
    return {
        "id": prep.id,
        "object": "chat.completion",
        "created": int(prep.started),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": ans.finish_reason, "logprobs": None}],
        "usage": {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                  "total_tokens": usage.total_tokens},
        "moai": summary,
    }


def _chunk(prep: Prepared, model: str, delta: dict[str, Any], finish: str | None = None,
           **extra: Any) -> str:
    obj = {
        "id": prep.id, "object": "chat.completion.chunk", "created": int(prep.started), "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra,
    }
    return f"data: {json.dumps(obj)}\n\n"


async def _sse(mix: Mixture, prep: Prepared, model: str, include_usage: bool) -> AsyncIterator[str]:
    """OpenAI's chunk format: a role chunk, content chunks, a finish chunk, [usage chunk], [DONE]."""
    yield _chunk(prep, model, {"role": "assistant", "content": ""})
    finish = "stop"
    try:
        async for item in mix.stream(prep):
            if isinstance(item, Execution):
                summary = mix.summary(prep, item)
                yield _chunk(prep, model, {}, item.answer.finish_reason or finish, moai=summary)
                if include_usage:
                    u = item.usage
                    usage = {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
                             "total_tokens": u.total_tokens}
                    obj = {"id": prep.id, "object": "chat.completion.chunk", "created": int(prep.started),
                           "model": model, "choices": [], "usage": usage}
                    yield f"data: {json.dumps(obj)}\n\n"
            elif isinstance(item, Delta):
                if item.finish_reason:
                    finish = item.finish_reason
                if item.text or item.tool_calls:
                    delta: dict[str, Any] = {}
                    if item.text:
                        delta["content"] = item.text
                    if item.tool_calls:
                        delta["tool_calls"] = item.tool_calls
                    yield _chunk(prep, model, delta)
    except Exception as e:  # noqa: BLE001 - the stream has started: report in-band, as OpenAI does
        status = getattr(e, "status", 502)
        yield f"data: {json.dumps(error_body(f'stream failed: {e}', 'upstream_error', code=str(status)))}\n\n"
    yield "data: [DONE]\n\n"

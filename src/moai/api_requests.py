"""One ``create`` call in process: its arguments shaped into the body the OpenAI client would send, the
request run on the Mixture, and its answer shaped into the OpenAI client's types (a ``ChatCompletion``, or
the response and chunk sequence a stream opens with)."""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import openai
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import BaseModel, ValidationError

from moai import deadline
from moai.api_errors import http, raise_translated, request, timed_out

if TYPE_CHECKING:
    from moai.mixture import Mixture, Prepared
    from moai.strategies.outcome import Execution

T = TypeVar("T")
# the OpenAI client's "not sent" markers (Omit is missing from older openai releases)
_UNSENT: tuple[type, ...] = tuple(t for t in (getattr(openai, "NotGiven", None), getattr(openai, "Omit", None))
                                  if isinstance(t, type))


@functools.cache
def _accepted() -> frozenset[str]:
    """The keyword arguments ``create`` takes: the installed OpenAI client's for ``chat.completions.create``
    (a parameter OpenAI adds is accepted once the client knows it) and the body fields moai reads."""
    from moai.server.openai_schema import ChatCompletionRequest

    sig = inspect.signature(openai.resources.chat.Completions.create)
    names = {n for n, p in sig.parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    return frozenset(names | set(ChatCompletionRequest.model_fields))


def _sent(value: Any) -> bool:
    """False for what the OpenAI client leaves out of the body: None, ``NOT_GIVEN``, ``omit``."""
    return value is not None and not isinstance(value, _UNSENT)


def _plain(value: Any) -> Any:
    """``value`` as the JSON the OpenAI client would send: pydantic objects (a returned ``ChatCompletionMessage``
    appended to ``messages``, openai's typed params) dumped as it dumps them, with only the fields they were given."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True, exclude_unset=True)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


@dataclass
class _Call:
    payload: dict[str, Any]  # the JSON body the OpenAI client would send
    session: str | None  # the x-moai-session header, if extra_headers has it
    timeout: float | None  # the caller's own limit on waiting (``timeout=``)


def parse_call(where: str, model: Any, messages: Any, stream: Any, timeout: Any, kwargs: dict[str, Any]) -> _Call:
    """Check ``create``'s arguments as the OpenAI client's signature would, and shape the request from them:
    ``extra_body`` merged, unsent values dropped, the session header kept, other transport options dropped."""
    unknown = next((k for k in kwargs if k not in _accepted()), None)
    if unknown is not None:
        raise TypeError(f"{where}() got an unexpected keyword argument {unknown!r}")
    kw = {k: v for k, v in kwargs.items() if _sent(v)}
    extra = kw.pop("extra_body", None) or {}
    headers = kw.pop("extra_headers", None) or {}
    kw.pop("extra_query", None)
    session = next((str(v) for k, v in headers.items() if k.lower() == "x-moai-session" and _sent(v)), None)
    payload = _plain({"model": model, "messages": list(messages), "stream": stream if _sent(stream) else False,
                      **kw, **extra})
    if isinstance(timeout, http.Timeout):  # the OpenAI client's per-phase limits: waiting is the read one
        timeout = timeout.read
    return _Call(payload, session, float(timeout) if _sent(timeout) else None)


def _usage(ex: Execution) -> dict[str, Any]:
    from moai.server.openai_schema import usage_object

    return usage_object(ex.usage)


def _build(cls: type[T], data: dict[str, Any]) -> T:
    """Validated where the data fits OpenAI's types; constructed leniently where moai says more."""
    try:
        return cls.model_validate(data)  # type: ignore[attr-defined,no-any-return]
    except ValidationError:
        return cls.construct(**data)  # type: ignore[attr-defined,no-any-return]


def completion(mixture: Mixture, prep: Prepared, model: str, ex: Execution) -> ChatCompletion:
    ans = ex.answer
    from moai.server.openai_schema import assistant_message, fingerprint_field

    message = assistant_message(ans)
    data = {"id": prep.id, "object": "chat.completion", "created": int(prep.started), "model": model,
            **fingerprint_field(ex.system_fingerprint),
            "choices": [{"index": 0, "message": message, "finish_reason": ans.finish_reason, "logprobs": None}],
            "usage": _usage(ex), "moai": mixture.summary(prep, ex)}
    return _build(ChatCompletion, data)


async def prepare(mixture: Mixture, payload: dict[str, Any], session: str | None = None) -> Prepared:
    """Validate and plan; a request refused once its mix is known is recorded, as the server records it."""
    from moai.mixture import UnknownModel
    from moai.server.openai_schema import ChatCompletionRequest

    started = time.time()
    try:
        body = ChatCompletionRequest.model_validate(payload)
    except Exception as e:  # noqa: BLE001 - re-raised as the openai client's exception
        raise_translated(e)
    try:
        return mixture.prepare(body, session=session)
    except UnknownModel as e:
        raise_translated(e)
    except Exception as e:  # noqa: BLE001
        request_id = await mixture.record_refusal(body, e, session=session, started=started)
        raise_translated(e, request_id, mixture.config)


async def answer(mixture: Mixture, call: _Call, prep: Prepared) -> ChatCompletion:
    """Run a prepared call to its ``ChatCompletion``, within ``settings.request_timeout_s`` (prepared apart, so that
    the Python API can tell shutdown which request each call runs)."""
    limit = mixture.config.settings.request_timeout_s
    deadline.start(prep, limit)
    try:
        async with asyncio.timeout(limit):
            ex = await mixture.run(prep)
    except TimeoutError:
        raise await timed_out(mixture, prep, limit) from None
    except Exception as e:  # noqa: BLE001
        raise_translated(e, prep.id, mixture.config)
    return completion(mixture, prep, call.payload["model"], ex)


async def _response(mixture: Mixture, prep: Prepared, first: Any) -> http.Response:
    """The response the server opens this stream with (its status and headers: request id, mix, the model whose
    answer streams, the cache's verdict), as ``openai.Stream.response`` has it; the chunks are not its body."""
    from moai.server.headers import header_value
    from moai.strategies.outcome import Execution

    headers = {"content-type": "text/event-stream; charset=utf-8", "x-moai-mix": header_value(prep.ctx.mix_name),
               "x-moai-request-id": prep.id, "x-request-id": prep.id}
    if prep.ctx.decision:
        headers["x-moai-model"] = header_value(prep.ctx.decision.model)
    # the model whose answer streams is known at the first chunk (an aggregator, a reviser: not the gate's pick)
    answering = first.answer if isinstance(first, Execution) else prep.plan.answering()
    if answering is not None and answering.model:
        headers["x-moai-model"] = header_value(answering.model)
    if mixture.cache.enabled:  # looked up when the stream began: this reads its memo
        look = await mixture.cache.alookup(prep)
        headers["x-moai-cache"] = "hit" if look.status == "semantic" else look.status
    return http.Response(200, headers=headers, request=request())


async def chunks(mixture: Mixture, prep: Prepared, model: str, include_usage: bool) -> AsyncIterator[Any]:
    """The response (see ``_response``), then OpenAI's chunk sequence: role, content/tool-call deltas, finish (with
    ``moai``), [usage]."""
    from moai.providers.base import Delta
    from moai.server.openai_schema import chunk_delta, fingerprint_field
    from moai.strategies.outcome import Execution

    base = {"id": prep.id, "object": "chat.completion.chunk", "created": int(prep.started), "model": model}

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> ChatCompletionChunk:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return _build(ChatCompletionChunk, {**base, "choices": [choice], **extra})

    limit = mixture.config.settings.request_timeout_s
    source = deadline.within(mixture.stream(prep), limit, prep)  # the limit covers the whole stream
    try:  # the model's first output (or failure) comes before the role chunk, as the HTTP status does
        first = await anext(source, None)
    except TimeoutError:
        raise await timed_out(mixture, prep, limit) from None
    except Exception as e:  # noqa: BLE001
        raise_translated(e, prep.id, mixture.config)

    async def items() -> AsyncIterator[Any]:
        if first is not None:
            yield first
        async for item in source:
            yield item

    # every chunk names the answering upstream's fingerprint once it is known, as the server's do
    base.update(fingerprint_field(getattr(first, "system_fingerprint", None)))
    yield await _response(mixture, prep, first)
    yield chunk({"role": "assistant", "content": ""})
    try:
        async for item in items():
            if isinstance(item, Execution | Delta):
                base.update(fingerprint_field(item.system_fingerprint))
            if isinstance(item, Execution):
                yield chunk({}, item.answer.finish_reason or "stop", moai=mixture.summary(prep, item))
                if include_usage:
                    yield _build(ChatCompletionChunk, {**base, "choices": [], "usage": _usage(item)})
            elif isinstance(item, Delta) and (item.text or item.tool_calls or item.refusal):
                yield chunk(chunk_delta(item.text, item.tool_calls, item.refusal, numbered=True))
    except TimeoutError:
        raise await timed_out(mixture, prep, limit) from None
    except Exception as e:  # noqa: BLE001
        raise_translated(e, prep.id, mixture.config)

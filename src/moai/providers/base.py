"""One async interface for every model call, whatever protocol sits behind it.

Strategies only see ``Provider.complete`` and ``Provider.stream``; failures arrive as one small
hierarchy of errors so that fallbacks and circuit breakers can decide what is retryable.
"""

from __future__ import annotations

import contextlib
import email.utils
import errno
import json
import logging
import math
import socket
import ssl
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from moai.catalog import SAMPLING_EXTRAS, ModelCard

log = logging.getLogger(__name__)


class ProviderError(RuntimeError):
    """A model call failed. ``retryable`` says whether another model/attempt may succeed."""

    retryable: bool = True
    status: int = 502

    def __init__(self, model: str, message: str) -> None:
        super().__init__(f"{model}: {message}")
        self.model = model
        # what the upstream processed, and bills, for this failed try: the usage it reported with an unusable
        # answer, or the prompt (estimated) of a try that timed out once sent; None when it bills nothing
        self.usage: Usage | None = None
        # retried in place, then the call was cut short while it waited to retry: no later try was ever sent
        self.last_sent = False


class ProviderTimeout(ProviderError):
    status = 504


class ProviderUnavailable(ProviderError):
    """The model could not be reached or used. ``final`` tells the two kinds apart: a refused connection (or a
    host that does not resolve, a certificate that does not verify), a model not found upstream or not loadable
    will fail the same way again within a request; a connection reset, a stream dropped mid-answer, a resolver
    that failed for now, an upstream overloaded, a local generation that broke may well pass on the next try."""

    status = 503

    def __init__(self, model: str, message: str, final: bool | None = None) -> None:
        super().__init__(model, message)
        self._final = final  # None: read from the error's cause (``unreachable``) when asked

    @property
    def final(self) -> bool:
        return self._final if self._final is not None else unreachable(self)


NOT_FOUND = 404
MODEL_NOT_FOUND = "model_not_found"  # OpenAI's error code for a model the upstream does not know, whatever the status


def _error_code(e: BaseException) -> str | None:
    """The upstream's error ``code`` an exception carries (an SDK's ``code``, or the JSON body it kept)."""
    code = getattr(e, "code", None)
    if isinstance(code, str):
        return code
    body = getattr(e, "body", None)
    if isinstance(body, bytes | str):
        import json

        try:
            body = json.loads(body)
        except ValueError:
            return None
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None


def _final_cause(cause: BaseException) -> bool | None:
    """What one exception of a chain says on its own: True (final), False (may pass), None (nothing: read its
    cause). An exception group (several addresses tried at once, as anyio does) is final when each of its
    members is."""
    if isinstance(cause, ProviderUnavailable):  # raised again by a provider that wraps another
        return cause.final
    if isinstance(cause, BaseExceptionGroup):
        return all(_chain_final(member) for member in cause.exceptions)
    if isinstance(cause, socket.gaierror):  # a name that does not resolve, unless the resolver could not say now
        return cause.errno != socket.EAI_AGAIN
    if isinstance(cause, ssl.SSLCertVerificationError):  # the same certificate is presented again
        return True
    if isinstance(cause, ConnectionRefusedError) or (isinstance(cause, OSError) and cause.errno == errno.ECONNREFUSED):
        return True
    status = getattr(cause, "status_code", None) or getattr(cause, "status", None)
    if isinstance(status, int) and not isinstance(status, bool) and status >= 400:
        return status == NOT_FOUND or _error_code(cause) == MODEL_NOT_FOUND
    return None


def _chain_final(e: BaseException) -> bool:
    """Whether ``e``, read with its chain of causes, says its model cannot be reached: some exception on the way
    says so (``_final_cause``); a chain that ends without a verdict is some connection error (a reset, a drop)."""
    seen: set[int] = set()
    cause: BaseException | None = e
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        verdict = _final_cause(cause)
        if verdict is not None:
            return verdict
        cause = cause.__cause__ or cause.__context__
    return False


def unreachable(e: BaseException) -> bool:
    """Whether an error, by its chain of causes, says its model cannot be reached at all: a refused connection
    (on every address tried, when several were), a name that does not resolve (not a temporary resolver failure,
    ``EAI_AGAIN``), a TLS certificate that fails verification, or an upstream that does not know the model (a
    404, or any status with the code ``model_not_found``). Another connection error (reset, dropped, closed
    mid-answer) or another status (an overloaded upstream's 529) may pass. With no cause at all (a model file
    missing, a library not installed) the error is the model's state: final."""
    cause = e.__cause__ or e.__context__
    return True if cause is None else _chain_final(cause)


class ProviderRateLimited(ProviderError):
    """The upstream said 429. ``retry_after`` (seconds, when it said) is how long the model is to be left alone."""

    status = 429

    def __init__(self, model: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(model, message)
        self.retry_after = retry_after


MAX_RETRY_AFTER_S = 60.0  # a longer hint (a quota reset hours away) is read as a minute: the model is re-tried then
RETRY_IN_PLACE_MAX_S = 1.0  # a 429 asking for a longer wait than this goes to another model instead
RATE_LIMIT_COOLDOWN_S = 5.0  # how long a model that kept answering 429 without saying for how long is avoided


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date), within 0..60 s."""
    seconds: float | None = None
    value = headers.get("retry-after-ms")
    try:
        seconds = float(value) / 1000 if value is not None else None
    except ValueError:
        seconds = None
    value = headers.get("retry-after")
    if seconds is None and value is not None:
        try:
            seconds = float(value)
        except ValueError:
            when = email.utils.parsedate_tz(value)
            seconds = email.utils.mktime_tz(when) - time.time() if when is not None else None
    if seconds is None or seconds != seconds:  # absent, unreadable or NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def retry_in_place(retry_after: float | None) -> bool:
    """Whether a 429 or 5xx is worth waiting out on the same model: no hint (a short jittered backoff) or a hint
    of about a second. A longer wait would hold the request while another model or deployment could answer it
    now (an upstream that is down for maintenance says how long with a 503's Retry-After)."""
    return retry_after is None or retry_after <= RETRY_IN_PLACE_MAX_S


class ProviderServerError(ProviderError):
    status = 502


class ProviderRequestError(ProviderError):
    """The upstream refused the request itself (4xx other than 429): retrying elsewhere may still work.

    A refusal says nothing about the model's health, so it never counts against it. ``code`` and ``param`` are
    OpenAI's error fields, for a cause the client can act on (``context_length_exceeded`` on ``messages``).
    """

    status = 400

    def __init__(self, model: str, message: str, code: str | None = None, param: str | None = None) -> None:
        super().__init__(model, message)
        self.code, self.param = code, param


def is_refusal(status: int | None) -> bool:
    """Whether an error status is a refusal of the request itself (4xx but 429), not a failure of the model."""
    return status is not None and 400 <= status < 500 and status != ProviderRateLimited.status


class ProviderAuthError(ProviderError):
    retryable = True  # another model with its own key may work
    status = 502


@dataclass
class ChatParams:
    """What the caller asked for, minus routing: passed through to the model."""

    messages: list[dict[str, Any]]
    max_tokens: int = 512  # the completion limit sent, or moai's own estimate when none is sent
    # the name the limit is sent under: the client's own (OpenAI's reasoning models take only
    # max_completion_tokens), or None when neither the client nor the mix asked for one (none is sent)
    limit_field: str | None = "max_tokens"
    temperature: float | None = None
    top_p: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    stop: list[str] | None = None
    seed: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None
    logit_bias: dict[str, float] | None = None
    parallel_tool_calls: bool | None = None  # only sent with tools (OpenAI refuses it without)
    reasoning_effort: str | None = None
    # the end user as the client named them (OpenAI's ``user`` and ``safety_identifier``): upstreams use them to
    # monitor abuse. Sent on by the providers whose API takes them, as providers.openai_compat.end_user allows
    user: str | None = None
    safety_identifier: str | None = None
    # sampling beyond OpenAI's, as vLLM and llama.cpp's server take it (``SAMPLING_EXTRAS``); None: not
    # asked for. ``top_k`` 0 is "off" (every token), whichever of 0 and -1 the client sent
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    typical_p: float | None = None

    def sampling_extras(self) -> dict[str, float | int]:
        """The extras asked for (not OpenAI's: never sent on by ``openai_kwargs``; each provider sends those its
        model takes)."""
        return {name: value for name in SAMPLING_EXTRAS if (value := getattr(self, name)) is not None}

    def openai_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"messages": self.messages}
        if self.limit_field:
            kw[self.limit_field] = self.max_tokens
        for name in ("temperature", "top_p", "frequency_penalty", "presence_penalty", "stop", "seed", "tools",
                     "tool_choice", "response_format", "logit_bias", "reasoning_effort"):
            value = getattr(self, name)
            if value is not None:
                kw[name] = value
        if self.tools and self.parallel_tool_calls is not None:
            kw["parallel_tool_calls"] = self.parallel_tool_calls
        return kw


def dropped_extras(params: ChatParams, cards: Iterable[ModelCard]) -> list[str]:
    """``moai.reason`` lines for the sampling extras asked for that a model which answered was not sent (its API
    or its card does not take them, ``ModelCard.sampling_fields``): dropped, not a reason to pass the model over."""
    notes = []
    for card in cards:
        dropped = [name for name in params.sampling_extras() if name not in card.sampling_fields]
        if dropped:
            why = ("Anthropic's API takes top_k only" if card.provider == "anthropic"
                   else "its card's sampling_extras does not list them")
            notes.append(f"request field(s) {', '.join(dropped)} not sent to {card.name} ({why})")
    return notes


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # OpenAI's usage.prompt_tokens_details / completion_tokens_details (cached, reasoning, audio, prediction tokens),
    # the counts the upstream reported; None when it reported none (no zeros are made up)
    prompt_details: dict[str, int] | None = None
    completion_details: dict[str, int] | None = None
    estimated: bool = False  # some count is moai's estimate: the upstream reported none (or none usable)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, other: Usage) -> None:
        """Count ``other`` in too: each detail is summed over the calls that reported it."""
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.prompt_details = _summed(self.prompt_details, other.prompt_details)
        self.completion_details = _summed(self.completion_details, other.completion_details)
        self.estimated = self.estimated or other.estimated


# No call processes this many tokens: a larger count is an upstream's error (and would overflow a 32-bit column)
MAX_CALL_TOKENS = 100_000_000


def token_count(value: Any) -> int | None:
    """An upstream's token count as an int; None when it is no usable count (absent, negative, not a number,
    absurdly large), so that the call is estimated instead of billed at a made-up or negative figure."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value) or not 0 <= value <= MAX_CALL_TOKENS:
        return None
    return int(value)


def text_tokens(text: str) -> int:
    """Tokens in ``text`` by a rule of thumb for common tokenizers: ~4 ASCII characters a token (English, code),
    and a token for every other character: a Chinese or Japanese character is one or more, accented, Cyrillic or
    Greek letters less, so this errs high there, as an estimate that bills or holds a budget should. At 4
    characters a token, 400 Chinese characters counted as 100 tokens where an upstream billed 420."""
    ascii_chars = len(text.encode("ascii", "ignore"))
    return ascii_chars // 4 + (len(text) - ascii_chars)


def estimate_prompt_tokens(params: ChatParams) -> int:
    """``text_tokens`` of every message, the tool calls earlier turns made and the tools offered (all read with the
    prompt: an agent's may be mostly tools), plus each message's framing: what a call is billed for when its
    upstream reports no usage, and what a try billed without an answer (timed out, cut short) is counted at."""
    tools = text_tokens(json.dumps(params.tools, ensure_ascii=False)) if params.tools else 0
    return message_tokens(params.messages) + tools


def message_tokens(messages: Sequence[dict[str, Any]]) -> int:
    """``text_tokens`` of the messages' text (text parts only: an attached image is not priced by its base64
    length) and of the tool calls earlier turns made, plus 4 a message: a call's prompt as billed without usage,
    and as a plan's worst case counts it."""
    from moai.strategies.prompts import text_of

    return (sum(text_tokens(text_of(m.get("content"))) for m in messages) + 4 * len(messages)
            + call_tokens(messages))


def call_tokens(messages: Sequence[dict[str, Any]]) -> int:
    """``text_tokens`` of the tool calls earlier turns made: their names and arguments are read with the prompt,
    though they are no message text."""
    return sum(text_tokens(json.dumps(m["tool_calls"], ensure_ascii=False)) for m in messages if m.get("tool_calls"))


def estimate_completion_tokens(generated: str) -> int:
    """``text_tokens`` of what a model wrote; at least 1 when it wrote anything."""
    return max(1, text_tokens(generated)) if generated else 0


def prompt_usage(params: ChatParams) -> Usage:
    """The estimated usage of a call that was sent but answered nothing (yet)."""
    return Usage(estimate_prompt_tokens(params), 0, estimated=True)


def with_estimates(usage: Usage, params: ChatParams, generated: str) -> Usage:
    """The usage a finished call is billed at: the upstream's counts, with any it left out (0: none reported, or
    none usable) estimated from the prompt sent and the answer written. Streamed and unstreamed calls alike."""
    missing_prompt = not usage.prompt_tokens
    missing_completion = not usage.completion_tokens and bool(generated)
    if not (missing_prompt or missing_completion):
        return usage
    return Usage(estimate_prompt_tokens(params) if missing_prompt else usage.prompt_tokens,
                 estimate_completion_tokens(generated) if missing_completion else usage.completion_tokens,
                 usage.prompt_details, usage.completion_details, estimated=True)


# The failed tries a provider retried in place (or on another deployment) instead of raising them: the caller that
# watches them (the executor) counts and bills each. None: nobody watches.
_RETRIED: ContextVar[list[ProviderError] | None] = ContextVar("moai_retried_tries", default=None)


# Set for a call to a model tried only as a last resort (its circuit open, or a rate limit still running): that call
# makes one try, not its card's ``max_retries`` more in place. The model is failing: the try is a last chance for
# the request, not the time to wait on the model (nor to send it the same request again).
_ONE_TRY: ContextVar[bool] = ContextVar("moai_one_try", default=False)


def retries_in_place(max_retries: int) -> int:
    """How many times the call in flight may be retried on the same model: its card's ``max_retries``, or none
    when its model is tried as a last resort (``watch_retries(..., one_try=True)``)."""
    return 0 if _ONE_TRY.get() else max_retries


def note_retried(error: ProviderError) -> None:
    """Report a failed try that is retried rather than raised, so that it is not lost to metrics and spend."""
    seen = _RETRIED.get()
    if seen is not None:
        seen.append(error)


@dataclass
class Queued:
    """How long a call waited for its model before the model began on it (a local model generating for another
    request, a deployment's slots all taken): the model's own latency is the rest, and a call cut short while
    ``waiting`` was never served, so it is no verdict on the model."""

    seconds: float = 0.0
    since: float | None = None  # waiting now, since then (time.monotonic())
    # pieces of the answer generated so far by an unstreamed call (``Provider.complete`` drains a stream): what a
    # call cut short before its answer was whole had generated, and is billed for
    pieces: int = 0

    @property
    def waiting(self) -> bool:
        return self.since is not None

    def enter(self) -> None:
        if self.since is None:
            self.since = time.monotonic()

    def leave(self) -> None:
        if self.since is not None:
            self.seconds += time.monotonic() - self.since
            self.since = None

    def so_far(self) -> float:
        """Seconds waited until now, a wait still running included."""
        return self.seconds + (time.monotonic() - self.since if self.since is not None else 0.0)


# The wait of the call in flight, told by the provider that queues it (``queued``); None: nobody watches.
_QUEUED: ContextVar[Queued | None] = ContextVar("moai_queued", default=None)


def queue_entered() -> None:
    """The call now waits for its model (a lock, a slot): that time is not the model's."""
    q = _QUEUED.get()
    if q is not None:
        q.enter()


def queue_left() -> None:
    """The model has begun on the call."""
    q = _QUEUED.get()
    if q is not None:
        q.leave()


@contextlib.contextmanager
def watch_retries(seen: list[ProviderError], queued: Queued | None = None, one_try: bool = False) -> Iterator[None]:
    """Collect into ``seen`` the tries that providers called in this block retry (``note_retried``), and into
    ``queued`` the time they wait for their model; ``one_try``: they retry nothing in place (``retries_in_place``).
    Keep the block free of ``yield``: a context variable does not follow a generator from one task to another."""
    token = _RETRIED.set(seen)
    waits = _QUEUED.set(queued) if queued is not None else None
    once = _ONE_TRY.set(one_try)
    try:
        yield
    finally:
        _ONE_TRY.reset(once)
        if waits is not None:
            _QUEUED.reset(waits)
        _RETRIED.reset(token)


def unexpected(model: str, e: Exception) -> ProviderServerError:
    """What a provider raised other than a ProviderError (a reply no check foresaw, a library's own bug), as that
    model failing: the request moves on to the next model instead of crashing. The traceback goes to the log."""
    log.error("%s: unexpected %s in its provider", model, type(e).__name__, exc_info=e)
    return ProviderServerError(model, f"provider error: {type(e).__name__}")


async def answered(model: str, call: Awaitable[Completion]) -> Completion:
    """``call``'s completion; an unexpected exception is that model's failure (``unexpected``)."""
    try:
        return await call
    except ProviderError:
        raise
    except Exception as e:  # noqa: BLE001 - any other exception type is a provider's failure, see unexpected
        raise unexpected(model, e) from e


async def watched(deltas: AsyncIterator[Delta], seen: list[ProviderError], model: str,
                  queued: Queued | None = None, one_try: bool = False) -> AsyncIterator[Delta]:
    """``deltas``, with the tries retried while each piece is awaited collected into ``seen`` (and the time waited
    for the model into ``queued``; ``one_try`` as for ``watch_retries``); an unexpected exception is that model's
    failure (``unexpected``)."""
    it = aiter(deltas)
    while True:
        with watch_retries(seen, queued, one_try):
            try:
                d = await anext(it)
            except StopAsyncIteration:
                return
            except ProviderError:
                raise
            except Exception as e:  # noqa: BLE001 - see unexpected
                raise unexpected(model, e) from e
        yield d


def _summed(a: dict[str, int] | None, b: dict[str, int] | None) -> dict[str, int] | None:
    if b is None:
        return a
    if a is None:
        return dict(b)
    out = dict(a)
    for key, n in b.items():
        out[key] = out.get(key, 0) + n
    return out


def token_details(raw: Any) -> dict[str, int] | None:
    """An upstream's ``*_tokens_details`` object as counts; an entry that is no count (null, negative) is left
    out."""
    if not isinstance(raw, Mapping):
        return None
    return {str(k): n for k, v in raw.items()
            if ((isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()))
            and (n := token_count(v)) is not None}


@dataclass
class Completion:
    """A finished model call, with what telemetry needs."""

    model: str
    text: str
    finish_reason: str = "stop"
    usage: Usage = field(default_factory=Usage)
    tool_calls: list[dict[str, Any]] | None = None
    refusal: str | None = None  # the model declined (OpenAI's message.refusal: structured outputs rely on it)
    latency_s: float = 0.0
    ttft_s: float | None = None
    cpu_s: float | None = None  # process CPU time spent (local models), for energy estimates
    system_fingerprint: str | None = None  # the upstream's backend configuration, when it says


@dataclass
class Delta:
    """One streamed piece. The last one carries ``finish_reason`` and, when known, ``usage``."""

    text: str = ""
    tool_calls: list[dict[str, Any]] | None = None
    finish_reason: str | None = None
    usage: Usage | None = None
    refusal: str = ""
    cpu_s: float | None = None
    system_fingerprint: str | None = None  # the upstream's, on every piece once it has said it


class Provider(ABC):
    """A model behind some protocol. Implementations must not block the event loop."""

    def __init__(self, card: ModelCard) -> None:
        self.card = card

    @property
    def name(self) -> str:
        return self.card.name

    async def warm(self) -> None:
        """Load what the first call would otherwise load (a local model's weights), so a measured call times
        the answer, not the start-up. Nothing to do for remote models."""
        return None

    @abstractmethod
    async def stream(self, params: ChatParams) -> AsyncIterator[Delta]:
        """Yield deltas; the final delta has finish_reason set."""
        raise NotImplementedError
        yield Delta()  # pragma: no cover

    async def complete(self, params: ChatParams) -> Completion:
        """Default: drain the stream. Providers with a cheaper non-streaming call override this. Its times leave
        out a wait for the model (``queue_entered``): they are the model's own."""
        start = time.perf_counter()
        waits = _QUEUED.get()
        waited0 = waits.so_far() if waits is not None else 0.0

        def waited() -> float:
            return waits.so_far() - waited0 if waits is not None else 0.0

        ttft: float | None = None
        from moai.providers.tool_calls import merge_tool_call_deltas

        parts: list[str] = []
        refusal: list[str] = []
        tool_calls: list[dict[str, Any]] = []
        finish = "stop"
        usage: Usage | None = None
        cpu_s: float | None = None
        fingerprint: str | None = None
        async for d in self.stream(params):
            if d.text or d.tool_calls or d.refusal:
                if ttft is None:
                    ttft = max(0.0, time.perf_counter() - start - waited())
                if waits is not None:
                    waits.pieces += 1
            parts.append(d.text)
            refusal.append(d.refusal)
            for call in d.tool_calls or ():  # streamed calls come in pieces: one names a call, the rest add to it
                merge_tool_call_deltas(tool_calls, [call if "index" in call else {**call, "index": len(tool_calls)}])
            if d.finish_reason:
                finish = d.finish_reason
            if d.usage:
                usage = d.usage
            if d.cpu_s is not None:
                cpu_s = d.cpu_s
            fingerprint = d.system_fingerprint or fingerprint
        return Completion(
            model=self.name,
            text="".join(parts),
            finish_reason=finish,
            usage=usage or Usage(),
            tool_calls=tool_calls or None,
            refusal="".join(refusal) or None,
            latency_s=max(0.0, time.perf_counter() - start - waited()),
            ttft_s=ttft,
            cpu_s=cpu_s,
            system_fingerprint=fingerprint,
        )

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most providers hold nothing
        """Release connections or models."""

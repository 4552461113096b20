"""OpenAI's chat-completions request, as a strict-enough pydantic model, and its error body.

Strict where a wrong value would silently change behaviour (roles, types, ranges); fields asking for what moai
does not serve (audio, web search) are refused; other unknown top-level fields are taken, so that newer clients
keep working, and named in the answer's ``moai.reason`` (a typo there would otherwise go unnoticed).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationInfo, field_validator, model_validator

from moai.config_mix import MAX_WEIGHT

# what is sent on of a message and of each kind of content part (OpenAI's chat format)
MESSAGE_FIELDS = frozenset({"role", "content", "name", "tool_calls", "tool_call_id"})
PART_FIELDS = {"text": ("text",), "image_url": ("image_url",), "input_audio": ("input_audio",), "file": ("file",)}


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _content_present(self) -> ChatMessage:
        if self.role in ("user", "system", "developer") and not self.text().strip() and not self._media():
            raise ValueError(f"a {self.role} message needs non-empty content")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs tool_call_id")
        if self.role == "assistant" and self.content is None and not self.tool_calls and not self._refusal():
            legacy = " (its function_call is OpenAI's deprecated form: send tool_calls)" if (
                self.model_extra or {}).get("function_call") else ""
            raise ValueError(f"an assistant message needs content, tool_calls or a refusal{legacy}")  # as at OpenAI
        return self

    def _refusal(self) -> str | None:
        """The refusal of an assistant message sent back as the model gave it (``content: null``)."""
        refusal = (self.model_extra or {}).get("refusal")
        return refusal if isinstance(refusal, str) and refusal else None

    def _media(self) -> bool:
        """Whether a user message carries a part other than text (an image, audio, a file): content on its own,
        as OpenAI takes it ("what is in this picture?" may be the picture alone)."""
        return self.role == "user" and isinstance(self.content, list) and any(p.type != "text" for p in self.content)

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text or "" for p in self.content if p.type == "text")
        return self.content or ""

    def to_provider(self) -> dict[str, Any]:
        """The message as models get it: OpenAI's fields only. Anything else a client put on a message or a part
        is not sent on: no scan for sensitive data reads it, so it must not reach a model unread."""
        data = self.model_dump(exclude_none=True)
        out = {k: v for k, v in data.items() if k in MESSAGE_FIELDS}
        if self.role == "assistant" and not self.content and (refusal := self._refusal()):
            out["content"] = refusal  # what the model said, as text every upstream takes (and the scan reads)
        if isinstance(out.get("content"), list):
            out["content"] = [_part(p, self.role) for p in out["content"]]
        return out


def _part(p: dict[str, Any], role: str) -> dict[str, Any]:
    """A content part as sent on: its kind's fields only; an assistant's refusal part as the text it is."""
    if role == "assistant" and p["type"] == "refusal" and isinstance(p.get("refusal"), str):
        return {"type": "text", "text": p["refusal"]}
    return {k: v for k, v in p.items() if k == "type" or k in PART_FIELDS.get(p["type"], ())}


def _null_is_default(model: type[BaseModel], v: Any, info: ValidationInfo) -> Any:
    """null for the field's default, as OpenAI's schema allows (its SDKs and other clients send ``"n": null``); any
    other value is checked as strictly as before."""
    if v is None and info.field_name is not None:
        return model.model_fields[info.field_name].default
    return v


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = Field(False, strict=True)

    @field_validator("include_usage", mode="before")
    @classmethod
    def _default_for_null(cls, v: Any, info: ValidationInfo) -> Any:
        return _null_is_default(cls, v, info)


CACHE_CONTROLS = ("no-cache", "no-store")  # LiteLLM's per-request cache controls moai takes (either skips it)


class MoaiOptions(BaseModel):
    """Per-request narrowing of the mix (never widening): extra body field ``moai``."""

    # strict, as the request's own fields: "0.5" for a cost cap, true for a weight or 0 for cache are 400s, not
    # guesses (cache: "no" was read as false, weights.cost: true as 1)
    model_config = ConfigDict(extra="forbid", strict=True)
    models: list[str] | None = None
    exclude: list[str] | None = None
    max_cost_usd: float | None = Field(None, gt=0)
    # finite, non-negative and bounded: the mix's weights are replaced without re-validation, and one NaN or
    # inf - inf would turn every utility into NaN (and the response into invalid JSON)
    weights: dict[str, Annotated[float, Field(ge=0, le=MAX_WEIGHT, allow_inf_nan=False)]] | None = None
    privacy: Literal["local", "private", "cloud"] | None = None  # the least-trusted tier allowed (only narrows)
    sensitive_data: Literal["local_only", "private_ok", "allow", "redact"] | None = None  # may only raise
    cache: bool = True


class FunctionSpec(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for function names
    description: str | None = None
    parameters: dict[str, Any] | None = None


class Tool(BaseModel):
    """One entry of ``tools``: only functions exist in the chat-completions API."""

    model_config = ConfigDict(extra="allow")
    type: Literal["function"]
    function: FunctionSpec


TOOL_CHOICES = ("none", "auto", "required")


class NamedFunction(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1)


class NamedToolChoice(BaseModel):
    """``tool_choice`` naming the function the model must call."""

    model_config = ConfigDict(extra="allow")
    type: Literal["function"]
    function: NamedFunction


MAX_DEPTH = 64  # nesting of a request's JSON (tool schemas are the deepest part): deeper is refused, not recursed


def _unencodable(value: Any, path: str) -> str | None:
    """Where a string holds a lone surrogate (valid JSON escapes, but no Unicode text: tokenizers and the
    database cannot take it), else None. Walked with a stack of its own: a body nested hundreds deep (a few KB)
    must be refused, not blow Python's recursion limit here or further on; past ``MAX_DEPTH`` it raises."""
    stack: list[tuple[Any, str, int]] = [(value, path, 0)]
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return where
        elif isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                raise ValueError(f"{where or 'the body'}: nested more than {MAX_DEPTH} levels deep")
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            children = [(v, (f"{where}.{k}" if where else str(k)) if isinstance(item, dict) else f"{where}[{k}]",
                         depth + 1) for k, v in pairs]
            stack.extend(reversed(children))  # first child on top: the first bad place is the one told
    return None


MAX_COMPLETION_TOKENS = 1 << 20


# OpenAI fields for answers moai does not give: refused rather than answered in plain text
UNSERVED_FIELDS = {"audio": "no audio output", "web_search_options": "no web search",
                   "prediction": "no predicted outputs"}
# OpenAI fields that do not change the answer, taken and not sent on (no stored completions, one service tier)
READ_ELSEWHERE = frozenset({"store", "metadata", "service_tier", "prompt_cache_key", "prompt_cache_retention",
                            "prompt_cache_options", "modalities", "verbosity", "moderation"})
MAX_TOOLS = 128  # tool definitions per request, as OpenAI allows
MAX_TOP_K = (1 << 31) - 1  # the int32 llama.cpp and vLLM hold it in
MAX_REPETITION_PENALTY = 100.0  # a multiplier on logits (1 is none, 1.1-1.3 usual): far above any sensible one
MAX_LOGIT_BIAS = 1024  # token biases per request (OpenAI's own limit is lower): each is checked and sent on


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    # strict: "3", true or 2.0 for max_tokens, or "yes" for stream, are 400s (as at OpenAI), not guesses
    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1, max_length=1024)
    stream: bool = Field(False, strict=True)
    stream_options: StreamOptions | None = None
    # the upper bound is the models' own (a context they cannot fit is a 400 context_length_exceeded)
    max_tokens: int | None = Field(None, ge=1, le=MAX_COMPLETION_TOKENS, strict=True)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_COMPLETION_TOKENS, strict=True)
    temperature: float | None = Field(None, ge=0, le=2, strict=True)
    top_p: float | None = Field(None, ge=0, le=1, strict=True)
    frequency_penalty: float | None = Field(None, ge=-2, le=2, strict=True)
    presence_penalty: float | None = Field(None, ge=-2, le=2, strict=True)
    n: int = Field(1, ge=1, le=1, strict=True)
    logprobs: bool | None = Field(None, strict=True)
    top_logprobs: int | None = Field(None, strict=True)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, strict=True)
    tools: list[dict[str, Any]] | None = None  # checked as Tool; kept as sent, for the providers
    tool_choice: str | dict[str, Any] | None = None  # checked as TOOL_CHOICES or NamedToolChoice
    response_format: dict[str, Any] | None = None
    logit_bias: dict[str, float] | None = Field(None, strict=True)
    parallel_tool_calls: bool | None = Field(None, strict=True)
    reasoning_effort: str | None = Field(None, strict=True)
    # OpenAI's deprecated function calling: refused with a pointer to tools (answering them with tool_calls, or
    # dropping them and answering in text, would both mislead a client written for them)
    functions: Any = None
    function_call: Any = None
    # the end user (``user`` is also moai's session key): sent on as providers.openai_compat.end_user allows
    user: str | None = None
    safety_identifier: str | None = Field(None, strict=True)
    # sampling beyond OpenAI's, under vLLM's names, as vLLM, llama.cpp's server and others take it: sent to
    # the models that take it (``ModelCard.sampling_fields``), named in moai.reason where dropped. top_k 0 and -1
    # both mean off (llama.cpp's and vLLM's conventions); llama.cpp's name ``repeat_penalty`` is taken too
    top_k: int | None = Field(None, ge=-1, le=MAX_TOP_K, strict=True)
    min_p: float | None = Field(None, ge=0, le=1, strict=True)
    repetition_penalty: float | None = Field(None, gt=0, le=MAX_REPETITION_PENALTY, strict=True)
    repeat_penalty: float | None = Field(None, gt=0, le=MAX_REPETITION_PENALTY, strict=True)
    typical_p: float | None = Field(None, ge=0, le=1, strict=True)
    moai: MoaiOptions | None = None
    # the response cache's per-request opt-out also at the top level: `cache: false`, or LiteLLM's
    # `cache: {"no-cache": true}` / `{"no-store": true}`; folded into moai.cache
    cache: StrictBool | dict[str, Any] | None = None

    @field_validator("cache")
    @classmethod
    def _cache_controls(cls, v: bool | dict[str, Any] | None) -> bool | dict[str, Any] | None:
        """LiteLLM's cache controls that moai honours, as booleans; the others (a per-request ``ttl``,
        ``s-maxage``, a ``namespace``) are refused, not ignored: an answer stored or served against what the
        client asked is worse than a 400 that says so."""
        if not isinstance(v, dict):
            return v
        other = sorted(set(v) - set(CACHE_CONTROLS))
        if other:
            raise ValueError(f"cache control(s) {', '.join(map(repr, other))} not supported (moai takes "
                             f"{' and '.join(map(repr, CACHE_CONTROLS))}: both skip the cache for this request)")
        wrong = [k for k, flag in v.items() if not isinstance(flag, bool)]
        if wrong:
            raise ValueError(f"cache control {wrong[0]!r} must be true or false")
        return v

    @field_validator("stream", "n", mode="before")
    @classmethod
    def _default_for_null(cls, v: Any, info: ValidationInfo) -> Any:
        return _null_is_default(cls, v, info)

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        where = _unencodable(data, "")
        if where is not None:
            raise ValueError(f"{where}: text is not valid Unicode (a lone surrogate escape such as \\ud800)")
        return data

    @field_validator("tools")
    @classmethod
    def _tools(cls, v: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        if v is not None and len(v) > MAX_TOOLS:  # OpenAI's limit; each definition is scanned and sent on
            raise ValueError(f"{len(v)} tools is more than the {MAX_TOOLS} a request may define")
        for t in v or []:
            Tool.model_validate(t)
        return v

    @field_validator("tool_choice")
    @classmethod
    def _tool_choice(cls, v: str | dict[str, Any] | None, info: ValidationInfo) -> str | dict[str, Any] | None:
        """OpenAI's rules: one of three words or a named function; one that calls a tool needs tools, and a
        named one must be among them."""
        if isinstance(v, str) and v not in TOOL_CHOICES:
            raise ValueError(f"must be one of {', '.join(map(repr, TOOL_CHOICES))} or a named function, not {v!r}")
        if v in (None, "none", "auto"):
            return v
        tools = info.data.get("tools")
        if not tools:
            raise ValueError("a tool choice that calls a tool requires tools")
        if isinstance(v, dict):
            name = NamedToolChoice.model_validate(v).function.name
            if name not in {t["function"]["name"] for t in tools}:
                raise ValueError(f"names function {name!r}, which is not among the tools")
        return v

    @model_validator(mode="after")
    def _answerable(self) -> ChatCompletionRequest:
        """OpenAI fields asking for an answer moai cannot give (audio, a web search, a predicted output) are 400s:
        a text answer without them would pass for what was asked. ``stream_options`` needs ``stream``, as at
        OpenAI."""
        extra = self.model_extra or {}
        modalities = extra.get("modalities")
        if modalities is not None and (not isinstance(modalities, list) or set(modalities) - {"text"}):
            raise ValueError("modalities: only [\"text\"] is served here (no audio output)")
        for name in UNSERVED_FIELDS:
            if extra.get(name) is not None:
                raise ValueError(f"{name}: not supported here ({UNSERVED_FIELDS[name]})")
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options: only allowed when stream is true")
        return self

    def ignored_fields(self) -> list[str]:
        """Top-level fields neither OpenAI's chat completions nor moai read (a typo such as ``max_token``, another
        gateway's option): taken, as newer clients' fields must be, and told in ``moai.reason``."""
        return sorted(k for k in (self.model_extra or {}) if k not in READ_ELSEWHERE)

    @model_validator(mode="after")
    def _cache_opt_out(self) -> ChatCompletionRequest:
        off = self.cache is False or (isinstance(self.cache, dict) and any(self.cache.values()))
        if off:
            self.moai = (self.moai or MoaiOptions()).model_copy(update={"cache": False})
        return self

    @field_validator("repeat_penalty")
    @classmethod
    def _one_repetition_penalty(cls, v: float | None, info: ValidationInfo) -> float | None:
        """llama.cpp's ``repeat_penalty`` is vLLM's ``repetition_penalty`` (read as it, ``_repetition_penalty``):
        a 400 when both are sent with different values, one of which would be dropped unsaid."""
        other = info.data.get("repetition_penalty")
        if v is not None and other is not None and other != v:
            raise ValueError(f"{v:g} differs from repetition_penalty {other:g} (the same option under llama.cpp's "
                             "and vLLM's names: send one)")
        return v

    @model_validator(mode="after")
    def _repetition_penalty(self) -> ChatCompletionRequest:
        if self.repeat_penalty is not None:
            self.repetition_penalty = self.repeat_penalty
        return self

    @property
    def top_k_asked(self) -> int | None:
        """``top_k`` with "off" as 0, whether the client said 0 (llama.cpp, Hugging Face) or -1 (vLLM)."""
        return None if self.top_k is None else max(self.top_k, 0)

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > 4:
            raise ValueError("at most 4 stop sequences")
        return v

    @field_validator("logprobs", "top_logprobs")
    @classmethod
    def _no_logprobs(cls, v: bool | int | None) -> bool | int | None:
        """Token log-probabilities are not carried through mixes: asking for them is refused, not answered
        with null."""
        if v:
            raise ValueError("token log-probabilities are not supported (an answer may be written by several models)")
        return v

    @field_validator("logit_bias")
    @classmethod
    def _logit_bias(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        """OpenAI's form: token ids (as strings) to biases within -100..100, at most ``MAX_LOGIT_BIAS`` of them."""
        if v is not None and len(v) > MAX_LOGIT_BIAS:
            raise ValueError(f"{len(v)} token biases is more than the {MAX_LOGIT_BIAS} a request may set")
        for token, bias in (v or {}).items():
            if not token.isdigit():
                raise ValueError(f"keys must be token ids, not {token!r}")
            if not -100 <= bias <= 100:
                raise ValueError(f"bias {bias:g} for token {token} is outside -100..100")
        return v

    @field_validator("functions", "function_call")
    @classmethod
    def _no_legacy_functions(cls, v: Any) -> Any:
        if v is not None:
            raise ValueError("deprecated function calling is not supported: send 'tools' and 'tool_choice'")
        return v

    @field_validator("user", "safety_identifier")
    @classmethod
    def _user(cls, v: str | None) -> str | None:
        return no_nul(v)  # stored (the session) and sent on

    @field_validator("response_format")
    @classmethod
    def _response_format(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        """OpenAI's three kinds; a wrong one is a 400 there too, not silently free text."""
        if v is None:
            return v
        kind = v.get("type")
        if kind not in ("text", "json_object", "json_schema"):
            raise ValueError(f"type must be 'text', 'json_object' or 'json_schema', not {kind!r}")
        if kind == "json_schema":
            spec = v.get("json_schema")
            if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not spec["name"]:
                raise ValueError("a json_schema response format needs a 'json_schema' object with a 'name'")
            if not isinstance(spec.get("schema", {}), dict):
                raise ValueError("json_schema.schema must be a JSON Schema object")
        return v

    @property
    def stop_list(self) -> list[str] | None:
        return [self.stop] if isinstance(self.stop, str) else self.stop

    @property
    def completion_budget(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


def assistant_message(ans: Any) -> dict[str, Any]:
    """An answer (a ``StepResult``) as OpenAI's assistant message: content null beside tool calls or a refusal, and
    whole tool calls without the stream's ``index``. One shape for the server and the Python API."""
    message: dict[str, Any] = {"role": "assistant", "content": ans.text}
    if ans.tool_calls:
        message["tool_calls"] = [{k: v for k, v in tc.items() if k != "index"} for tc in ans.tool_calls]
        message["content"] = ans.text or None
    if ans.refusal:
        message["refusal"], message["content"] = ans.refusal, ans.text or None
    return message


def usage_object(u: Any) -> dict[str, Any]:
    """A ``Usage`` as OpenAI's usage object: the details only where an upstream reported them. One shape for the
    server and the Python API."""
    usage: dict[str, Any] = {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
                             "total_tokens": u.total_tokens}
    if u.prompt_details is not None:
        usage["prompt_tokens_details"] = dict(u.prompt_details)
    if u.completion_details is not None:
        usage["completion_tokens_details"] = dict(u.completion_details)
    return usage


def fingerprint_field(fingerprint: str | None) -> dict[str, str]:
    """``system_fingerprint`` for a response or chunk: sent when known, left out otherwise."""
    return {"system_fingerprint": fingerprint} if fingerprint else {}


def chunk_delta(text: str, tool_calls: list[dict[str, Any]] | None, refusal: str, numbered: bool = False,
                ) -> dict[str, Any]:
    """A streamed piece as a chunk's ``delta``: what it carries of content, tool calls and refusal. ``numbered``:
    calls are numbered in the order given where they bring no ``index`` (the OpenAI client's parser needs one)."""
    delta: dict[str, Any] = {}
    if text:
        delta["content"] = text
    if tool_calls:
        delta["tool_calls"] = [{"index": i, **c} for i, c in enumerate(tool_calls)] if numbered else tool_calls
    if refusal:
        delta["refusal"] = refusal
    return delta


def no_nul(v: str | None) -> str | None:
    """Text that is stored: no database text type takes a NUL character (PostgreSQL refuses it)."""
    if v is not None and "\x00" in v:
        raise ValueError("must not contain a NUL character (\\u0000)")
    return v


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1)
    score: float = Field(ge=-1, le=10, allow_inf_nan=False)  # -1..1 (thumbs), 0..1, or a 0-10 rating
    comment: str | None = Field(None, max_length=10000)
    scale: Literal["thumbs", "unit", "ten"] | None = None  # the score's scale, when a bare reading would be wrong

    @field_validator("id", "comment")
    @classmethod
    def _stored_text(cls, v: str | None) -> str | None:
        return no_nul(v)

    @field_validator("score", mode="before")
    @classmethod
    def _a_number(cls, v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, int | float):  # true is no rating; "7" is a string
            raise ValueError("must be a number")
        return v

    @model_validator(mode="after")
    def _on_its_scale(self) -> FeedbackRequest:
        from moai.telemetry.feedback import normalise_score

        normalise_score(self.score, self.scale)  # ValueError for a score off its declared scale: a 400
        return self


def validation_message(e: Any) -> tuple[str, str | None]:
    """A pydantic (or FastAPI) validation error as one line and OpenAI's ``param``: the first problem only."""
    first = e.errors()[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    msg = first.get("msg", "invalid request").removeprefix("Value error, ")
    return (f"{param}: {msg}" if param else msg), param


def error_body(message: str, type_: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """OpenAI's error envelope."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}

"""What the Responses and the Messages endpoints share: answer ids, checks of a translated request (a 400 naming
its ``param`` as the request names it), and putting the chat path's answer into another API's shape."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from starlette.responses import Response

from moai.server.openai_schema import MAX_DEPTH, _unencodable

CHAT_PREFIX = "chatcmpl-"
RESPONSE_PREFIX = "resp_"  # OpenAI's Responses API (``responses``)
MESSAGE_PREFIX = "msg_"  # Anthropic's Messages API (``messages``)
# the ids the other APIs' answers carry: a prefix and the chat completion id's suffix, each naming its request
ANSWER_PREFIXES = (RESPONSE_PREFIX, MESSAGE_PREFIX)


class Unsupported(ValueError):
    """A request moai cannot translate into a chat request: a 400 with its ``param`` (as the request names it)."""

    def __init__(self, message: str, param: str | None, code: str = "invalid_request_error") -> None:
        super().__init__(f"{param}: {message}" if param else message)
        self.param, self.code = param, code


def chat_id(request_id: str) -> str:
    """The chat completion id a response id (``resp_<hex>``) or a message id (``msg_<hex>``) stands for; other ids
    as they are."""
    for prefix in ANSWER_PREFIXES:
        if request_id.startswith(prefix):
            return CHAT_PREFIX + request_id.removeprefix(prefix)
    return request_id


def answer_id(prefix: str, completion_id: str) -> str:
    """``prefix`` and the chat completion id's suffix: the same request, quotable to ``POST /v1/feedback``."""
    return prefix + completion_id.removeprefix(CHAT_PREFIX)


def with_notes(summary: Any, notes: list[str]) -> Any:
    """The ``moai`` object with ``notes`` (what the request asked that was taken but not applied) in its
    ``reason``, each once."""
    if not notes or not isinstance(summary, dict):
        return summary
    reasons = summary.get("reason") if isinstance(summary.get("reason"), list) else []
    return {**summary, "reason": [*reasons, *(n for n in notes if n not in reasons)]}


def chat_start(payload: dict[str, Any], api: str, chat_names: Mapping[str, str], unserved: Mapping[str, str],
               translated: frozenset[str], off_is_absent: bool = False) -> dict[str, Any]:
    """The checks every translated request opens with (a well-formed body, no chat-completions names, nothing
    moai cannot serve: ``unserved``, each with what to send instead; ``off_is_absent``: one set to false is as
    absent), and the chat payload begun: the fields neither API reads (``translated`` are read by hand), passed on
    so that the chat path treats them as its own unknown fields, and the model."""
    well_formed(payload)
    for name, instead in chat_names.items():
        if name in payload:
            raise Unsupported(f"a chat-completions field; {api} is `{instead}`", name, "unsupported_parameter")
    for name, why in unserved.items():
        value = payload.get(name)
        if value is not None and not (off_is_absent and value is False):
            raise Unsupported(why, name, "unsupported_parameter")
    chat: dict[str, Any] = {k: v for k, v in payload.items() if k not in translated}
    if "model" in payload:
        chat["model"] = payload["model"]
    return chat


def kind_of(value: Any) -> str:
    return "null" if value is None else {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "a number")


def expect(value: Any, types: type, param: str, what: str) -> Any:
    if not isinstance(value, types):
        raise Unsupported(f"must be {what}, not {kind_of(value)}", param)
    return value


def one_of(value: Any, allowed: tuple[str, ...], param: str) -> Any:
    """``value`` when null or one of ``allowed`` (a wrong value would be sent on, or echoed, as if valid)."""
    if value is not None and (not isinstance(value, str) or value not in allowed):
        shown = repr(value[:40]) if isinstance(value, str) else kind_of(value)
        raise Unsupported(f"must be one of {', '.join(map(repr, allowed))}, not {shown}", param)
    return value


def named(source: dict[str, Any], param: str) -> str:
    """A function's or a format's name: a string, as the chat endpoint takes it (the upstream holds it to its own
    rule; OpenAI's is 1-64 letters, digits, underscores or dashes, which ``responses.parse`` of a generic model,
    ``Page[Item]``, does not keep)."""
    return text_field(source, "name", param)


def well_formed(payload: dict[str, Any]) -> None:
    """The chat endpoint's checks of a whole body, made on the translated request itself (its translation drops
    what it does not read, an item's extra fields among them): nesting past ``MAX_DEPTH`` and lone surrogates are
    400s naming where, as the request names it."""
    too_deep = f": nested more than {MAX_DEPTH} levels deep"
    try:
        where = _unencodable(payload, "")
    except ValueError as e:
        message = str(e)
        if message.endswith(too_deep):
            raise Unsupported(too_deep.removeprefix(": "), message.removesuffix(too_deep)) from None
        raise Unsupported(message, None) from None
    if where is not None:
        raise Unsupported("text is not valid Unicode (a lone surrogate escape such as \\ud800)", where)


def text_field(item: dict[str, Any], name: str, param: str) -> str:
    return expect(item.get(name), str, f"{param}.{name}", "a string")


def rename_param(error: dict[str, Any], names: Mapping[str, str]) -> bool:
    """A chat 400's ``param`` (and its message's lead) under the name the translated request gave it (``names``:
    the chat field's first name -> the request's); whether it changed."""
    param = error.get("param")
    if not isinstance(param, str):
        return False
    head = param.split(".")[0].split("[")[0]
    if head not in names:
        return False
    renamed = names[head] if head == "messages" else names[head] + param[len(head):]
    message = error.get("message")
    if isinstance(message, str) and message.startswith(param + ":"):
        error["message"] = renamed + message[len(param):]
    error["param"] = renamed
    return True


def with_body(response: Response, data: Any) -> Response:
    """``response`` answering ``data`` instead, its length told."""
    response.body = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
    response.headers["content-length"] = str(len(response.body))
    return response


def translated(response: Response, stream: Callable[[Any], Any], names: Mapping[str, str],
               convert: Callable[[dict[str, Any]], Any]) -> Response:
    """The chat path's answer as another API gives it, headers kept: a stream's body through ``stream``, a
    completion through ``convert``, a 400's param under the request's ``names``; any other error as it is."""
    body = getattr(response, "body_iterator", None)
    if body is not None:
        response.body_iterator = stream(body)
        return response
    try:
        data = json.loads(bytes(response.body))
    except ValueError:
        return response
    if response.status_code >= 400:
        error = data.get("error") if isinstance(data, dict) else None
        if not (response.status_code == 400 and isinstance(error, dict) and rename_param(error, names)):
            return response
    elif response.status_code == 200 and isinstance(data, dict) and data.get("object") == "chat.completion":
        data = convert(data)
    else:
        return response
    return with_body(response, data)

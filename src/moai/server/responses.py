"""OpenAI's Responses API (``POST /v1/responses``) over the chat-completions path.

A Responses request is translated into the chat-completions payload it means, answered by the very code that
answers ``POST /v1/chat/completions`` (keys, limits, privacy, the gate, recording, metrics, headers), and the
answer translated back. moai keeps no response objects: what refers to a stored one (``previous_response_id``, a
``conversation``, ``item_reference``) is refused with what to send instead, as is anything else it cannot supply
(built-in tools, background runs, reasoning summaries, ``include`` items); a wrong type is a 400 naming its param.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.responses import Response

from moai.server.translation import (
    CHAT_PREFIX,
    RESPONSE_PREFIX,
    Unsupported,
    answer_id,
    chat_start,
    expect,
    named,
    one_of,
    text_field,
    translated,
    with_notes,
)

# chat-completions names a Responses request spells otherwise: refused with the Responses name (taken, they would
# either clash with the translation or be honoured under a name no Responses client sends)
CHAT_NAMES = {"messages": "input", "max_tokens": "max_output_tokens", "max_completion_tokens": "max_output_tokens",
              "response_format": "text.format", "functions": "tools", "function_call": "tool_choice",
              "reasoning_effort": "reasoning.effort"}
# Responses fields that ask for what moai cannot give, and what to send instead
UNSERVED = {
    "previous_response_id": "moai keeps no responses: send the earlier turns in `input` (with store: false "
                            "clients, append each response's `output` items to the next request's `input`)",
    "conversation": "moai keeps no conversations: send the earlier turns in `input`",
    "prompt": "moai keeps no prompt templates: send the prompt's text as `instructions` or in `input`",
    "max_tool_calls": "not supported (a response here is one model turn: send `parallel_tool_calls: false` for "
                      "at most one call)",
    "background": "background responses are not supported: send the request without `background` (or stream it)",
}
# Responses fields read here or that change nothing moai does (it stores nothing; one service tier)
TRANSLATED = frozenset({"model", "input", "instructions", "max_output_tokens", "temperature", "top_p", "tools",
                        "tool_choice", "parallel_tool_calls", "text", "stream", "stream_options", "metadata",
                        "user", "store", "moai", "reasoning", "include", "top_logprobs", "truncation",
                        *UNSERVED})
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
MAX_INPUT_ITEMS = 1024  # as the chat endpoint's messages (the instructions, a message of their own, count too)
ITEM_STATUSES = ("in_progress", "completed", "incomplete")
IMAGE_DETAILS = ("low", "high", "auto", "original")  # chat's image_url.detail: what the upstream is sent
VERBOSITIES = ("low", "medium", "high")
TRUNCATIONS = ("auto", "disabled")
# Responses fields taken as valid but not applied to the answer: told in ``moai.reason`` (as the chat endpoint
# tells the fields it does not read)
NOT_APPLIED = {("text", "verbosity"): "request field text.verbosity taken but not applied (no model here is sent "
                                      "a verbosity)"}
# chat error params (400s of the chat path) as the Responses request names them
PARAM_NAMES = {"messages": "input", "max_tokens": "max_output_tokens", "response_format": "text.format",
               "reasoning_effort": "reasoning.effort"}


# the request's outline in /openapi.json (what clients and fuzzers read; ``to_chat`` checks every field it takes)
REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["model", "input"], "additionalProperties": True,
    "properties": {
        "model": {"type": "string"},
        "input": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]},
        "instructions": {"type": "string"}, "max_output_tokens": {"type": "integer", "minimum": 1},
        "temperature": {"type": "number"}, "top_p": {"type": "number"}, "stream": {"type": "boolean"},
        "tools": {"type": "array", "items": {"type": "object"}}, "tool_choice": {},
        "parallel_tool_calls": {"type": "boolean"}, "text": {"type": "object"}, "reasoning": {"type": "object"},
        "metadata": {"type": "object", "additionalProperties": {"type": "string"}}, "store": {"type": "boolean"},
        "user": {"type": "string"}, "moai": {"type": "object"},
    },
}


def response_id(completion_id: str) -> str:
    """The response's id: ``resp_`` and the chat completion id's suffix."""
    return answer_id(RESPONSE_PREFIX, completion_id)


# ------------------------------------------------------------------ request


def to_chat(payload: dict[str, Any]) -> dict[str, Any]:
    """The chat-completions payload a Responses request means. Raises ``Unsupported`` (a 400) for what cannot be
    translated. Fields neither API has are passed on as they are, so that the chat path treats them as it treats
    its own unknown fields (taken, and named in ``moai.reason``)."""
    chat = chat_start(payload, "the Responses API's", CHAT_NAMES, UNSERVED, TRANSLATED, off_is_absent=True)
    messages: list[dict[str, Any]] = []
    instructions = payload.get("instructions")
    if instructions is not None:
        expect(instructions, str, "instructions", "a string")
        if instructions.strip():
            messages.append({"role": "system", "content": instructions})
    if "input" not in payload:
        raise Unsupported("required", "input")
    messages += input_messages(payload["input"])
    if len(messages) > MAX_INPUT_ITEMS:  # the client's items are within it: the instructions made one more
        raise Unsupported(f"{len(messages) - 1} input items and the instructions make {len(messages)} messages, "
                          f"more than the {MAX_INPUT_ITEMS} a request may hold (the instructions count as one)",
                          "input")
    chat["messages"] = messages
    if (limit := payload.get("max_output_tokens")) is not None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise Unsupported(f"must be a positive integer, not {limit!r}"[:120], "max_output_tokens")
        chat["max_tokens"] = limit
    for name in ("temperature", "top_p", "parallel_tool_calls", "user", "moai"):
        if payload.get(name) is not None:
            chat[name] = payload[name]
    if (options := payload.get("stream_options")) is not None:  # as the chat endpoint checks its own
        expect(options, dict, "stream_options", "an object")
        if options.get("include_obfuscation") is not None:
            expect(options["include_obfuscation"], bool, "stream_options.include_obfuscation", "a boolean")
        if payload.get("stream") is not True:
            raise Unsupported("only allowed when stream is true", "stream_options")
    if (stream := payload.get("stream")) is not None:
        chat["stream"] = stream
        if stream is True:  # usage arrives in a chunk of its own only when asked for: response.completed carries it
            chat["stream_options"] = {"include_usage": True}
    if payload.get("tools") is not None:
        chat["tools"] = [_chat_tool(t, i) for i, t in enumerate(expect(payload["tools"], list, "tools",
                                                                         "an array"))]
    if payload.get("tool_choice") is not None:
        chat["tool_choice"] = _chat_tool_choice(payload["tool_choice"])
    if payload.get("text") is not None:
        text = expect(payload["text"], dict, "text", "an object")
        one_of(text.get("verbosity"), VERBOSITIES, "text.verbosity")
        fmt = _response_format(text.get("format"))
        if fmt is not None:
            chat["response_format"] = fmt
    if payload.get("reasoning") is not None:
        effort = _reasoning(expect(payload["reasoning"], dict, "reasoning", "an object"))
        if effort is not None:
            chat["reasoning_effort"] = effort
    _check_read_elsewhere(payload)
    return chat


# ``include`` items asking for parts no answer here has (moai returns no reasoning items): the answer without them is
# what was asked, so agents that send them on every turn are served
NOTHING_TO_INCLUDE = frozenset({"reasoning.encrypted_content"})


def _check_read_elsewhere(payload: dict[str, Any]) -> None:
    """Fields taken without changing the answer, checked for their types; ``include`` and ``top_logprobs`` ask for
    what no answer here carries."""
    if (metadata := payload.get("metadata")) is not None:
        expect(metadata, dict, "metadata", "an object")
        for k, v in metadata.items():
            expect(v, str, f"metadata.{k}"[:80], "a string")
    if payload.get("store") is not None:
        expect(payload["store"], bool, "store", "a boolean")
    one_of(payload.get("truncation"), TRUNCATIONS, "truncation")
    if (include := payload.get("include")) is not None:
        for i, item in enumerate(expect(include, list, "include", "an array")):
            if isinstance(item, str) and item in NOTHING_TO_INCLUDE:  # a list or an object is no item: refused
                continue
            raise Unsupported(f"{str(item)[:60]!r} cannot be supplied here (moai's answers carry no logprobs, "
                              "reasoning or tool-call outputs): send the request without it", f"include[{i}]",
                              "unsupported_parameter")
    top = payload.get("top_logprobs")
    if top is not None and top != 0:
        raise Unsupported("token log-probabilities are not supported (an answer may be written by several models)",
                          "top_logprobs", "unsupported_parameter")


def _reasoning(reasoning: dict[str, Any]) -> str | None:
    """``reasoning.effort`` as chat's ``reasoning_effort``; summaries are refused (no answer here carries one)."""
    for name in ("summary", "generate_summary"):
        if reasoning.get(name) is not None:
            raise Unsupported("reasoning summaries are not supported: send the request without them",
                              f"reasoning.{name}", "unsupported_parameter")
    effort = reasoning.get("effort")
    if effort is None:
        return None
    if effort not in EFFORTS:
        raise Unsupported(f"must be one of {', '.join(map(repr, EFFORTS))}", "reasoning.effort")
    return str(effort)


def input_messages(value: Any) -> list[dict[str, Any]]:
    """``input`` (a string, or a list of items) as chat messages."""
    if isinstance(value, str):
        if not value.strip():
            raise Unsupported("must not be empty", "input")
        return [{"role": "user", "content": value}]
    items = expect(value, list, "input", "a string or an array of input items")
    if not items:
        raise Unsupported("must not be empty", "input")
    if len(items) > MAX_INPUT_ITEMS:
        raise Unsupported(f"{len(items)} items is more than the {MAX_INPUT_ITEMS} a request may hold", "input")
    messages: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        param = f"input[{i}]"
        expect(item, dict, param, "an input item (an object)")
        kind = item.get("type", "message")
        if kind in ("message", "function_call", "function_call_output", "reasoning") or (
                kind is None and "role" in item):
            _item_fields(item, param)
        if kind == "message" or (kind is None and "role" in item):
            messages.append(_message(item, param))
        elif kind == "function_call":
            call = {"id": text_field(item, "call_id", param), "type": "function",
                    "function": {"name": text_field(item, "name", param),
                                 "arguments": text_field(item, "arguments", param)}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":  # its text, or calls made alongside: one turn
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            content = output if isinstance(output, str) else _parts(output, f"{param}.output", "tool")
            messages.append({"role": "tool", "tool_call_id": text_field(item, "call_id", param), "content": content})
        elif kind == "reasoning":
            continue  # a model's private reasoning replayed from another service: no chat upstream takes it
        elif kind == "item_reference":
            raise Unsupported("moai keeps no items: send the item itself", f"{param}.type", "unsupported_parameter")
        else:
            raise Unsupported(f"input items of type {str(kind)[:40]!r} are not supported (moai takes messages, "
                              "function_call and function_call_output items)", f"{param}.type",
                              "unsupported_parameter")
    return messages


def _item_fields(item: dict[str, Any], param: str) -> None:
    """An item's ``id`` and ``status`` (an earlier response's output items carry them), checked though not sent on."""
    if item.get("id") is not None:
        expect(item["id"], str, f"{param}.id", "a string")
    one_of(item.get("status"), ITEM_STATUSES, f"{param}.status")


def _message(item: dict[str, Any], param: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in ("user", "system", "developer", "assistant"):
        raise Unsupported(f"must be 'user', 'system', 'developer' or 'assistant', not {str(role)[:40]!r}",
                          f"{param}.role")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    parts = _parts(content, f"{param}.content", role)
    if role == "assistant":  # an earlier answer: its text (chat assistant messages take text only)
        return {"role": role, "content": "".join(p["text"] for p in parts)}
    return {"role": role, "content": parts}


def _parts(content: Any, param: str, role: str) -> list[dict[str, Any]]:
    """Content parts in chat's form: text, and (for a user) images and files sent inline or by URL."""
    parts = []
    for j, part in enumerate(expect(content, list, param, "a string or an array of content parts")):
        where = f"{param}[{j}]"
        expect(part, dict, where, "a content part (an object)")
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": text_field(part, "text", where)})
        elif kind == "refusal" and role == "assistant":
            parts.append({"type": "text", "text": text_field(part, "refusal", where)})
        elif kind == "input_image" and role == "user":
            if part.get("file_id") is not None:
                raise Unsupported("moai keeps no files: send the image as image_url (a URL or a data: URL)",
                                  f"{where}.file_id", "unsupported_parameter")
            image = {"url": text_field(part, "image_url", where)}
            if part.get("detail") is not None:
                image["detail"] = one_of(part["detail"], IMAGE_DETAILS, f"{where}.detail")
            parts.append({"type": "image_url", "image_url": image})
        elif kind == "input_file" and role == "user":
            for name, why in (("file_id", "moai keeps no files"), ("file_url", "moai fetches no files")):
                if part.get(name) is not None:
                    raise Unsupported(f"{why}: send the file inline as file_data", f"{where}.{name}",
                                      "unsupported_parameter")
            if part.get("file_data") is None:
                raise Unsupported("moai keeps no files and fetches none: send the file inline as file_data",
                                  f"{where}.file_data", "unsupported_parameter")
            file = {"file_data": text_field(part, "file_data", where)}
            if part.get("filename") is not None:
                file["filename"] = text_field(part, "filename", where)
            parts.append({"type": "file", "file": file})
        else:
            raise Unsupported(f"content parts of type {str(kind)[:40]!r} are not supported in a {role} message",
                              f"{where}.type", "unsupported_parameter")
    return parts


def _chat_tool(tool: Any, i: int) -> dict[str, Any]:
    """A function tool in chat's form; any other kind (web_search, file_search, ...) is refused by name."""
    param = f"tools[{i}]"
    expect(tool, dict, param, "a tool (an object)")
    kind = tool.get("type")
    if kind != "function":
        raise Unsupported(f"tools of type {str(kind)[:40]!r} are not supported: moai serves function tools only "
                          "(run the tool yourself and define it as a function)", f"{param}.type",
                          "unsupported_parameter")
    if isinstance(tool.get("function"), dict):  # already in chat's form: checked as such, sent as it is
        _function_spec(tool["function"], f"{param}.function")
        return tool
    return {"type": "function", "function": _function_spec(tool, param)}


def _function_spec(source: dict[str, Any], param: str) -> dict[str, Any]:
    """A function's definition as chat's ``function``, each field checked under the request's name for it."""
    spec: dict[str, Any] = {"name": named(source, param)}
    for name, types, what in (("description", str, "a string"), ("parameters", dict, "a JSON Schema object"),
                              ("strict", bool, "a boolean")):
        if source.get(name) is not None:
            spec[name] = expect(source[name], types, f"{param}.{name}", what)
    return spec


def _chat_tool_choice(choice: Any) -> str | dict[str, Any]:
    if isinstance(choice, str):
        return choice  # checked by the chat path: "auto", "none" or "required"
    expect(choice, dict, "tool_choice", "a string or an object")
    if choice.get("type") != "function":
        raise Unsupported(f"tool choices of type {str(choice.get('type'))[:40]!r} are not supported (send 'auto', "
                          "'none', 'required' or {\"type\": \"function\", \"name\": ...})", "tool_choice.type",
                          "unsupported_parameter")
    if isinstance(choice.get("function"), dict):
        return choice
    return {"type": "function", "function": {"name": text_field(choice, "name", "tool_choice")}}


def _response_format(fmt: Any) -> dict[str, Any] | None:
    """``text.format`` as chat's ``response_format``."""
    if fmt is None:
        return None
    expect(fmt, dict, "text.format", "an object")
    kind = fmt.get("type")
    if kind in ("text", "json_object"):
        return {"type": kind}
    if kind != "json_schema":
        raise Unsupported(f"type must be 'text', 'json_object' or 'json_schema', not {str(kind)[:40]!r}",
                          "text.format.type")
    spec: dict[str, Any] = {"name": named(fmt, "text.format"),
                            "schema": expect(fmt.get("schema"), dict, "text.format.schema", "a JSON Schema object")}
    for name, types, what in (("description", str, "a string"), ("strict", bool, "a boolean")):
        if fmt.get(name) is not None:
            spec[name] = expect(fmt[name], types, f"text.format.{name}", what)
    return {"type": "json_schema", "json_schema": spec}


# ------------------------------------------------------------------ response


def echo(payload: dict[str, Any]) -> dict[str, Any]:
    """What a response object repeats of its request (as OpenAI's do), tools in the Responses form."""
    tools = []
    for t in payload.get("tools") or []:
        fn = t.get("function") if isinstance(t.get("function"), dict) else t
        tools.append({"type": "function", "name": fn.get("name"), "description": fn.get("description"),
                      "parameters": fn.get("parameters"), "strict": fn.get("strict")})
    text = payload.get("text") or {}
    effort = (payload.get("reasoning") or {}).get("effort")
    return {
        "instructions": payload.get("instructions"),
        "max_output_tokens": payload.get("max_output_tokens"),
        "temperature": payload.get("temperature"),
        "top_p": payload.get("top_p"),
        "tools": tools,
        "tool_choice": payload.get("tool_choice") or "auto",
        "parallel_tool_calls": payload.get("parallel_tool_calls") is not False,
        "text": {**text, "format": text.get("format") or {"type": "text"}},
        "metadata": payload.get("metadata") or {},
        "reasoning": {"effort": effort, "summary": None},
        "previous_response_id": None,
        "store": False,  # nothing is kept to retrieve
        "truncation": payload.get("truncation") or "disabled",
        "background": False,
        "user": payload.get("user"),
    }


def skeleton(rid: str, created: float, model: Any, payload: dict[str, Any], status: str) -> dict[str, Any]:
    """A response object before its output: what ``response.created`` carries and the final object starts from."""
    return {"id": rid, "object": "response", "created_at": created, "status": status, "error": None,
            "incomplete_details": None, "model": model, "output": [], "usage": None, **echo(payload)}


def finish(obj: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
    """Status from the chat finish reason: cut at the limit (or filtered) is ``incomplete``."""
    reason = {"length": "max_output_tokens", "content_filter": "content_filter"}.get(finish_reason or "")
    obj["status"] = "incomplete" if reason else "completed"
    obj["incomplete_details"] = {"reason": reason} if reason else None
    if not reason:
        obj["completed_at"] = int(time.time())  # whole seconds, as created_at
    return obj


def usage(u: dict[str, Any] | None) -> dict[str, Any] | None:
    """Chat usage as the Responses API counts it."""
    if u is None:
        return None
    cached = (u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (u.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return {"input_tokens": u.get("prompt_tokens", 0), "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": u.get("completion_tokens", 0), "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": u.get("total_tokens", 0)}


def message_item(item_id: str, text: str | None, refusal: str | None, status: str) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if text or not refusal:
        content.append({"type": "output_text", "text": text or "", "annotations": [], "logprobs": []})
    if refusal:
        content.append({"type": "refusal", "refusal": refusal})
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content}


def call_item(item_id: str, call_id: str, name: str, arguments: str, status: str = "completed") -> dict[str, Any]:
    return {"type": "function_call", "id": item_id, "call_id": call_id, "name": name, "arguments": arguments,
            "status": status}


def from_completion(completion: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    """A chat completion (as the chat endpoint answers) as a response object."""
    suffix = completion["id"].removeprefix(CHAT_PREFIX)
    choice = completion["choices"][0]
    message = choice["message"]
    obj = skeleton(response_id(completion["id"]), completion["created"], completion["model"], payload, "completed")
    finish(obj, choice.get("finish_reason"))
    status = "incomplete" if obj["status"] == "incomplete" else "completed"
    calls = message.get("tool_calls") or []
    if message.get("content") or message.get("refusal") or not calls:
        obj["output"].append(message_item(f"msg_{suffix}", message.get("content"), message.get("refusal"), status))
    for i, call in enumerate(calls):
        fn = call.get("function") or {}
        obj["output"].append(call_item(f"fc_{suffix}_{i}", call.get("id") or f"call_{suffix}_{i}",
                                       fn.get("name") or "", fn.get("arguments") or ""))
    obj["usage"] = usage(completion.get("usage"))
    if "moai" in completion:
        obj["moai"] = noted(completion["moai"], payload)
    return obj


def noted(summary: Any, payload: dict[str, Any]) -> Any:
    """The ``moai`` object with the Responses fields taken but not applied (``NOT_APPLIED``) in its ``reason``."""
    return with_notes(summary, [note for (field, sub), note in NOT_APPLIED.items()
                                if isinstance(payload.get(field), dict) and payload[field].get(sub) is not None])


def translate(response: Response, payload: dict[str, Any]) -> Response:
    """The chat path's answer as the Responses API gives it, headers kept: a completion as a response object, a
    stream as typed events (``responses_stream``); an error as it is, a chat param named as the request names it."""
    from moai.server.responses_stream import events

    rid = response_id(response.headers.get("x-moai-request-id") or "")
    return translated(response, lambda body: events(body, payload, rid), PARAM_NAMES,
                      lambda data: from_completion(data, payload))

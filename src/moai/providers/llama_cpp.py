"""In-process local models: llama-cpp-python on GGUF files from the local zoo.

llama.cpp is synchronous and not thread-safe per model, so each model gets a lock and runs in a worker
thread; streamed tokens cross back to the event loop through a queue. When several local models generate
at once they share the CPU: each call gets ``cores // active_calls`` threads (one each on 2 cores), since
oversubscribing halves everyone's speed. A call whose caller went away (or timed out) stops between two
short steps of its prompt, or is skipped if it is still waiting for the model (see ``llama_prefill``). A process
that exits stops its calls and waits for their threads to leave llama.cpp first (``stop_generations``).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from moai.catalog import ModelCard
from moai.providers.base import (
    ChatParams,
    Delta,
    Provider,
    ProviderError,
    ProviderRequestError,
    ProviderUnavailable,
    Usage,
    queue_entered,
    queue_left,
)
from moai.providers.json_schema_check import (
    SchemaCheck,
    ToolArgumentsCheck,
    schema_check,
    schema_of,
    strict_functions,
    tool_arguments_check,
)
from moai.providers.tool_calls import merge_tool_call_deltas, parse_tool_calls

log = logging.getLogger(__name__)

# llama.cpp's OpenMP threads spin while waiting; with any other load on a small machine that collapses
# throughput (measured: 0.5 vs 41 tok/s on 2 busy cores). Passive waiting must be set before libllama loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

_active_lock = threading.Lock()
_active_calls = 0
_load_lock = threading.Lock()
_models: dict[str, Any] = {}  # path -> Llama, shared by every provider instance in the process
# from the worker: it waits for the model (another call may hold it), then holds it; that wait is not its latency
WAITING, SERVING = object(), object()
_calls_lock = threading.Lock()
_calls: dict[threading.Thread, threading.Event] = {}  # generation threads not yet finished, and what stops each
# How long an exiting process waits for its generations to stop. A cancelled call leaves llama.cpp after the token or
# 64-token prompt step in progress (about a second for the 1.5B model on 2 cores); the margin is for a loaded machine.
STOP_WAIT_S = 15.0


def stop_generations(timeout: float = STOP_WAIT_S) -> bool:
    """Cancel every local generation in flight (or waiting for its model) and wait, ``timeout`` seconds at most in
    all, for their threads to leave llama.cpp. An interrupted run must do this before it exits: its worker threads
    outlive the event loop, and the interpreter's exit frees the models under a running decode (SIGSEGV).
    Returns whether every thread has left."""
    with _calls_lock:
        calls = list(_calls.items())
    for _, cancel in calls:
        cancel.set()
    deadline = time.monotonic() + timeout
    for thread, _ in calls:
        if thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))
    return not any(thread.is_alive() for thread, _ in calls)


@atexit.register
def _close_models() -> None:
    """Free llama.cpp models while the interpreter is intact (their finalizers fail during teardown): after the
    generations still running have stopped, and never one still in use (freeing it under a decode crashes the
    process; left alone, it goes with the process)."""
    stop_generations()
    for llm in list(_models.values()):
        lock = getattr(llm, "lock", None)
        if lock is not None and not lock.acquire(timeout=1.0):
            continue
        try:
            with contextlib.suppress(Exception):
                llm.close()
        finally:
            if lock is not None:
                lock.release()
    _models.clear()


def _threads_for_call(card: ModelCard) -> int:
    cores = os.cpu_count() or 2
    with _active_lock:
        active = max(1, _active_calls)
    share = max(1, cores // active)
    return min(card.threads, share) if card.threads else share


def text_messages(model: str, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages with OpenAI content parts flattened to plain text (chat templates concatenate strings).

    Text parts are joined by newlines. Any other part (an image, audio, a file) is refused with a request
    error rather than dropped: a GGUF chat model would answer without having seen it. OpenAI's ``developer``
    role is its ``system`` role under a new name, and the one these models' templates were trained with.
    """
    out = []
    for m in messages:
        if m.get("role") == "developer":
            m = {**m, "role": "system"}
        content = m.get("content")
        if content is None:  # an assistant turn that called tools or refused: templates read content as text
            m = {**m, "content": m.get("refusal") or ""}
        elif isinstance(content, list):
            texts = []
            for part in content:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                if kind != "text":
                    raise ProviderRequestError(model, f"reads text only; the request has a content part of type "
                                                      f"{kind!r}", code="unsupported_request", param="messages")
                texts.append(str(part.get("text") or ""))
            m = {**m, "content": "\n".join(texts)}
        if m.get("tool_calls"):
            m = {**m, "tool_calls": [_templated_call(c) for c in m["tool_calls"]]}
        out.append(m)
    return out


def _templated_call(call: Any) -> Any:
    """An earlier tool call as chat templates show it: its ``arguments`` an object, as the model wrote them (OpenAI
    sends them as a JSON string, which templates such as Qwen's ``tojson`` a second time: the model then saw its
    own call double-encoded, and echoed it or called again instead of answering)."""
    fn = call.get("function") if isinstance(call, dict) else None
    args = fn.get("arguments") if isinstance(fn, dict) else None
    if not isinstance(args, str):
        return call
    try:
        parsed = json.loads(args)
    except ValueError:
        return call
    return {**call, "function": {**fn, "arguments": parsed}} if isinstance(parsed, dict) else call


# regex classes llama.cpp's grammars lack, as the classes they stand for: outside brackets, and inside them
_CLASSES = {"d": "[0-9]", "w": "[a-zA-Z0-9_]", "s": "[ \\t\\n\\r]"}
_IN_CLASS = {"d": "0-9", "w": "a-zA-Z0-9_", "s": " \\t\\n\\r"}
_PLAIN = {".": "[.]", "-": "-", "/": "/", "$": "[$]"}


def _grammar_pattern(pattern: str) -> str | None:
    """``pattern`` as llama.cpp's grammar takes it: ``\\d``, ``\\w``, ``\\s`` spelled out as classes; None when
    another escape or a group construct (``(?``) is left, which its grammar parser cannot read (an unknown escape
    made it fail, and llama-cpp-python then crashed the process: one request took the server down). The schema
    check after generation holds the answer to the pattern as written."""
    out: list[str] = []
    i, in_class = 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            table = _IN_CLASS if in_class else _CLASSES
            if nxt in table:
                out.append(table[nxt])
            elif not in_class and nxt in "+*?()[]{}|":
                out.append(c + nxt)  # escaped outside brackets: the converter reads these as literals
            elif not in_class and nxt in _PLAIN:
                out.append(_PLAIN[nxt])  # which it would copy with their backslash, an escape its grammar lacks
            else:
                return None
            i += 2
            continue
        if c == "[" and not in_class:
            in_class = True
        elif c == "]" and in_class:
            in_class = False
        elif c == "(" and pattern.startswith("(?", i):
            return None
        out.append(c)
        i += 1
    return "".join(out)


def grammar_schema(schema: Any) -> Any:
    """A JSON schema as llama.cpp's grammar may be built from it: each ``pattern`` it cannot read rewritten or
    left out (``_grammar_pattern``); the schema check after generation still holds the answer to the original."""
    if isinstance(schema, list):
        return [grammar_schema(v) for v in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: grammar_schema(v) for k, v in schema.items() if k != "pattern"}
    pattern = schema.get("pattern")
    if isinstance(pattern, str) and (readable := _grammar_pattern(pattern)) is not None:
        out["pattern"] = readable
    elif "pattern" in schema and not isinstance(pattern, str):  # a property named "pattern": a schema of its own
        out["pattern"] = grammar_schema(pattern)
    return out


def _grammar_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """A tool whose parameters llama.cpp may build a grammar from (``grammar_schema``)."""
    fn = tool.get("function")
    if not isinstance(fn, dict) or "parameters" not in fn:
        return tool
    return {**tool, "function": {**fn, "parameters": grammar_schema(fn["parameters"])}}


def llama_response_format(fmt: dict[str, Any] | None) -> dict[str, Any] | None:
    """OpenAI's ``response_format`` as llama-cpp-python takes it: it constrains output to JSON (to a schema
    when one is given) for ``{"type": "json_object", "schema": ...}``, but ignores OpenAI's ``json_schema``
    kind, which would leave structured-output clients with free text."""
    if not fmt or fmt.get("type") == "text":
        return None
    if fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        return {"type": "json_object", **({"schema": grammar_schema(schema)} if schema else {})}
    if isinstance(fmt.get("schema"), dict):
        return {**fmt, "schema": grammar_schema(fmt["schema"])}
    return fmt


def function_tools(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    return [t for t in tools or [] if t.get("type", "function") == "function" and isinstance(t.get("function"), dict)]


def required_call_format(tools: list[dict[str, Any]]) -> dict[str, Any]:
    """``tool_choice: "required"`` as a grammar: the answer must be one call, ``{"name", "arguments"}``, to one of
    the offered functions with arguments in its schema (llama-cpp-python constrains only a named choice)."""
    calls = [{"type": "object", "required": ["name", "arguments"],
              "properties": {"name": {"const": t["function"].get("name")},
                             "arguments": grammar_schema(t["function"].get("parameters") or {"type": "object"})}}
             for t in function_tools(tools)]
    return {"type": "json_object", "schema": calls[0] if len(calls) == 1 else {"anyOf": calls}}


_CONTEXT_OVERFLOW = re.compile(r"Requested tokens \((\d+)\) exceed context window of (\d+)")


def generation_error(model: str, e: Exception) -> ProviderError:
    """A llama.cpp failure as a provider error: a prompt longer than the context window is the request's fault
    (OpenAI's ``context_length_exceeded``, which the text-length estimate before routing can miss), anything
    else the model's."""
    overflow = _CONTEXT_OVERFLOW.search(str(e)) if isinstance(e, ValueError) else None
    if overflow:
        tokens, window = overflow.groups()
        return ProviderRequestError(
            model, f"this request is {tokens} tokens, more than the model's context window of {window} allows",
            code="context_length_exceeded", param="messages")
    import jinja2

    if isinstance(e, jinja2.TemplateError):  # the conversation, not the model: another request may render
        return ProviderRequestError(model, f"its chat template cannot render these messages: {e}",
                                    code="unsupported_request", param="messages")
    return ProviderUnavailable(model, f"generation failed: {e}", final=False)


def offers_tools(params: ChatParams) -> bool:
    """Whether the model may answer with tool calls: tools were offered, and ``tool_choice`` is not "none"."""
    return bool(params.tools) and params.tool_choice != "none"


def _complete_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


SCHEMA_TRIES = 3  # answers generated at most for a json_schema request (or calls to strict functions): the first,
# then two shown what was wrong


def resolve_path(card: ModelCard) -> str:
    """The GGUF file for a card: an explicit path, or the zoo entry (which must be pulled)."""
    from moai import local_models

    if card.path:
        path = os.path.expanduser(card.path)
    else:
        assert card.package is not None
        path = str(local_models.model_path(card.package))
    if not os.path.exists(path):
        hint = f" (run: moai models pull {card.package})" if card.package else ""
        raise ProviderUnavailable(card.name, f"model file not found: {path}{hint}")
    return path


def load_llama(card: ModelCard) -> Any:
    """Load (once per process) the llama.cpp model for a card."""
    path = resolve_path(card)
    with _load_lock:
        if path not in _models:
            try:
                from moai.providers.llama_prefill import InterruptibleLlama
            except ImportError as e:  # pragma: no cover - depends on the install
                raise ProviderUnavailable(card.name, "llama-cpp-python is not installed") from e
            _models[path] = InterruptibleLlama(
                model_path=path,
                n_ctx=card.context,
                n_threads=card.threads or os.cpu_count() or 2,
                verbose=False,
            )
        return _models[path]


LLAMA_NAMES = {"repetition_penalty": "repeat_penalty"}  # llama-cpp-python's names for the request's fields


def call_kwargs(model: str, params: ChatParams) -> dict[str, Any]:
    """What ``create_chat_completion`` is called with for ``params``: the messages as the chat template reads them,
    the tools it shows, the sampling and the constraints."""
    kw: dict[str, Any] = {"messages": text_messages(model, params.messages), "max_tokens": params.max_tokens}
    kw["temperature"] = 0.0 if params.temperature is None else params.temperature
    for name in ("top_p", "frequency_penalty", "presence_penalty", "seed"):
        value = getattr(params, name)
        if value is not None:
            kw[name] = value
    # the sampling extras only when asked for: llama-cpp-python's own defaults (top_k 40, min_p 0.05, no repeat
    # penalty) stand otherwise. top_k 0 is "off" there too (llama.cpp's top-k sampler passes every token for k <= 0)
    for name, value in params.sampling_extras().items():
        kw[LLAMA_NAMES.get(name, name)] = value
    stop = [s for s in params.stop or [] if s]  # an empty stop string matches at once: no answer at all
    if stop:
        kw["stop"] = stop
    response_format = llama_response_format(params.response_format)
    if offers_tools(params):  # with "none" the template does not show them: the model must answer in text
        kw["tools"] = [_grammar_tool(t) for t in params.tools]
        functions = function_tools(params.tools)
        if params.tool_choice == "required" and len(functions) == 1:
            kw["tool_choice"] = {"type": "function", "function": {"name": functions[0]["function"].get("name")}}
        elif params.tool_choice == "required" and functions:
            response_format = required_call_format(functions)  # a call is the answer the client asked for
        elif params.tool_choice is not None:
            kw["tool_choice"] = params.tool_choice
    if response_format is not None:
        kw["response_format"] = response_format
    return kw


def prompt_tokens(card: ModelCard, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
                  tool_choice: Any = None) -> int | None:
    """The prompt's tokens as this model reads it (``local_tokens``: the file's tokenizer and chat template), for the
    context check before routing; None when it cannot be counted (no file, a vocabulary that does not load, a part
    it cannot read, a template that cannot render the messages): the caller's estimate stands."""
    from moai.providers import local_tokens

    try:
        path = resolve_path(card)
        kw = call_kwargs(card.name, ChatParams(messages=messages, tools=tools, tool_choice=tool_choice))
        tok = local_tokens.tokenizer(path)
        return tok.count(kw["messages"], kw.get("tools"), kw.get("tool_choice")) if tok is not None else None
    except Exception as e:  # noqa: BLE001 - the call would fail the same way, and say why
        log.debug("prompt for %s not counted: %s", card.name, e)
        return None


class LlamaCppProvider(Provider):
    """A GGUF model run in this process."""

    def __init__(self, card: ModelCard) -> None:
        super().__init__(card)
        # its vocabulary, for the context check before routing (``prompt_tokens``): loaded now in a thread of its
        # own, as a server makes every provider at start, so that no request waits for it on the event loop
        from moai.providers import local_tokens

        with contextlib.suppress(ProviderError):
            local_tokens.load_soon(resolve_path(card))

    async def warm(self) -> None:
        """Load the GGUF file now; a missing file is left for the call itself to report."""
        with contextlib.suppress(ProviderError):
            await asyncio.to_thread(load_llama, self.card)

    def _kwargs(self, params: ChatParams) -> dict[str, Any]:
        return call_kwargs(self.name, params)

    def _run(self, params: ChatParams, emit: Any, cancel: threading.Event, check: SchemaCheck | None = None,
             tool_check: ToolArgumentsCheck | None = None) -> None:
        """Worker thread: the call (``_call``), then forgotten by ``stop_generations``."""
        try:
            self._call(params, emit, cancel, check, tool_check)
        finally:
            with _calls_lock:
                _calls.pop(threading.current_thread(), None)

    def _call(self, params: ChatParams, emit: Any, cancel: threading.Event, check: SchemaCheck | None,
              tool_check: ToolArgumentsCheck | None) -> None:
        """Generate, pushing (delta | exception | None) to ``emit``; ``check``: the response
        format's schema, ``tool_check``: the strict functions' parameters, each made once for the call
        (``schema_check``, ``tool_arguments_check``)."""
        global _active_calls
        try:
            llm = load_llama(self.card)
        except Exception as e:  # noqa: BLE001 - surfaced to the caller as a provider error
            emit(e if isinstance(e, ProviderUnavailable) else ProviderUnavailable(self.name, str(e)))
            return
        emit(WAITING)
        with llm.lock:  # the model's own: every provider (two Mixtures, two cards of one file) shares the model
            if cancel.is_set():  # its caller left (or timed out) while it waited for the model: read nothing
                emit(None)
                return
            emit(SERVING)
            with _active_lock:
                _active_calls += 1
            # counted as the model read and generated them: the context's size less the streamed pieces is off
            # by the last sampled token (never evaluated) and by the tokens a stop sequence held back
            usage = Usage()
            try:
                import llama_cpp

                llm.begin(cancel)  # a prompt is read in steps this event stops between
                n = _threads_for_call(self.card)
                llama_cpp.llama_set_n_threads(llm._ctx.ctx, n, n)
                if params.seed is not None:
                    # a prompt partly in the cache is evaluated in other batches, which moves the logits a little:
                    # enough to sample another answer. A seeded call reads its prompt afresh, to be reproducible.
                    llm.reset()
                cpu0 = time.process_time()
                kw = self._kwargs(params)
                tools = offers_tools(params)
                if tools and params.tool_choice == "required":
                    check = None  # a required call is the answer (its grammar replaced the response format)
                tries = 0
                answers: list[str] = []  # answers that broke the schema, each shown to the next try
                problem: str | None = None
                judge: SchemaCheck | ToolArgumentsCheck | None = None  # the check the last answer broke
                while True:
                    try:
                        text, calls, finish = self._generate(llm, kw, params, emit, cancel, hold=check is not None)
                    except ValueError as e:
                        if not answers or not _CONTEXT_OVERFLOW.search(str(e)):
                            raise
                        break  # the turns shown to a retry do not fit the context: the last answer's problem stands
                    tries += 1
                    usage.add(Usage(llm.prompt_tokens, llm.completion_tokens))
                    # an answer cut short (length) or abandoned is not judged: its finish reason says so
                    shown, problem, judge = text, None, None
                    if calls and tool_check is not None and finish == "tool_calls":
                        shown, problem, judge = tool_check.shown(calls), tool_check.problems(calls), tool_check
                    elif check is not None and finish == "stop" and not calls:
                        problem, judge = check.problems(text), check
                    if problem is None or tries >= SCHEMA_TRIES or shown in answers:  # a repeat: the model is stuck
                        break
                    answers.append(shown)
                    assert judge is not None
                    kw = {**kw, "messages": [*kw["messages"], *judge.feedback(shown, problem)]}
                if problem is not None and judge is not None and judge.strict:
                    raise judge.failure(problem, tries, usage)  # never an answer that breaks a strict schema
                if (tools or check) and finish != "cancelled":
                    emit(Delta(text="" if calls else text, tool_calls=calls))
                emit(Delta(finish_reason=finish, usage=usage, cpu_s=time.process_time() - cpu0))
            except Exception as e:  # noqa: BLE001
                error = e if isinstance(e, ProviderError) else generation_error(self.name, e)
                if error.usage is None and usage.total_tokens:  # the tries made before it are billed all the same
                    error.usage = usage
                emit(error)
            finally:
                llm.begin(None)
                with _active_lock:
                    _active_calls -= 1
                emit(None)

    def _generate(self, llm: Any, kw: dict[str, Any], params: ChatParams, emit: Any, cancel: threading.Event,
                  hold: bool) -> tuple[str, list[dict[str, Any]] | None, str]:
        """One generation (under the model's lock): its text streamed out as it comes, or held back when tools are
        offered (the answer may be a call) or ``hold`` (it is checked first). Returns the held text, the calls
        made, and the finish reason."""
        from moai.providers.llama_prefill import Cancelled

        chunks: Iterator[dict[str, Any]] = llm.create_chat_completion(stream=True, **kw)
        n_out = 0
        finish = "stop"
        tools = offers_tools(params)
        hold = hold or tools
        held: list[str] = []
        called: list[dict[str, Any]] = []  # calls llama.cpp made itself (a named tool_choice's grammar)
        try:
            for chunk in chunks:
                if cancel.is_set():  # the caller went away: stop spending CPU on it
                    finish = "cancelled"
                    break
                choice = chunk["choices"][0]
                delta = choice.get("delta", {})
                text = delta.get("content") or ""
                tool_calls = delta.get("tool_calls")
                if text or tool_calls:
                    n_out += 1
                    if hold:
                        held.append(text)
                        merge_tool_call_deltas(called, tool_calls or [])
                    elif n_out == 1:  # the prompt's exact size is known now: a stream cut short keeps it
                        emit(Delta(text=text, usage=Usage(llm.prompt_tokens, llm.completion_tokens)))
                    else:
                        emit(Delta(text=text))
                if choice.get("finish_reason"):
                    finish = choice["finish_reason"]
        except Cancelled:  # stopped between two steps of its prompt (or of a token): the model is free
            finish = "cancelled"
        calls: list[dict[str, Any]] | None = None
        if tools and finish != "cancelled":
            if called:  # arguments cut short by max_tokens are not a finished call
                done = all(_complete_json(c["function"]["arguments"]) for c in called)
                calls = called
                finish = "tool_calls" if done else "length"
            else:
                calls = parse_tool_calls("".join(held), params.tools)
                if calls:
                    finish = "tool_calls"
        return "".join(held), calls, finish

    async def stream(self, params: ChatParams) -> AsyncIterator[Delta]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancel = threading.Event()

        def emit(item: Any) -> None:
            if loop.is_closed():  # the caller's loop is gone (interrupted run): nobody is listening
                cancel.set()
                return
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(queue.put_nowait, item)

        text_messages(self.name, params.messages)  # refuse what a text-only model cannot read before loading it
        # and a response format's schema that is not one: read off the loop (a large one takes a while), once
        check = (await asyncio.to_thread(schema_check, self.name, params.response_format)
                 if schema_of(params.response_format) is not None else None)
        tool_check = (await asyncio.to_thread(tool_arguments_check, self.name, params.tools)
                      if offers_tools(params) and strict_functions(params.tools) else None)
        # daemon: a call stuck in llama.cpp cannot hold the process open (an exit waits for it, a bounded time)
        worker = threading.Thread(target=self._run, args=(params, emit, cancel, check, tool_check), daemon=True)
        with _calls_lock:
            _calls[worker] = cancel  # before it runs: stop_generations must see every call that may enter llama.cpp
        try:
            worker.start()
        except BaseException:
            with _calls_lock:
                _calls.pop(worker, None)
            raise
        try:
            while True:
                item = await queue.get()
                if item is WAITING:
                    queue_entered()
                    continue
                if item is SERVING:
                    queue_left()
                    continue
                if item is None:
                    break
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            cancel.set()

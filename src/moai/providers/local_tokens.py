"""A local model's own count of a prompt: its GGUF file's vocabulary and chat template, without its weights.

The context check before routing counts a prompt by a rule of thumb (``moai.mixture.estimate_tokens``), which on
these models' tokenizers is off by a factor of up to 4 either way (measured on SmolLM2 and Qwen2.5: digits 4.0,
base64 3.2, emoji 3.0, Thai 1.9, code 1.9 times the estimate; English prose 0.7, runs of spaces 0.25-0.35), while
llama.cpp refuses a prompt one token past the context. A vocabulary-only load (``vocab_only``) takes 0.1-0.6 s and
15-48 MB once per file and process; a count then takes ~0.75 ms per 1,000 ASCII characters (~1.5 ms for Thai).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

# per-message framing a template without a Jinja form may add (role markers, separators): a bound, not a count
FRAMING_TOKENS = 8
JOIN_S = 5.0  # how long an exiting process waits for a load in progress (one takes 0.6 s at most, measured)


class Tokenizer:
    """One file's vocabulary and chat template (llama.cpp's own functions: ``Llama`` would also make a context, and
    silences a load by pointing the process's stdout and stderr at /dev/null, which a load in another thread then
    restores wrongly); counts from several threads at once take turns."""

    def __init__(self, model: Any) -> None:
        import llama_cpp
        from llama_cpp import llama_chat_format

        self.model = model
        self.vocab = llama_cpp.llama_model_get_vocab(model)
        self.lock = threading.Lock()
        self.formatter: Callable[..., Any] | None = None
        raw = llama_cpp.llama_model_chat_template(model, None)
        template = raw.decode("utf-8") if raw else None
        # rendered from the file's template, as llama-cpp-python does unless it knows the template as a built-in
        if template and llama_chat_format.guess_chat_format_from_gguf_metadata(
                {"tokenizer.chat_template": template}) is None:
            eos, bos = llama_cpp.llama_vocab_eos(self.vocab), llama_cpp.llama_vocab_bos(self.vocab)
            self.formatter = llama_chat_format.Jinja2ChatFormatter(
                template=template, eos_token=self._text(eos), bos_token=self._text(bos), stop_token_ids=[eos])

    def _text(self, token: int) -> str:
        import llama_cpp

        return llama_cpp.llama_vocab_get_text(self.vocab, token).decode("utf-8", "replace") if token != -1 else ""

    def tokens(self, text: str, add_bos: bool, special: bool) -> int:
        """How many tokens ``text`` is, as ``Llama.tokenize`` would make it (llama.cpp tells the count of a text
        it has no room to write). Called with ``lock`` held; a closed vocabulary is never read (freed memory)."""
        import llama_cpp

        if self.model is None:
            raise RuntimeError("the vocabulary was closed")
        data = text.encode("utf-8")
        n = llama_cpp.llama_tokenize(self.vocab, data, len(data), None, 0, add_bos, special)
        return -n if n < 0 else n

    def count(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
              tool_choice: Any = None) -> int:
        """The tokens llama.cpp reads for these messages and tools: the prompt its chat template renders,
        tokenized as ``create_chat_completion`` tokenizes it. A file whose template llama-cpp-python replaces by a
        built-in format is counted as a bound: each message's role and text, ``FRAMING_TOKENS`` of framing each,
        and the tools as JSON."""
        with self.lock:
            if self.formatter is not None:
                rendered = self.formatter(messages=messages, tools=tools, tool_choice=tool_choice)
                return self.tokens(rendered.prompt, add_bos=not rendered.added_special, special=True)
            text = "".join(f"{m.get('role', '')}\n{m.get('content') or ''}\n" for m in messages)
            if tools:
                text += json.dumps(tools)
            return self.tokens(text, add_bos=True, special=False) + FRAMING_TOKENS * len(messages)

    def close(self) -> None:
        import llama_cpp

        with self.lock:
            if self.model is not None:
                llama_cpp.llama_model_free(self.model)
                self.model = self.vocab = None


_lock = threading.Lock()
_quiet = threading.Lock()  # loads take turns with the library's log level
_backend = False  # llama.cpp's backend initialised by a load here
_tokenizers: dict[tuple[str, int, int], Tokenizer | None] = {}  # (path, mtime, size) -> tokenizer, None: failed
_loads: dict[tuple[str, int, int], threading.Lock] = {}  # one load per file at a time; others wait for it
_started: set[tuple[str, int, int]] = set()  # files a thread was started to load (``load_soon``)
_loaders: list[threading.Thread] = []


def _key(path: str) -> tuple[str, int, int] | None:
    """The file as it is now: a file pulled again (a new version) is loaded again."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return path, st.st_mtime_ns, st.st_size


def _open(path: str) -> Tokenizer:
    """Load the file's vocabulary, without weights. llama.cpp's warnings while it loads are not shown (as
    ``Llama(verbose=False)`` hides them); its library logger is left as that sets it."""
    global _backend
    import llama_cpp

    quiet = logging.getLogger("llama-cpp-python")  # the level llama-cpp-python's log callback prints from
    with _quiet:
        level = quiet.level
        quiet.setLevel(logging.CRITICAL + 1)
        try:
            if not _backend:
                llama_cpp.llama_backend_init()
                _backend = True
            params = llama_cpp.llama_model_default_params()
            params.vocab_only = True
            model = llama_cpp.llama_model_load_from_file(path.encode("utf-8"), params)
        finally:
            quiet.setLevel(level or logging.ERROR)
    if not model:
        raise ValueError(f"llama.cpp cannot load {path}")
    try:
        return Tokenizer(model)
    except Exception:
        llama_cpp.llama_model_free(model)
        raise


def tokenizer(path: str) -> Tokenizer | None:
    """The file's tokenizer, loaded once per process (a caller during the load waits for it); None when the
    vocabulary cannot be loaded (said once): the estimate then stands."""
    key = _key(path)
    if key is None:
        return None
    with _lock:
        if key in _tokenizers:
            return _tokenizers[key]
        gate = _loads.setdefault(key, threading.Lock())
    with gate:
        with _lock:
            if key in _tokenizers:
                return _tokenizers[key]
        try:
            tok: Tokenizer | None = _open(path)
        except Exception as e:  # noqa: BLE001 - an unreadable file, or no llama-cpp-python: the estimate stands
            log.warning("cannot load the vocabulary of %s; its prompts are counted by the estimate: %s", path, e)
            tok = None
        with _lock:
            # an earlier version of the file (replaced on disk) is not read again: its vocabulary is freed
            stale = [k for k in _tokenizers if k[0] == path and k != key]
            old = [t for k in stale if (t := _tokenizers.pop(k)) is not None]
            _tokenizers[key] = tok
            _loads.pop(key, None)
        for t in old:
            t.close()  # a count running on it finishes first (its lock)
        return tok


def load_soon(path: str) -> None:
    """Start loading the file's tokenizer in a thread of its own, unless it is loaded or loading: a server makes
    its providers at start, so no request, nor the event loop, waits for the load."""
    key = _key(path)
    with _lock:
        if key is None or key in _tokenizers or key in _started:
            return
        _started.add(key)
        thread = threading.Thread(target=tokenizer, args=(path,), name="moai-vocab", daemon=True)
        _loaders.append(thread)
    thread.start()


@atexit.register
def _close() -> None:
    """Let a load in progress finish, then free the vocabularies while the interpreter is intact (llama.cpp's
    finalizers fail during teardown, and a load cut short by the exit may crash it)."""
    for thread in list(_loaders):
        if thread.is_alive():
            thread.join(JOIN_S)
    with _lock:
        toks = [t for t in _tokenizers.values() if t is not None]
        _tokenizers.clear()
    for tok in toks:
        with contextlib.suppress(Exception):
            tok.close()

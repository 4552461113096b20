"""A llama.cpp model whose prompt evaluation stops for a caller who went away, and which counts its tokens.

``Llama.eval`` reads a prompt in one blocking pass: a 4k-token prompt holds the 1.5B model for ~100 s on 2 cores,
and nothing could stop it before the first generated token. Here it reads the prompt in short steps and checks
the call's cancel event between them. Imported only when a local model loads (it needs llama-cpp-python).
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Sequence
from typing import Any

import llama_cpp
from llama_cpp import Llama

# Tokens evaluated between two looks at the cancel event: in 64-token steps a caller who left frees the 1.5B model
# within about a second on 2 cores, and the steps read a prompt as fast as 512-token batches (measured: 728 tokens
# in 10.4-10.6 s either way; 32-token steps took ~20% longer). Fixed, not timed: the batches a prompt is read in
# move its logits a little, and a seeded answer must not depend on the machine's load.
PREFILL_STEP = 64


class Cancelled(Exception):  # noqa: N818 - a state, not a failure
    """The call was cancelled between two evaluation steps; the context keeps the steps done, a valid prefix."""


class InterruptibleLlama(Llama):
    """``Llama`` that evaluates in steps a cancelled call stops between, and counts each call's tokens.

    ``prompt_tokens`` is the templated prompt's size as tokenized for the model (cached prefix included), and
    ``completion_tokens`` the tokens it generated, as llama.cpp counts them: a stop sequence's included, the
    end-of-generation token not. Both are set by ``generate``, so they are exact whatever text was held back.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # one call at a time: llama.cpp's context is not thread-safe, and the fields below are the call's. Held by
        # whichever provider runs it (the model is loaded once per process and shared)
        self.lock = threading.Lock()
        self.cancel: threading.Event | None = None
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def begin(self, cancel: threading.Event | None) -> None:
        """Start a call (under the model's lock): its cancel event, and counts from zero."""
        self.cancel = cancel
        self.prompt_tokens = self.completion_tokens = 0

    def eval(self, tokens: Sequence[int]) -> None:
        """Evaluate ``tokens`` in steps, raising ``Cancelled`` before any step once the call is cancelled.

        ``Llama.eval`` counts a step in ``n_tokens`` only once it is decoded and drops the cache past ``n_tokens``
        before reading on, so the context is consistent wherever this stops; a later prompt reuses what matches.
        """
        if not len(tokens):
            super().eval(tokens)
            return
        for start in range(0, len(tokens), PREFILL_STEP):
            if self.cancel is not None and self.cancel.is_set():
                raise Cancelled
            super().eval(tokens[start:start + PREFILL_STEP])

    def generate(self, tokens: Sequence[int], *args: Any, **kwargs: Any) -> Generator[int, Any, None]:
        """``Llama.generate``, counting the prompt it was given and the tokens it yields."""
        self.prompt_tokens = len(tokens)
        self.completion_tokens = 0
        inner = super().generate(tokens, *args, **kwargs)
        try:
            token = next(inner)
            while True:
                if not llama_cpp.llama_vocab_is_eog(self._model.vocab, token):
                    self.completion_tokens += 1
                sent = yield token
                token = inner.send(sent)
        except StopIteration:
            return
        finally:
            inner.close()

"""A local model gets the request's sampling extras as llama-cpp-python's arguments (``top_k``, ``min_p``,
``repeat_penalty``, ``typical_p``) when the client sends them, and llama-cpp-python's own defaults otherwise."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import scripted_llama
from scripted_llama import install_scripted, local_provider

from moai.api import shutdown
from moai.catalog import ModelCard, complete_card
from moai.config import parse_config
from moai.mixture import Mixture
from moai.providers import ChatParams
from moai.providers.llama_cpp import LlamaCppProvider, call_kwargs

LLAMA_ARGS = ("top_k", "min_p", "repeat_penalty", "typical_p")
ASK = [{"role": "user", "content": "Write one sentence about the sea."}]


class SpyLlama(scripted_llama.ScriptedLlama):
    """Keeps the keyword arguments of each ``create_chat_completion`` call."""

    def __init__(self) -> None:
        super().__init__(["The sea is wide."])
        self.kwargs: list[dict[str, Any]] = []

    def create_chat_completion(self, messages: list[dict[str, Any]], **kw: Any) -> Iterator[dict]:
        self.kwargs.append(kw)
        yield from self.text_chunks(self.next_answer(messages))


def test_without_them_llama_cpp_python_keeps_its_defaults() -> None:
    kw = call_kwargs("m", ChatParams(messages=ASK, temperature=0.7, top_p=0.9))
    assert not set(LLAMA_ARGS) & set(kw)  # guard: top_k 40, min_p 0.05, repeat_penalty 1.0 as before


def test_each_is_passed_under_llama_cpp_python_s_name() -> None:
    kw = call_kwargs("m", ChatParams(messages=ASK, top_k=1, min_p=0.2, repetition_penalty=1.3, typical_p=0.8))
    assert {k: kw[k] for k in LLAMA_ARGS} == {"top_k": 1, "min_p": 0.2, "repeat_penalty": 1.3, "typical_p": 0.8}
    assert "repetition_penalty" not in kw
    assert call_kwargs("m", ChatParams(messages=ASK, top_k=0))["top_k"] == 0  # off: every token, not 40


async def test_the_provider_calls_the_model_with_them(monkeypatch: pytest.MonkeyPatch) -> None:
    spy = install_scripted(monkeypatch, SpyLlama())
    out = await local_provider().complete(ChatParams(messages=ASK, top_k=3, min_p=0.1))
    assert out.text == "The sea is wide."
    assert (spy.kwargs[-1]["top_k"], spy.kwargs[-1]["min_p"]) == (3, 0.1)
    assert "repeat_penalty" not in spy.kwargs[-1] and "typical_p" not in spy.kwargs[-1]


def test_a_request_s_extras_reach_a_local_model(monkeypatch: pytest.MonkeyPatch) -> None:
    spy = install_scripted(monkeypatch, SpyLlama())
    m = Mixture(parse_config("models:\n  tiny: {provider: local, path: /nonexistent.gguf, privacy: local}\n"
                             "mixes:\n  default: {strategy: route}\n"))
    try:
        r = m.chat.completions.create(model="moai/default", messages=ASK, top_k=-1, repeat_penalty=1.2,
                                      typical_p=0.95)
        assert r.choices[0].message.content == "The sea is wide."
        assert not any("not sent to" in line or "not read" in line for line in r.moai["reason"])
        kw = spy.kwargs[-1]
        assert (kw["top_k"], kw["repeat_penalty"], kw["typical_p"]) == (0, 1.2, 0.95) and "min_p" not in kw
    finally:
        shutdown(m)


@pytest.mark.integration
async def test_top_k_1_makes_a_real_model_s_sampling_greedy(smollm_path: Path) -> None:
    """SmolLM2 at temperature 1.5: each seed answers otherwise, but with top_k 1 every seed gives the greedy
    answer (only the likeliest token is left to sample)."""
    card = complete_card("smollm2-135m", ModelCard(provider="local", package="smollm2-135m", privacy="local",
                                                   context=2048, threads=1))
    smol = LlamaCppProvider(card)

    async def answer(**sampling: Any) -> str:
        return (await smol.complete(ChatParams(messages=ASK, max_tokens=24, **sampling))).text

    greedy = await answer(temperature=0.0)
    sampled = [await answer(temperature=1.5, seed=seed) for seed in (1, 2, 3)]
    assert any(text != greedy for text in sampled)
    assert [await answer(temperature=1.5, seed=seed, top_k=1) for seed in (1, 2, 3)] == [greedy] * 3
    # every extra at once is taken by llama-cpp-python
    assert await answer(temperature=0.8, seed=1, top_k=20, min_p=0.1, repetition_penalty=1.3, typical_p=0.9)

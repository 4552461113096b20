"""A local request whose caller left or timed out stops reading its prompt, and leaves the model usable."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from moai.catalog import ModelCard, complete_card
from moai.providers import ChatParams
from moai.providers.llama_cpp import LlamaCppProvider, load_llama

pytestmark = pytest.mark.integration

ASK = ChatParams(messages=[{"role": "user", "content": "What is the capital of France? Answer with one word."}],
                 max_tokens=8)


def long_prompt(items: int, topic: str = "text") -> ChatParams:
    text = f"Here is some {topic}. " + " ".join(f"item{i} is number {i * 7}." for i in range(items))
    return ChatParams(messages=[{"role": "user", "content": text + " Reply OK."}], max_tokens=2)


@pytest.fixture
def model(smollm_path: Path) -> LlamaCppProvider:
    card = complete_card("smollm2-135m", ModelCard(provider="local", package="smollm2-135m", privacy="local",
                                                   context=2048))
    return LlamaCppProvider(card)


@pytest.fixture
def evaluations(model: LlamaCppProvider) -> Iterator[tuple[Any, list[int], threading.Event]]:
    """The shared model, the size of each token list it is asked to evaluate, and an event set at the first."""
    llm = load_llama(model.card)
    sizes: list[int] = []
    started = threading.Event()
    evaluate: Callable[[Sequence[int]], None] = llm.eval

    def spy(tokens: Sequence[int]) -> None:
        sizes.append(len(tokens))
        started.set()
        evaluate(tokens)

    llm.eval = spy
    try:
        yield llm, sizes, started
    finally:
        del llm.eval


def workers_since(before: set[threading.Thread]) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t not in before and t.name.endswith("(_run)")]


async def abandon(model: LlamaCppProvider, params: ChatParams, how: str) -> None:
    """Start a request and leave it: its timeout passes, or its client goes away mid-wait."""
    if how == "timeout":
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(model.complete(params), 0.3)
        return
    stream = model.stream(params)
    pending = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.3)
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending
    await stream.aclose()


@pytest.mark.parametrize("how", ["timeout", "client-gone"])
async def test_a_request_abandoned_while_queued_never_reads_its_prompt(
        model: LlamaCppProvider, evaluations: tuple[Any, list[int], threading.Event], how: str) -> None:
    """Left while another request held the model, it must not take the model afterwards to read its prompt
    (a 4k-token prompt holds a 1.5B model over a minute on 2 cores), or the next caller waits for nobody."""
    _, sizes, _ = evaluations
    before = set(threading.enumerate())
    with load_llama(model.card).lock:  # another request is using the model
        await abandon(model, long_prompt(30, how), how)  # a prompt not in the cache
        workers = workers_since(before)
    assert workers
    for worker in workers:
        await asyncio.to_thread(worker.join, 120)
    assert sizes == []  # nothing was evaluated for it
    out = await model.complete(ASK)
    assert "paris" in out.text.lower()


async def test_a_request_cancelled_while_reading_its_prompt_stops_there(
        model: LlamaCppProvider, evaluations: tuple[Any, list[int], threading.Event]) -> None:
    """Cancelled during prefill it frees the model at once, not after its whole prompt; the context it leaves
    is consistent: the next request (which reuses the shared part of the cache) answers as before."""
    llm, _, started = evaluations
    expected = await model.complete(ASK)
    assert "paris" in expected.text.lower()
    started.clear()
    params = long_prompt(90)
    prompt_size = len(llm.tokenize(params.messages[0]["content"].encode(), add_bos=False))
    before = set(threading.enumerate())
    request = asyncio.ensure_future(model.complete(params))
    assert await asyncio.to_thread(started.wait, 60)  # its prompt is being read
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    for worker in workers_since(before):
        await asyncio.to_thread(worker.join, 120)
    assert llm.n_tokens < prompt_size / 2  # stopped early in its prompt, well before the first token
    again = await model.complete(ASK)
    assert again.text == expected.text and again.usage.prompt_tokens == expected.usage.prompt_tokens

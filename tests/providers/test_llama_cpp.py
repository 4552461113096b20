"""The in-process local provider answers a real prompt with a real GGUF model."""

from __future__ import annotations

from pathlib import Path

import pytest

from moai.catalog import ModelCard, complete_card
from moai.providers import ChatParams, ProviderUnavailable
from moai.providers.llama_cpp import LlamaCppProvider

pytestmark = pytest.mark.integration


def smol() -> LlamaCppProvider:
    card = complete_card("smollm2-135m", ModelCard(provider="local", package="smollm2-135m", privacy="local",
                                                   context=2048))
    return LlamaCppProvider(card)


async def test_local_model_answers(smollm_path: Path) -> None:
    ask = "What is the capital of France? Answer with one word."
    out = await smol().complete(ChatParams(messages=[{"role": "user", "content": ask}], max_tokens=24))
    assert "paris" in out.text.lower()
    assert out.usage.prompt_tokens > 5 and 0 < out.usage.completion_tokens <= 24
    assert out.cpu_s is not None and out.cpu_s > 0
    assert out.ttft_s is not None and out.ttft_s <= out.latency_s


async def test_local_model_streams_tokens(smollm_path: Path) -> None:
    deltas = [d async for d in smol().stream(ChatParams(messages=[{"role": "user", "content": "Count: 1, 2, 3,"}],
                                                        max_tokens=12))]
    pieces = [d.text for d in deltas if d.text]
    assert len(pieces) >= 2  # token by token, not one blob
    assert deltas[-1].finish_reason in ("stop", "length") and deltas[-1].usage.completion_tokens == len(pieces)


async def test_missing_model_file_is_a_clear_error(tmp_path: Path) -> None:
    card = ModelCard(name="ghost", provider="local", path=str(tmp_path / "ghost.gguf"), privacy="local")
    with pytest.raises(ProviderUnavailable, match="model file not found"):
        await LlamaCppProvider(card).complete(ChatParams(messages=[{"role": "user", "content": "hi"}]))

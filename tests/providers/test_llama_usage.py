"""A local model's usage counts the templated prompt and the generated tokens, however the answer ended."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from moai.catalog import ModelCard, complete_card
from moai.providers import ChatParams
from moai.providers.llama_cpp import LlamaCppProvider, load_llama

pytestmark = pytest.mark.integration

COUNT = [{"role": "user", "content": "Count from 1 to 20, separated by commas, nothing else."}]


@pytest.mark.parametrize("limits", [{"max_tokens": 5}, {"max_tokens": 40, "stop": ["5"]},
                                    {"max_tokens": 40, "stop": ["\n5"]}],
                         ids=["length", "stop", "stop-held-back"])
async def test_usage_is_llama_cpps_own_count(smollm_path: Path, limits: dict[str, Any]) -> None:
    """The prompt is counted as templated and tokenized (not from the context's size, which misses the last
    sampled token and any text held back for a stop sequence); completion tokens as llama.cpp counts them."""
    card = complete_card("smollm2-135m", ModelCard(provider="local", package="smollm2-135m", privacy="local",
                                                   context=2048))
    model = LlamaCppProvider(card)
    reference = load_llama(card).create_chat_completion(messages=COUNT, temperature=0.0, **limits)
    deltas = [d async for d in model.stream(ChatParams(messages=COUNT, temperature=0.0, **limits))]
    final, first = deltas[-1], next(d for d in deltas if d.text)
    choice = reference["choices"][0]
    assert "".join(d.text for d in deltas) == choice["message"]["content"]
    assert final.finish_reason == choice["finish_reason"]
    assert final.usage is not None and first.usage is not None
    assert final.usage.prompt_tokens == first.usage.prompt_tokens == reference["usage"]["prompt_tokens"]
    assert final.usage.completion_tokens == reference["usage"]["completion_tokens"]

"""A card's context holds the prompt and the answer together: a request whose prompt and ``max_tokens`` overflow a
model's context goes to a model with room for both when there is one; when none has, to those its prompt fits (a
large ``max_tokens`` is most often a ceiling: the answer is cut at the context, as llama.cpp cuts it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from moai.config import parse_config
from moai.mixture import BadRequest, Mixture
from moai.server.openai_schema import ChatCompletionRequest

CONFIG = """models:
  short: {provider: openai_compat, endpoint: "http://127.0.0.1:9/v1", privacy: cloud, context: 1024,
          price: {input_per_mtok: 0.1, output_per_mtok: 0.1}}
  roomy: {provider: openai_compat, endpoint: "http://127.0.0.1:9/v1", privacy: cloud, context: 8192,
          price: {input_per_mtok: 9, output_per_mtok: 9}}
mixes:
  m: {strategy: route, models: [short, roomy], weights: {quality: 0, cost: 1}}
"""


def prepared(tmp_path: Path, **body: Any) -> Any:
    m = Mixture(parse_config(CONFIG))
    words = "lorem " * 600  # ~600 prompt tokens
    return m.prepare(ChatCompletionRequest.model_validate(
        {"model": "moai/m", "messages": [{"role": "user", "content": words}], **body}))


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_a_model_without_room_for_the_answer_asked_is_left_out(tmp_path: Path, field: str) -> None:
    prep = prepared(tmp_path, **{field: 1000})
    assert [c.name for c in prep.ctx.candidates] == ["roomy"]
    assert "max_tokens 1000 exceeds context 1024" in prep.ctx.excluded["short"]


def test_a_short_answer_still_fits_the_short_model(tmp_path: Path) -> None:
    prep = prepared(tmp_path, max_tokens=100)
    assert {c.name for c in prep.ctx.candidates} == {"short", "roomy"}


def test_an_answer_no_model_has_room_for_goes_where_the_prompt_fits(tmp_path: Path) -> None:
    """A large max_tokens is most often a ceiling: with no model room for it, those the prompt fits, as before (a
    server that refuses such a limit says so, and the next model is tried)."""
    prep = prepared(tmp_path, max_tokens=30_000)
    assert {c.name for c in prep.ctx.candidates} == {"short", "roomy"}


def test_a_local_models_worst_case_is_the_answer_its_context_can_hold(tmp_path: Path) -> None:
    """A plan's cost and time are worked out at what each step can write: a local model stops at its context's
    room, so a ceiling of 30,000 tokens is not 30,000 tokens of its time (a remote card's ceiling stands)."""
    from moai.strategies.budget import estimate

    cfg = f"""models:
  tiny: {{provider: local, path: '{tmp_path / 'tiny.gguf'}', context: 2048, params_b: 0.5}}
mixes:
  m: {{strategy: route, models: [tiny]}}
"""
    m = Mixture(parse_config(cfg))
    prep = m.prepare(ChatCompletionRequest.model_validate(
        {"model": "moai/m", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 30_000}))
    _usd, seconds = estimate(prep.ctx, prep.plan)
    card = m.config.models["tiny"]
    assert seconds <= card.expected_latency_s(2048) < card.expected_latency_s(30_000) / 5, seconds


def test_an_answer_no_model_has_room_for_goes_to_a_local_model_the_prompt_fits(tmp_path: Path) -> None:
    """llama.cpp stops a local model's answer at the room its context leaves: the ceiling is no reason to refuse,
    and its cost and latency are those of the answer the context can hold (a cap on either refused it)."""
    local = CONFIG.replace("mixes:", f"  tiny: {{provider: local, path: '{tmp_path / 'tiny.gguf'}', context: 2048}}\n"
                           "mixes:").replace("models: [short, roomy]", "models: [short, roomy, tiny]")
    local = local.replace("weights: {quality: 0, cost: 1}", "weights: {quality: 0, cost: 1}, "
                          "constraints: {max_latency_s: 120}")
    m = Mixture(parse_config(local))
    prep = m.prepare(ChatCompletionRequest.model_validate(
        {"model": "moai/m", "messages": [{"role": "user", "content": "lorem " * 600}], "max_tokens": 30_000}))
    assert [c.name for c in prep.ctx.candidates] == ["tiny"], prep.ctx.excluded


def test_a_prompt_no_model_can_read_is_still_a_400(tmp_path: Path) -> None:
    m = Mixture(parse_config(CONFIG))
    with pytest.raises(BadRequest) as e:
        m.prepare(ChatCompletionRequest.model_validate(
            {"model": "moai/m", "messages": [{"role": "user", "content": "lorem " * 9000}], "max_tokens": 10}))
    assert e.value.code == "context_length_exceeded"


def test_the_embedded_default_takes_a_short_prompt_with_a_large_max_tokens() -> None:
    """Its local models' context is 8,192: a client sending max_tokens 8,192 (or 16,384) was refused with a 400."""
    from moai.config import load_config

    m = Mixture(load_config(None))
    for field, budget in (("max_tokens", 8192), ("max_completion_tokens", 16384)):
        prep = m.prepare(ChatCompletionRequest.model_validate(
            {"model": "moai/default", "messages": [{"role": "user", "content": "Say hello in three words."}],
             field: budget}))
        assert prep.ctx.candidates, prep.ctx.excluded


@pytest.mark.parametrize("text", ["中" * 2000, "😀" * 2000, "क" * 2000, "ไ" * 2000],
                         ids=["cjk", "emoji", "devanagari", "thai"])
def test_a_prompt_of_wide_characters_is_counted_a_token_each(text: str) -> None:
    """2,000 Chinese, Hindi or Thai characters (or emoji) are 2,000 tokens and more: not for the 1,024-token model
    (at 4 characters a token they counted as 500, and were sent there)."""
    prep = Mixture(parse_config(CONFIG)).prepare(ChatCompletionRequest.model_validate(
        {"model": "moai/m", "messages": [{"role": "user", "content": text}]}))
    assert [c.name for c in prep.ctx.candidates] == ["roomy"], prep.ctx.excluded

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
    prep = prepared(tmp_path, max_tokens=30_000)
    assert {c.name for c in prep.ctx.candidates} == {"short", "roomy"}


def test_a_model_named_by_the_request_is_kept_when_none_of_its_choice_has_room(tmp_path: Path) -> None:
    prep = prepared(tmp_path, max_tokens=1000, moai={"models": ["short"]})
    assert [c.name for c in prep.ctx.candidates] == ["short"]


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


@pytest.mark.parametrize("text", ["中" * 2000, "😀" * 2000], ids=["cjk", "emoji"])
def test_a_prompt_of_wide_characters_is_counted_a_token_each(text: str) -> None:
    """2,000 Chinese characters (or emoji) are 2,000 tokens and more: not for the 1,024-token model (at 4
    characters a token they counted as 500, and were sent there)."""
    prep = Mixture(parse_config(CONFIG)).prepare(ChatCompletionRequest.model_validate(
        {"model": "moai/m", "messages": [{"role": "user", "content": text}]}))
    assert [c.name for c in prep.ctx.candidates] == ["roomy"], prep.ctx.excluded

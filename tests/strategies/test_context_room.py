"""A card's context holds the prompt and the answer together: a request whose prompt and ``max_tokens`` overflow a
model's context is never sent to it, and one that overflows every model's is a 400 ``context_length_exceeded``."""

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


def test_an_answer_no_model_has_room_for_is_a_400(tmp_path: Path) -> None:
    with pytest.raises(BadRequest) as e:
        prepared(tmp_path, max_tokens=30_000)
    assert e.value.code == "context_length_exceeded" and "max_tokens 30000" in str(e.value)

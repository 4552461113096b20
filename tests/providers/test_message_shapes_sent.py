"""Messages as OpenAI-compatible servers take them: OpenAI's ``developer`` role (its newer name for system
instructions) goes to them as ``system`` (llama.cpp's server refuses the role), while OpenAI itself gets it as
sent; an assistant's refusal sent back in the history goes as its text."""

from __future__ import annotations

from typing import Any

import pytest
from compat_support import close_providers  # noqa: F401 - an autouse fixture
from stub_openai import Script, StubServer

from moai.catalog import ModelCard
from moai.providers import ChatParams, make_provider
from moai.server.openai_schema import ChatCompletionRequest


def sent(provider: str, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    import asyncio

    async def ask(url: str) -> None:
        p = make_provider(ModelCard(name="m", provider=provider, endpoint=url, max_retries=0))
        try:
            await p.complete(ChatParams(messages=messages, max_tokens=8))
        finally:
            await p.aclose()

    with StubServer(Script()) as s:
        asyncio.run(ask(s.url))
        return s.script.seen[0]["messages"]


@pytest.mark.parametrize(("provider", "role"), [("openai_compat", "system"), ("openai", "developer")])
def test_a_developer_message_goes_as_each_upstream_takes_it(provider: str, role: str) -> None:
    got = sent(provider, [{"role": "developer", "content": "Answer in French."}, {"role": "user", "content": "hi"}])
    assert got == [{"role": role, "content": "Answer in French."}, {"role": "user", "content": "hi"}]


@pytest.mark.parametrize("refused", [
    {"role": "assistant", "content": None, "refusal": "I can't help with that."},
    {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't help with that."}]},
], ids=["field", "part"])
def test_an_assistant_refusal_in_the_history_goes_as_its_text(refused: dict[str, Any]) -> None:
    body = ChatCompletionRequest.model_validate({"model": "m", "messages": [
        {"role": "user", "content": "hi"}, refused, {"role": "user", "content": "and now?"}]})
    message = body.messages[1].to_provider()
    text = message["content"] if isinstance(message["content"], str) else message["content"][0]["text"]
    assert message["role"] == "assistant" and text == "I can't help with that."


def test_an_assistant_message_with_nothing_in_it_is_refused() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="needs content, tool_calls or a refusal"):
        ChatCompletionRequest.model_validate({"model": "m", "messages": [
            {"role": "user", "content": "hi"}, {"role": "assistant", "content": None}]})

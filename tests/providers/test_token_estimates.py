"""Token estimates where an upstream reports none, and for a plan's worst case: by character class."""

from __future__ import annotations

from moai.providers.base import estimate_completion_tokens, text_tokens
from moai.strategies.budget import prompt_tokens


def test_tokens_are_estimated_per_character_outside_ascii() -> None:
    assert text_tokens("word " * 80) == 100  # ~4 characters a token
    assert text_tokens("你好世界" * 100) == 400  # a token a character, as tokenizers count Chinese
    assert text_tokens("Привет " * 10) == 2 + 60  # errs high for Cyrillic: spaces are ASCII, letters one each
    assert estimate_completion_tokens("日本語") == 3 and estimate_completion_tokens("") == 0
    assert prompt_tokens([{"role": "user", "content": "你好" * 200}]) == 400 + 4  # a plan's worst case counts so too


def test_a_call_without_usage_is_billed_for_its_tools_and_earlier_calls_not_an_image_s_base64() -> None:
    """An agent's prompt may be mostly tool definitions and calls: read with the prompt, billed with it; an
    attached image is not priced by the length of its base64 (as a plan's worst case counts it)."""
    from moai.providers.base import ChatParams, estimate_prompt_tokens

    tool = {"type": "function", "function": {"name": "edit_file", "description": "Edit a file. " * 50,
                                             "parameters": {"type": "object", "properties": {}}}}
    call = {"id": "c1", "type": "function", "function": {"name": "edit_file", "arguments": '{"path": "a.py"}' * 40}}
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 40_000}}
    messages = [{"role": "user", "content": [{"type": "text", "text": "word " * 8}, image]},
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "c1", "content": "done"}]
    bare = estimate_prompt_tokens(ChatParams(messages=messages))
    assert bare == prompt_tokens(messages)  # billed as a plan's worst case counts the prompt
    assert 10 + 1 + 12 + 160 <= bare < 300  # the text, the call's ~650 characters; no 10,000 tokens of base64
    with_tools = estimate_prompt_tokens(ChatParams(messages=messages, tools=[tool] * 20))
    assert with_tools - bare > 20 * 150  # 20 definitions of ~650 characters each

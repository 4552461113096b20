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

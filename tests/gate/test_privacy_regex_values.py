"""A regular expression given under a secret-named key (`token: /^[a-z]+$/` in a YAML or JS validation rule) is the
shape a value must have, not a secret; a secret merely wrapped in slashes still is one."""

from __future__ import annotations

import pytest

from moai.gate.privacy import detect_text


def secrets(text: str) -> list[str]:
    return [text[h.start:h.end] for h in detect_text(text) if h.kind == "secret"]


@pytest.mark.parametrize("text", [
    "token: /^[a-z]+$/",
    "const rules = { token: /^[A-Za-z0-9_-]{20,}$/ };",
    "validation:\n  api_key: /^sk-[a-z0-9]{32}$/\n",
    "secret: /^\\d{6}$/g,",
    "password: /^(?=.*\\d).{8,}$/",
    "token = /^[a-z ]+$/ # letters and spaces",
    '{"token": "/^[a-z0-9]{32}$/"}',
    "API_TOKEN=/[0-9a-f]+/i",
])
def test_a_regular_expression_under_a_secret_name_is_no_secret(text: str) -> None:
    assert secrets(text) == []


@pytest.mark.parametrize(("text", "value"), [
    ("token: /Zx81kq!Wm2pLr9/", "/Zx81kq!Wm2pLr9/"),
    ("API_KEY=/9fK2!x8Qz", "/9fK2!x8Qz"),
    ("SECRET=/abc1/def2/x", "/abc1/def2/x"),
    ("token: Zx81kq!Wm2pLr9", "Zx81kq!Wm2pLr9"),
])
def test_a_secret_wrapped_in_slashes_is_still_found(text: str, value: str) -> None:
    assert secrets(text) == [value]

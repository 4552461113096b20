"""A regular expression under a token's name (`token: /^[a-z]+$/` in a YAML or JS validation rule) is the shape a
token must have, not a secret. Nothing else is taken for one: a password, secret or key wrapped in slashes, with
flags, anchors, groups or classes (`DB_PASSWORD=/Tr0ub4dor&3/i`), is still a secret, and so is a value that only
a later "/" of its line would close (`API_KEY=/9fK2!x8Qz (prod) / staging`)."""

from __future__ import annotations

import pytest

from moai.gate.privacy import detect, detect_text, redact


def secrets(text: str) -> list[str]:
    return [text[h.start:h.end] for h in detect_text(text) if h.kind == "secret"]


@pytest.mark.parametrize("text", [
    "token: /^[a-z]+$/",
    "const rules = { token: /^[A-Za-z0-9_-]{20,}$/ };",
    "token = /^[a-z ]+$/ # letters and spaces",
    '{"token": "/^[a-z0-9]{32}$/"}',
    '{"csrf_token": "/^[a-f0-9]{64}$/"}',
    "API_TOKEN=/[0-9a-f]+/i",
])
def test_a_regular_expression_under_a_token_name_is_no_secret(text: str) -> None:
    assert secrets(text) == []


@pytest.mark.parametrize(("text", "value"), [
    # under a password, secret or key name even a pattern stays a secret: taking it for one costs a placeholder
    ("password: /^(?=.*\\d).{8,}$/", "/^(?=.*\\d).{8,}$/"),
    ("secret: /^\\d{6}$/g,", "/^\\d{6}$/g"),
    ("validation:\n  api_key: /^sk-[a-z0-9]{32}$/\n", "/^sk-[a-z0-9]{32}$/"),
])
def test_a_pattern_under_a_password_or_key_name_is_still_redacted(text: str, value: str) -> None:
    assert value in secrets(text)


@pytest.mark.parametrize(("text", "needle"), [
    ("password: /Zx81kq$/", "Zx81kq$"),
    ("password: /^Zx81kq!/", "Zx81kq!"),
    ("password: /Zx81(kq)!/", "Zx81(kq)!"),
    ("password: /Zx[81]kq!/", "Zx[81]kq!"),
    ("password: /Zx81{2}kq/", "Zx81{2}kq"),
    ("password: /Zx81\\dkq/", "Zx81\\dkq"),
    ("SECRET_KEY=/Zx81kq!Wm2/g", "Zx81kq!Wm2"),
    ("SECRET_KEY=/Zx81kq!Wm2/m", "Zx81kq!Wm2"),
    ("DB_PASSWORD=/Tr0ub4dor&3/i", "Tr0ub4dor&3"),
    ("export API_TOKEN=/8f3a9c2e7b1d4f6a(0)/", "8f3a9c2e7b1d4f6a"),
    ('{"password": "/Hx7q(Pz2)Lm9/"}', "Hx7q(Pz2)Lm9"),
    ('{"api_key": "/Hx7q(Pz2)Lm9/"} is what I send, why 401?', "Hx7q(Pz2)Lm9"),
    ('{"api_key": "/sk-live-4eC39HqLyjWDarjtT1zdp7dc$/"}', "4eC39HqLyjWDarjtT1zdp7dc"),
    ("password: /^hunter2Zx81!$/", "hunter2Zx81!"),
    ("my password is /Zx81(kq)/", "Zx81(kq)"),
    ("my password is /Zx81kq!/g — can you check the login script?", "Zx81kq!"),
    ("DB_PASSWORD=/Tr0ub4dor&3/i\nwhy does the app not start?", "Tr0ub4dor&3"),
    ("config:\n  password: /Kx9#mP2$/\nfix the yaml", "Kx9#mP2$"),
    ("pwd=/a[1]b2c3d4/", "a[1]b2c3d4"),
    ("PASSWORD=/Q3$/", "Q3$"),
    ("PASSWORD: /Kx9#mP2$/", "Kx9#mP2$"),
    # a value that starts with "/" and a later "/" of the line: the value ends where it ends
    ("API_KEY=/9fK2!x8Qz (prod) / staging is below", "/9fK2!x8Qz"),
    ("password: /Zx81kq!Wm2 (rotated) / ask ops", "/Zx81kq!Wm2"),
    ("aws_secret_access_key = /K7MDENG/g+PxRfiCYzQ3RTnKEYq1", "/K7MDENG/g+PxRfiCYzQ3RTnKEYq1"),
    ("SECRET=/Q9x+Lm2/im=", "/Q9x+Lm2/im="),
    ("token: /9fK2!x8Qz [old] / new", "/9fK2!x8Qz"),
    ("token: /9fK2!x8Qz [a-z]+ / new", "/9fK2!x8Qz"),
    # under a token's name, a token wrapped in slashes has no quantified class: a token still
    ("token: /Zx81(kq)!/", "Zx81(kq)!"),
    ("API_TOKEN=/Tr0ub4dor&3/i", "Tr0ub4dor&3"),
    ("token: /^hunter2Zx81!$/", "hunter2Zx81!"),
    ("token: /Zx[81]kq!/", "Zx[81]kq!"),
    ("token: /Zx81\\dkq/", "Zx81\\dkq"),
    ('{"api_token": "/Hx7q(Pz2)Lm9/"}', "Hx7q(Pz2)Lm9"),
])
def test_a_secret_in_slashes_does_not_reach_the_redacted_text(text: str, needle: str) -> None:
    redacted, _ = redact(text, detect(text))
    assert needle not in redacted, redacted


@pytest.mark.parametrize(("text", "value"), [
    ("token: /Zx81kq!Wm2pLr9/", "/Zx81kq!Wm2pLr9/"),
    ("API_KEY=/9fK2!x8Qz", "/9fK2!x8Qz"),
    ("SECRET=/abc1/def2/x", "/abc1/def2/x"),
    ("token: Zx81kq!Wm2pLr9", "Zx81kq!Wm2pLr9"),
])
def test_a_secret_wrapped_in_slashes_is_still_found(text: str, value: str) -> None:
    assert secrets(text) == [value]

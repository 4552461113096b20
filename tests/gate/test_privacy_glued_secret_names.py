"""A long name glued from many secret-named pieces (`MY_SECRET_ACCESS_KEY_MY_SECRET_…`, `MY_PASSWORD_MY_…`): read
in time linear in its length, not its length times the keys in it (1,500 pieces in 32 KB took 1.8 s: each key
walked back over the whole name before it; after a quote, `'A_TOKEN_A_TOKEN_…`, the quoted-pair pattern tried
each key and read the rest of the name from it: 6 s at 64 KB), and the secret after such a name still found."""

from __future__ import annotations

import pytest
from line_count import lines_run
from scan_timing import scan_seconds

from moai.gate import privacy_secrets
from moai.gate.privacy import detect_text
from moai.gate.privacy_scan import LONG
from moai.gate.privacy_secrets import find_secrets


@pytest.mark.parametrize("piece", ["MY_SECRET_ACCESS_KEY_", "MY_PASSWORD_", "A_TOKEN_", "X-API-KEY-"])
def test_a_name_of_many_glued_keys_is_read_in_linear_work(piece: str) -> None:
    """Both lengths past `LONG`, where the scan starts at its anchors' windows."""
    assert LONG < 5000
    work = {n: lines_run(lambda n=n: list(find_secrets(piece * (n // len(piece)))), privacy_secrets)
            for n in (5000, 10000)}
    assert work[10000] < 3 * work[5000], work  # twice the name: about twice the work, not four times


@pytest.mark.parametrize("piece", ["A_TOKEN_", "MY_PASSWORD_", "X-API-KEY-"])
def test_a_quoted_name_of_many_glued_keys_is_read_in_linear_time(piece: str) -> None:
    """Timed, not counted: the work was the pattern's backtracking, which no count of Python lines sees. Four
    times the name: about four times the time (it was sixteen)."""
    seconds = {n: scan_seconds("'" + (piece * (n // len(piece)))[:n - 1]) for n in (8192, 32768)}
    assert seconds[32768] < 8 * seconds[8192] + 0.05, seconds


@pytest.mark.parametrize(("text", "value"), [
    ("MY_SECRET_ACCESS_KEY_" * 300 + "MY_SECRET_ACCESS_KEY=Zx81kq!Wm2pLr9", "Zx81kq!Wm2pLr9"),
    ("export " + "MY_SECRET_ACCESS_KEY_" * 300 + 'TOKEN="r3fr3sh-Tk9-xQ"', "r3fr3sh-Tk9-xQ"),
    ("config:\n  " + "my_password_" * 400 + "pass: 'Tr0ub4dor&3'", "Tr0ub4dor&3"),
    ("'" + "MY_SECRET_" * 500 + "PASSWORD': 'Hx7qPz2Lm9vRt4'", "Hx7qPz2Lm9vRt4"),
    ("define('" + "A_TOKEN_" * 600 + "KEY', 'Hx7qPz2Lm9vRt4');", "Hx7qPz2Lm9vRt4"),
    ('{"' + "x-api-" * 700 + 'key": "Hx7qPz2Lm9vRt4"}', "Hx7qPz2Lm9vRt4"),
])
def test_the_secret_after_a_long_glued_name_is_still_found(text: str, value: str) -> None:
    assert value in [text[h.start:h.end] for h in detect_text(text) if h.kind == "secret"]

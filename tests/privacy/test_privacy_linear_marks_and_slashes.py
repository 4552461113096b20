"""Two readings of the privacy check that grew with the square of a part of the text: a value under a token's name
that opens a class it never closes (`token: /[Zx81kq!9 token: /[…` on one line read the rest of the line for each
value: 2 s at 32 KB, 8 s at 64 KB), and a run of combining marks on a look-alike letter in an email (each mark
read back over the marks before it: 0.54 s at 32 KB)."""

from __future__ import annotations

import pytest
from line_count import lines_run
from scan_timing import scan_seconds

from moai.gate import privacy


@pytest.mark.parametrize("piece", ["token: /[Zx81kq!9 ", "API_TOKEN=/[Zx81kq!Wm2 ", "'api_token': '/[Zx81kq!9' "])
def test_values_opening_a_class_on_one_long_line_are_read_in_linear_time(piece: str) -> None:
    """Four times the line: about four times the time (it was sixteen). Timed: the work is the pattern's."""
    seconds = {n: scan_seconds((piece * (n // len(piece) + 1))[:n]) for n in (8192, 32768)}
    assert seconds[32768] < 8 * seconds[8192] + 0.05, seconds


def test_each_value_opening_a_class_is_still_a_secret() -> None:
    text = "token: /[Zx81kq!9 " * 50
    assert sum(h.kind == "secret" for h in privacy.detect_text(text)) == 50


def _marked(marks: int) -> str:
    return "write to jane@x\u0430" + "\u0301" * marks + ".com today"


def test_a_run_of_marks_on_a_lookalike_in_an_email_is_read_once() -> None:
    """Twice the marks: about twice the work of `_unconfuse` (it was four times)."""
    privacy._unconfuse(_marked(1), None)  # its tables built on first need, not counted
    work = {n: lines_run(lambda n=n: privacy._unconfuse(_marked(n), None), privacy) for n in (100, 200)}
    assert work[200] < 3 * work[100], work


def test_the_marks_on_a_lookalike_read_as_latin_go() -> None:
    """A guard: the email is read as Latin letters, its marks gone, and its offsets map back to the text."""
    text = _marked(40)
    out, pos = privacy._unconfuse(text, None)
    assert "jane@xa.com" in out
    assert pos is not None and len(pos) == len(out) and text[pos[out.index(".com")]] == "."

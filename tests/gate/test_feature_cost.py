"""The gate's cheap features run in time linear in the prompt: a few tens of KB of digits or blank lines (which
the length pre-check lets through) took seconds to minutes in patterns that backtrack, and the regex held the GIL,
so one such request froze every other request of the server meanwhile."""

from __future__ import annotations

import time

import numpy as np
import pytest

from moai.gate.encoder import lexical_features, option_count

N = 64_000


@pytest.mark.parametrize("text", ["7" * N, "\n" * N, " \n" * (N // 2), "7 " * (N // 2), "{" + " " * N],
                         ids=["digits", "newlines", "blank-lines", "spaced-digits", "brace-then-spaces"])
def test_features_of_a_pathological_prompt_take_no_time(text: str) -> None:
    started = time.perf_counter()
    lexical_features(text)
    option_count(text)
    assert time.perf_counter() - started < 1.0  # linear: ~10 ms here; backtracking took 10 s to minutes


def test_the_patterns_still_count_what_they_did() -> None:
    math = list(lexical_features("It costs 50% more, 20 $ at most, and x = 3.")).pop(8)
    assert math == pytest.approx(3 / 20)  # "0%", "0 $", "="
    assert option_count("Pick one:\n  A. red\n(B) blue\n\tc) green\n") == 2  # lower-case letters are no options
    assert option_count("A. one\nB. two\nC. three\nD. four") == 4
    assert np.isfinite(lexical_features("")).all()

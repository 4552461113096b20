"""An upstream's error text is made public in time linear in its length, and at most ``PUBLIC_CHARS`` of it: the
host:port pattern backtracked in cubic time, so a 1,000-character error of "a-a-a-…" held the server for 3 s."""

from __future__ import annotations

import time

import pytest

from moai.config import parse_config
from moai.upstream_errors import PUBLIC_CHARS, public, without_addresses

CONFIG = parse_config("""
models:
  m: {provider: openai_compat, endpoint: "http://127.0.0.1:9/v1", privacy: private}
mixes:
  default: {strategy: route}
""")


@pytest.mark.parametrize("text", ["a-" * 1000, "a." * 1000, "a" * 8000], ids=["dashes", "dots", "letters"])
def test_host_like_text_is_scanned_at_once(text: str) -> None:
    started = time.perf_counter()
    without_addresses(text)
    assert time.perf_counter() - started < 0.5  # ~5-50 ms; the backtracking pattern took 1-3 s here


def test_a_long_error_is_cut_before_it_is_cleaned() -> None:
    public("warm up", CONFIG)
    started = time.perf_counter()
    out = public("a-" * 50_000 + " at db.internal:5432", CONFIG)
    assert time.perf_counter() - started < 1.0
    assert len(out) < PUBLIC_CHARS + 100 and "more characters" in out and "db.internal" not in out

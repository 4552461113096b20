"""The response cache: exact and semantic hits, TTL, LRU bound, opt-out, privacy separation, and the real
server with the official openai client."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from servers import start_moai, stop
from stub_openai import Script, StubServer

from moai import Mixture
from moai.api import shutdown
from moai.cache import ResponseCache, lookalike, merge_tool_calls, numbers_of
from moai.config import parse_config


def bag_of_words(texts: Sequence[str]) -> np.ndarray:
    """A deterministic stand-in encoder: word order does not matter, shared words raise the cosine."""
    out = np.zeros((len(texts), 64), dtype=np.float32)
    for i, t in enumerate(texts):
        for w in re.findall(r"[a-z0-9]+", t.lower()):
            out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % 64] += 1
    return out


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def cfg_text(cloud: str, local: str) -> str:
    return f"""
models:
  cloud-model: {{provider: openai_compat, endpoint: "{cloud}", model: stub, privacy: cloud, params_b: 70}}
  local-model: {{provider: openai_compat, endpoint: "{local}", model: stub, privacy: local, params_b: 1}}
mixes:
  default: {{strategy: route, max_tokens: 16, models: [cloud-model]}}
  both: {{strategy: route, max_tokens: 16, weights: {{quality: 1}}}}
"""


@pytest.fixture
def stubs() -> Iterator[tuple[StubServer, StubServer]]:
    with StubServer(Script(reply="cloud answer")) as cloud, StubServer(Script(reply="local answer")) as local:
        yield cloud, local


@pytest.fixture
def mix(stubs: tuple[StubServer, StubServer]) -> Iterator[Mixture]:
    cloud, local = stubs
    m = Mixture(parse_config(cfg_text(cloud.url, local.url)))
    m.cache = ResponseCache(mode="semantic", embed=bag_of_words, threshold=0.9, counter=m.metrics.cache)
    yield m
    shutdown(m)


def ask(m: Mixture, text: str, model: str = "moai/default", **kw: Any) -> Any:
    return m.chat.completions.create(model=model, messages=[{"role": "user", "content": text}], **kw)


def test_exact_hit_costs_nothing_and_is_marked(mix: Mixture, stubs: tuple[StubServer, StubServer]) -> None:
    cloud, _ = stubs
    first = ask(mix, "What is the capital of France?")
    second = ask(mix, "What is the capital of France?")
    assert cloud.script.calls == 1
    assert first.moai["cache"] == "miss" and second.moai["cache"] == "hit"
    assert second.choices[0].message.content == "cloud answer" and second.moai["model"] == "cloud-model"
    assert second.moai["cost_usd"] == 0 and second.usage.total_tokens == 0 and second.moai["models_used"] == []
    (entry,) = second.moai["trace"]
    assert entry["status"] == "cached" and entry["tokens"] == {"input": 0, "output": 0} and entry["cost_usd"] == 0
    assert any("response cache" in r for r in second.moai["reason"])
    assert mix.metrics.cache.labels("default", "hit")._value.get() == 1
    assert mix.metrics.cache.labels("default", "miss")._value.get() == 1


def test_generation_parameters_are_part_of_the_key(mix: Mixture, stubs: tuple[StubServer, StubServer]) -> None:
    ask(mix, "Name a colour.")
    assert ask(mix, "Name a colour.", temperature=0.7).moai["cache"] == "miss"
    assert ask(mix, "Name a colour.", max_tokens=5).moai["cache"] == "miss"
    assert ask(mix, "Name a colour.", temperature=0.7).moai["cache"] == "hit"
    assert ask(mix, "Name a colour.", presence_penalty=0.5).moai["cache"] == "miss"
    assert ask(mix, "Name a colour.", presence_penalty=0.5).moai["cache"] == "hit"
    assert stubs[0].script.calls == 4


def test_stream_is_cached_and_replayed(mix: Mixture, stubs: tuple[StubServer, StubServer]) -> None:
    def text(chunks: list[Any]) -> str:
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    a = list(ask(mix, "Stream me a greeting", stream=True))
    b = list(ask(mix, "Stream me a greeting", stream=True))
    assert text(a) == text(b) == "cloud answer" and stubs[0].script.calls == 1
    finish = [c for c in b if c.choices and c.choices[0].finish_reason]
    assert finish[0].moai["cache"] == "hit"
    assert ask(mix, "Stream me a greeting").moai["cache"] == "hit"  # a streamed answer serves plain requests too


def test_ttl_expiry(stubs: tuple[StubServer, StubServer]) -> None:
    clock = Clock()
    m = Mixture(parse_config(cfg_text(stubs[0].url, stubs[1].url)))
    m.cache = ResponseCache(mode="exact", ttl_s=60, clock=clock)
    try:
        ask(m, "hello")
        clock.now += 59
        assert ask(m, "hello").moai["cache"] == "hit"
        clock.now += 2
        assert ask(m, "hello").moai["cache"] == "miss"
        assert stubs[0].script.calls == 2
    finally:
        shutdown(m)


def test_lru_bound_evicts_the_least_recently_used(stubs: tuple[StubServer, StubServer]) -> None:
    m = Mixture(parse_config(cfg_text(stubs[0].url, stubs[1].url)))
    m.cache = ResponseCache(mode="exact", max_entries=2)
    try:
        ask(m, "a")
        ask(m, "b")
        assert ask(m, "a").moai["cache"] == "hit"  # a is now the most recent
        ask(m, "c")  # evicts b
        assert len(m.cache) == 2
        assert ask(m, "a").moai["cache"] == "hit"
        assert ask(m, "b").moai["cache"] == "miss"
    finally:
        shutdown(m)


def test_opt_out_neither_reads_nor_writes(mix: Mixture, stubs: tuple[StubServer, StubServer]) -> None:
    ask(mix, "opt out please")
    r = ask(mix, "opt out please", moai={"cache": False})
    assert r.moai["cache"] == "bypass" and stubs[0].script.calls == 2
    ask(mix, "never stored", extra_body={"moai": {"cache": False}})
    assert ask(mix, "never stored").moai["cache"] == "miss"


def test_semantic_threshold(mix: Mixture, stubs: tuple[StubServer, StubServer]) -> None:
    ask(mix, "how do I reverse a list in python")
    hit = ask(mix, "in python how do I reverse a list")  # same words: cosine 1
    assert hit.moai["cache"] == "semantic" and stubs[0].script.calls == 1
    assert ask(mix, "how do I sort a dictionary by value in python").moai["cache"] == "miss"
    assert stubs[0].script.calls == 2


def test_semantic_requires_the_same_numbers_and_context(mix: Mixture, stubs: tuple[StubServer, StubServer]) -> None:
    ask(mix, "what is 17 times 23")
    assert ask(mix, "what is 17 times 24").moai["cache"] == "miss"  # identical bag of words but one number
    history = [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "what is 17 times 23"}]
    assert mix.chat.completions.create(model="moai/default", messages=history).moai["cache"] == "miss"
    assert numbers_of("pay 1,200.50 in 3 parts") == ("1,200.50", "3")


def test_lookalike_checks() -> None:
    assert lookalike("What is the capital of Australia?", "What is the capital of Austria?")
    assert lookalike("convert a string to an integer in Java", "convert an integer to a string in Java")
    assert lookalike("what is 17 times 23", "what is 17 times 24") == "different numbers"
    assert lookalike("Which foods are safe for dogs?", "Which foods are not safe for dogs?") == "one is negated"
    q = "How do I convert a string to an integer in Java?"
    assert lookalike(q, "In Java, how can I turn a String into an int?") is None
    assert lookalike("Who wrote Hamlet?", "Who was the writer of the play Hamlet?") is None
    assert lookalike("Who wrote Hamlet?", "Who is the author of Hamlet?")  # the price: a lone synonym swap misses


def test_semantic_never_crosses_mixes(mix: Mixture) -> None:
    ask(mix, "how do I reverse a list in python")
    assert ask(mix, "in python how do I reverse a list", model="moai/both").moai["cache"] == "miss"


def test_privacy_levels_are_separated(mix: Mixture, stubs: tuple[StubServer, StubServer]) -> None:
    """A sensitive request that must stay local never receives the answer a cloud model gave."""
    cloud, local = stubs
    secret = "My card number is 4539 1488 0343 6467, which bank issued it?"
    first = ask(mix, secret, model="moai/both", moai={"exclude": ["local-model"]})
    assert first.moai["model"] == "cloud-model" and first.moai["cache"] == "miss"
    strict = ask(mix, secret, model="moai/both", moai={"sensitive_data": "local_only"})
    assert strict.moai["model"] == "local-model" and strict.choices[0].message.content == "local answer"
    assert strict.moai["cache"] == "miss"
    again = ask(mix, secret, model="moai/both", moai={"privacy": "local"})
    assert again.moai["cache"] == "hit" and again.choices[0].message.content == "local answer"
    assert ask(mix, secret, model="moai/both", moai={"exclude": ["local-model"]}).moai["model"] == "cloud-model"
    assert (cloud.script.calls, local.script.calls) == (1, 1)


def test_sensitive_requests_are_never_matched_semantically(mix: Mixture) -> None:
    ask(mix, "which bank issued my card 4539 1488 0343 6467")
    r = ask(mix, "my card 4539 1488 0343 6467 which bank issued")  # same words and numbers, but sensitive
    assert r.moai["privacy"]["sensitive"] and r.moai["cache"] == "miss"


def test_real_encoder_paraphrase_hits_and_a_different_question_misses(
        stubs: tuple[StubServer, StubServer]) -> None:
    pytest.importorskip("onnxruntime")
    from moai.gate.encoder import EncoderUnavailable, find_model_file, find_tokenizer_file

    try:
        find_model_file(), find_tokenizer_file()
    except EncoderUnavailable as e:
        pytest.skip(str(e))
    m = Mixture(parse_config(cfg_text(stubs[0].url, stubs[1].url)))
    m.cache = ResponseCache(mode="semantic")  # the default threshold and the MiniLM encoder
    try:
        ask(m, "How can I reverse a list in Python?")
        assert ask(m, "How do I reverse a list in Python?").moai["cache"] == "semantic"
        assert ask(m, "How can I reverse a string in Python?").moai["cache"] == "miss"
        assert ask(m, "What is the capital of Australia?").moai["cache"] == "miss"
    finally:
        shutdown(m)


def test_merge_tool_call_fragments() -> None:
    frags = [{"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a"'}},
             {"index": 0, "function": {"arguments": ": 1}"}}]
    whole = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    assert merge_tool_calls(frags) == [whole]


def test_per_key_partitions(stubs: tuple[StubServer, StubServer]) -> None:
    from moai.server.openai_schema import ChatCompletionRequest

    m = Mixture(parse_config(cfg_text(stubs[0].url, stubs[1].url)))
    body = ChatCompletionRequest.model_validate({"model": "default", "messages": [{"role": "user", "content": "x"}]})
    for per_key, same in ((False, True), (True, False)):
        m.cache = ResponseCache(mode="exact", per_key=per_key)
        a, b = m.prepare(body, api_key="tenant-a"), m.prepare(body, api_key="tenant-b")
        assert (m.cache.keys(a)[0] == m.cache.keys(b)[0]) is same


def test_from_config_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOAI_CACHE", "semantic")
    monkeypatch.setenv("MOAI_CACHE_TTL_S", "5")
    monkeypatch.setenv("MOAI_CACHE_MAX_ENTRIES", "7")
    c = ResponseCache.from_config(object())
    assert (c.mode, c.ttl_s, c.max_entries) == ("semantic", 5.0, 7)
    monkeypatch.delenv("MOAI_CACHE")
    assert not ResponseCache.from_config(object()).enabled  # off unless asked for


# ---------------------------------------------------------------- through the real server


@pytest.mark.integration
def test_server_cache_with_the_official_client(tmp_path: Path) -> None:
    with StubServer(Script(reply="cloud answer")) as cloud:
        server = start_moai(cfg_text(cloud.url, cloud.url), tmp_path, env={"MOAI_CACHE": "exact"})
        try:
            client = openai.OpenAI(base_url=server.url, api_key="none", max_retries=0)
            msgs = [{"role": "user", "content": "What is the boiling point of water?"}]
            raw1 = client.chat.completions.with_raw_response.create(model="moai/default", messages=msgs)
            raw2 = client.chat.completions.with_raw_response.create(model="moai/default", messages=msgs)
            assert raw1.headers["x-moai-cache"] == "miss" and raw2.headers["x-moai-cache"] == "hit"
            r2 = raw2.parse()
            assert r2.choices[0].message.content == "cloud answer" and r2.moai["cache"] == "hit"  # type: ignore[attr-defined]
            assert r2.moai["cost_usd"] == 0 and r2.usage.total_tokens == 0  # type: ignore[attr-defined,union-attr]
            with client.chat.completions.with_streaming_response.create(
                    model="moai/default", messages=msgs, stream=True) as resp:
                assert resp.headers["x-moai-cache"] == "hit"
                text = "".join(c.choices[0].delta.content or "" for c in resp.parse() if c.choices)
            assert text == "cloud answer"
            raw3 = client.chat.completions.with_raw_response.create(
                model="moai/default", messages=msgs, extra_body={"moai": {"cache": False}})
            assert raw3.headers["x-moai-cache"] == "bypass"
            assert cloud.script.calls == 2
            metrics = httpx.get(f"{server.base}/metrics").text
            assert 'moai_cache_total{mix="default",result="hit"} 2.0' in metrics
        finally:
            stop(server.proc)

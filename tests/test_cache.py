"""The response cache: exact and semantic hits, TTL, LRU bound, opt-out, privacy separation, and the real
server with the official openai client."""

from __future__ import annotations

import asyncio
import contextlib
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
from moai.cache import ResponseCache, expression_of, lookalike, merge_tool_calls, numbers_of
from moai.config import ConfigError, parse_config


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


# ---------------------------------------------------------------- look-alikes: order, scope, relations


@pytest.mark.parametrize(("a", "b"), [
    ("What is 17 minus 23?", "What is 23 minus 17?"),
    ("Divide 10 by 2", "Divide 2 by 10"),
    ("What is 100 divided by 4?", "What is 4 divided by 100?"),
    ("What is 2 to the power of 10?", "What is 10 to the power of 2?"),
    ("What is x if 2x + 3 = 7?", "What is x if 3x + 2 = 7?"),
    ("What is x^2 when x = 3?", "What is 2^x when x = 3?"),
    ("Simplify a - b", "Simplify b - a"),
    ("What is seventeen times twenty-three?", "What is seventeen times twenty-four?"),
    ("How many km are in 5 miles?", "How many miles are in 5 km?"),
    ("Convert 10 kilograms in pounds", "Convert 10 pounds in kilograms"),
    ("Is Python faster than Java?", "Is Java faster than Python?"),
    ("Translate 'good morning' into French", "Translate 'good morning' into French and Spanish"),
    ("Summarize the plot of Hamlet in one sentence", "Summarize the plot of Hamlet in three paragraphs"),
    ("What is the time complexity of quicksort?", "What is the worst-case time complexity of quicksort?"),
    ("Is it safe to eat raw chicken?", "Is it safe to eat raw chicken or raw fish?"),
    ("What year did World War II end?", "What year did World War I end?"),
    ("How to convert a string to an integer", "How to convert an integer to a string"),  # the swap is at "to" #2
    ("How do I go from km to miles?", "How do I go from miles to km?"),
])
def test_lookalikes_in_order_scope_and_relation(a: str, b: str) -> None:
    assert lookalike(a, b) and lookalike(b, a)


@pytest.mark.parametrize(("a", "b"), [
    ("What is 17*23?", "What is 17 times 23?"),
    ("What is seventeen times twenty-three?", "What is 17 * 23?"),
    ("How many km are in five miles?", "How many km are in 5 miles?"),
    ("Who won the 1998 World Cup?", "Who won the World Cup in 1998?"),
    ("What is the worst-case time complexity of quicksort?", "What's the worst case time complexity of quicksort?"),
    ("What is the capital of France?", "Which city is the capital of France?"),
    ("Explain recursion to a beginner.", "Can you explain recursion in simple terms for a beginner?"),
    ("How do I convert a string to an integer in Java?", "In Java, how can I turn a String into an int?"),
    ("How do I find the length of a string in C?", "In C, how can I get a string's length?"),
])
def test_rewordings_are_not_lookalikes(a: str, b: str) -> None:
    assert lookalike(a, b) is None and lookalike(b, a) is None


def test_numbers_and_expressions_keep_their_order() -> None:
    assert numbers_of("What is 23 minus 17?") == ("23", "17")
    assert numbers_of("one hundred and five, twenty-three, 5 million") == ("105", "23", "5000000")
    assert expression_of("What is x if 2x + 3 = 7?") == ("2", "x", "+", "3", "=", "7")
    assert expression_of("What is 17 minus 23?") == ("17", "-", "23")
    assert expression_of("How many times has Brazil won the World Cup?") == ()  # no operands: no product
    assert expression_of("Explain the worst-case (amortised) cost of gpt-4") == ()  # hyphens and brackets in prose


def test_semantic_hit_needs_the_operands_in_the_same_order(mix: Mixture, stubs: tuple[StubServer, StubServer]) -> None:
    ask(mix, "what is 17 minus 23")
    assert ask(mix, "what is 23 minus 17").moai["cache"] == "miss"  # the same bag of words: cosine 1
    assert ask(mix, "what is 17 minus 23 please").moai["cache"] == "semantic"
    assert stubs[0].script.calls == 2


# ---------------------------------------------------------------- tenants


def keyed_requests(m: Mixture, keys: list[str | None], text: str = "What is the boiling point of water?"
                   ) -> list[dict[str, Any]]:
    """Send ``text`` once per entry of ``keys`` (an API key id, or None for the open gateway); the summaries."""
    from moai.server.openai_schema import ChatCompletionRequest

    body = ChatCompletionRequest.model_validate({"model": "default", "messages": [{"role": "user", "content": text}]})

    async def go() -> list[dict[str, Any]]:
        out = []
        try:
            for key in keys:
                prep = m.prepare(body, api_key=key)
                out.append(m.summary(prep, await m.run(prep)))
        finally:
            await m.aclose()
        return out

    return asyncio.run(go())


def test_the_cache_is_per_key_by_default(stubs: tuple[StubServer, StubServer],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    cloud, local = stubs
    m = Mixture(parse_config(cfg_text(cloud.url, local.url) + "settings:\n  cache: {mode: exact}\n"))
    assert m.cache.per_key
    a1, b1, a2, open1, open2 = keyed_requests(m, ["key-a", "key-b", "key-a", None, None])
    assert [s["cache"] for s in (a1, b1, a2, open1, open2)] == ["miss", "miss", "hit", "miss", "hit"]
    assert any(a1["id"] in r for r in a2["reason"])  # the key's own earlier request may be named
    assert cloud.script.calls == 3
    monkeypatch.setenv("MOAI_CACHE", "exact")
    assert ResponseCache.from_config(object()).per_key
    monkeypatch.setenv("MOAI_CACHE_PER_KEY", "false")
    assert not ResponseCache.from_config(object()).per_key


def test_a_shared_cache_does_not_show_another_keys_request(stubs: tuple[StubServer, StubServer]) -> None:
    cloud, local = stubs
    m = Mixture(parse_config(cfg_text(cloud.url, local.url) + "settings:\n  cache: {mode: exact, per_key: false}\n"))
    assert not m.cache.per_key
    a1, b1 = keyed_requests(m, ["key-a", "key-b"])
    assert (a1["cache"], b1["cache"]) == ("miss", "hit") and cloud.script.calls == 1
    assert not any(a1["id"] in r for r in b1["reason"])
    assert any("for another API key" in r for r in b1["reason"])


# ---------------------------------------------------------------- sessions


def test_a_pinned_session_is_answered_only_by_its_model(mix: Mixture) -> None:
    """bob's answer is cached; alice's conversation is on the other model: the cache must neither serve her
    bob's answer nor move her conversation to bob's model."""
    q = "how do I reverse a list in python"
    bobs = ask(mix, q, model="moai/both", user="bob").moai["model"]
    hers = next(m for m in ("cloud-model", "local-model") if m != bobs)
    assert ask(mix, "hi", model="moai/both", user="alice", moai={"exclude": [bobs]}).moai["model"] == hers
    exact = ask(mix, q, model="moai/both", user="alice")
    assert exact.moai["cache"] == "miss" and exact.moai["model"] == hers
    assert exact.choices[0].message.content == hers.replace("-model", " answer")
    assert mix.session_model("alice", "both") == hers
    assert ask(mix, q, model="moai/both", user="alice").moai["cache"] == "hit"  # her model's own answer
    assert ask(mix, q, model="moai/both", user="dave").moai["model"] == hers  # any model's answer suits a new one
    carols = ask(mix, "in python how do I reverse a list", model="moai/both", user="carol",
                 moai={"exclude": [hers]})
    assert carols.moai["model"] == bobs
    similar = ask(mix, "in python how do I reverse a list", model="moai/both", user="alice")
    assert similar.moai["model"] == hers and mix.session_model("alice", "both") == hers


# ---------------------------------------------------------------- answers passed on by the final step


PASSING = """
models:
  ma: {{provider: openai_compat, endpoint: "{a}", model: stub, privacy: cloud, supports_tools: true}}
  mb: {{provider: openai_compat, endpoint: "{b}", model: stub, privacy: cloud, supports_tools: true}}
  judge: {{provider: openai_compat, endpoint: "{judge}", model: stub, privacy: cloud}}
  grader: {{provider: openai_compat, endpoint: "{grader}", model: stub, privacy: cloud, supports_tools: true}}
  critic: {{provider: openai_compat, endpoint: "{critic}", model: stub, privacy: cloud}}
mixes:
  fanout: {{strategy: fanout, proposers: [ma, mb], judge: judge}}
  cascade: {{strategy: cascade, cascade: [ma, mb], scorer: judge, judge: grader, threshold: 0.5}}
  critique: {{strategy: critique, writer: ma, critic: critic, rounds: 1}}
  unreviewed: {{strategy: critique, writer: ma, critic: critic, rounds: 1, fallbacks: []}}
settings:
  cache: {{mode: exact}}
"""


@pytest.fixture
def passing() -> Iterator[tuple[Mixture, list[StubServer]]]:
    scripts = [Script(reply="answer A"), Script(reply="answer B"), Script(reply="BEST: 1"), Script(reply="9"),
               Script(reply="VERDICT: APPROVED")]
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(StubServer(s)) for s in scripts]
        names = ["a", "b", "judge", "grader", "critic"]
        m = Mixture(parse_config(PASSING.format(**{n: s.url for n, s in zip(names, servers, strict=True)})))
        yield m, servers
        shutdown(m)


@pytest.mark.parametrize("mix_name", ["fanout", "cascade", "critique"])
def test_an_answer_passed_on_by_the_final_step_is_cached(passing: tuple[Mixture, list[StubServer]],
                                                         mix_name: str) -> None:
    m, servers = passing

    def calls() -> int:
        return sum(s.script.calls for s in servers)

    def streamed(text: str) -> tuple[str, str | None, str | None]:
        chunks = list(ask(m, text, model=f"moai/{mix_name}", stream=True))
        end = [c for c in chunks if c.choices and c.choices[0].finish_reason]
        return ("".join(c.choices[0].delta.content or "" for c in chunks if c.choices),
                end[0].choices[0].finish_reason, end[0].moai["cache"])

    first = ask(m, "Name a colour.", model=f"moai/{mix_name}")
    assert first.moai["cache"] == "miss" and first.moai["trace"][-1]["status"] == "passthrough"
    spent = calls()
    again = ask(m, "Name a colour.", model=f"moai/{mix_name}")
    assert again.moai["cache"] == "hit" and calls() == spent
    assert again.choices[0].message.content == first.choices[0].message.content == "answer A"
    assert again.choices[0].finish_reason == "stop" and again.moai["model"] == "ma"
    assert streamed("Name a colour.") == ("answer A", "stop", "hit")
    assert streamed("Name a fruit.") == ("answer A", "stop", "miss")  # a streamed answer fills the cache too
    spent = calls()
    assert ask(m, "Name a fruit.", model=f"moai/{mix_name}").moai["cache"] == "hit" and calls() == spent


def test_a_draft_passed_on_by_a_failed_critic_is_not_cached(passing: tuple[Mixture, list[StubServer]]) -> None:
    m, servers = passing
    servers[4].script.fail_times = 1000
    first = ask(m, "Name a colour.", model="moai/unreviewed")
    assert first.choices[0].message.content == "answer A" and first.moai["cache"] == "miss"
    assert first.moai["trace"][-1]["status"] == "passthrough"
    assert ask(m, "Name a colour.", model="moai/unreviewed").moai["cache"] == "miss"


def test_an_answer_the_judge_gave_no_usable_verdict_on_is_not_cached(passing: tuple[Mixture, list[StubServer]]) -> None:
    """A judge that answered but named no answer: the gate's favourite went out unvetted, so it is not kept."""
    m, servers = passing
    servers[2].script.reply = "I cannot decide"
    first = ask(m, "Name a colour.", model="moai/fanout")
    assert first.moai["cache"] == "miss" and any("verdict unusable" in r for r in first.moai["reason"])
    assert ask(m, "Name a colour.", model="moai/fanout").moai["cache"] == "miss"


# ---------------------------------------------------------------- bad settings


@pytest.mark.parametrize(("env", "needles"), [
    ({"MOAI_CACHE": "on"}, ["MOAI_CACHE='on'", "off, exact or semantic"]),
    ({"MOAI_CACHE": "exact", "MOAI_CACHE_TTL_S": "abc"}, ["MOAI_CACHE_TTL_S='abc'", "greater than 0"]),
    ({"MOAI_CACHE": "semantic", "MOAI_CACHE_THRESHOLD": "1.5"}, ["MOAI_CACHE_THRESHOLD", "at most 1"]),
    ({"MOAI_CACHE": "exact", "MOAI_CACHE_PER_KEY": "maybe"}, ["MOAI_CACHE_PER_KEY", "true or false"]),
])
def test_a_bad_cache_variable_stops_serve_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       env: dict[str, str], needles: list[str]) -> None:
    from cli_support import one_line_error, record_serving
    from stub_openai import free_port
    from typer.testing import CliRunner

    from moai.cli import app

    served = record_serving(monkeypatch)  # a regression fails below instead of serving for ever
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MOAI_CONFIG", raising=False)
    monkeypatch.setenv("MOAI_DATABASE_URL", f"sqlite:///{tmp_path / 'moai.db'}")
    path = tmp_path / "mix.yaml"
    path.write_text(cfg_text("http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1"))
    r = CliRunner().invoke(app, ["serve", "--config", str(path), "--port", str(free_port())])
    one_line_error(r, *needles)
    assert "serving" not in r.output and served == []
    with pytest.raises(ConfigError, match=needles[0].split("=")[0]):
        ResponseCache.from_config(object())


def test_tool_calls_passed_on_by_a_cascade_are_cached_whole(passing: tuple[Mixture, list[StubServer]]) -> None:
    m, servers = passing
    servers[0].script.tool_call = ("get_weather", '{"city": "Paris"}')
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    first = ask(m, "Weather in Paris?", model="moai/cascade", tools=tools)
    assert first.moai["cache"] == "miss" and first.moai["trace"][-1]["status"] == "passthrough"
    spent = sum(s.script.calls for s in servers)
    again = ask(m, "Weather in Paris?", model="moai/cascade", tools=tools)
    assert again.moai["cache"] == "hit" and sum(s.script.calls for s in servers) == spent
    assert again.choices[0].finish_reason == first.choices[0].finish_reason == "tool_calls"
    (call,) = again.choices[0].message.tool_calls or []
    assert (call.function.name, call.function.arguments) == ("get_weather", '{"city": "Paris"}')
    assert call.id == (first.choices[0].message.tool_calls or [])[0].id
    chunks = list(ask(m, "Weather in Paris?", model="moai/cascade", tools=tools, stream=True))
    deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert [(d.index, d.function.arguments) for d in deltas if d.function] == [(0, '{"city": "Paris"}')]
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]

"""Sampling beyond OpenAI's (``top_k``, ``min_p``, ``repetition_penalty``, ``typical_p``), as vLLM, llama.cpp's
server, Together and Groq take it: validated, sent to an OpenAI-compatible upstream only where its card's
``sampling_extras`` lists it (under the name listed: llama.cpp's server reads ``repeat_penalty``), ``top_k`` to
Anthropic, the rest dropped and named in ``moai.reason``; part of the response cache's key; taken by the Responses
API too."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient
from stub_anthropic import StubAnthropic
from stub_openai import StubServer

from moai.api import shutdown
from moai.config import parse_config
from moai.gate.rules import RuleChooser
from moai.mixture import Mixture
from moai.server.app import create_app
from moai.server.openai_schema import ChatCompletionRequest

pytestmark = pytest.mark.integration

EXTRAS = {"top_k": 5, "min_p": 0.1, "repetition_penalty": 1.15, "typical_p": 0.9}
NAMES = ("top_k", "min_p", "repetition_penalty", "repeat_penalty", "typical_p")


class Upstreams:
    def __init__(self, stubs: dict[str, Any], client: TestClient, mixture: Mixture) -> None:
        self.stubs, self.client, self.mixture = stubs, client, mixture

    def __getattr__(self, name: str) -> Any:
        return self.stubs[name]

    def ask(self, mix: str, text: str = "Hi!", **fields: Any) -> Any:
        body = {"model": f"moai/{mix}", "messages": [{"role": "user", "content": text}], **fields}
        return self.client.post("/v1/chat/completions", json=body)


@contextlib.contextmanager
def _served(models: str, mixes: str, **stubs: Any) -> Iterator[Upstreams]:
    m = Mixture(parse_config(f"models:\n{models}mixes:\n{mixes}"), chooser=RuleChooser())
    try:
        with TestClient(create_app(m.config, mixture=m)) as client:
            yield Upstreams(stubs, client, m)
    finally:
        shutdown(m)


LISTED = """\
  vllm: {{provider: openai_compat, endpoint: "{vllm}", privacy: private, max_retries: 0,
         sampling_extras: [top_k, min_p, repetition_penalty, typical_p]}}
  llama: {{provider: openai_compat, endpoint: "{llama}", privacy: private, max_retries: 0,
          sampling_extras: [top_k, repeat_penalty]}}
"""
LISTED_MIXES = """\
  vllm: {strategy: route, models: [vllm]}
  llama: {strategy: route, models: [llama]}
  panel: {strategy: moa, proposers: [vllm, llama], aggregator: vllm}
"""
UNLISTED = """\
  plain: {{provider: openai_compat, endpoint: "{plain}", privacy: private, max_retries: 0}}
  claude: {{provider: anthropic, endpoint: "{claude}", model: claude-test, privacy: private, max_retries: 0}}
"""
UNLISTED_MIXES = """\
  plain: {strategy: route, models: [plain]}
  claude: {strategy: route, models: [claude]}
"""


@pytest.fixture(scope="module")
def up() -> Iterator[Upstreams]:
    """Upstreams whose cards list the extras they take."""
    with (StubServer() as vllm, StubServer() as llama,
          _served(LISTED.format(vllm=vllm.url, llama=llama.url), LISTED_MIXES, vllm=vllm, llama=llama) as served):
        yield served


@pytest.fixture(scope="module")
def bare() -> Iterator[Upstreams]:
    """An OpenAI-compatible upstream whose card lists none, and Anthropic."""
    with (StubServer() as plain, StubAnthropic() as claude,
          _served(UNLISTED.format(plain=plain.url, claude=claude.url), UNLISTED_MIXES, plain=plain,
                  claude=claude) as served):
        yield served


def _last(stub: Any) -> dict[str, Any]:
    return stub.script.seen[-1]


def _sent(stub: Any) -> dict[str, Any]:
    return {k: v for k, v in _last(stub).items() if k in NAMES}


def _reasons(r: Any, stream: bool) -> list[str]:
    if not stream:
        return r.json()["moai"]["reason"]
    import json

    chunks = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
    return next(c["moai"]["reason"] for c in chunks if "moai" in c)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_an_upstream_whose_card_lists_them_gets_them(up: Upstreams, stream: bool) -> None:
    r = up.ask("vllm", stream=stream, **EXTRAS)
    assert r.status_code == 200, r.text
    assert _sent(up.vllm) == EXTRAS
    assert not any("top_k" in line for line in _reasons(r, stream))  # neither unknown nor dropped


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_llama_cpp_server_gets_repeat_penalty_and_the_unlisted_are_named(up: Upstreams, stream: bool) -> None:
    r = up.ask("llama", stream=stream, **EXTRAS)
    assert r.status_code == 200, r.text
    assert _sent(up.llama) == {"top_k": 5, "repeat_penalty": 1.15}
    assert "request field(s) min_p, typical_p not sent to llama (its card's sampling_extras does not list them)" \
        in _reasons(r, stream)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_without_the_card_field_none_is_sent_and_each_is_named(bare: Upstreams, stream: bool) -> None:
    r = bare.ask("plain", stream=stream, **EXTRAS)
    assert r.status_code == 200, r.text
    assert _sent(bare.plain) == {}  # a real OpenAI endpoint would refuse any of them with a 400
    reasons = _reasons(r, stream)
    assert ("request field(s) top_k, min_p, repetition_penalty, typical_p not sent to plain (its card's "
            "sampling_extras does not list them)") in reasons
    assert not any("neither OpenAI's nor moai's" in line for line in reasons)  # no longer unknown fields


def test_nothing_is_sent_or_said_when_none_is_asked_for(up: Upstreams) -> None:
    r = up.ask("vllm")
    assert r.status_code == 200 and _sent(up.vllm) == {}
    assert not any("not sent to" in line for line in r.json()["moai"]["reason"])


def test_top_k_off_goes_as_vllm_disable(up: Upstreams) -> None:
    """0 (llama.cpp's, Hugging Face's "off") and -1 (vLLM's) are one request: -1 is sent, which older vLLM
    releases require and llama.cpp's server reads as off too."""
    for off in (0, -1):
        assert up.ask("vllm", top_k=off).status_code == 200
        assert _sent(up.vllm) == {"top_k": -1}


def test_llama_cpp_name_is_taken_in_the_request(up: Upstreams) -> None:
    assert up.ask("vllm", repeat_penalty=1.2).status_code == 200
    assert _sent(up.vllm) == {"repetition_penalty": 1.2}
    r = up.ask("vllm", repeat_penalty=1.2, repetition_penalty=1.3)
    assert r.status_code == 400 and r.json()["error"]["param"] == "repeat_penalty"


def test_every_answer_writing_call_of_a_mix_gets_them(up: Upstreams) -> None:
    before_vllm, before_llama = len(up.vllm.script.seen), len(up.llama.script.seen)
    assert up.ask("panel", top_k=3, min_p=0.2).status_code == 200
    calls = up.vllm.script.seen[before_vllm:] + up.llama.script.seen[before_llama:]
    assert len(calls) == 3
    assert [c.get("top_k") for c in calls] == [3, 3, 3]
    assert [c.get("min_p") for c in up.vllm.script.seen[before_vllm:]] == [0.2, 0.2]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_anthropic_gets_top_k_and_the_rest_are_named(bare: Upstreams, stream: bool) -> None:
    r = bare.ask("claude", stream=stream, **EXTRAS)
    assert r.status_code == 200, r.text
    assert _sent(bare.claude) == {"top_k": 5}
    assert ("request field(s) min_p, repetition_penalty, typical_p not sent to claude (Anthropic's API takes top_k "
            "only)") in _reasons(r, stream)
    assert bare.ask("claude", top_k=-1, stream=stream).status_code == 200  # off: its default, nothing sent
    assert _sent(bare.claude) == {}


@pytest.mark.parametrize(("field", "value"), [
    ("top_k", -2), ("top_k", 1.5), ("top_k", "40"), ("top_k", True), ("top_k", 1 << 31),
    ("min_p", -0.1), ("min_p", 1.5), ("min_p", "0.1"),
    ("repetition_penalty", 0), ("repetition_penalty", -1.0), ("repetition_penalty", 1000),
    ("repeat_penalty", 0), ("typical_p", 1.2), ("typical_p", -0.5), ("typical_p", False),
])
def test_a_bad_value_is_a_400_naming_the_field(bare: Upstreams, field: str, value: Any) -> None:
    before = len(bare.plain.script.seen)
    r = bare.ask("plain", **{field: value})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == field and err["type"] == "invalid_request_error" and field in err["message"]
    assert len(bare.plain.script.seen) == before  # refused before any model ran


def test_the_responses_api_passes_them_on(up: Upstreams) -> None:
    r = up.client.post("/v1/responses", json={"model": "moai/llama", "input": "Hi!", **EXTRAS})
    assert r.status_code == 200, r.text
    assert _sent(up.llama) == {"top_k": 5, "repeat_penalty": 1.15}


def test_the_cache_key_tells_them_apart(bare: Upstreams) -> None:
    """A request with ``top_k: 1`` is not answered from the cache of one without (nor of another value); -1 and
    0 ask for the same."""
    m = bare.mixture

    def key(**fields: Any) -> str:
        body = ChatCompletionRequest.model_validate({"model": "moai/plain", "messages": [
            {"role": "user", "content": "Name a colour."}], **fields})
        return m.cache.keys(m.prepare(body))[0]

    plain = key()
    keys = [key(top_k=1), key(top_k=2), key(min_p=0.1), key(repetition_penalty=1.1), key(typical_p=0.9)]
    assert len({plain, *keys}) == 6
    assert key(top_k=1) == keys[0] and key(repeat_penalty=1.1) == keys[3]
    assert key(top_k=0) == key(top_k=-1) != plain


def test_a_cached_answer_is_not_served_for_other_sampling() -> None:
    from moai.cache import ResponseCache

    with (StubServer() as plain,
          _served(f"  plain: {{provider: openai_compat, endpoint: '{plain.url}', privacy: private}}\n",
                  "  default: {strategy: route}\n") as served):
        served.mixture.cache = ResponseCache(mode="exact", counter=served.mixture.metrics.cache)

        def ask(**fields: Any) -> str:
            r = served.ask("default", "Name a colour.", **fields)
            assert r.status_code == 200, r.text
            return r.json()["moai"]["cache"]

        assert [ask(), ask(top_k=1), ask(top_k=1), ask(min_p=0.2), ask()] == ["miss", "miss", "hit", "miss", "hit"]
        assert plain.script.calls == 3


def test_a_judge_or_critic_is_not_named_for_extras_it_is_never_sent() -> None:
    """Review steps run with moai's own options: that they got no extras is no news, and no card's fault."""
    with (StubServer() as vllm, StubServer() as plain,
          _served(LISTED.format(vllm=vllm.url, llama=vllm.url) + f"""\
  plain: {{provider: openai_compat, endpoint: "{plain.url}", privacy: private, max_retries: 0}}
""", """\
  review: {strategy: critique, writer: vllm, critic: plain, rounds: 1}
""", vllm=vllm, plain=plain) as up):
        r = up.ask("review", **EXTRAS)
        assert r.status_code == 200, r.text
        assert [m["model"] for m in r.json()["moai"]["trace"]].count("plain") >= 1  # the critic ran
        assert not _sent(plain) and _sent(vllm) == EXTRAS
        assert not any("not sent to" in line for line in r.json()["moai"]["reason"]), r.json()["moai"]["reason"]

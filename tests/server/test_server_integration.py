"""moai's server driven by the official openai client, answering through llama.cpp's real server."""

from __future__ import annotations

import sqlite3

import httpx
import openai
import pytest

pytestmark = pytest.mark.integration


def client(server) -> openai.OpenAI:  # type: ignore[no-untyped-def]
    return openai.OpenAI(base_url=server.url, api_key="x", max_retries=0)


def test_chat_completion_non_streaming(moai_over_llama) -> None:  # type: ignore[no-untyped-def]
    raw = client(moai_over_llama).chat.completions.with_raw_response.create(
        model="moai/default", messages=[{"role": "user", "content": "Say hello."}], max_tokens=16
    )
    resp = raw.parse()
    assert raw.headers["x-moai-model"] == "smol"
    assert resp.object == "chat.completion"
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content.strip()
    assert resp.usage.prompt_tokens > 0 and 0 < resp.usage.completion_tokens <= 16
    moai = resp.model_extra["moai"]
    assert moai["model"] == "smol" and moai["mix"] == "default" and moai["strategy"] == "route"
    assert moai["trace"][0]["tokens"]["output"] == resp.usage.completion_tokens
    # the request and its model call were committed before the response was sent
    with sqlite3.connect(moai_over_llama.db) as db:
        row = db.execute("select model, status, completion_tokens from requests where id=?", (resp.id,)).fetchone()
        calls = db.execute("select count(*) from calls where request_id=?", (resp.id,)).fetchone()[0]
    assert row == ("smol", "ok", resp.usage.completion_tokens)
    assert calls == 1


def test_chat_completion_streaming(moai_over_llama) -> None:  # type: ignore[no-untyped-def]
    stream = client(moai_over_llama).chat.completions.create(
        model="moai/default", messages=[{"role": "user", "content": "Count to five."}], max_tokens=24,
        stream=True, stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes in (["stop"], ["length"])
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert len({c.id for c in chunks}) == 1


def test_stream_ends_with_done_marker(moai_over_llama) -> None:  # type: ignore[no-untyped-def]
    body = {"model": "moai/default", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8, "stream": True}
    with httpx.stream("POST", moai_over_llama.url + "/chat/completions", json=body, timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [ln for ln in r.iter_lines() if ln]
    assert all(ln.startswith("data: ") for ln in lines)
    assert lines[-1] == "data: [DONE]"


def test_models_lists_mixes_and_models(moai_over_llama) -> None:  # type: ignore[no-untyped-def]
    ids = [m.id for m in client(moai_over_llama).models.list().data]
    assert "moai/default" in ids and "smol" in ids


def test_model_can_be_named_directly(moai_over_llama) -> None:  # type: ignore[no-untyped-def]
    resp = client(moai_over_llama).chat.completions.create(
        model="smol", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    assert resp.model_extra["moai"]["model"] == "smol"


def test_healthz(moai_over_llama) -> None:  # type: ignore[no-untyped-def]
    r = httpx.get(moai_over_llama.base + "/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_retrieve_a_mix_or_a_model(moai_over_llama) -> None:  # type: ignore[no-untyped-def]
    c = client(moai_over_llama)
    listed = {m.id for m in c.models.list()}
    mix = c.models.retrieve("moai/default")
    assert mix.id == "moai/default" and mix.owned_by == "moai" and mix.model_extra["moai"]["kind"] == "mix"
    assert c.models.retrieve("smol").id == "smol" and {"moai/default", "smol"} <= listed
    with pytest.raises(openai.NotFoundError) as e:
        c.models.retrieve("moai/nope")
    assert e.value.code == "model_not_found"

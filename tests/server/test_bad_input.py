"""Bad input through the real server: the right 4xx, OpenAI's error envelope, and the server keeps serving."""

from __future__ import annotations

import httpx
import openai
import pytest

pytestmark = pytest.mark.integration


def post(server, content: bytes | str, headers: dict[str, str] | None = None) -> httpx.Response:  # type: ignore[no-untyped-def]
    return httpx.post(server.url + "/chat/completions", content=content, timeout=30,
                      headers={"content-type": "application/json", **(headers or {})})


def assert_error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert isinstance(err["message"], str) and err["message"]
    assert set(err) == {"message", "type", "param", "code"}
    return err


CASES = [
    ("malformed json", b'{"model": "moai/default", "messages": [', 400),
    ("not an object", b"[1, 2]", 400),
    ("missing messages", b'{"model": "moai/default"}', 400),
    ("empty messages", b'{"model": "moai/default", "messages": []}', 400),
    ("empty content", b'{"model": "moai/default", "messages": [{"role": "user", "content": "  "}]}', 400),
    ("wrong role", b'{"model": "moai/default", "messages": [{"role": "wizard", "content": "x"}]}', 400),
    ("wrong type messages", b'{"model": "moai/default", "messages": "hello"}', 400),
    ("wrong type max_tokens", b'{"model": "moai/default", "messages": [{"role":"user","content":"x"}], '
                              b'"max_tokens": "lots"}', 400),
    ("negative temperature", b'{"model": "moai/default", "messages": [{"role":"user","content":"x"}], '
                             b'"temperature": -1}', 400),
    ("penalty out of range", b'{"model": "moai/default", "messages": [{"role":"user","content":"x"}], '
                             b'"frequency_penalty": 3}', 400),
    ("unknown response format", b'{"model": "moai/default", "messages": [{"role":"user","content":"x"}], '
                                b'"response_format": {"type": "xml"}}', 400),
    ("json_schema without its schema object", b'{"model": "moai/default", "messages": '
                                              b'[{"role":"user","content":"x"}], '
                                              b'"response_format": {"type": "json_schema"}}', 400),
    ("logprobs", b'{"model": "moai/default", "messages": [{"role":"user","content":"x"}], "logprobs": true}', 400),
    ("max_tokens as a string", b'{"model": "moai/default", "messages": [{"role":"user","content":"x"}], '
                               b'"max_tokens": "3"}', 400),
    ("stream as a string", b'{"model": "moai/default", "messages": [{"role":"user","content":"x"}], '
                           b'"stream": "yes"}', 400),
    ("lone surrogate", b'{"model": "moai/default", "messages": [{"role":"user","content":"hi \\ud800"}]}', 400),
    ("unknown tool_choice", b'{"model": "moai/default", "messages": [{"role":"user","content":"x"}], '
                            b'"tool_choice": "bogus"}', 400),
    ("tool_choice naming no tool", b'{"model": "moai/default", "messages": [{"role":"user","content":"x"}], '
                                   b'"tools": [{"type": "function", "function": {"name": "f"}}], '
                                   b'"tool_choice": {"type": "function", "function": {"name": "g"}}}', 400),
    ("unknown model", b'{"model": "moai/nope", "messages": [{"role": "user", "content": "x"}]}', 404),
]


@pytest.mark.parametrize("name,body,status", CASES, ids=[c[0] for c in CASES])
def test_bad_request_gets_openai_error(moai_over_llama, name: str, body: bytes, status: int) -> None:  # type: ignore[no-untyped-def]
    err = assert_error(post(moai_over_llama, body), status)
    if status == 404:
        assert err["code"] == "model_not_found" and err["param"] == "model"


def test_one_megabyte_prompt_is_refused_cleanly(moai_over_llama) -> None:  # type: ignore[no-untyped-def]
    big = "word " * 200_000
    r = httpx.post(moai_over_llama.url + "/chat/completions", timeout=30,
                   json={"model": "moai/default", "messages": [{"role": "user", "content": big}]})
    err = assert_error(r, 400)
    assert err["code"] == "context_length_exceeded"


def test_openai_client_raises_its_usual_exceptions(moai_over_llama) -> None:  # type: ignore[no-untyped-def]
    c = openai.OpenAI(base_url=moai_over_llama.url, api_key="x", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model="moai/default", messages=[{"role": "user", "content": ""}])


def test_server_keeps_serving_after_bad_input(moai_over_llama) -> None:  # type: ignore[no-untyped-def]
    for _name, body, _status in CASES:
        post(moai_over_llama, body)
    c = openai.OpenAI(base_url=moai_over_llama.url, api_key="x", max_retries=0)
    resp = c.chat.completions.create(model="moai/default", messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
    assert resp.choices[0].message.content is not None
    assert moai_over_llama.proc.poll() is None

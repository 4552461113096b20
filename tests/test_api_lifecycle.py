"""The Python API's lifecycle: objects passed back in, shutdown, interpreter exit, timeouts and interruptions.

Scenarios that would hang on a regression run in a child process with a hard time limit."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import openai
import pytest
from openai.types.chat import ChatCompletionMessage
from stub_openai import Script, StubServer
from test_api import HI, config

from moai import Mixture
from moai.api import shutdown

TESTS = Path(__file__).parent
PRELUDE = """
import asyncio, gc, os, signal, sqlite3, sys, threading, time
import openai
from stub_openai import Script, StubServer
from moai import Mixture
from moai.api import shutdown
from moai.telemetry.store import TelemetryStore
HI = [{"role": "user", "content": "hi"}]
DB = sys.argv[1]
def mix_file(url):
    path = os.path.join(os.path.dirname(DB), "mix.yaml")
    open(path, "w").write(f'''
models:
  small: {{provider: openai_compat, endpoint: "{url}", model: stub, privacy: cloud, params_b: 1}}
mixes:
  default: {{strategy: route, max_tokens: 16}}
''')
    return path
def rows():
    with sqlite3.connect(DB) as c:
        return c.execute("select status, http_status from requests order by created_at").fetchall()
"""


def run_child(tmp: Path, body: str, timeout: float = 40) -> subprocess.CompletedProcess[str]:
    """Run ``body`` in a fresh interpreter; a hang fails the test instead of stalling the suite."""
    script = tmp / "child.py"
    script.write_text(PRELUDE + textwrap.dedent(body))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])}
    env.pop("MOAI_DATABASE_URL", None)
    try:
        done = subprocess.run([sys.executable, str(script), str(tmp / "t.db")], capture_output=True, text=True,
                              timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the child hung: {e.stdout!r} {e.stderr!r}")
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def db_rows(tmp: Path) -> list[tuple[str, int]]:
    import sqlite3

    with sqlite3.connect(tmp / "t.db") as c:
        return c.execute("select status, http_status from requests order by created_at").fetchall()


# ---------------------------------------------------------------- objects passed back in


def test_a_returned_message_can_be_sent_back_in_messages(tmp_path: Path) -> None:
    with StubServer(Script(reply="hello")) as stub:
        m = Mixture.from_config(config(tmp_path, stub.url))
        try:
            msgs: list = [*HI]
            r = m.chat.completions.create(model="moai/default", messages=msgs)
            msgs += [r.choices[0].message, {"role": "user", "content": "again"}]  # OpenAI's documented pattern
            assert m.chat.completions.create(model="moai/default", messages=msgs).choices[0].message.content == "hello"
            sent = stub.script.seen[-1]["messages"]
            assert [x["role"] for x in sent] == ["user", "assistant", "user"] and sent[1]["content"] == "hello"
            text = "".join(c.choices[0].delta.content or "" for c in
                           m.chat.completions.create(model="moai/default", messages=msgs, stream=True) if c.choices)
            assert text == "hello"
        finally:
            shutdown(m)


def test_a_returned_tool_call_round_trips(tmp_path: Path) -> None:
    tools = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object", "properties": {}}}}]
    path = tmp_path / "mix.yaml"
    with StubServer(Script(tool_call=("add", '{"a": 1}'))) as stub:
        path.write_text(f"""
models:
  small: {{provider: openai_compat, endpoint: "{stub.url}", model: stub, privacy: cloud, supports_tools: true}}
mixes:
  default: {{strategy: route, max_tokens: 16}}
""")
        m = Mixture.from_config(str(path))
        try:
            msgs: list = [*HI]
            r = m.chat.completions.create(model="moai/default", messages=msgs, tools=tools)
            message = r.choices[0].message
            assert isinstance(message, ChatCompletionMessage) and message.tool_calls
            msgs += [message, {"role": "tool", "tool_call_id": message.tool_calls[0].id, "content": "2"}]
            m.chat.completions.create(model="moai/default", messages=msgs, tools=tools)
            sent = stub.script.seen[-1]["messages"]
            assert [x["role"] for x in sent] == ["user", "assistant", "tool"]
            assert sent[1]["tool_calls"][0]["function"] == {"name": "add", "arguments": '{"a": 1}'}
        finally:
            shutdown(m)


# ---------------------------------------------------------------- shutdown


@pytest.mark.parametrize("store", [True, False])
def test_shutdown_ends_open_streams_and_refuses_later_calls(tmp_path: Path, store: bool) -> None:
    done = run_child(tmp_path, f"""
    with StubServer(Script(reply="a b c d e f g h", word_delay_s=0.3)) as s:
        kw = {{"store": TelemetryStore("sqlite:///" + DB)}} if {store} else {{}}
        m = Mixture.from_config(mix_file(s.url), **kw)
        st = m.chat.completions.create(model="moai/default", messages=HI, stream=True)
        next(st)
        shutdown(m)
        try:
            list(st)
            print("stream: ended quietly")
        except openai.APIConnectionError:
            print("stream: APIConnectionError")
        for stream in (False, True):
            t0 = time.monotonic()
            try:
                m.chat.completions.create(model="moai/default", messages=HI, stream=stream)
            except openai.APIConnectionError:
                print("call: APIConnectionError", round(time.monotonic() - t0))
        async def later():
            try:
                await m.achat.completions.create(model="moai/default", messages=HI)
            except openai.APIConnectionError:
                print("async: APIConnectionError")
        asyncio.run(later())
        shutdown(m)  # again: nothing to do
        if {store}:
            print("rows", rows())
    """)
    out = done.stdout
    assert "stream: APIConnectionError" in out and out.count("call: APIConnectionError 0") == 2
    assert "async: APIConnectionError" in out
    if store:
        assert "rows [('cancelled', 503)]" in out  # stopped by the shutdown, as the server records it


def test_a_mixture_closed_by_aclose_refuses_later_calls_at_once(tmp_path: Path) -> None:
    """``await m.aclose()`` stops the telemetry writer: a later call waited for ever on its record."""
    done = run_child(tmp_path, """
    with StubServer(Script(reply="hello")) as s:
        m = Mixture.from_config(mix_file(s.url), store=TelemetryStore("sqlite:///" + DB))
        print("first", m.chat.completions.create(model="moai/default", messages=HI).choices[0].message.content)
        asyncio.run(m.aclose())
        for stream in (False, True):
            t0 = time.monotonic()
            try:
                m.chat.completions.create(model="moai/default", messages=HI, stream=stream)
            except openai.APIConnectionError:
                print("call: APIConnectionError", round(time.monotonic() - t0))
        print("rows", rows())
    """)
    out = done.stdout
    assert "first hello" in out and out.count("call: APIConnectionError 0") == 2
    assert "rows [('ok', 200)]" in out


def test_aclose_after_async_calls_closes_their_connections(tmp_path: Path) -> None:
    """The calls ran on the API's private loop: `aclose` from the caller's loop left those sessions open."""
    done = run_child(tmp_path, """
    with StubServer(Script(reply="hello")) as s:
        m = Mixture.from_config(mix_file(s.url), store=TelemetryStore("sqlite:///" + DB))
        async def main():
            r = await m.achat.completions.create(model="moai/default", messages=HI)
            print("first", r.choices[0].message.content)
            stream = await m.achat.completions.create(model="moai/default", messages=HI, stream=True)
            print("streamed", "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]))
            await m.aclose()
            try:
                await m.achat.completions.create(model="moai/default", messages=HI)
            except openai.APIConnectionError:
                print("after: APIConnectionError")
        asyncio.run(main())
        gc.collect()
        print("rows", rows())
    """)
    out = done.stdout
    assert "first hello" in out and "streamed hello" in out and "after: APIConnectionError" in out, out
    assert "rows [('ok', 200), ('ok', 200)]" in out
    assert "Unclosed" not in done.stderr, done.stderr[-3000:]


# ---------------------------------------------------------------- interpreter exit and abandoned streams


def test_exit_with_streams_left_open_ends_and_records_them_cancelled(tmp_path: Path) -> None:
    done = run_child(tmp_path, """
    s = StubServer(Script(reply="a b c d e f g h i j", word_delay_s=0.5)).__enter__()
    m = Mixture.from_config(mix_file(s.url), store=TelemetryStore("sqlite:///" + DB))
    st = m.chat.completions.create(model="moai/default", messages=HI, stream=True)
    next(st)
    async def main():
        return await m.achat.completions.create(model="moai/default", messages=HI, stream=True)
    kept = asyncio.run(main())  # still referenced once its loop is closed
    print("leaving", flush=True)
    """)
    assert "leaving" in done.stdout
    assert "Event loop is closed" not in done.stderr and "was destroyed but it is pending" not in done.stderr
    rows = db_rows(tmp_path)
    # the stream left open at exit is stopped by the shutdown (503); the async one, whose loop closed first, may
    # already be recorded as abandoned by its reader (499) when the exit comes
    assert len(rows) == 2 and ("cancelled", 503) in rows, (rows, done.stderr[-3000:])
    assert set(rows) <= {("cancelled", 503), ("cancelled", 499)}, rows


def test_exit_with_a_stream_open_and_no_store_does_not_hang(tmp_path: Path) -> None:
    done = run_child(tmp_path, """
    s = StubServer(Script(reply="a b c d e f g h i j", word_delay_s=0.5)).__enter__()
    m = Mixture.from_config(mix_file(s.url))
    st = m.chat.completions.create(model="moai/default", messages=HI, stream=True)
    next(st); next(st)
    print("leaving", flush=True)
    """, timeout=30)
    assert "leaving" in done.stdout


def test_an_abandoned_stream_stops_its_call(tmp_path: Path) -> None:
    done = run_child(tmp_path, """
    with StubServer(Script(reply="a b c d e f g h i j", word_delay_s=0.3)) as s:
        m = Mixture.from_config(mix_file(s.url), store=TelemetryStore("sqlite:///" + DB))
        for c in m.chat.completions.create(model="moai/default", messages=HI, stream=True):
            break
        gc.collect()
        async def main():
            async for c in await m.achat.completions.create(model="moai/default", messages=HI, stream=True):
                break
            gc.collect()
            await asyncio.sleep(1)
        asyncio.run(main())
        time.sleep(1)
        print("rows", rows())  # before shutdown, which would stop them anyway
        shutdown(m)
    """)
    assert "rows [('cancelled', 499), ('cancelled', 499)]" in done.stdout


def test_ctrl_c_during_a_sync_call_stops_it(tmp_path: Path) -> None:
    done = run_child(tmp_path, """
    with StubServer(Script(reply="a b c d", delay_s=3.0, word_delay_s=0.5)) as s:
        m = Mixture.from_config(mix_file(s.url), store=TelemetryStore("sqlite:///" + DB))
        m.route(HI)
        for stream in (False, True):
            threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
            try:
                r = m.chat.completions.create(model="moai/default", messages=HI, stream=stream)
                list(r) if stream else None
            except KeyboardInterrupt:
                print("interrupted", flush=True)
        time.sleep(1)
        print("rows", rows())
        shutdown(m)
    """)
    assert done.stdout.count("interrupted") == 2
    assert "rows [('cancelled', 499), ('cancelled', 499)]" in done.stdout


# ---------------------------------------------------------------- timeouts and the stream surface


async def test_a_stream_timeout_bounds_the_wait_for_its_first_chunk(tmp_path: Path) -> None:
    import time

    with StubServer(Script(reply="late", delay_s=3.0)) as stub:
        m = Mixture.from_config(config(tmp_path, stub.url))
        try:
            m.route(HI)
            t0 = time.monotonic()
            with pytest.raises(openai.APITimeoutError):
                m.chat.completions.create(model="moai/default", messages=HI, stream=True, timeout=0.3)
            with pytest.raises(openai.APITimeoutError):
                await m.achat.completions.create(model="moai/default", messages=HI, stream=True, timeout=0.3)
            assert time.monotonic() - t0 < 2.5
        finally:
            shutdown(m)


async def test_an_async_stream_has_close_as_openais_does(tmp_path: Path) -> None:
    with StubServer(Script(reply="hello")) as stub:
        m = Mixture.from_config(config(tmp_path, stub.url))
        try:
            stream = await m.achat.completions.create(model="moai/default", messages=HI, stream=True)
            await stream.close()
            assert [c async for c in stream] == []
        finally:
            shutdown(m)


# ---------------------------------------------------------------- errors as the server sends them


def test_a_rate_limited_mix_raises_with_the_servers_headers(tmp_path: Path) -> None:
    with StubServer(Script(fail_times=100, fail_status=429, retry_after="30")) as stub:
        m = Mixture.from_config(config(tmp_path, stub.url))
        try:
            for stream in (False, True):
                with pytest.raises(openai.RateLimitError) as caught:
                    m.chat.completions.create(model="moai/default", messages=HI, stream=stream)
                headers = caught.value.response.headers
                assert headers["retry-after"] == "30" and headers["x-request-id"] == headers["x-moai-request-id"]
                assert caught.value.request_id == headers["x-request-id"]  # as the OpenAI client exposes it
        finally:
            shutdown(m)


def test_errors_read_as_the_servers_through_the_openai_client(tmp_path: Path) -> None:
    with StubServer(Script(reply="hello")) as stub:
        m = Mixture.from_config(config(tmp_path, stub.url))
        try:
            with pytest.raises(openai.NotFoundError) as missing:
                m.chat.completions.create(model="moai/nope", messages=HI)
            assert missing.value.body["type"] == "invalid_request_error"  # type: ignore[index]
            with pytest.raises(openai.BadRequestError) as bad:
                m.chat.completions.create(model="moai/default", messages=HI, temperature=5)
            assert str(bad.value) == f"Error code: 400 - {bad.value.body['message']}"  # type: ignore[index]
        finally:
            shutdown(m)

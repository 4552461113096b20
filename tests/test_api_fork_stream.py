"""The Python API in forked processes, and a stream's ``response`` (status and headers, as the server's).

Forks run in a child interpreter with a hard time limit (``run_child``): a child that hangs fails the test."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest
from servers import start_moai, stop
from stub_openai import Script, StubServer
from test_api import HI, config
from test_api_lifecycle import run_child

from moai import Mixture
from moai.api import shutdown

try:  # the openai client's HTTP library: its Stream's response is one of that library's
    import httpx2 as http  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - older openai releases use httpx
    import httpx as http  # type: ignore[no-redef]

# ---------------------------------------------------------------- a stream's response


def _check_response(response: http.Response, chunk_id: str, model: str) -> None:
    assert isinstance(response, http.Response) and response.status_code == 200
    headers = response.headers
    assert headers.get("x-request-id") == headers["x-moai-request-id"] == chunk_id  # the request's id, as chunks'
    assert headers["x-moai-mix"] == "default" and headers["x-moai-model"] == model
    assert headers["content-type"].startswith("text/event-stream")


async def test_a_stream_has_the_response_the_server_opens_it_with(tmp_path: Path) -> None:
    with StubServer(Script(reply="hello there")) as stub:
        m = Mixture.from_config(config(tmp_path, stub.url))
        try:
            stream = m.chat.completions.create(model="moai/default", messages=HI, stream=True)
            chunks = list(stream)
            answered = next(c for c in chunks if c.choices and c.choices[0].finish_reason).moai["model"]  # type: ignore[attr-defined]
            _check_response(stream.response, chunks[0].id, answered)
            astream = await m.achat.completions.create(model="moai/default", messages=HI, stream=True)
            achunks = [c async for c in astream]
            assert achunks[0].id != chunks[0].id
            _check_response(astream.response, achunks[0].id, answered)
        finally:
            shutdown(m)


@pytest.mark.integration
def test_a_streams_headers_are_the_servers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same headers, with the same values where they do not name the request, as the real server's stream
    read through the official client's ``Stream.response`` (the cache's verdict included)."""
    monkeypatch.setenv("MOAI_CACHE", "exact")
    with StubServer(Script(reply="hello there")) as stub:
        (tmp_path / "server").mkdir()
        path = config(tmp_path, stub.url)
        server = start_moai(Path(path).read_text(), tmp_path / "server", env={"MOAI_CACHE": "exact"})
        m = Mixture.from_config(path)
        try:
            client = openai.OpenAI(base_url=server.url, api_key="none", max_retries=0)
            seen, kinds = [], set()
            for create in (client.chat.completions.create, m.chat.completions.create):
                for _ in range(2):  # a miss, then a hit
                    stream = create(model="moai/default", messages=HI, stream=True)
                    ids = {c.id for c in stream}
                    kinds.add(type(stream.response))
                    headers = stream.response.headers
                    assert headers["x-request-id"] in ids
                    seen.append({k: v for k, v in headers.items() if k.startswith("x-") and "request-id" not in k}
                                | {"content-type": headers["content-type"], "status": str(stream.response.status_code)})
            assert seen[2:] == seen[:2] and [h["x-moai-cache"] for h in seen[:2]] == ["miss", "hit"]
            assert len(kinds) == 1  # the official client's own response class
        finally:
            shutdown(m)
            stop(server.proc)


# ---------------------------------------------------------------- forked processes

STUB = ("import uvicorn; from stub_openai import Script, make_app; "
        "uvicorn.run(make_app(Script(reply='hello there', word_delay_s=0.05)), host='127.0.0.1', port={port}, "
        "log_level='error')")


def test_a_forked_child_uses_the_mixture_and_the_parent_goes_on(tmp_path: Path) -> None:
    """The parent used the Mixture (pooled connections, a stream still open) before forking; the child calls it
    (sync, async, streamed) and exits normally; the parent's calls, the open stream included, go on unharmed."""
    done = run_child(tmp_path, f"""
    from pathlib import Path
    from servers import free_port, spawn, stop, wait_http
    port = free_port()  # upstream in a process of its own: the child exits as a program does, finalizers and all
    upstream = spawn([sys.executable, "-c", {STUB!r}.format(port=port)], Path(DB).with_name("stub.log"))
    parent = os.getpid()
    try:
        wait_http(f"http://127.0.0.1:{{port}}/v1/models", upstream)
        m = Mixture.from_config(mix_file(f"http://127.0.0.1:{{port}}/v1"), store=TelemetryStore("sqlite:///" + DB))
        m.chat.completions.create(model="moai/default", messages=HI)
        list(m.chat.completions.create(model="moai/default", messages=HI, stream=True))  # both connections pooled
        st = m.chat.completions.create(model="moai/default", messages=HI, stream=True)
        next(st); next(st)
        pid = os.fork()
        if pid == 0:
            import faulthandler
            faulthandler.dump_traceback_later(15, exit=True)
            t0 = time.monotonic()
            try:
                next(st)
            except openai.APIConnectionError as e:
                print("child: inherited stream", "forked" in str(e), round(time.monotonic() - t0), flush=True)
            r = m.chat.completions.create(model="moai/default", messages=HI)
            print("child: sync", r.choices[0].message.content, flush=True)
            async def one():
                return await m.achat.completions.create(model="moai/default", messages=HI)
            print("child: async", asyncio.run(one()).choices[0].message.content, flush=True)
            s = m.chat.completions.create(model="moai/default", messages=HI, stream=True)
            text = "".join(c.choices[0].delta.content or "" for c in s if c.choices)
            print("child: stream", text, s.response.headers.get("x-request-id", "").startswith("chatcmpl"), flush=True)
            sys.exit(0)
        print("parent: stream", repr("".join(c.choices[0].delta.content or "" for c in st if c.choices)), flush=True)
        print("parent: child exit", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
        async def several():
            return await asyncio.gather(*(m.achat.completions.create(model="moai/default", messages=HI, timeout=5)
                                          for _ in range(4)))
        print("parent: after", [r.choices[0].message.content for r in asyncio.run(several())], flush=True)
        shutdown(m)
        print("rows", sorted(rows()))
    finally:
        if os.getpid() == parent:
            stop(upstream)
    """, timeout=60)
    out = done.stdout
    assert "child: inherited stream True 0" in out, done.stderr[-3000:]
    assert "child: sync hello there" in out and "child: async hello there" in out
    assert "child: stream hello there True" in out
    assert "parent: stream ' there'" in out  # the rest of the stream the parent had read two chunks of
    assert "parent: child exit 0" in out
    assert "parent: after ['hello there', 'hello there', 'hello there', 'hello there']" in out
    assert f"rows {[('ok', 200)] * 10}" in out  # the parent's seven and the child's three, each recorded once


def test_fork_pool_workers_use_a_mixture_made_before_the_fork(tmp_path: Path) -> None:
    """multiprocessing's ``fork`` start method (a pre-loading server's way too): the Mixture, and its telemetry
    writer, were made in the parent, which then forks its workers."""
    done = run_child(tmp_path, """
    import multiprocessing
    with StubServer(Script(reply="hello there")) as s:
        m = Mixture.from_config(mix_file(s.url), store=TelemetryStore("sqlite:///" + DB))
        def work(i):
            r = m.chat.completions.create(model="moai/default", messages=HI)
            st = m.chat.completions.create(model="moai/default", messages=HI, stream=True)
            chunks = list(st)
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            return r.choices[0].message.content, text, st.response.headers["x-request-id"] == chunks[0].id
        pool = multiprocessing.get_context("fork").Pool(2)
        try:
            print("workers", pool.map_async(work, range(4)).get(timeout=20), flush=True)
        finally:
            pool.terminate()
            pool.join()
        print("parent", m.chat.completions.create(model="moai/default", messages=HI).choices[0].message.content)
        shutdown(m)
        print("rows", sorted(rows()))
    """)
    assert f"workers {[('hello there', 'hello there', True)] * 4}" in done.stdout
    assert "parent hello there" in done.stdout
    assert f"rows {[('ok', 200)] * 9}" in done.stdout

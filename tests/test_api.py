"""The Python API: OpenAI-client surface and types in process, sync/async/streaming, errors as openai's."""

from __future__ import annotations

import asyncio
import inspect
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from stub_anthropic import Script as AScript
from stub_anthropic import StubAnthropic
from stub_openai import Script, StubServer

from moai import Mixture
from moai.api import shutdown
from moai.telemetry.store import TelemetryStore

HI = [{"role": "user", "content": "hi"}]
HARD = ("Prove step by step that the algorithm below is correct, analyze its complexity, then implement and "
        "optimize it: " + "def f(x): return x * 2 + 1  # explain why " * 30)


def config(tmp: Path, url: str, anthropic_url: str | None = None, settings: str = "") -> str:
    text = f"""
models:
  small: {{provider: openai_compat, endpoint: "{url}", model: stub, privacy: cloud, params_b: 1}}
  big: {{provider: openai_compat, endpoint: "{url}", model: stub, privacy: cloud, params_b: 70}}
"""
    if anthropic_url:
        text += f"""  claude: {{provider: anthropic, endpoint: "{anthropic_url}", model: claude-test, privacy: cloud,
            api_key_env: MOAI_TEST_ANTHROPIC_KEY, supports_tools: true}}
"""
    text += """mixes:
  default: {strategy: route, max_tokens: 16}
"""
    if settings:
        text += f"settings: {settings}\n"
    path = tmp / "mix.yaml"
    path.write_text(text)
    return str(path)


@pytest.fixture
def stub() -> Iterator[StubServer]:
    with StubServer(Script(reply="hello from the stub")) as s:
        yield s


@pytest.fixture
def mix(stub: StubServer, tmp_path: Path) -> Iterator[Mixture]:
    m = Mixture.from_config(config(tmp_path, stub.url))
    yield m
    shutdown(m)


def test_create_returns_an_openai_chat_completion(mix: Mixture, stub: StubServer) -> None:
    r = mix.chat.completions.create(model="moai/default", messages=HI, temperature=0.2)
    assert isinstance(r, ChatCompletion)
    assert r.choices[0].message.content == "hello from the stub" and r.choices[0].finish_reason == "stop"
    assert r.model == "moai/default" and r.usage is not None and r.usage.completion_tokens == 4
    assert r.moai["mix"] == "default" and r.moai["model"] in ("small", "big")  # type: ignore[attr-defined]
    assert stub.script.seen[0]["temperature"] == 0.2


def test_stream_yields_openai_chunks_with_summary_and_usage(mix: Mixture) -> None:
    stream = mix.chat.completions.create(model="moai/default", messages=HI, stream=True,
                                         stream_options={"include_usage": True})
    chunks = list(stream)
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "hello from the stub"
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish[0].choices[0].finish_reason == "stop" and finish[0].moai["strategy"] == "route"  # type: ignore[attr-defined]
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


def test_closing_a_stream_early_stops_it(tmp_path: Path) -> None:
    with StubServer(Script(reply="one two three", delay_s=0.3)) as s:
        m = Mixture.from_config(config(tmp_path, s.url))
        try:
            with m.chat.completions.create(model="moai/default", messages=HI, stream=True) as stream:
                first = next(iter(stream))
            assert first.choices[0].delta.role == "assistant"
            assert list(stream) == []  # closed: nothing more, no error
            r = m.chat.completions.create(model="moai/default", messages=HI)  # the loop is still healthy
            assert r.choices[0].message.content == "one two three"
        finally:
            shutdown(m)


async def test_async_create_and_stream(mix: Mixture) -> None:
    r = await mix.achat.completions.create(model="moai/default", messages=HI)
    assert r.choices[0].message.content == "hello from the stub"
    stream = await mix.achat.completions.create(model="moai/default", messages=HI, stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "hello from the stub"


async def test_sync_api_works_inside_a_running_loop(mix: Mixture) -> None:
    """As in Jupyter: the engine runs on its own loop thread, so a blocking call here cannot deadlock."""
    asyncio.get_running_loop()
    r = mix.chat.completions.create(model="moai/default", messages=HI)
    assert r.choices[0].message.content == "hello from the stub"


def test_sync_and_async_calls_share_one_mixture(mix: Mixture) -> None:
    assert mix.chat.completions.create(model="default", messages=HI).choices[0].message.content
    r = asyncio.run(mix.achat.completions.create(model="default", messages=HI))
    assert r.choices[0].message.content == "hello from the stub"


def test_errors_are_the_openai_clients_exceptions(mix: Mixture) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        mix.chat.completions.create(model="moai/nope", messages=HI)
    assert e.value.status_code == 404 and e.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        mix.chat.completions.create(model="moai/default", messages=[{"role": "user", "content": ""}])
    with pytest.raises(openai.BadRequestError):
        mix.chat.completions.create(model="moai/default", messages=HI, moai={"weights": {"beauty": 1}})
    with pytest.raises(openai.UnprocessableEntityError):  # every model is cloud; the request allows local only
        mix.chat.completions.create(model="moai/default", messages=HI, extra_body={"moai": {"privacy": "local"}})


@pytest.mark.parametrize(("upstream", "error", "status", "code"), [
    (500, openai.InternalServerError, 502, "upstream_failed"),  # every model failed
    (400, openai.BadRequestError, 400, "unsupported_request"),  # every model refused the request itself
])
def test_a_request_no_model_answers_raises_openais_error(
    tmp_path: Path, upstream: int, error: type[openai.APIStatusError], status: int, code: str,
) -> None:
    with StubServer(Script(fail_times=100, fail_status=upstream)) as s:
        m = Mixture.from_config(config(tmp_path, s.url))
        try:
            with pytest.raises(error) as e:
                m.chat.completions.create(model="moai/default", messages=HI)
            assert e.value.status_code == status and e.value.code == code
        finally:
            shutdown(m)


@pytest.mark.parametrize("status,error", [(500, openai.InternalServerError), (400, openai.BadRequestError)])
def test_a_stream_no_model_could_start_raises_at_create(tmp_path: Path, status: int, error: type) -> None:
    """As over HTTP: the failure is the call's status, raised by ``create``, not a chunk later."""
    with StubServer(Script(fail_times=100, fail_status=status)) as s:
        m = Mixture.from_config(config(tmp_path, s.url))
        try:
            with pytest.raises(error):
                m.chat.completions.create(model="moai/default", messages=HI, stream=True)

            async def go() -> None:
                with pytest.raises(error):
                    await m.achat.completions.create(model="moai/default", messages=HI, stream=True)

            asyncio.run(go())
        finally:
            shutdown(m)


def test_route_decides_without_calling_a_model(mix: Mixture, stub: StubServer) -> None:
    d = mix.route([{"role": "user", "content": "Prove that there are infinitely many primes, step by step."}])
    assert d["model"] in ("small", "big") and set(d["scores"]) == {"small", "big"} and d["reasons"]
    assert stub.script.calls == 0


def test_tools_through_the_anthropic_provider(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOAI_TEST_ANTHROPIC_KEY", "sk-ant-test")
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}
    with StubServer() as s, StubAnthropic(AScript(reply="Checking.", tool_use=("get_weather", {"city": "Oslo"}))) as a:
        m = Mixture.from_config(config(tmp_path, s.url, a.url))
        try:
            r = m.chat.completions.create(model="claude", messages=[{"role": "user", "content": "Oslo weather?"}],
                                          tools=[tool], tool_choice="auto")
            chunks = list(m.chat.completions.create(model="claude", messages=HI, tools=[tool], stream=True))
        finally:
            shutdown(m)
    call = (r.choices[0].message.tool_calls or [])[0]
    assert r.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Oslo"}
    streamed = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert streamed[0].function is not None and json.loads(streamed[0].function.arguments or "") == {"city": "Oslo"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]


def test_import_moai_stays_light() -> None:
    code = "import sys, moai; print(sorted(m for m in sys.modules if m.startswith(('moai.', 'openai', 'numpy'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_leaving_without_shutdown_closes_connections_and_flushes_telemetry(stub: StubServer, tmp_path: Path) -> None:
    """A script that never calls shutdown(): at exit the pool closes cleanly and its request is recorded."""
    db = tmp_path / "t.db"
    code = f"""
from moai import Mixture
from moai.telemetry.store import TelemetryStore
m = Mixture.from_config({config(tmp_path, stub.url)!r}, store=TelemetryStore("sqlite:///{db}"))
r = m.chat.completions.create(model="moai/default", messages=[{{"role": "user", "content": "hi"}}])
print(r.id)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Unclosed" not in done.stderr, done.stderr[-2000:]
    import sqlite3

    with sqlite3.connect(db) as conn:
        ids = [row[0] for row in conn.execute("select id from requests")]
    assert ids == [done.stdout.strip()]


# ---------------------------------------------------------------- the OpenAI client's arguments


def test_unsent_markers_are_left_out_of_the_request(mix: Mixture, stub: StubServer) -> None:
    """``openai.NOT_GIVEN`` / ``openai.omit`` mean "not sent", for every argument the OpenAI client takes."""
    sig = inspect.signature(openai.resources.chat.Completions.create)
    unsent = {n: (openai.NOT_GIVEN if i % 2 else openai.omit) for i, n in enumerate(sig.parameters)
              if n not in ("self", "model", "messages")}
    r = mix.chat.completions.create(model="moai/default", messages=HI, **unsent)
    assert r.choices[0].message.content == "hello from the stub"
    chunks = list(mix.chat.completions.create(model="moai/default", messages=HI, temperature=openai.omit,
                                              stream=True, stream_options=openai.NOT_GIVEN))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "hello from the stub"
    sent = stub.script.seen[0]
    assert not {"temperature", "tools", "tool_choice", "stop", "seed"} & set(sent)
    assert sent["max_tokens"] == 16  # the mix's own, as when the argument is absent


def test_unknown_arguments_are_a_type_error_as_from_the_openai_client(mix: Mixture, stub: StubServer) -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'foo_bar'"):
        mix.chat.completions.create(model="moai/default", messages=HI, foo_bar=1)

    async def go() -> None:
        with pytest.raises(TypeError, match="unexpected keyword argument 'foo_bar'"):
            await mix.achat.completions.create(model="moai/default", messages=HI, foo_bar=1)

    asyncio.run(go())
    assert stub.script.calls == 0
    # what the OpenAI client does not name still goes through extra_body; moai's own fields are arguments
    r = mix.chat.completions.create(model="moai/default", messages=HI, extra_body={"foo_bar": 1},
                                    moai={"models": ["big"]}, cache=False, user="u", seed=3)
    assert r.moai["model"] == "big"  # type: ignore[attr-defined]


def test_extra_headers_name_the_session(mix: Mixture) -> None:
    """``x-moai-session`` in ``extra_headers`` keeps a conversation on its model, as the header does over HTTP."""
    hard = [{"role": "user", "content": HARD}]
    first = mix.chat.completions.create(model="moai/default", messages=hard, extra_headers={"x-moai-session": "s9"})
    assert first.moai["model"] == "big"  # type: ignore[attr-defined]
    alone = mix.chat.completions.create(model="moai/default", messages=HI)
    assert alone.moai["model"] == "small"  # type: ignore[attr-defined]
    r = mix.chat.completions.create(model="moai/default", messages=HI, extra_headers={"X-Moai-Session": "s9"})
    assert r.moai["model"] == "big"  # type: ignore[attr-defined]
    assert any(x.startswith("session: sticky — stays on big") for x in r.moai["reason"])  # type: ignore[attr-defined]


# ---------------------------------------------------------------- the whole-request limit


@pytest.fixture
def timed(tmp_path: Path) -> Iterator[tuple[Mixture, Mixture, Path]]:
    """A 0.5 s request limit over a model that takes 3 s, and over one that streams a word every 0.2 s."""
    db = tmp_path / "t.db"
    limit = "{request_timeout_s: 0.5}"
    with (StubServer(Script(reply="too slow", delay_s=3.0)) as slow,
          StubServer(Script(reply="one two three four five six seven", word_delay_s=0.2)) as dribbling):
        (tmp_path / "slow").mkdir()
        (tmp_path / "dribble").mkdir()
        m = Mixture.from_config(config(tmp_path / "slow", slow.url, settings=limit),
                                store=TelemetryStore(f"sqlite:///{db}"))
        d = Mixture.from_config(config(tmp_path / "dribble", dribbling.url, settings=limit))
        try:
            yield m, d, db
        finally:
            shutdown(m)
            shutdown(d)


def test_request_past_the_limit_raises_openais_timeout_error(timed: tuple[Mixture, Mixture, Path]) -> None:
    m, _, db = timed
    t0 = time.monotonic()
    with pytest.raises(openai.APITimeoutError) as e:
        m.chat.completions.create(model="moai/default", messages=HI)
    assert time.monotonic() - t0 < 2.5
    assert e.value.code == "request_timeout" and "0.5s" in e.value.message
    shutdown(m)  # flushes the record
    with sqlite3.connect(db) as conn:
        assert conn.execute("select status, http_status from requests").fetchall() == [("error", 504)]


def requests_counted(m: Mixture) -> dict[str, float]:
    """moai_requests_total per status, as /metrics would show it."""
    return {s.labels["status"]: s.value for metric in m.metrics.registry.collect() if metric.name == "moai_requests"
            for s in metric.samples if s.name == "moai_requests_total"}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_request_past_the_limit_is_counted_once_as_timed_out(timed: tuple[Mixture, Mixture, Path],
                                                               stream: bool) -> None:
    """The limit cancels the running plan; that cancellation is the limit's, not a client leaving: one 504."""
    m, _, db = timed
    with pytest.raises(openai.APITimeoutError):
        m.chat.completions.create(model="moai/default", messages=HI, stream=stream)
    assert requests_counted(m) == {"error": 1.0}
    shutdown(m)
    with sqlite3.connect(db) as conn:
        assert conn.execute("select status, http_status from requests").fetchall() == [("error", 504)]
        # the call in flight is stored too, lasting until the limit cut it (it had no row, or a latency of 0)
        ((status, latency, error),) = conn.execute("select status, latency_ms, error from calls").fetchall()
    assert status == "failed" and 400 <= latency < 2500 and "timed out" in error


def test_a_stream_past_the_limit_raises_openais_timeout_error(timed: tuple[Mixture, Mixture, Path]) -> None:
    m, d, _ = timed
    t0 = time.monotonic()
    with pytest.raises(openai.APITimeoutError):  # no first token in time: raised by create, as a 504 would be
        m.chat.completions.create(model="moai/default", messages=HI, stream=True)
    assert time.monotonic() - t0 < 2.5
    got: list[str] = []
    with pytest.raises(openai.APITimeoutError) as e:  # the limit covers the whole stream, not each wait
        for c in d.chat.completions.create(model="moai/default", messages=HI, stream=True):
            got.append(c.choices[0].delta.content or "")
    assert e.value.code == "request_timeout"
    assert "".join(got).startswith("one") and "seven" not in "".join(got)


async def test_async_calls_past_the_limit_raise_openais_timeout_error(timed: tuple[Mixture, Mixture, Path]) -> None:
    m, d, _ = timed
    with pytest.raises(openai.APITimeoutError):
        await m.achat.completions.create(model="moai/default", messages=HI)
    stream = await d.achat.completions.create(model="moai/default", messages=HI, stream=True)
    with pytest.raises(openai.APITimeoutError):
        async for _ in stream:
            pass


def test_every_model_rate_limited_raises_the_clients_rate_limit_error() -> None:
    """The Python API answers like the server: a 429 (openai.RateLimitError), not a 502, when every model tried
    was rate limited."""
    from moai.api_errors import translate
    from moai.strategies.outcome import PlanFailed
    from moai.strategies.plan import StepResult

    step = StepResult(step="answer", role="answer", model="b", status="failed", start=0.0)
    step.attempts = [{"model": m, "error": "rate limited", "status": 429, "retry_after_s": s} for m, s in (("a", 7.0),
                                                                                                          ("b", 3.0))]
    e = PlanFailed("every model failed", [step], [step])
    assert (e.status, e.retry_after, e.code) == (429, 3.0, "rate_limit_exceeded")
    err = translate(e)
    assert isinstance(err, openai.RateLimitError) and err.body["code"] == "rate_limit_exceeded"
    step.attempts.append({"model": "c", "error": "upstream error 500", "status": 502})
    assert PlanFailed("x", [step], [step]).status == 502  # one model truly failing: not a rate limit


def test_every_model_untrusted_with_the_call_is_a_422_no_trusted_model() -> None:
    """A step whose every model was refused the call by the privacy check (what an earlier step wrote may not leave)
    fails as the request's own privacy refusal does: 422 no_trusted_model. Mixed with a plain refusal it is a 400;
    with a failing model, a 502."""
    from moai.api_errors import translate
    from moai.strategies.outcome import PlanFailed
    from moai.strategies.plan import StepResult
    from moai.strategies.redaction import SensitiveHeldBack

    step = StepResult(step="aggregate", role="aggregator", model="b", status="failed", start=0.0)
    held = [SensitiveHeldBack(m, ["health"]) for m in ("a", "b")]
    step.attempts = [{"model": e.model, "error": str(e), "status": e.status, "code": e.code, "param": e.param}
                     for e in held]
    e = PlanFailed("x", [step], [step])
    assert (e.status, e.code, e.param) == (422, "no_trusted_model", "messages")
    err = translate(e)
    assert isinstance(err, openai.UnprocessableEntityError) and err.body["code"] == "no_trusted_model"
    step.attempts.append({"model": "c", "error": "reads text only", "status": 400})
    assert PlanFailed("x", [step], [step]).status == 400
    step.attempts.append({"model": "d", "error": "upstream error 500", "status": 502})
    assert PlanFailed("x", [step], [step]).status == 502


def test_a_request_cut_short_on_a_fallback_stores_every_try(tmp_path: Path) -> None:
    """The first model failed at once, the second was still answering at the limit: both calls are stored, each
    under its own model (the one in flight was charged to the first, and the failed try was lost)."""
    db = tmp_path / "t.db"
    with (StubServer(Script(fail_times=99, fail_status=500)) as broken,
          StubServer(Script(reply="late", delay_s=3.0)) as slow):
        (tmp_path / "mix.yaml").write_text(f"""
models:
  a: {{provider: openai_compat, endpoint: "{broken.url}", privacy: cloud, max_retries: 0, params_b: 1}}
  b: {{provider: openai_compat, endpoint: "{slow.url}", privacy: cloud, max_retries: 0, params_b: 70}}
mixes:
  default: {{strategy: route, fallbacks: [b]}}
settings: {{request_timeout_s: 1.0}}
""")
        m = Mixture.from_config(str(tmp_path / "mix.yaml"), store=TelemetryStore(f"sqlite:///{db}"))
        with pytest.raises(openai.APITimeoutError):
            m.chat.completions.create(model="moai/default", messages=HI)
        shutdown(m)
    with sqlite3.connect(db) as conn:
        calls = conn.execute("select model, status, error, latency_ms from calls order by started_at").fetchall()
    assert [(c[0], c[1]) for c in calls] == [("a", "failed"), ("b", "failed")], calls
    assert "500" in calls[0][2] and "timed out" in calls[1][2] and calls[1][3] >= 500


async def test_a_cancellation_while_the_answer_is_being_stored_counts_it_once(tmp_path: Path) -> None:
    """A client leaving while a complete answer is being committed: it was counted both ok and cancelled, and the
    stored row turned into cancelled/499."""
    from moai.config import parse_config
    from moai.server.openai_schema import ChatCompletionRequest

    with StubServer(Script(reply="done")) as stub:
        cfg = parse_config(f"""
models:
  a: {{provider: openai_compat, endpoint: "{stub.url}", privacy: private, max_retries: 0}}
mixes:
  one: {{strategy: route, models: [a]}}
""")
        m = Mixture(cfg, TelemetryStore(f"sqlite:///{tmp_path / 't.db'}"))
        assert m.writer is not None
        writer = m.writer

        async def slow_write(rec: object) -> None:  # a commit that takes a while (a busy database)
            future = writer.submit_nowait(rec)
            await asyncio.sleep(0.3)
            await asyncio.wrap_future(future)

        writer.write = slow_write  # type: ignore[method-assign]
        body = ChatCompletionRequest.model_validate({"model": "moai/one", "messages": HI})
        prep = m.prepare(body)
        task = asyncio.ensure_future(m.run(prep))
        while not prep.recorded:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.5)
        await m.aclose()
    assert requests_counted(m) == {"ok": 1.0}
    with sqlite3.connect(tmp_path / "t.db") as conn:
        assert conn.execute("select status, http_status from requests").fetchall() == [("ok", 200)]


def test_a_local_call_cut_short_by_its_client_is_billed_the_energy_it_spent() -> None:
    """Nothing came back, but a local model computed until the client left: that time's energy and CO2 are
    recorded (a cloud call's energy is estimated from tokens only, so it stays 0)."""
    import time as _time

    from moai.config import parse_config
    from moai.gate.rules import RuleChooser
    from moai.mixture import Mixture as EngineMixture
    from moai.server.openai_schema import ChatCompletionRequest
    from moai.strategies.plan import StepResult

    cfg = parse_config("models:\n  l: {provider: local, package: smollm2-135m, privacy: local}\n"
                       "  c: {provider: openai_compat, endpoint: 'http://127.0.0.1:9/v1', privacy: cloud}\n"
                       "mixes:\n  default: {strategy: route}\n")
    m = EngineMixture(cfg, chooser=RuleChooser())
    prep = m.prepare(ChatCompletionRequest.model_validate({"model": "moai/default", "messages": HI}))
    for name in ("l", "c"):
        running = StepResult(f"s-{name}", "answer", name, "failed", start=_time.time() - 2.0, error="interrupted")
        prep.plan.results[running.step] = running
    m.record_cancelled(prep)
    local, cloud = prep.plan.results["s-l"], prep.plan.results["s-c"]
    assert local.status == cloud.status == "cancelled"
    assert local.energy_kwh > 0 and local.co2_g > 0 and local.usage.completion_tokens == 0
    assert cloud.energy_kwh == 0


def test_a_stream_from_a_mix_named_outside_ascii_has_encoded_headers(stub: StubServer, tmp_path: Path) -> None:
    path = tmp_path / "named.yaml"
    path.write_text(f"""
models:
  模型: {{provider: openai_compat, endpoint: "{stub.url}", model: stub, privacy: cloud}}
mixes:
  默认: {{strategy: route, models: [模型]}}
""")
    m = Mixture.from_config(str(path))
    try:
        with m.chat.completions.create(model="moai/默认", messages=HI, stream=True) as stream:
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            headers = stream.response.headers
    finally:
        shutdown(m)
    assert text == "hello from the stub"
    assert headers["x-moai-mix"] == "%E9%BB%98%E8%AE%A4" and headers["x-moai-model"] == "%E6%A8%A1%E5%9E%8B"


@pytest.mark.parametrize("stream", [False, True])
def test_an_upstreams_address_is_not_in_the_error(tmp_path: Path, stream: bool) -> None:
    """As over HTTP: an application logs ``str(e)``; the upstream's host and port are not in it."""
    from stub_openai import free_port

    port = free_port()  # nothing listens there
    m = Mixture.from_config(config(tmp_path, f"http://127.0.0.1:{port}/v1"))
    try:
        with pytest.raises(openai.InternalServerError) as e:
            m.chat.completions.create(model="moai/default", messages=HI, stream=stream)
    finally:
        shutdown(m)
    assert "no model could answer" in str(e.value) and str(port) not in str(e.value), str(e.value)
    import traceback

    logged = "".join(traceback.format_exception(e.value))  # as logging.exception writes it, causes included
    assert str(port) not in logged, logged[-2000:]


def test_a_fault_of_moais_own_keeps_its_cause(mix: Mixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception the API does not translate (no upstream's error, a bug) is raised as it is, cause and all."""

    async def broken(*_a: object, **_k: object) -> None:
        try:
            raise KeyError("the root")
        except KeyError as e:
            raise RuntimeError("a fault") from e

    monkeypatch.setattr(mix, "run", broken)
    with pytest.raises(RuntimeError, match="a fault") as e:
        mix.chat.completions.create(model="moai/default", messages=HI)
    assert isinstance(e.value.__cause__, KeyError)

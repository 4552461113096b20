"""``moai.api.shutdown`` while calls run: each caller's outcome agrees with the request's record. A call answered
and recorded returns its answer; one the shutdown stops raises and is recorded as stopped (cancelled, 503, as the
server records the requests its shutdown stops). Run in a child process, as hangs would be."""

from __future__ import annotations

import textwrap
from pathlib import Path

from test_api_lifecycle import run_child

CALL_IN_A_THREAD = """
def call_in_a_thread(m, out):
    def call():
        try:
            out.append(m.chat.completions.create(model="moai/default", messages=HI).choices[0].message.content)
        except openai.APIConnectionError:
            out.append("APIConnectionError")
    caller = threading.Thread(target=call)
    caller.start()
    return caller
"""


def test_a_call_answered_and_recorded_before_shutdown_returns_its_answer(tmp_path: Path) -> None:
    """Its record was being committed when shutdown came: it was stopped there, so the database held a success
    that its caller never got (the caller got ``APIConnectionError``)."""
    done = run_child(tmp_path, CALL_IN_A_THREAD + textwrap.dedent("""
    with StubServer(Script(reply="hello")) as s:
        m = Mixture.from_config(mix_file(s.url), store=TelemetryStore("sqlite:///" + DB))
        recorded = threading.Event()
        record = m.record
        async def slow_commit(prep, ex):  # on record as answered; its commit takes a moment more
            await record(prep, ex)
            recorded.set()
            await asyncio.sleep(1.0)
        m.record = slow_commit
        out = []
        caller = call_in_a_thread(m, out)
        assert recorded.wait(20)
        shutdown(m)
        caller.join(20)
        print("caller", out)
        print("rows", rows())
    """))
    assert "caller ['hello']" in done.stdout, done.stdout
    assert "rows [('ok', 200)]" in done.stdout, done.stdout


def test_a_call_stopped_by_shutdown_raises_and_is_recorded_as_stopped(tmp_path: Path) -> None:
    """Recorded as the server records a request its shutdown stops (it was 499, a client that left)."""
    done = run_child(tmp_path, CALL_IN_A_THREAD + textwrap.dedent("""
    with StubServer(Script(reply="late", delay_s=5.0)) as s:
        m = Mixture.from_config(mix_file(s.url), store=TelemetryStore("sqlite:///" + DB))
        out = []
        caller = call_in_a_thread(m, out)
        while not s.script.calls:  # the upstream is working on it
            time.sleep(0.01)
        shutdown(m)
        caller.join(20)
        print("caller", out)
        print("rows", rows())
    """))
    assert "caller ['APIConnectionError']" in done.stdout, done.stdout
    assert "rows [('cancelled', 503)]" in done.stdout, done.stdout

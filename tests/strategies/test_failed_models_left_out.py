"""A model that failed in a request is not called again by that request's later steps: a chain whose every model
fails costs one try of each model, not one per link, and a later step falls back to a model that has not failed.
Left with no other model, a step tries one again only when its failure may pass (a 5xx, a timeout), not when the
model is unreachable."""

from __future__ import annotations

import contextlib
from contextlib import ExitStack
from typing import Any

import pytest
from stub_openai import Script, StubServer, free_port
from test_plan_fallbacks import Fixed

from moai.config import parse_config
from moai.mixture import Mixture
from moai.server.openai_schema import ChatCompletionRequest
from moai.strategies.outcome import Execution, PlanFailed

NAMES = ["a", "b", "c", "d", "e"]
MIXES = {
    "chain": "{strategy: chain, steps: [{model: a, instruction: D}, {model: b, instruction: F}, "
             "{model: c, instruction: P}]}",
    "moa": "{strategy: moa, layers: 2, proposers: [a, b, c], aggregator: d}",
    "critique": "{strategy: critique, writer: a, critic: b, rounds: 2}",
    "fanout": "{strategy: fanout, proposers: [a, b, c], aggregator: d}",
    "cascade": "{strategy: cascade, cascade: [a, b, c], threshold: 0.6, scorer: judge, judge: d}",
}


async def run(mix: str, failing: set[str], extra: str = "") -> tuple[Execution | PlanFailed, dict[str, Script]]:
    """Five models behind stubs with one retry each (``failing`` answer every call with a 500); the gate ranks
    them a..e."""
    with ExitStack() as st:
        scripts = {n: Script(fail_times=10**6) if n in failing else Script(reply=f"from {n}") for n in NAMES}
        lines = ["models:"]
        for n, s in scripts.items():
            url = st.enter_context(StubServer(s)).url
            lines.append(f"  {n}: {{provider: openai_compat, endpoint: '{url}', privacy: private, max_retries: 1}}")
        m = Mixture(parse_config("\n".join(lines) + extra + "\nmixes:\n  m: " + mix + "\n"), chooser=Fixed(NAMES))
        prep = m.prepare(ChatCompletionRequest.model_validate(
            {"model": "moai/m", "messages": [{"role": "user", "content": "q"}]}))
        try:
            return await m.run(prep), scripts
        except PlanFailed as e:
            return e, scripts
        finally:
            await m.aclose()


async def test_a_chain_whose_first_link_no_model_answers_stops() -> None:
    """3 links × 5 failing models × (1 try + 1 retry) was 30 upstream calls; the first link tries each model
    once (10 calls) and the chain stops there."""
    out, scripts = await run(MIXES["chain"], set(NAMES))
    assert isinstance(out, PlanFailed) and out.status == 502
    assert {n: s.calls for n, s in scripts.items()} == dict.fromkeys(NAMES, 2)
    steps = {r.step: r for r in out.results}
    assert steps["step1"].status == "failed" and len(steps["step1"].attempts) == 5
    assert steps["step2"].status == steps["step3"].status == "skipped"
    assert "the chain stopped" in (steps["step2"].error or "")


@pytest.mark.parametrize(("strategy", "failing"), [
    ("chain", {"a", "b"}), ("moa", {"a", "d"}), ("critique", {"a", "b"}), ("critique", {"a", "d"}),
    ("fanout", {"a", "d"}), ("cascade", {"a", "d"}),
])
async def test_a_model_that_failed_is_not_called_by_later_steps(strategy: str, failing: set[str]) -> None:
    """Each failing model is tried at most once in the request (its one try and one retry): later steps (a chain's next
    link, a MoA layer, a revision, an aggregator's or judge's fallbacks) go to models that have not failed."""
    out, scripts = await run(MIXES[strategy], failing)
    assert isinstance(out, Execution) and out.answer.text.startswith("from ")
    assert scripts["a"].calls == 2 and all(scripts[n].calls <= 2 for n in failing), scripts
    assert any("failed earlier in this request" in n for n in out.plan.notes), out.plan.notes


async def test_a_step_with_no_other_model_tries_a_failed_one_again_when_its_failure_may_pass() -> None:
    """The aggregator is also a proposer whose proposal failed with a 500: it has no fallback, and a 5xx may pass,
    so it is asked once more (and answers) rather than the request falling back to one proposal."""
    with ExitStack() as st:
        scripts = {"p": Script(fail_times=1, reply="from p"), "q": Script(reply="from q")}
        lines = ["models:"]
        for n, s in scripts.items():
            url = st.enter_context(StubServer(s)).url
            lines.append(f"  {n}: {{provider: openai_compat, endpoint: '{url}', privacy: private, max_retries: 0}}")
        cfg = "\n".join(lines) + "\nmixes:\n  m: {strategy: moa, proposers: [p, q], aggregator: p, fallbacks: []}\n"
        m = Mixture(parse_config(cfg), chooser=Fixed(["p", "q"]))
        try:
            ex = await m.run(m.prepare(ChatCompletionRequest.model_validate(
                {"model": "moai/m", "messages": [{"role": "user", "content": "q"}]})))
        finally:
            await m.aclose()
    assert ex.answer.step == "aggregate" and ex.answer.model == "p" and scripts["p"].calls == 2


async def test_an_unreachable_model_is_not_tried_again_by_a_step_with_no_other() -> None:
    """A proposer whose connection was refused is not asked again to aggregate: the request answers with the
    proposal that came back, and says why."""
    with ExitStack() as st:
        url = st.enter_context(StubServer(Script(reply="from q"))).url
        cfg = (f"models:\n  dead: {{provider: openai_compat, endpoint: 'http://127.0.0.1:{free_port()}/v1', "
               "privacy: private, max_retries: 0}\n"
               f"  q: {{provider: openai_compat, endpoint: '{url}', privacy: private, max_retries: 0}}\n"
               "mixes:\n  m: {strategy: moa, proposers: [dead, q], aggregator: dead, fallbacks: []}\n")
        m = Mixture(parse_config(cfg), chooser=Fixed(["dead", "q"]))
        try:
            prep = m.prepare(ChatCompletionRequest.model_validate(
                {"model": "moai/m", "messages": [{"role": "user", "content": "q"}]}))
            ex = await m.run(prep)
            reasons = m.summary(prep, ex)["reason"]
        finally:
            await m.aclose()
    assert ex.answer.text == "from q"
    agg = next(r for r in ex.results if r.step == "aggregate")
    assert agg.status == "skipped" and not agg.attempts and "dead failed earlier" in (agg.error or "")
    assert any("answered with p1.2's answer" in r for r in reasons), reasons


class ResettingProxy:
    """Forwards loopback TCP to ``port``, but resets the first ``resets`` connections once their request is read
    (an upstream whose connection dropped: a transient failure)."""

    def __init__(self, port: int, resets: int = 1) -> None:
        import socket
        import threading

        self.target, self.resets, self.seen = port, resets, 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        import socket
        import struct
        import threading

        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.seen += 1
            if self.seen <= self.resets:
                c.settimeout(2)
                with contextlib.suppress(OSError):
                    c.recv(65536)
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
                c.close()
                continue
            u = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: Any, b: Any) -> None:
        import socket

        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("stream", [False, True], ids=["unstreamed", "streamed"])
async def test_a_model_whose_connection_was_reset_is_asked_again_by_a_step_with_no_other(stream: bool) -> None:
    """The aggregator's only model lost its connection once as a proposer (a reset, not a refusal): that may pass,
    so it is asked to aggregate (it was left out after the one reset)."""
    with ExitStack() as st:
        a = st.enter_context(StubServer(Script(reply="from a")))
        b = st.enter_context(StubServer(Script(reply="from b")))
        proxy = ResettingProxy(a.port)
        st.callback(proxy.close)
        cfg = (f"models:\n  a: {{provider: openai_compat, endpoint: '{proxy.url}', privacy: private, max_retries: 0}}\n"
               f"  b: {{provider: openai_compat, endpoint: '{b.url}', privacy: private, max_retries: 0}}\n"
               "mixes:\n  m: {strategy: moa, proposers: [a, b], aggregator: a, fallbacks: []}\n")
        m = Mixture(parse_config(cfg), chooser=Fixed(["a", "b"]))
        try:
            prep = m.prepare(ChatCompletionRequest.model_validate(
                {"model": "moai/m", "stream": stream, "messages": [{"role": "user", "content": "q"}]}))
            items = [i async for i in m.stream(prep, live=stream)]
        finally:
            await m.aclose()
    ex = items[-1]
    assert isinstance(ex, Execution)
    first = next(r for r in ex.results if r.step == "p1.1")
    assert first.status == "failed" and first.attempts[0]["status"] == 503, first
    assert ex.answer.step == "aggregate" and ex.answer.model == "a" and ex.answer.text == "from a"
    assert proxy.seen == 2


def test_which_unavailable_models_are_final_within_a_request() -> None:
    """A refused connection, a name that does not resolve, a 404 or a model that cannot be loaded will fail
    again; a reset, a drop mid-answer or an overloaded upstream may pass."""
    import socket

    from moai.providers import ProviderUnavailable
    from moai.providers.openai_compat import UpstreamStatus
    from moai.strategies.failed_models import worth_another_try

    def caused(cause: BaseException | None, message: str = "connection failed") -> ProviderUnavailable:
        try:
            raise ProviderUnavailable("m", message) from cause
        except ProviderUnavailable as e:
            return e

    final = [caused(ConnectionRefusedError(111, "refused")), caused(socket.gaierror(-2, "unknown name")),
             caused(UpstreamStatus(404, b"no such model"), "not found upstream"),
             caused(None, "model file not found"), ProviderUnavailable("m", "x", final=True)]
    passing = [caused(ConnectionResetError(104, "reset")), caused(OSError("Connection lost mid-stream")),
               caused(UpstreamStatus(529, b"overloaded"), "overloaded"),
               ProviderUnavailable("m", "generation failed", final=False)]
    assert [worth_another_try(e) for e in final] == [False] * len(final)
    assert [worth_another_try(e) for e in passing] == [True] * len(passing)

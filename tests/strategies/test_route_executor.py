"""The route strategy on the executor: the gate's choice answers; on failure the next model does."""

from __future__ import annotations

from stub_openai import Script, StubServer, free_port

from moai.config import parse_config
from moai.mixture import Mixture
from moai.providers.base import Delta
from moai.server.openai_schema import ChatCompletionRequest
from moai.strategies.outcome import Execution


def config(primary: str, backup: str) -> str:
    return f"""
models:
  primary: {{provider: openai_compat, endpoint: "{primary}", privacy: private, params_b: 70, max_retries: 0}}
  backup: {{provider: openai_compat, endpoint: "{backup}", privacy: private, params_b: 7, max_retries: 0,
           price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}}}
mixes:
  default: {{strategy: route, models: [primary, backup], fallbacks: [backup]}}
"""


class First:
    """A chooser that always ranks 'primary' first, so the test controls the choice."""

    name = "test"

    def decide(self, messages, cards, weights, live=None):  # type: ignore[no-untyped-def]
        from moai.gate.decision import RouteDecision

        names = sorted((c.name for c in cards), key=lambda n: n != "primary")
        return RouteDecision(model=names[0], ranking=names, probabilities={n: 1 / len(names) for n in names})


def request(stream: bool = False) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "moai/default", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    )


async def test_falls_back_when_the_chosen_model_fails() -> None:
    with StubServer(Script(fail_times=99, fail_status=503)) as bad, StubServer(Script(reply="from backup")) as good:
        m = Mixture(parse_config(config(bad.url, good.url)), chooser=First())
        ex = await m.run(m.prepare(request()))
        await m.aclose()
    assert ex.answer.model == "backup" and ex.answer.text == "from backup"
    attempts = ex.answer.attempts
    assert [a["model"] for a in attempts] == ["primary", "backup"] and "error" in attempts[0]
    assert ex.cost_usd == (7 * 1.0 + 2 * 2.0) / 1e6  # priced from the backup's card and its usage


async def test_stream_falls_back_before_the_first_token() -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with StubServer(Script(reply="streamed from backup")) as good:
        m = Mixture(parse_config(config(dead, good.url)), chooser=First())
        items = [i async for i in m.stream(m.prepare(request(stream=True)))]
        await m.aclose()
    text = "".join(i.text for i in items if isinstance(i, Delta))
    ex = items[-1]
    assert isinstance(ex, Execution)
    assert text == "streamed from backup" and ex.answer.model == "backup"
    assert ex.answer.usage.completion_tokens == 3

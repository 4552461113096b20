"""A local model's answer to a ``json_schema`` response format matches the schema, or the call fails.

llama.cpp's grammar enforces a schema's shape but not keywords such as ``minimum``/``maximum``; each answer is
validated, a violation regenerated with what was wrong shown to the model, and a strict schema never answered
with JSON that breaks it. A strict schema the model cannot meet is about the request, not the model's health; a
schema that cannot be checked (invalid, unresolvable ``$ref``, too large, a pattern too costly) is refused before
any generation, and reading it never holds up the event loop.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import scripted_llama
from scripted_llama import install_scripted, local_provider
from stub_openai import Script, StubServer

from moai.catalog import ModelCard, complete_card
from moai.providers import ChatParams, ProviderRequestError
from moai.providers import llama_cpp as lc
from moai.providers.json_schema_check import SchemaUnmet, schema_check
from moai.providers.llama_cpp import LlamaCppProvider

AGE = {"type": "object", "properties": {"age": {"type": "integer", "minimum": 0, "maximum": 120}},
       "required": ["age"]}


def age_format(strict: bool | None = True) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": "person", "schema": AGE}
    if strict is not None:
        spec["strict"] = strict
    return {"type": "json_schema", "json_schema": spec}


class ScriptedLlama(scripted_llama.ScriptedLlama):
    """Answers a ``json_schema`` request (turned into llama.cpp's ``json_object`` with a schema) with text."""

    def __init__(self, answers: list[str], finish: str = "stop") -> None:
        super().__init__(answers)
        self.finish = finish

    def create_chat_completion(self, stream: bool, messages: list[dict[str, Any]], **kw: Any) -> Iterator[dict]:
        assert stream and kw["response_format"]["type"] == "json_object"
        yield from self.text_chunks(self.next_answer(messages), self.finish)


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Installs a ScriptedLlama as the model every local card loads."""

    def install(answers: list[str], finish: str = "stop") -> ScriptedLlama:
        return install_scripted(monkeypatch, ScriptedLlama(answers, finish))

    return install


def provider() -> LlamaCppProvider:
    return local_provider()


def ask(fmt: dict[str, Any] | None = None) -> ChatParams:
    return ChatParams(messages=[{"role": "user", "content": "How old is she?"}], max_tokens=20,
                      response_format=fmt or age_format())


async def test_an_answer_out_of_bounds_is_regenerated_with_the_problem_shown(scripted: Any) -> None:
    llm = scripted(['{"age": 4000}', '{"age": 40}'])
    out = await provider().complete(ask())
    assert json.loads(out.text) == {"age": 40} and out.finish_reason == "stop"
    assert len(llm.calls) == 2
    retry = llm.calls[1]
    assert retry[:1] == llm.calls[0]  # the same conversation, then the rejected answer and why
    assert retry[1] == {"role": "assistant", "content": '{"age": 4000}'}
    assert retry[2]["role"] == "user" and "4000 is greater than the maximum of 120" in retry[2]["content"]
    assert "$.age" in retry[2]["content"]
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (10 + 30, 5 + 5)  # both tries are counted


async def test_a_strict_schema_still_broken_after_the_tries_fails_the_call(scripted: Any) -> None:
    llm = scripted(['{"age": 4000}', '{"age": -1}', '{"age": 200}'])
    with pytest.raises(SchemaUnmet) as e:
        await provider().complete(ask())
    assert len(llm.calls) == 3
    message = str(e.value)
    assert "'person'" in message and "after 3 tries" in message and "200 is greater than the maximum of 120" in message
    assert e.value.usage is not None and e.value.usage.completion_tokens == 15
    # the mix's next model may answer; the request asked more than this model gives, no mark on its health
    assert e.value.retryable and e.value.status == 422
    assert (e.value.code, e.value.param) == ("json_schema_unmet", "response_format")


async def test_a_stream_shows_no_text_before_the_answer_is_checked(scripted: Any) -> None:
    scripted(['{"age": 4000}'])
    seen: list[str] = []
    with pytest.raises(SchemaUnmet):
        async for d in provider().stream(ask()):
            seen.append(d.text)
    assert "".join(seen) == ""


async def test_a_repeated_answer_ends_the_tries(scripted: Any) -> None:
    llm = scripted(['{"age": 4000}'])
    with pytest.raises(SchemaUnmet, match="after 2 tries"):
        await provider().complete(ask())
    assert len(llm.calls) == 2  # a third try would only cost time: the model is stuck on its answer


@pytest.mark.parametrize("strict", [False, None], ids=["strict-false", "strict-absent"])
async def test_without_strict_the_schema_is_best_effort(scripted: Any, strict: bool | None) -> None:
    """OpenAI guarantees adherence only with ``strict: true``; otherwise the last answer is returned after the tries."""
    llm = scripted(['{"age": 4000}', '{"age": 300}', '{"age": 200}'])
    out = await provider().complete(ask(age_format(strict)))
    assert json.loads(out.text) == {"age": 200} and len(llm.calls) == 3


async def test_an_answer_cut_short_is_not_judged(scripted: Any) -> None:
    llm = scripted(['{"age": 4'], finish="length")
    out = await provider().complete(ask())
    assert out.text == '{"age": 4' and out.finish_reason == "length" and len(llm.calls) == 1


@pytest.mark.parametrize("schema", [
    {"type": "object", "properties": {"n": {"type": "number", "exclusiveMinimum": 0}}},
    {"type": "object", "properties": {"n": {"type": "integer", "multipleOf": 5}}},
    {"type": "object", "properties": {"tags": {"type": "array", "uniqueItems": True}}},
    {"type": "object", "properties": {"day": {"type": "string", "format": "date"}}},
])
def test_keywords_the_grammar_drops_are_checked(schema: dict[str, Any]) -> None:
    check = schema_check("m", {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    assert check is not None
    bad = {"n": 0} if "n" in schema["properties"] else {"tags": [1, 1]} if "tags" in schema["properties"] \
        else {"day": "soon"}
    if schema["properties"].get("n", {}).get("multipleOf"):
        bad = {"n": 7}
    assert check.problems(json.dumps(bad)) is not None
    assert check.problems("{}") is None


def test_only_a_json_schema_format_with_a_schema_is_checked() -> None:
    assert schema_check("m", None) is None and schema_check("m", {"type": "json_object"}) is None
    assert schema_check("m", {"type": "json_schema", "json_schema": {"name": "x"}}) is None
    check = schema_check("m", age_format(None))
    assert check is not None and not check.strict and check.name == "person"


async def test_a_schema_that_is_not_json_schema_is_the_requests_fault(tmp_path: Path) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "whole number"}}}
    card = ModelCard(name="ghost", provider="local", path=str(tmp_path / "ghost.gguf"), privacy="local")
    with pytest.raises(ProviderRequestError) as e:  # before the (missing) model file is looked for
        await LlamaCppProvider(card).complete(ask(fmt))
    assert e.value.param == "response_format" and "not valid" in str(e.value)


# ---------------------------------------------------------------------------------------------- real models

def smol() -> LlamaCppProvider:
    card = complete_card("smollm2-135m", ModelCard(provider="local", package="smollm2-135m", privacy="local",
                                                   context=2048))
    return LlamaCppProvider(card)


TREE = [{"role": "user", "content": "The tree is 4000 years old. How old is it?"}]


@pytest.mark.integration
async def test_a_real_model_never_returns_json_that_breaks_a_strict_schema(smollm_path: Path) -> None:
    """The grammar lets SmolLM2 write 4000 for ``maximum: 120`` (it does, every time, at temperature 0)."""
    with pytest.raises(SchemaUnmet) as e:
        await smol().complete(ChatParams(messages=TREE, max_tokens=40, response_format=age_format()))
    assert "4000 is greater than the maximum of 120" in str(e.value)
    ok = await smol().complete(ChatParams(messages=[{"role": "user", "content": "How old is a newborn baby?"}],
                                          max_tokens=40, response_format=age_format()))
    assert 0 <= json.loads(ok.text)["age"] <= 120


@pytest.mark.integration
async def test_the_mix_answers_from_its_next_model_when_the_local_one_breaks_the_schema(
        smollm_path: Path, tmp_path: Path) -> None:
    from moai import Mixture
    from moai.api import shutdown

    with StubServer(Script(reply='{"age": 117}')) as stub:
        path = tmp_path / "mix.yaml"
        path.write_text(f"""
models:
  smol: {{provider: local, package: smollm2-135m, privacy: local, context: 2048}}
  cloud: {{provider: openai_compat, endpoint: "{stub.url}", model: stub, privacy: cloud,
          price: {{input_per_mtok: 1, output_per_mtok: 1}}}}
mixes:
  default: {{strategy: route, max_tokens: 40, weights: {{quality: 0, cost: 1}}, fallbacks: [smol, cloud]}}
""")
        m = Mixture.from_config(str(path))
        try:
            r = m.chat.completions.create(model="moai/default", messages=TREE, response_format=age_format())
        finally:
            shutdown(m)
    trace = r.moai  # type: ignore[attr-defined]
    assert json.loads(r.choices[0].message.content) == {"age": 117} and trace["model"] == "cloud", trace
    assert stub.script.calls == 1
    smol_try = trace["trace"][0]["attempts"][0]  # the gate's pick (free) was tried first, and failed
    assert smol_try["model"] == "smol" and smol_try["status"] == 422 and "maximum of 120" in smol_try["error"]


# ------------------------------------------------------------------------------- through a mix, and bounds

def local_mix(tmp_path: Path, cloud_url: str | None = None) -> Any:
    """A mix whose first pick is the local (scripted) model ``tiny``; ``cloud`` after it when given."""
    from moai.config import parse_config
    from moai.mixture import Mixture
    from moai.telemetry.store import TelemetryStore

    (tmp_path / "tiny.gguf").write_bytes(b"")
    cloud = (f"  cloud: {{provider: openai_compat, endpoint: '{cloud_url}', privacy: local, max_retries: 0, "
             "price: {input_per_mtok: 5, output_per_mtok: 5}}\n") if cloud_url else ""
    models = "[tiny, cloud]" if cloud_url else "[tiny]"
    cfg = (f"models:\n  tiny: {{provider: local, path: '{tmp_path / 'tiny.gguf'}', privacy: local}}\n{cloud}"
           f"mixes:\n  m: {{strategy: route, models: {models}, fallbacks: {models}, "
           "weights: {quality: 0, cost: 1}}\n")
    return Mixture(parse_config(cfg), store=TelemetryStore(f"sqlite:///{tmp_path / 'moai.db'}"))


def body(fmt: dict[str, Any]) -> Any:
    from moai.server.openai_schema import ChatCompletionRequest

    return ChatCompletionRequest.model_validate({"model": "moai/m", "response_format": fmt,
                                                 "messages": [{"role": "user", "content": "How old is she?"}]})


async def test_a_strict_schema_the_model_cannot_meet_is_no_mark_on_its_health(scripted: Any, tmp_path: Path) -> None:
    """Three requests whose schema the local model cannot meet: the cloud model answers each, and the local model's
    breaker stays closed, its error rate 0 (live, and as refreshed from the database rows), and no request's
    later steps would leave it out. Each had opened its breaker after three."""
    scripted(['{"age": 4000}', '{"age": -1}', '{"age": 200}'])
    with StubServer(Script(reply='{"age": 40}')) as stub:
        m = local_mix(tmp_path, stub.url)
        try:
            for _ in range(3):
                prep = m.prepare(body(age_format()))
                ex = await m.run(prep)
                assert ex.answer.model == "cloud" and ex.answer.attempts[0]["status"] == 422
                assert prep.plan.failed == {}
        finally:
            await m.aclose()

    def unmarked() -> bool:
        st = m.stats.models.get("tiny")
        return m.stats.healthy("tiny") and (st is None or (st.error_rate == 0.0 and st.consecutive_failures == 0))

    assert unmarked()
    rows = [(c.model, c.status) for r in m.store.requests() for c in r.calls]
    assert sorted(rows) == [("cloud", "ok")] * 3 + [("tiny", "refused")] * 3, rows
    m.stats.refresh(m.store)
    assert unmarked()


async def test_a_schema_no_model_of_the_mix_meets_is_a_422_about_response_format(scripted: Any,
                                                                                  tmp_path: Path) -> None:
    from moai.strategies.outcome import PlanFailed

    scripted(['{"age": 4000}', '{"age": 200}', '{"age": 300}'])
    m = local_mix(tmp_path)
    try:
        with pytest.raises(PlanFailed) as e:
            await m.run(m.prepare(body(age_format())))
    finally:
        await m.aclose()
    assert (e.value.status, e.value.code, e.value.param) == (422, "json_schema_unmet", "response_format")


async def test_an_invalid_schema_is_a_400_that_names_response_format(scripted: Any, tmp_path: Path) -> None:
    """The refusal keeps its ``param`` (it was dropped for want of a code) and has a code of its own."""
    from moai.strategies.outcome import PlanFailed

    llm = scripted(['{"age": 4}'])
    m = local_mix(tmp_path)
    try:
        with pytest.raises(PlanFailed) as e:
            await m.run(m.prepare(body({"type": "json_schema", "json_schema": {"name": "x",
                                                                                "schema": {"type": "nope"}}})))
    finally:
        await m.aclose()
    assert (e.value.status, e.value.code, e.value.param) == (400, "invalid_json_schema", "response_format")
    assert llm.calls == []


@pytest.mark.parametrize("ref", ["https://example.com/s.json", "other.json#/x", "#/$defs/missing"])
async def test_a_ref_that_does_not_resolve_within_the_schema_is_refused_before_generation(
        scripted: Any, ref: str) -> None:
    """Nothing is fetched; the refusal comes before the model writes anything (an answer that never reached
    the $ref was returned, one that did was refused after a whole generation)."""
    llm = scripted(['{"b": 1}', '{"a": 1}'])
    schema = {"type": "object", "properties": {"a": {"$ref": ref}, "b": {"type": "integer"}}}
    with pytest.raises(ProviderRequestError) as e:
        await provider().complete(ask({"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}))
    assert e.value.param == "response_format" and e.value.code == "invalid_json_schema"
    assert ref in str(e.value) and llm.calls == []


@pytest.mark.parametrize("schema", [
    {"type": "object", "$defs": {"n": {"type": "object", "properties": {
        "kids": {"type": "array", "items": {"$ref": "#/$defs/n"}}}}}, "properties": {"root": {"$ref": "#/$defs/n"}}},
    {"$id": "https://x.example/root", "$defs": {"n": {"$id": "node", "type": "integer"}},
     "properties": {"r": {"$ref": "node"}}},
    {"$defs": {"n": {"$anchor": "age", "type": "integer"}}, "properties": {"r": {"$ref": "#age"}}},
    {"type": "object", "properties": {"$ref": {"type": "string"}}},  # a property named "$ref" is no reference
])
def test_refs_within_the_schema_are_accepted(schema: dict[str, Any]) -> None:
    assert schema_check("m", {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})


async def test_a_schema_too_large_to_check_is_refused_at_once(scripted: Any) -> None:
    """20,000 properties took 3.9 s to check, on the event loop."""
    import time

    llm = scripted(['{}'])
    schema = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(20_000)}}
    t0 = time.perf_counter()
    with pytest.raises(ProviderRequestError, match="too large") as e:
        await provider().complete(ask({"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}))
    assert time.perf_counter() - t0 < 1.0 and e.value.param == "response_format" and llm.calls == []


async def test_reading_a_large_schema_leaves_the_event_loop_free_and_is_done_once(
        scripted: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A schema of 3,000 properties takes about half a second to check: read in a worker thread, once per call
    (it was read on the loop, then again in the worker), while the loop keeps serving."""
    import asyncio

    scripted(['{"p1": "x"}'])
    on_loop: list[bool] = []
    check = schema_check

    def reading(*a: Any) -> Any:
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:  # no loop runs in this thread: a worker's
            on_loop.append(False)
        return check(*a)

    monkeypatch.setattr(lc, "schema_check", reading)
    schema = {"type": "object", "properties": {f"p{i}": {"type": "string", "maxLength": 9} for i in range(3_000)}}
    out = await provider().complete(ask({"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}))
    assert json.loads(out.text) == {"p1": "x"} and on_loop == [False]


def test_a_clients_pattern_runs_with_a_time_limit() -> None:
    """Python's ``re`` takes exponential time on ``^(a+)+$`` (0.9 s for 24 characters, doubling with each one),
    holding the interpreter under the model's lock; the answer is checked at once now."""
    import time

    spec = {"name": "x", "strict": True, "schema": {"type": "object", "required": ["s"], "properties": {
        "s": {"type": "string", "not": {"pattern": "^(a+)+$"}}}}}
    check = schema_check("m", {"type": "json_schema", "json_schema": spec})
    assert check is not None
    t0 = time.perf_counter()
    assert check.problems(json.dumps({"s": "a" * 26 + "!"})) is None
    assert check.problems(json.dumps({"s": "aaaa"})) is not None
    assert time.perf_counter() - t0 < 0.5


@pytest.mark.parametrize("where", ["pattern", "patternProperties"])
def test_a_pattern_too_slow_on_an_answer_leaves_it_unchecked(where: str) -> None:
    """A time-out says the answer cannot be checked, not that the schema is wrong: a strict schema is not met by
    that answer (named pattern, too slow to check), a best-effort one takes it; each within the time limit."""
    import time

    costly = "^(a|a)*$"
    if where == "pattern":
        schema: dict[str, Any] = {"type": "object", "properties": {"s": {"type": "string", "not": {"pattern": costly}}}}
        answer = {"s": "a" * 24 + "!"}
    else:
        schema = {"type": "object", "patternProperties": {costly: {"type": "integer"}}, "additionalProperties": False}
        answer = {"a" * 24 + "!": 1}
    for strict in (True, False):
        check = schema_check("m", {"type": "json_schema", "json_schema": {"name": "x", "strict": strict,
                                                                          "schema": schema}})
        assert check is not None
        t0 = time.perf_counter()
        problem = check.problems(json.dumps(answer))
        if strict:
            assert problem is not None and costly in problem and "too slow to check" in problem
        else:
            assert problem is None
        assert time.perf_counter() - t0 < 1.2  # the first time-out (0.25 s) ends the check


SLOW = {"type": "object", "properties": {"s": {"type": "string", "pattern": r"[a-z]+\d"}}, "required": ["s"]}
LETTERS = json.dumps({"s": "a" * 30_000})  # [a-z]+\d takes 1.2 s on 16,000 letters: a legitimate, slow pattern


def slow_format(strict: bool) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "slow", "strict": strict, "schema": SLOW}}


async def test_a_slow_pattern_with_strict_false_returns_the_answer_unchecked(scripted: Any) -> None:
    """It was a 400 invalid_json_schema, and the tokens of the try were lost."""
    llm = scripted([LETTERS])
    out = await provider().complete(ask(slow_format(False)))
    assert out.text == LETTERS and len(llm.calls) == 1
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (10, 5)


async def test_a_slow_pattern_with_strict_is_a_schema_not_met_with_the_tries_usage(scripted: Any) -> None:
    llm = scripted([LETTERS])
    with pytest.raises(SchemaUnmet) as e:
        await provider().complete(ask(slow_format(True)))
    assert e.value.status == 422 and e.value.code == "json_schema_unmet"
    message = str(e.value)
    assert r"[a-z]+\\d" in message and "too slow to check" in message and "nested repetition" not in message
    assert len(llm.calls) == 2  # the same answer again: the model is stuck
    assert e.value.usage is not None and e.value.usage.completion_tokens == 10


async def test_an_error_after_a_try_keeps_the_usage_of_the_tries(scripted: Any) -> None:
    """A try that broke the schema was billed; the next one failed: the error still carries the first's tokens."""
    llm = scripted(['{"age": 4000}'])
    answer = llm.create_chat_completion

    def once(stream: bool, messages: list[dict[str, Any]], **kw: Any) -> Iterator[dict]:
        if llm.calls:
            raise RuntimeError("the model broke")
        return answer(stream, messages, **kw)

    llm.create_chat_completion = once  # type: ignore[method-assign]
    with pytest.raises(Exception) as e:  # noqa: PT011 - whichever provider error, its usage is the point
        await provider().complete(ask())
    assert "the model broke" in str(e.value)
    assert e.value.usage is not None and (e.value.usage.prompt_tokens, e.value.usage.completion_tokens) == (10, 5)


def ids_schema(n: int, ref: str | None = None) -> dict[str, Any]:
    """Each subschema its own document (a bundled schema), referenced by its ``$id``."""
    props: dict[str, Any] = {f"f{i}": {"$ref": f"s{i}"} for i in range(n)}
    if ref:
        props["extra"] = {"$ref": ref}
    return {"$id": "https://e.example/root", "type": "object", "properties": props,
            "$defs": {f"d{i}": {"$id": f"s{i}", "type": "string"} for i in range(n)}}


def test_subschemas_with_ids_are_read_in_linear_time() -> None:
    """Every $ref re-crawled the whole schema: 800 ``$id``s took 9 to 12 s to read (3,000: 150 s)."""
    import time

    t0 = time.perf_counter()
    check = schema_check("m", {"type": "json_schema", "json_schema": {"name": "ids", "schema": ids_schema(800)}})
    assert check is not None
    assert check.problems(json.dumps({f"f{i}": "v" for i in range(800)})) is None
    assert "is not of type 'string'" in (check.problems(json.dumps({"f5": 1})) or "")
    assert time.perf_counter() - t0 < 3.0
    with pytest.raises(ProviderRequestError, match="s800"):  # a $ref to no $id of it is still refused
        schema_check("m", {"type": "json_schema", "json_schema": {"name": "ids", "schema": ids_schema(20, "s800")}})


def test_the_same_schema_is_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A retry, a fallback to another local model or the client's next request with the same schema do not read
    it again (a 5,000-property schema took about 0.9 s each time)."""
    import uuid

    from moai.providers import json_schema_check

    reads: list[int] = []
    real = json_schema_check._read

    def counted(schema: Any) -> Any:
        reads.append(1)
        return real(schema)

    monkeypatch.setattr(json_schema_check, "_read", counted)
    schema = {"type": "object", "properties": {f"p{i}": {"type": "string", "maxLength": 9} for i in range(5_000)},
              "title": uuid.uuid4().hex}
    fmt = {"type": "json_schema", "json_schema": {"name": "big", "schema": schema}}
    first = schema_check("one", fmt)
    again = schema_check("two", fmt)
    assert first is not None and again is not None and again.model == "two"
    assert len(reads) == 1  # read for the first, kept for the second
    assert again.problems('{"p1": "short"}') is None and "too long" in (again.problems('{"p1": "far too long"}') or "")


@pytest.mark.parametrize(("fmt", "good", "bad"), [
    ("date-time", ["2024-02-29T10:00:00Z", "2024-02-29t10:00:00.5+02:00"],
     ["2024-02-29T10:00:00", "2023-02-29T10:00:00Z", "2024-02-29 10:00:00Z", "2024-02-29T25:00:00Z", "soon"]),
    ("time", ["10:00:00Z", "23:59:60+01:00"], ["10:00:00", "10:00", "24:00:00Z"]),
    ("date", ["2024-02-29"], ["2023-02-29", "29/02/2024"]),
])
def test_formats_are_checked_whatever_is_installed(fmt: str, good: list[str], bad: list[str]) -> None:
    """date-time and time went unchecked here and would be checked (with other rules) once an optional package
    is installed: RFC 3339 is read without one now, a time zone required as OpenAI's structured outputs do."""
    schema = {"type": "object", "properties": {"v": {"type": "string", "format": fmt}}}
    check = schema_check("m", {"type": "json_schema", "json_schema": {"name": "f", "schema": schema}})
    assert check is not None
    assert [v for v in good if check.problems(json.dumps({"v": v}))] == []
    assert [v for v in bad if check.problems(json.dumps({"v": v})) is None] == []


def test_the_checked_formats_are_a_fixed_set() -> None:
    """Formats outside the set (uri, hostname, duration) are annotations, whatever packages are installed."""
    from moai.providers.json_schema_check import CHECKED_FORMATS, format_checker

    assert sorted(format_checker().checkers) == sorted(CHECKED_FORMATS)
    schema = {"type": "object", "properties": {k: {"type": "string", "format": k}
                                               for k in ("uri", "hostname", "duration", "idn-hostname")}}
    check = schema_check("m", {"type": "json_schema", "json_schema": {"name": "f", "schema": schema}})
    assert check is not None
    assert check.problems(json.dumps({k: "not one at all!" for k in schema["properties"]})) is None


async def test_a_request_every_model_refuses_says_why_each_did(scripted: Any, tmp_path: Path) -> None:
    """The local model's answers break the schema (422) and the cloud model refuses the request (400): the client
    is told both, not only the last model's reason."""
    from moai.strategies.outcome import PlanFailed

    scripted(['{"age": 4000}', '{"age": 200}', '{"age": 300}'])
    with StubServer(Script(fail_times=99, fail_status=400)) as stub:
        m = local_mix(tmp_path, stub.url)
        try:
            with pytest.raises(PlanFailed) as e:
                await m.run(m.prepare(body(age_format())))
        finally:
            await m.aclose()
    message = str(e.value)
    assert "tiny: its answer does not match the response_format JSON schema" in message, message
    assert "cloud: upstream refused the request (400): scripted failure" in message, message
    assert e.value.status == 400

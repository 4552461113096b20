"""Schema patterns llama.cpp's grammar cannot read (``\\d``, ``\\S``, lookarounds) never reach it as written: its
parser failed on the unknown escape and llama-cpp-python then crashed the process, so one request with a pydantic
``Field(pattern=r"\\d{4}")`` took ``moai serve`` down. The common classes are spelled out; the rest are left to the
schema check after generation."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from moai.providers.llama_cpp import _grammar_pattern, grammar_schema


@pytest.mark.parametrize(("pattern", "readable"), [
    (r"^\d{4}$", "^[0-9]{4}$"),
    (r"^[A-Z]{3}-\d{4}$", "^[A-Z]{3}-[0-9]{4}$"),
    (r"[\w.-]+@[\w-]+\.\w+", "[a-zA-Z0-9_.-]+@[a-zA-Z0-9_-]+[.][a-zA-Z0-9_]+"),
    (r"^\(\d+\)$", r"^\([0-9]+\)$"),
    (r"^\S+$", None), (r"(?i)abc", None), (r"\bword", None), (r"[\.]", None),
])
def test_patterns_are_spelled_for_the_grammar_or_left_out(pattern: str, readable: str | None) -> None:
    assert _grammar_pattern(pattern) == readable
    schema = {"type": "object", "properties": {"code": {"type": "string", "pattern": pattern}}}
    sent = grammar_schema(schema)["properties"]["code"]
    assert sent.get("pattern") == readable and schema["properties"]["code"]["pattern"] == pattern  # not changed


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["response_format", "tools"])
def test_a_real_model_takes_a_schema_with_digit_patterns(smollm_path: Path, tmp_path: Path, kind: str) -> None:
    """In a child process: a crash there is a failed test, not a lost test run."""
    code = textwrap.dedent(f"""
        import asyncio, json
        from moai.catalog import ModelCard
        from moai.providers import ChatParams
        from moai.providers.llama_cpp import LlamaCppProvider
        schema = {{"type": "object", "required": ["code"],
                   "properties": {{"code": {{"type": "string", "pattern": "^\\\\d{{4}}$"}}}}}}
        p = LlamaCppProvider(ModelCard(name="smol", provider="local", path={str(smollm_path)!r}, context=2048))
        messages = [{{"role": "user", "content": "Give a four-digit code."}}]
        if {kind!r} == "response_format":
            fmt = {{"type": "json_schema", "json_schema": {{"name": "c", "schema": schema, "strict": False}}}}
            params = ChatParams(messages=messages, max_tokens=24, response_format=fmt)
        else:
            tools = [{{"type": "function", "function": {{"name": "f", "parameters": schema}}}}]
            params = ChatParams(messages=messages, max_tokens=24, tools=tools, tool_choice="required")
        out = asyncio.run(p.complete(params))
        print("ANSWERED", out.text or out.tool_calls)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0 and "ANSWERED" in done.stdout, (done.returncode, done.stderr[-2000:])


def test_an_earlier_tool_calls_arguments_reach_the_template_as_an_object() -> None:
    """OpenAI sends them as a JSON string; templates such as Qwen's ``tojson`` them, so a string was encoded
    twice and the model saw its own call garbled."""
    from moai.providers.llama_cpp import text_messages

    call = {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}
    odd = {"id": "c2", "type": "function", "function": {"name": "weather", "arguments": "not json"}}
    (m,) = text_messages("m", [{"role": "assistant", "content": None, "tool_calls": [call, odd]}])
    assert m["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
    assert m["tool_calls"][1]["function"]["arguments"] == "not json"  # left as it is
    assert call["function"]["arguments"] == '{"city": "Paris"}'  # the request's own message is not changed


def test_a_property_named_pattern_is_read_as_the_schema_it_is() -> None:
    schema = {"type": "object", "properties": {"pattern": {"type": "string", "pattern": r"^\d+$"}}}
    assert grammar_schema(schema)["properties"]["pattern"] == {"type": "string", "pattern": "^[0-9]+$"}

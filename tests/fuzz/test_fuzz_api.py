"""Schemathesis against moai's own OpenAPI schema (/openapi.json), every endpoint, valid and invalid inputs:
never a 5xx, and every 4xx is OpenAI's error envelope. ``MOAI_FUZZ_EXAMPLES`` raises the examples per endpoint.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from servers import start_moai, stop
from stub_openai import Script, StubServer

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("MOAI_FUZZ_EXAMPLES", "40"))
SEEN: dict[str, int] = {}


@schemathesis.check
def openai_error_envelope(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx from moai carries ``{"error": {"message", "type", "param", "code"}}`` with a message; on the
    Messages endpoints Anthropic's ``{"type": "error", "error": {"type", "message"}, "request_id"}``."""
    SEEN[str(response.status_code)] = SEEN.get(str(response.status_code), 0) + 1
    if 400 <= response.status_code < 500:
        body = response.json()
        err = body.get("error") if isinstance(body, dict) else None
        assert isinstance(err, dict), f"not an error body: {body!r}"
        if case.path.startswith("/v1/messages"):
            assert body["type"] == "error" and set(err) == {"type", "message"} and body["request_id"], body
        else:
            assert set(err) >= {"message", "type", "param", "code"}, err
        assert isinstance(err["message"], str) and err["message"], err
    return None


@pytest.fixture(scope="module")
def moai_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """moai over a fast stub model; its live /openapi.json, with the chat and feedback bodies described."""
    with StubServer(Script(reply="fuzzed")) as stub:
        config = f"""
models:
  m: {{provider: openai_compat, endpoint: "{stub.url}", privacy: private, max_retries: 0, timeout_s: 10}}
mixes:
  default: {{models: [m]}}
"""
        server = start_moai(config, Path(tmp_path_factory.mktemp("fuzz")))
        try:
            schema = schemathesis.openapi.from_url(server.base + "/openapi.json")
            schema.config.generation.update(max_examples=EXAMPLES, modes=[GenerationMode.POSITIVE,
                                                                          GenerationMode.NEGATIVE])
            yield schema
            assert server.proc.poll() is None, "moai died under fuzzing"
        finally:
            stop(server.proc)
            print(f"\nschemathesis responses by status: {dict(sorted(SEEN.items()))}")


def test_chat_body_is_described_in_the_schema(moai_schema: Any) -> None:
    raw = moai_schema.raw_schema
    body = raw["paths"]["/v1/chat/completions"]["post"]["requestBody"]
    ref = body["content"]["application/json"]["schema"]["$ref"]
    props = raw["components"]["schemas"][ref.rsplit("/", 1)[1]]["properties"]
    assert {"model", "messages", "max_tokens", "stream", "moai"} <= set(props)
    assert "/v1/feedback" in raw["paths"] and "/readyz" in raw["paths"]


def fuzz_operation(op: Any, mode: GenerationMode) -> int:
    """Send ``EXAMPLES`` generated requests to one operation; return how many were sent."""
    sent = 0

    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=op.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        nonlocal sent
        sent += 1
        if (mode is GenerationMode.POSITIVE and isinstance(case.body, dict) and {"messages", "input"} & set(case.body)
                and sent % 3):
            case.body["model"] = "moai/default"  # reach routing and the model call, not just the 404
        case.call_and_validate(checks=[not_a_server_error, openai_error_envelope], timeout=30)

    try:
        run()
    except Unsatisfiable:  # nothing to make invalid: an operation without parameters or body
        assert mode is GenerationMode.NEGATIVE and op.method.upper() == "GET", op
    return sent


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_every_endpoint_never_5xx(moai_schema: Any, mode: GenerationMode) -> None:
    """Each operation in the schema gets up to ``EXAMPLES`` generated requests in this mode."""
    cases = {f"{op.method.upper()} {op.path}": fuzz_operation(op, mode)
             for op in (r.ok() for r in moai_schema.get_all_operations())}
    print(f"\n{mode.value}: cases per operation: {cases}")
    assert {"POST /v1/chat/completions", "POST /v1/responses", "POST /v1/messages", "POST /v1/feedback",
            "GET /readyz", "GET /healthz"} <= set(cases)
    for body in ("POST /v1/chat/completions", "POST /v1/responses", "POST /v1/messages"):
        assert cases[body] >= min(EXAMPLES, 10), cases

"""A request the shutdown stops gets a 503 with an id to quote, whether or not it had been given one yet."""

from __future__ import annotations

import json
from typing import Any

from moai.serve_process import Stoppable


async def stopped(request_id: str | None) -> tuple[dict[bytes, bytes], dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await Stoppable._stopped(send, {"started": False, "stream": False, "done": False}, request_id)
    start, body = sent
    assert start["status"] == 503
    return dict(start["headers"]), json.loads(body["body"])


async def test_a_request_stopped_before_its_completion_id_gets_a_fresh_one_and_a_later_one_keeps_its_own() -> None:
    headers, body = await stopped(None)
    assert body["error"]["code"] == "server_shutting_down"
    assert headers[b"x-request-id"].startswith(b"req-") and len(headers[b"x-request-id"]) > 8
    assert b"x-moai-request-id" not in headers  # no record stands under it
    again, _ = await stopped(None)
    assert again[b"x-request-id"] != headers[b"x-request-id"]
    kept, _ = await stopped("chatcmpl-7")  # one that had its id keeps it: its record stands under it
    assert kept[b"x-request-id"] == kept[b"x-moai-request-id"] == b"chatcmpl-7"


"""The gateway's keys and the /metrics token read ``Authorization: Bearer`` alike: any spaces or tabs after the
scheme, the scheme in any case; another scheme, or none, is a missing credential, not a wrong one."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

from moai.config import parse_config
from moai.server.app import create_app
from moai.server.auth import create_key
from moai.telemetry.store import TelemetryStore

CONFIG = """
models:
  m: {provider: openai_compat, endpoint: "http://127.0.0.1:9", privacy: private, max_retries: 0}
mixes:
  default: {strategy: route, models: [m]}
"""


@pytest.mark.parametrize(("header", "credentials"), [
    ("Bearer tok", "tok"), ("Bearer\ttok", "tok"), ("bearer \t tok ", "tok"), ("BEARER  a b", "a b"),
    (None, None), ("", None), ("Bearer", None), ("Bearertok", None), ("Basic dG9rOg==", None),
])
def test_bearer_credentials(header: str | None, credentials: str | None) -> None:
    from moai.server.auth import bearer_credentials

    assert bearer_credentials(header) == credentials


@pytest.mark.parametrize("separator", [" ", "\t", " \t "])
def test_a_gateway_key_after_a_tab_is_accepted(tmp_path: Path, separator: str) -> None:
    store = TelemetryStore(f"sqlite:///{tmp_path / 'moai.db'}")
    _key, secret = create_key(store, "k")
    with TestClient(create_app(parse_config(CONFIG), store)) as client:
        right = client.get("/moai/stats", headers={"authorization": f"Bearer{separator}{secret}"})
        wrong = client.get("/moai/stats", headers={"authorization": f"Bearer{separator}moai-sk-nope"})
        other = client.get("/moai/stats", headers={"authorization": "Basic dG9rOg=="})
    store.close()
    assert right.status_code == 200
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (401, "invalid_api_key")
    assert (other.status_code, other.json()["error"]["code"]) == (401, "missing_api_key")

"""GET /v1/models with a restricted key lists what that key may call: its mixes and the models it names."""

from __future__ import annotations

from pathlib import Path

from starlette.testclient import TestClient

from moai.config import parse_config
from moai.server.app import create_app
from moai.server.auth import create_key
from moai.telemetry.store import TelemetryStore

CONFIG = """\
models:
  m: {provider: openai_compat, endpoint: "http://127.0.0.1:9/v1", privacy: private}
  n: {provider: openai_compat, endpoint: "http://127.0.0.1:9/v1", privacy: private}
mixes:
  default: {strategy: route}
  other: {strategy: route}
"""


def test_models_listing_follows_the_keys_allowed_names(tmp_path: Path) -> None:
    store = TelemetryStore(f"sqlite:///{tmp_path / 'moai.db'}")
    _, model_only = create_key(store, "model-only", ["m"])
    _, mixed = create_key(store, "mixed", ["default", "n"])
    client = TestClient(create_app(parse_config(CONFIG, "mix.yaml"), store))

    def ids(secret: str) -> list[str]:
        r = client.get("/v1/models", headers={"authorization": f"Bearer {secret}"})
        assert r.status_code == 200, r.text
        return [o["id"] for o in r.json()["data"]]

    assert ids(model_only) == ["m"]
    assert ids(mixed) == ["moai/default", "n"]
    auth = {"authorization": f"Bearer {model_only}"}
    assert client.get("/v1/models/m", headers=auth).json()["id"] == "m"
    assert client.get("/v1/models/n", headers=auth).status_code == 404
    assert client.get("/v1/models/moai/default", headers=auth).status_code == 404

"""/readyz counts a model only when it can be called: not one whose model file is missing (every call to it fails),
and, without a mix named ``default``, it checks every mix rather than whichever the file lists first."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from moai.config import Config, parse_config
from moai.gate.rules import RuleChooser
from moai.mixture import Mixture
from moai.server.app import create_app
from moai.telemetry.store import TelemetryStore

pytestmark = pytest.mark.integration


@contextmanager
def served(tmp: Path, config: Config) -> Iterator[TestClient]:
    store = TelemetryStore(f"sqlite:///{tmp / 'moai.db'}")
    mixture = Mixture(config, store=store, chooser=RuleChooser())
    try:
        with TestClient(create_app(config, store, mixture=mixture), raise_server_exceptions=False) as client:
            yield client
    finally:
        store.close()


def ready(client: TestClient) -> tuple[int, dict[str, Any]]:
    r = client.get("/readyz")
    return r.status_code, r.json()


def test_a_local_model_whose_file_is_missing_is_not_ready(tmp_path: Path) -> None:
    """/readyz said ready with the model "usable", and every request was a 502 until its breaker opened."""
    gguf = tmp_path / "m.gguf"
    config = parse_config(f"models:\n  l: {{provider: local, path: {gguf}}}\nmixes:\n  default: {{strategy: route}}\n")
    with served(tmp_path, config) as client:
        status, body = ready(client)
        assert status == 503, body
        assert body["error"]["code"] == "no_model_available" and body["missing_files"] == ["l"], body
        assert "model files missing: l" in body["error"]["message"] and body["open_circuits"] == []
        gguf.write_bytes(b"GGUF")  # put in place after start-up: ready without a restart
        assert ready(client) == (200, {"status": "ready", "mix": "default", "usable": ["l"], "usable_count": 1})


def test_a_missing_file_leaves_the_other_models_usable(tmp_path: Path) -> None:
    """Guard: the mix stays ready on the models that can answer; the missing one is not listed as usable."""
    (tmp_path / "rec.jsonl").write_text("")
    config = parse_config(f"models:\n  l: {{provider: local, path: {tmp_path / 'nope.gguf'}}}\n"
                          f"  r: {{provider: replay, records: [{tmp_path / 'rec.jsonl'}]}}\n"
                          "mixes:\n  default: {strategy: route}\n")
    with served(tmp_path, config) as client:
        assert ready(client) == (200, {"status": "ready", "mix": "default", "usable": ["r"], "usable_count": 1})
        (tmp_path / "rec.jsonl").unlink()  # records removed under a running server
        status, body = ready(client)
        assert status == 503 and sorted(body["missing_files"]) == ["l", "r"], body


def test_without_a_default_mix_every_mix_is_checked(tmp_path: Path) -> None:
    """The first mix listed stood in for the default: its models down meant "not ready" while another mix could
    answer, and the body named a mix no client had chosen."""
    (tmp_path / "rec.jsonl").write_text("")
    config = parse_config(f"models:\n  l: {{provider: local, path: {tmp_path / 'nope.gguf'}}}\n"
                          f"  r: {{provider: replay, records: [{tmp_path / 'rec.jsonl'}]}}\n"
                          "mixes:\n  first: {strategy: route, models: [l]}\n  second: {strategy: route, models: [r]}\n")
    with served(tmp_path, config) as client:
        assert ready(client) == (200, {"status": "ready", "mix": None, "usable": ["r"], "usable_count": 1})
        (tmp_path / "rec.jsonl").unlink()
        status, body = ready(client)
        assert status == 503 and body["error"]["message"].startswith("no model of any mix is usable"), body

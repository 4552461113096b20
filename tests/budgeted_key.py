"""A gateway of one stub model and one key with a budget and an RPM limit, and what its RPM window counts: the
setting of the tests of how a budgeted key's requests are counted."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from moai.config import Config, parse_config
from moai.gate.rules import RuleChooser
from moai.mixture import Mixture
from moai.server.auth import create_key
from moai.telemetry.store import TelemetryStore


def budgeted_gateway(tmp_path: Path, url: str, budget_day: float = 1.0,
                     rpm: int = 5) -> tuple[Config, TelemetryStore, str, str, Mixture]:
    """The config, the store, the key's id and secret, and the mixture of a gateway whose one model is at `url`."""
    config = parse_config(f"""
models:
  m: {{provider: openai_compat, endpoint: "{url}", privacy: private, max_retries: 0,
      price: {{input_per_mtok: 1, output_per_mtok: 1}}}}
mixes:
  default: {{strategy: route, models: [m], max_tokens: 8}}
""")
    store = TelemetryStore(f"sqlite:///{tmp_path / 'moai.db'}")
    key, secret = create_key(store, "k", budget_day=budget_day, rpm=rpm)
    return config, store, key.id, secret, Mixture(config, store=store, chooser=RuleChooser())


def counted(store: TelemetryStore, key_id: str) -> int:
    """Requests the key's RPM window holds, over all its minutes."""
    path = store.engine.url.database
    assert path
    with sqlite3.connect(path) as conn:
        return conn.execute("select coalesce(sum(count), 0) from rate_windows where key_id = ?",
                            (key_id,)).fetchone()[0]

"""The gateway stays closed once keys exist, and key limits are not read from a SQLite file that is gone."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from moai.cli import app
from moai.server.auth import Denied, Gatekeeper, create_key, revoke_key
from moai.telemetry.store import TelemetryStore


def test_revoking_the_last_key_does_not_open_the_gateway(tmp_path: Path) -> None:
    store = TelemetryStore(f"sqlite:///{tmp_path / 'moai.db'}")
    keeper = Gatekeeper(store, refresh_s=0.0)
    assert keeper.authenticate(None) is None  # no key was ever made: open
    key, secret = create_key(store, "only")
    assert keeper.authenticate(f"Bearer {secret}").id == key.id
    assert revoke_key(store, key.id)
    for auth in (None, f"Bearer {secret}", "Bearer junk"):
        with pytest.raises(Denied) as e:
            keeper.authenticate(auth)
        assert e.value.status == 401
    _, fresh = create_key(store, "next")
    assert keeper.authenticate(f"Bearer {fresh}").name == "next"


def test_keys_revoke_says_when_no_active_key_is_left(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'moai.db'}"
    store = TelemetryStore(db)
    first, _ = create_key(store, "a")
    second, _ = create_key(store, "b")
    out = CliRunner().invoke(app, ["keys", "revoke", first.id, "--database-url", db])
    assert out.exit_code == 0 and "no active key is left" not in out.output
    out = CliRunner().invoke(app, ["keys", "revoke", second.id, "--database-url", db])
    assert out.exit_code == 0 and "no active key is left" in out.output


@pytest.mark.parametrize("limits", [{"rpm": 5}, {"budget_day": 1.0}])
def test_limits_are_not_read_from_a_database_file_that_is_gone(tmp_path: Path, limits: dict) -> None:
    folder = tmp_path / "db"
    folder.mkdir()
    store = TelemetryStore(f"sqlite:///{folder / 'moai.db'}")
    _, secret = create_key(store, "limited", **limits)
    keeper = Gatekeeper(store)
    key = keeper.authenticate(f"Bearer {secret}")
    keeper.authorize(key, "default")
    shutil.rmtree(folder)  # open connections would go on reading (and counting in) the deleted file
    with pytest.raises(Denied) as e:
        keeper.authorize(key, "default")
    assert e.value.status == 503 and e.value.code == "database_unavailable"


def test_the_key_table_is_not_read_from_a_database_file_that_is_gone(tmp_path: Path) -> None:
    folder = tmp_path / "db"
    folder.mkdir()
    store = TelemetryStore(f"sqlite:///{folder / 'moai.db'}")
    _, secret = create_key(store, "plain")
    keeper = Gatekeeper(store, refresh_s=0.0, grace_s=0.0)
    assert keeper.authenticate(f"Bearer {secret}") is not None
    shutil.rmtree(folder)
    with pytest.raises(Denied) as e:  # past the grace, the key set read last no longer stands in
        keeper.authenticate(f"Bearer {secret}")
    assert e.value.status == 503

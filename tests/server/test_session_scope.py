"""Sessions belong to the API key that sent them: another tenant using the same session name neither moves the
conversation nor learns its model, in this process's memory or through the database (a restart, a replica)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from stub_openai import Script, StubServer
from test_sessions import HARD, small_and_big

from moai.api import shutdown
from moai.config import parse_config
from moai.gate.rules import RuleChooser
from moai.mixture import Mixture
from moai.server.app import create_app
from moai.server.auth import create_key
from moai.telemetry.store import TelemetryStore

pytestmark = pytest.mark.integration

def session_notes(moai: dict[str, Any]) -> list[str]:
    return [r for r in moai["reason"] if r.startswith("session")]


@contextmanager
def gateway(tmp_path: Path) -> Iterator[tuple[TelemetryStore, Any]]:
    """A small and a big model on stubs, one SQLite store; yields it and a maker of fresh mixtures over both
    (a fresh one remembers no session: it finds them in the database, as after a restart)."""
    with StubServer(Script(reply="small")) as small, StubServer(Script(reply="big")) as big:
        config_text = small_and_big(small.url, big.url)
        store = TelemetryStore(f"sqlite:///{tmp_path / 'moai.db'}")
        made: list[Mixture] = []

        def mixture() -> Mixture:
            made.append(Mixture(parse_config(config_text), store=store, chooser=RuleChooser()))
            return made[-1]

        try:
            yield store, mixture
        finally:
            for m in made:
                shutdown(m)
            store.close()


def test_one_tenant_cannot_repin_or_read_another_tenants_session(tmp_path: Path) -> None:
    with gateway(tmp_path) as (store, mixture):
        key_a, a = create_key(store, "tenant-a")
        key_b, b = create_key(store, "tenant-b")

        def ask(client: TestClient, secret: str, text: str, **extra: Any) -> dict[str, Any]:
            body = {"model": "moai/default", "messages": [{"role": "user", "content": text}], **extra}
            r = client.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {secret}"})
            assert r.status_code == 200, r.text
            return r.json()["moai"]  # type: ignore[no-any-return]

        m = mixture()
        with TestClient(create_app(m.config, store, mixture=m)) as client:
            assert ask(client, a, HARD, user="carol")["model"] == "big"
            # tenant B's carol, kept to the small model: nothing of A's carol shows in its trace
            theirs = ask(client, b, "Hi!", user="carol", moai={"models": ["small"]})
            assert theirs["model"] == "small" and session_notes(theirs) == []
            mine = ask(client, a, "Hi!", user="carol")
            assert mine["model"] == "big" and session_notes(mine) == [
                "session: sticky — stays on big (the gate alone would pick small)"]
            assert session_notes(ask(client, b, HARD, user="carol")) == [
                "session: sticky — stays on small (the gate alone would pick big)"]
        assert store.session_model("carol", "default", key_a.id) == "big"
        assert store.session_model("carol", "default", key_b.id) == "small"
        assert store.session_model("carol", "default") is None  # no keyless request named it

        m = mixture()  # a restart: each tenant's session is found in the database, its own only
        with TestClient(create_app(m.config, store, mixture=m)) as client:
            x_mine = ask(client, a, "Hi!", user="carol")
            x_theirs = ask(client, b, HARD, user="carol")
            assert (x_mine["model"], x_theirs["model"]) == ("big", "small")
            assert session_notes(x_mine) == ["session: sticky — stays on big (the gate alone would pick small)"]


def test_keyless_requests_share_only_keyless_sessions(tmp_path: Path) -> None:
    """The in-process API sends no key: its sessions are the keyless ones, apart from every key's."""
    with gateway(tmp_path) as (store, mixture):
        key, secret = create_key(store, "tenant")
        m = mixture()
        with TestClient(create_app(m.config, store, mixture=m)) as client:
            body = {"model": "moai/default", "messages": [{"role": "user", "content": HARD}], "user": "carol"}
            r = client.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {secret}"})
            assert r.json()["moai"]["model"] == "big"

        hi = [{"role": "user", "content": "Hi!"}]
        first = mixture().chat.completions.create(model="moai/default", messages=hi, user="carol")
        assert first.moai["model"] == "small" and session_notes(first.moai) == []  # type: ignore[attr-defined]
        # a fresh process finds the keyless session in the database, and not the key's
        hard = [{"role": "user", "content": HARD}]
        again = mixture().chat.completions.create(model="moai/default", messages=hard, user="carol")
        assert again.moai["model"] == "small"  # type: ignore[attr-defined]
        assert session_notes(again.moai) == [  # type: ignore[attr-defined]
            "session: sticky — stays on small (the gate alone would pick big)"]
        assert (store.session_model("carol", "default"), store.session_model("carol", "default", key.id)) == (
            "small", "big")


def test_the_database_keeps_a_digest_of_the_session_name_and_still_finds_it(tmp_path: Path) -> None:
    """`user` may be a person's email: it is not stored as written, and a restart still keeps the conversation."""
    import sqlite3

    person = "marguerite.lefebvre@orange-pro.fr" + "x" * 200  # longer than the column, too
    def ask(c: TestClient, text: str) -> dict[str, Any]:
        body = {"model": "moai/default", "messages": [{"role": "user", "content": text}], "user": person}
        r = c.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        return r.json()["moai"]  # type: ignore[no-any-return]

    with gateway(tmp_path) as (store, mixture):
        m = mixture()
        with TestClient(create_app(m.config, store, mixture=m)) as c:
            assert ask(c, "Hi!")["model"] == "small"
        m = mixture()
        with TestClient(create_app(m.config, store, mixture=m)) as c:
            later = ask(c, HARD)  # a fresh process: found through the database
            assert later["model"] == "small" and session_notes(later)
    with sqlite3.connect(tmp_path / "moai.db") as conn:
        stored = {row[0] for row in conn.execute("select session from requests")}
    assert len(stored) == 1 and "lefebvre" not in next(iter(stored)) and len(next(iter(stored))) <= 128

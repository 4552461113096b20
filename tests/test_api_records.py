"""The Python API records its requests where the mix instructions or MOAI_DATABASE_URL say, as `moai serve` does."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from stub_openai import Script, StubServer
from test_api import HI, config

from moai import Mixture
from moai.api import shutdown


def stored(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("select mix, status from requests").fetchall()


@pytest.mark.parametrize("where", ["environment", "settings"])
def test_from_config_records_where_the_database_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         where: str) -> None:
    db = tmp_path / "api.db"
    url = f"sqlite:///{db}"
    with StubServer(Script(reply="hello")) as s:
        if where == "environment":
            monkeypatch.setenv("MOAI_DATABASE_URL", url)
            m = Mixture.from_config(config(tmp_path, s.url))
        else:
            monkeypatch.delenv("MOAI_DATABASE_URL", raising=False)
            m = Mixture.from_config(config(tmp_path, s.url, settings=f"{{database_url: '{url}'}}"))
        try:
            m.chat.completions.create(model="moai/default", messages=HI)
        finally:
            shutdown(m)
    assert stored(db) == [("default", "ok")]


def test_from_config_records_nothing_when_no_database_is_named(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MOAI_DATABASE_URL", raising=False)
    with StubServer(Script(reply="hello")) as s:
        m = Mixture.from_config(config(tmp_path, s.url))
        assert m.store is None
        shutdown(m)

"""Database URLs that SQLAlchemy cannot parse into a port, or that carry a password as a query parameter: every
command that opens the database fails in one ``error:`` line (exit 2) and never prints the password."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_support import one_line_error, record_serving
from typer.testing import CliRunner

from moai.cli import app
from moai.telemetry.database import DatabaseUnavailable, safe_url
from moai.telemetry.store import TelemetryStore

SECRET = "s3cretQ"

BAD_PORTS = [
    "postgresql+psycopg://moai@127.0.0.1:notaport/postgres",
    "postgresql+psycopg://moai@127.0.0.1:/postgres",
    "postgresql+psycopg://moai@[::1:55491/postgres",
    f"postgresql+psycopg://moai:{SECRET}@127.0.0.1:notaport/postgres",
    f"postgresql+psycopg://moai@127.0.0.1:notaport/postgres?password={SECRET}",
]

COMMANDS = [["keys", "list"], ["report"], ["feedback", "chatcmpl-x", "1"], ["db", "prune", "--older-than", "30d"],
            ["serve", "--port", "1"]]

# refused at once (nothing listens on port 1), after the URL has been parsed and the driver loaded
QUERY_PASSWORDS = [
    f"postgresql+psycopg://moai@127.0.0.1:1/postgres?password={SECRET}",
    f"postgresql+psycopg://moai@127.0.0.1:1/postgres?sslpassword={SECRET}&connect_timeout=3",
    f"postgresql+psycopg://moai:{SECRET}@127.0.0.1:1/postgres?sslmode=disable&password={SECRET}",
]


@pytest.fixture()
def served(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """`moai serve` must fail before serving; record (rather than run) a server it would start."""
    return record_serving(monkeypatch)


def run(argv: list[str], url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The one error line of ``moai ARGV`` with ``MOAI_DATABASE_URL=url`` and no mix instructions."""
    monkeypatch.setenv("MOAI_DATABASE_URL", url)
    monkeypatch.delenv("MOAI_CONFIG", raising=False)
    return one_line_error(CliRunner().invoke(app, argv))


# ---------------------------------------------------------------- ports that are not numbers


@pytest.mark.parametrize("url", BAD_PORTS)
def test_store_refuses_a_port_that_is_not_a_number_in_one_line(url: str) -> None:
    """SQLAlchemy raises a bare ValueError for these; the store turns it into its own one-line error."""
    with pytest.raises(DatabaseUnavailable) as e:
        TelemetryStore(url)
    msg = str(e.value)
    assert msg.startswith("bad database URL '") and "port is empty or not a number" in msg, msg
    assert "\n" not in msg and SECRET not in msg, msg


@pytest.mark.parametrize("url", BAD_PORTS)
@pytest.mark.parametrize("argv", COMMANDS)
def test_commands_refuse_a_port_that_is_not_a_number_in_one_line(url: str, argv: list[str], served: list[object],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    line = run(argv, url, monkeypatch)
    assert line.startswith("error: bad database URL '") and "port is empty or not a number" in line, line
    assert SECRET not in line and served == []


def test_store_refuses_a_query_option_the_dialect_cannot_read(tmp_path: Path) -> None:
    """Like a bad port, an option value the dialect cannot convert is a bare ValueError from create_engine."""
    with pytest.raises(DatabaseUnavailable) as e:
        TelemetryStore(f"sqlite:///{tmp_path / 'moai.db'}?timeout=abc")
    assert str(e.value).startswith("bad database URL '") and "'abc'" in str(e.value), e.value
    assert not (tmp_path / "moai.db").exists()


def test_a_good_port_still_parses_and_opens(tmp_path: Path) -> None:
    store = TelemetryStore(f"sqlite:///{tmp_path / 'moai.db'}")
    assert store.requests() == []


# ---------------------------------------------------------------- passwords given as query parameters


@pytest.mark.parametrize(
    "url,shown",
    [
        (f"postgresql+psycopg://moai@db/moai?password={SECRET}", "postgresql+psycopg://moai@db/moai?password=***"),
        (f"postgresql+psycopg://moai:{SECRET}@db/moai", "postgresql+psycopg://moai:***@db/moai"),
        (f"postgresql+psycopg://moai@db/moai?sslpassword={SECRET}&sslkey=/etc/moai/client.key&passfile=/p/.pgpass",
         "postgresql+psycopg://moai@db/moai?passfile=%2Fp%2F.pgpass&sslkey=%2Fetc%2Fmoai%2Fclient.key&sslpassword=***"),
        (f"postgresql+psycopg://moai@db/moai?Password={SECRET}&password={SECRET}&connect_timeout=3",
         "postgresql+psycopg://moai@db/moai?Password=***&connect_timeout=3&password=***"),
        # unparseable (a bad port): masked all the same
        (f"postgresql+psycopg://moai:{SECRET}@db:x/moai?application_name=a&password={SECRET}",
         "postgresql+psycopg://moai:***@db:x/moai?application_name=a&password=***"),
    ],
)
def test_safe_url_masks_passwords_in_the_query_too(url: str, shown: str) -> None:
    """render_as_string(hide_password=True) masks only ``user:pw@``; libpq also reads ``?password=``."""
    assert safe_url(url) == shown


@pytest.mark.parametrize("url", QUERY_PASSWORDS)
def test_store_errors_do_not_show_a_query_password(url: str) -> None:
    with pytest.raises(DatabaseUnavailable) as e:
        TelemetryStore(url)
    msg = str(e.value)
    assert msg.startswith("cannot open database 'postgresql+psycopg://moai") and "password=***" in msg, msg
    assert SECRET not in msg and "\n" not in msg, msg


@pytest.mark.parametrize("url", QUERY_PASSWORDS)
@pytest.mark.parametrize("argv", [["keys", "list"], ["report"]])
def test_commands_do_not_print_a_query_password(url: str, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    line = run(argv, url, monkeypatch)
    assert line.startswith("error: cannot open database '") and "password=***" in line, line
    assert SECRET not in line


def test_config_check_does_not_print_a_query_password(tmp_path: Path) -> None:
    """`config check` refuses settings.database_url with the URL masked as the commands that open it mask it."""
    path = tmp_path / "mix.yaml"
    path.write_text(f"settings: {{database_url: 'postgresql+nosuch://moai@db/moai?password={SECRET}'}}\n"
                    "models:\n  m: {provider: openai_compat, endpoint: 'http://127.0.0.1:9/v1', privacy: private}\n"
                    "mixes:\n  default: {strategy: route}\n")
    r = CliRunner().invoke(app, ["config", "check", str(path)])
    line = one_line_error(r, "settings.database_url:", "unknown database kind", "password=***")
    assert SECRET not in r.output, line

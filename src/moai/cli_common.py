"""What the ``moai`` commands share: the consoles, one-line errors, and opening the mix instructions and the
telemetry database a command names.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from moai.config import Config, ConfigError, load_config

if TYPE_CHECKING:
    from moai.telemetry.store import TelemetryStore

console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")


def fail(message: str, code: int = 2) -> None:
    """One ``error:`` line and exit ``code``. The message is printed as written: it carries names, paths and
    exception text, where ``[...]`` is not rich markup (``[/x]`` would otherwise raise, ``[prod]`` vanish)."""
    err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def warn(message: str) -> None:
    """One ``warning:`` line on stderr, the message printed as written (see ``fail``)."""
    err_console.print(f"[yellow]warning:[/yellow] {escape(message)}", highlight=False, soft_wrap=True)


def note(message: str) -> None:
    """One ``note:`` line on stderr: what is worth knowing but not wrong (printed as written, see ``fail``)."""
    err_console.print(f"[cyan]note:[/cyan] {escape(message)}", highlight=False, soft_wrap=True)


def say(message: str) -> None:
    """A line on stdout printed as written: names and paths in it are never read as rich markup."""
    console.print(message, markup=False, highlight=False, soft_wrap=True)


def guarded(fn: Callable[[], T]) -> T:
    """Run ``fn``; turn the errors a user can act on into one line and exit code 2."""
    from moai.local_models import ModelZooError

    try:
        return fn()
    except (ConfigError, ModelZooError, FileNotFoundError) as e:
        fail(str(e))
        raise  # unreachable


def open_config(path: str | None) -> Config:
    return guarded(lambda: load_config(path))


def open_store(url: str | None) -> TelemetryStore:
    """Open (and migrate) the telemetry database; a bad or unreachable URL is one line, not a traceback."""
    from moai.telemetry.database import DatabaseUnavailable
    from moai.telemetry.store import TelemetryStore

    try:
        return TelemetryStore(url)
    except DatabaseUnavailable as e:
        fail(str(e))
        raise  # unreachable


def open_existing_store(url: str | None, config: str | None = None, looking_for: str = "") -> TelemetryStore:
    """Open the telemetry database a command only reads (or changes rows of): a SQLite file that does not exist, or
    is empty (0 bytes), is one line (after ``looking_for``, what the command would have found there), not a new
    empty database (a mistyped path used to become one, listing no keys; an empty file got the whole schema)."""
    from moai.telemetry.database import default_database_url, safe_url
    from moai.telemetry.report import sqlite_file_problem

    url = resolve_database_url(url, config) or default_database_url()
    if (problem := sqlite_file_problem(url)) is not None:
        fail(f"{looking_for}{': ' if looking_for else ''}cannot open database {safe_url(url)!r}: unable to open "
             f"database file: {problem} (`moai serve` and `moai keys create` create it)")
    return open_store(url)


def resolve_database_url(database_url: str | None, config: str | None) -> str | None:
    """The database a command reads or writes: --database-url, else the mix instructions' own
    ``settings.database_url`` (--config, else MOAI_CONFIG), else None (MOAI_DATABASE_URL, else SQLite) —
    the one `moai serve` with the same config records to."""
    if database_url:
        return database_url
    path = config or os.environ.get("MOAI_CONFIG")
    return open_config(path).settings.database_url if path else None


def config_db_option() -> Any:
    return typer.Option(None, "--config", "-c",
                        help="Mix instructions whose settings.database_url to use (default: MOAI_CONFIG).")


def db_option() -> Any:
    return typer.Option(None, "--database-url",
                        help="Default: the config's, else MOAI_DATABASE_URL, else the local SQLite.")

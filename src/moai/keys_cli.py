"""``moai keys``: the gateway's API keys (create, list, revoke, delete); only their hashes are stored."""

from __future__ import annotations

import math
import os
import sys

import typer
from rich.table import Table
from rich.text import Text

from moai.cli_common import (
    config_db_option,
    console,
    db_option,
    fail,
    open_config,
    open_existing_store,
    open_store,
    resolve_database_url,
    say,
)
from moai.config import Config

keys_app = typer.Typer(help="Gateway API keys (hashed at rest).", no_args_is_help=True)

MAX_NAME = 128  # the api_keys.name column's length: PostgreSQL refuses a longer one
MAX_RPM = 10**9  # far above any real rate, and inside every database's INTEGER


@keys_app.command("create")
def keys_create(
    name: str = typer.Option(..., "--name", help="Who or what the key is for."),
    mixes: str | None = typer.Option(
        None, help="Comma-separated mixes (or model names) this key may use (default: all)."
    ),
    budget_day: float | None = typer.Option(None, help="USD per UTC day."),
    budget_month: float | None = typer.Option(None, help="USD per calendar month."),
    rpm: int | None = typer.Option(None, help="Requests per minute."),
    config: str | None = typer.Option(
        None, "--config", "-c", help="Mix instructions: the --mixes are checked against them, and their "
        "settings.database_url is used (default: MOAI_CONFIG, else embedded)."
    ),
    database_url: str | None = db_option(),
) -> None:
    """Create a key; its secret is printed once and only its hash is stored."""
    from moai.server.auth import create_key

    _check_limits(name, budget_day, budget_month, rpm)
    allowed = _allowed_names(mixes, open_config(config or os.environ.get("MOAI_CONFIG"))) if mixes is not None else None
    store = open_store(resolve_database_url(database_url, config))
    key, secret = create_key(store, name, allowed, budget_day, budget_month, rpm)
    # the key is stored: from here on only plain writes, so nothing stands between it and its secret being shown
    sys.stdout.write(f"created key {key.id} ({name}); the secret is shown only now:\n{secret}\n")
    sys.stdout.flush()


def _check_limits(name: str, budget_day: float | None, budget_month: float | None, rpm: int | None) -> None:
    """Refuse, before anything is stored, a name or limit the key could not keep: a NaN budget is stored as no
    budget at all, an infinite one never binds, and an rpm past the INTEGER column fails the insert."""
    if not name.strip():
        fail("--name must not be empty")
    if len(name) > MAX_NAME:
        fail(f"--name is {len(name)} characters long; at most {MAX_NAME}")
    if any(not ch.isprintable() for ch in name):
        fail(f"--name {name!r} holds a control character")
    for flag, v in (("--budget-day", budget_day), ("--budget-month", budget_month)):
        if v is not None and not (math.isfinite(v) and v > 0):
            fail(f"{flag} {v:g}: must be a positive number of USD")
    if rpm is not None and not 1 <= rpm <= MAX_RPM:
        fail(f"--rpm {rpm}: must be between 1 and {MAX_RPM:,}")


def _allowed_names(spec: str, cfg: Config) -> list[str]:
    """The names a key may use, checked now: a typo would otherwise lock the key out of everything.

    A mix may be written as ``moai/<mix>`` (as clients name it); it is stored bare, as requests are checked.
    """
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        fail("--mixes names no mix or model")
    out: list[str] = []
    for n in names:
        bare = n.removeprefix("moai/")
        if bare in cfg.mixes:
            out.append(bare)
        elif n in cfg.models:
            out.append(n)
        else:
            fail(f"--mixes: unknown mix or model {n!r} in {cfg.source}; mixes: {', '.join(cfg.mixes)}; "
                 f"models: {', '.join(cfg.models)}")
    return list(dict.fromkeys(out))


@keys_app.command("list")
def keys_list(database_url: str | None = db_option(), config: str | None = config_db_option()) -> None:
    """Keys with their limits and what they spent today and this month."""
    from datetime import UTC, datetime

    from moai.server.auth import list_keys, period_starts, spend
    from moai.telemetry.report import money

    store = open_existing_store(database_url, config)
    day, month = period_starts(datetime.now(UTC))
    keys = list_keys(store)
    t = Table(title="gateway keys")
    # the id is what `keys revoke` takes: kept whole however narrow the terminal; the rest folds, never "…"
    t.add_column("id", no_wrap=True, min_width=max((len(k.id) for k in keys), default=2))
    for col in ("name", "created", "status", "mixes", "budget day/month", "rpm", "spent today", "spent month"):
        t.add_column(col, overflow="fold")
    for k in keys:
        # names are shown as stored: "[...]" in them is text, not rich markup
        t.add_row(k.id, Text(k.name), k.created_at.strftime("%Y-%m-%d %H:%M"), "revoked" if k.revoked_at else "active",
                  Text(",".join(k.allowed_mixes) if k.allowed_mixes else "all"),
                  f"{k.budget_day_usd or '-'} / {k.budget_month_usd or '-'}", str(k.rpm or "-"),
                  f"${money(spend(store, k.id, day))}", f"${money(spend(store, k.id, month))}")
    console.print(t)


@keys_app.command("revoke")
def keys_revoke(
    key_id: str = typer.Argument(..., help="The key id (mk_...)."), database_url: str | None = db_option(),
    config: str | None = config_db_option(),
) -> None:
    """Revoke a key at once (servers pick it up within seconds). The gateway stays closed without active keys."""
    from moai.server.auth import list_keys, revoke_key

    store = open_existing_store(database_url, config, f"no active key {key_id!r}")
    if not revoke_key(store, key_id):
        fail(f"no active key {key_id!r}")
    say(f"revoked {key_id}")
    if not any(k.revoked_at is None for k in list_keys(store)):
        console.print("no active key is left: every call is refused until `moai keys create` makes one")


@keys_app.command("delete")
def keys_delete(
    key_id: str = typer.Argument(..., help="The key id (mk_...)."),
    yes: bool = typer.Option(False, "--yes", help="Delete the last key, opening the gateway to anyone."),
    database_url: str | None = db_option(), config: str | None = config_db_option(),
) -> None:
    """Delete a key (active or revoked); what it spent stays on record. Deleting every key opens the gateway."""
    from moai.server.auth import delete_key, list_keys

    store = open_existing_store(database_url, config, f"no key {key_id!r}")
    keys = list_keys(store)
    if not any(k.id == key_id for k in keys):
        fail(f"no key {key_id!r}")
    if len(keys) == 1 and not yes:
        fail(f"{key_id} is the last key: deleting it lets every caller in without a key; revoke it instead "
             "(`moai keys revoke`), or pass --yes")
    delete_key(store, key_id)
    say(f"deleted {key_id}")
    if len(keys) == 1:
        console.print("no key is left: the gateway is open to anyone (servers follow within seconds)")

"""The ``settings`` section of the mix instructions: the server-wide options (database, carbon zone, cache, limits),
each checked when the file loads, not when the server first needs it."""

from __future__ import annotations

import difflib
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from moai.catalog import is_env_reference
from moai.config_mix import SensitivePolicy

MIN_STATS_REFRESH_S = 0.1
MAX_RETENTION_DAYS = 36_500  # about a century: today minus that many days is still a valid date


def _masked(url: str) -> str:
    """A database URL as it may be printed: masked as the commands that open it mask it (``user:pw@`` and secret
    query parameters such as ``?password=``), so that ``config check`` shows no more than they do."""
    from moai.telemetry.database import safe_url

    return safe_url(url)


def check_database_url(url: str) -> str:
    """``moai serve`` opens the database only after the config has loaded, so a URL it cannot use passed
    ``config check`` and then stopped the server: parse it and load its dialect and driver here (no connection)."""
    if is_env_reference(url):
        raise ValueError(f"{_masked(url)!r}: environment variables are not expanded in mix instructions; leave "
                         "settings.database_url out and set MOAI_DATABASE_URL, or pass the --database-url flag")
    example = "e.g. sqlite:///path/moai.db or postgresql+psycopg://user@host/moai"
    if not url.strip():
        raise ValueError(f"an empty URL; leave settings.database_url out to use MOAI_DATABASE_URL, else SQLite under "
                         f"~/.cache/moai ({example})")
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import NoSuchModuleError

    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - ArgumentError, ValueError (a bad port): any of them is a bad URL
        raise ValueError(f"not a database URL: {_masked(url)!r} ({example})") from None
    shown = _masked(url)
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        hint = " (did you mean postgresql+psycopg?)" if parsed.drivername.startswith("postgres") else ""
        raise ValueError(f"{shown!r}: unknown database kind {parsed.drivername!r}{hint}; {example}") from None
    except Exception as e:  # noqa: BLE001 - a dialect that fails to import: the server could not open it either
        raise ValueError(f"{shown!r}: cannot load database kind {parsed.drivername!r}: {e}") from None
    try:
        dialect.import_dbapi()
    except Exception as e:  # noqa: BLE001 - ImportError mostly: the driver is not installed
        raise ValueError(f"{shown!r}: the driver of {parsed.drivername!r} is not installed ({e}); "
                         f"{example}") from None
    if getattr(dialect, "is_async", False):
        raise ValueError(f"{shown!r}: {parsed.drivername!r} is an asyncio driver; moai needs a blocking one "
                         f"({example})")
    return url


class CacheSettings(BaseModel):
    """Response cache: exact (same request) or semantic (a paraphrase, same mix and privacy level)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    mode: Literal["off", "exact", "semantic"] = "exact"
    ttl_s: float = Field(3600.0, gt=0)
    max_entries: int = Field(1024, ge=1)
    threshold: float = Field(0.90, gt=0, le=1)
    per_key: bool = True  # a separate cache per gateway key (false: keys share answers)


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    # a --database-url flag wins over this; unset: MOAI_DATABASE_URL, else sqlite under ~/.cache/moai
    database_url: str | None = None
    carbon_zone: str = "WOR"  # electricity mix zone for CO2 (ISO-3 or WOR)
    grid_g_per_kwh: float | None = Field(None, gt=0)  # explicit grid intensity overrides the zone
    gate: str | None = None  # a trained gate directory; default: the one shipped with moai
    max_body_bytes: int = Field(4 << 20, gt=0)
    # how often live statistics are re-read from the database; more often than 10 times a second keeps an idle
    # server busy re-reading them
    stats_refresh_s: float = Field(2.0, ge=MIN_STATS_REFRESH_S)
    # requests older than this many days are deleted with their calls and feedback (hourly; never what a key's
    # budget still sums); unset: kept for ever (`moai db prune` deletes on demand)
    retention_days: float | None = Field(None, gt=0, le=MAX_RETENTION_DAYS)
    # the sensitive-data policy every request gets at least: each mix's own is kept where stricter, and a model
    # called by name (which has no mix of its own) gets this one
    sensitive_data: SensitivePolicy = "allow"
    # a key's feedback moves routing for that key's requests only (keyless feedback, for everyone's): one tenant's
    # ratings cannot steer another's traffic. False: every rating moves routing for every request
    feedback_per_key: bool = True
    request_timeout_s: float | None = Field(None, gt=0)  # whole-request limit (504 / in-band error event)
    breaker_failures: int = Field(3, ge=1)  # consecutive failures that open a model's circuit
    breaker_cooldown_s: float = Field(30.0, gt=0)  # how long an open circuit waits before a probe
    cache: CacheSettings | None = None  # response cache (default: off, or the MOAI_CACHE variables)
    # browser origins allowed to call the API (CORS), e.g. ["https://chat.example.com"] or ["*"]; none by default
    cors_origins: list[str] = Field(default_factory=list)
    # the environment variable holding a bearer token that GET /metrics then requires (each model's traffic is
    # there, for anyone who can reach the port otherwise; printable ASCII, else /metrics answers 503); unset: /metrics
    # stays open to scrapers
    metrics_token_env: str | None = None

    @field_validator("metrics_token_env")
    @classmethod
    def _metrics_token_env(cls, v: str | None) -> str | None:
        """A variable's name, never the token itself (the mix instructions are no place for a secret)."""
        if v is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v):
            raise ValueError(f"{'this value' if len(v) > 12 else repr(v)} is not an environment variable's name: "
                             "name the variable that holds the token (e.g. MOAI_METRICS_TOKEN), not the token")
        return v

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, v: str | None) -> str | None:
        return None if v is None else check_database_url(v)

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, v: list[str]) -> list[str]:
        for origin in v:
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ValueError(f"{origin!r} is not an origin: '*' or scheme://host[:port], with no path")
        return v

    @field_validator("carbon_zone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        """An unknown zone used to pass `config check` and crash every command that builds the carbon model."""
        from ecologits.electricity_mix_repository import electricity_mixes

        zones = sorted({m.zone.upper() for m in electricity_mixes.list_electricity_mixes()})
        if v.strip().upper() not in zones:
            close = difflib.get_close_matches(v.strip().upper(), zones, n=3)
            hint = f" (did you mean {' or '.join(filter(None, [', '.join(close[:-1]), close[-1]]))}?)" if close else ""
            raise ValueError(f"unknown zone {v!r}{hint}; use WOR (world average) or an ISO 3166-1 alpha-3 country "
                             f"code such as FRA, DEU, USA ({len(zones)} zones, from EcoLogits' electricity mixes)")
        return v.strip().upper()

"""``moai db prune``: retention of the telemetry database, by age."""

from __future__ import annotations

import typer

from moai.cli_common import config_db_option, db_option, fail, open_store, resolve_database_url, say

db_app = typer.Typer(help="The telemetry database: retention.", no_args_is_help=True)


@db_app.command("prune")
def db_prune(
    older_than: str = typer.Option(..., "--older-than", help="Age of the requests to delete: e.g. 90d, 12h, 2w."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only count what would be deleted."),
    database_url: str | None = db_option(), config: str | None = config_db_option(),
) -> None:
    """Delete requests older than an age, with their calls and feedback (what `settings.retention_days` does)."""
    from moai.telemetry.database import default_database_url, safe_url
    from moai.telemetry.report import sqlite_file_problem
    from moai.telemetry.retention import RetentionRefused, check_budgets, count_older, cutoff, prune

    try:
        before = cutoff(older_than)
    except ValueError as e:
        fail(f"--older-than: {e}")
        return
    url = resolve_database_url(database_url, config) or default_database_url()
    if (problem := sqlite_file_problem(url)) is not None:  # nothing to prune: do not create a database
        fail(f"cannot open database {safe_url(url)!r}: {problem}")
    store = open_store(url)
    try:
        check_budgets(store, before)
        if dry_run:
            n = count_older(store, before)
            say(f"would delete {n:,} requests older than {before:%Y-%m-%d %H:%M} UTC")
            return
        gone = prune(store, before)
    except RetentionRefused as e:
        fail(str(e))
        return
    say(f"deleted {gone.requests:,} requests, {gone.calls:,} calls and {gone.feedback:,} feedback rows "
                  f"older than {before:%Y-%m-%d %H:%M} UTC")

"""Names, paths and error text are printed as written (``[...]`` is not rich markup), and out-of-range input is
refused in one line with exit 2 before anything is stored: keys, ages, retention, model cards, --config, --url."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_support import one_line_error
from typer.testing import CliRunner

from moai.cli import app
from moai.config import ConfigError, parse_config
from moai.server.auth import list_keys
from moai.telemetry.records import RequestRecord
from moai.telemetry.retention import retain
from moai.telemetry.store import TelemetryStore

REMOTE = 'models:\n  m: {provider: openai_compat, endpoint: "http://127.0.0.1:9/v1", privacy: private}\n'
MIXES = "mixes:\n  d: {strategy: route}\n"


@pytest.fixture()
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh SQLite database for the commands that default to MOAI_DATABASE_URL."""
    url = f"sqlite:///{tmp_path / 'moai.db'}"
    monkeypatch.setenv("MOAI_DATABASE_URL", url)
    monkeypatch.delenv("MOAI_CONFIG", raising=False)
    monkeypatch.delenv("MOAI_PRIVACY_MODEL", raising=False)
    return url


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ---------------------------------------------------------------- text that looks like rich markup


@pytest.mark.parametrize("argv", [
    ["feedback", "[/x]", "1"],
    ["route", "hi", "-m", "[/x]"],
    ["chat", "hi", "-m", "[/x]"],
    ["config", "check", "[/x].yaml"],
    ["report", "--since", "[/x]"],
    ["db", "prune", "--older-than", "[/x]"],
    ["keys", "revoke", "[/x]"],
])
def test_a_name_in_brackets_is_quoted_in_the_error_line(argv: list[str], db: str) -> None:
    one_line_error(CliRunner().invoke(app, argv), "[/x]")


def test_a_config_path_and_a_model_name_in_brackets_are_named_whole(tmp_path: Path, db: str) -> None:
    one_line_error(CliRunner().invoke(app, ["config", "check", "mix[prod].yaml"]), "mix[prod].yaml:", "cannot read")
    cfg = _write(tmp_path / "m.yaml", REMOTE + 'mixes:\n  default: {strategy: route, models: [m, "b[red]"]}\n')
    one_line_error(CliRunner().invoke(app, ["config", "check", str(cfg)]), "unknown model 'b[red]'")


def test_a_key_named_in_brackets_is_created_with_its_secret_shown_and_listed(db: str) -> None:
    r = CliRunner().invoke(app, ["keys", "create", "--name", "[/x]"])
    assert r.exit_code == 0, r.output
    [key] = list_keys(TelemetryStore(db))
    assert f"created key {key.id} ([/x])" in r.output
    assert r.output.strip().splitlines()[-1].startswith(f"moai-sk-{key.id}-")  # the secret, shown once
    r = CliRunner().invoke(app, ["keys", "list"])
    assert r.exit_code == 0, r.output
    assert key.id in r.output and "[/x]" in r.output


def test_model_and_mix_names_in_brackets_in_chat_models_and_report(tmp_path: Path, db: str) -> None:
    records = tmp_path / "r.jsonl"
    records.write_text(json.dumps({"prompt": "hi", "responses": {"[/bold]": "hello there"}}) + "\n")
    cfg = _write(tmp_path / "m.yaml", f'models:\n  "[/bold]": {{provider: replay, records: [{records}], '
                 'privacy: local}\nmixes:\n  "[red]m": {strategy: route, models: ["[/bold]"], '
                 'description: "[/i] routed"}\n')
    r = CliRunner().invoke(app, ["chat", "hi", "-c", str(cfg), "-m", "[red]m"])
    assert r.exit_code == 0, r.output
    assert "hello there" in r.output and "[/bold] · route ·" in r.output
    r = CliRunner().invoke(app, ["models", "-c", str(cfg)])
    assert r.exit_code == 0, r.output
    assert "[/bold]" in r.output and "moai/[red]m" in r.output and "[/i] routed" in r.output
    r = CliRunner().invoke(app, ["report", "--plot", str(tmp_path / "p.png")])
    assert r.exit_code == 0, r.output
    assert "[/bold]" in r.output and "[red]m" in r.output
    assert (tmp_path / "p.png").read_bytes().startswith(b"\x89PNG")


def test_a_model_name_with_dollar_signs_plots_as_text(tmp_path: Path, db: str) -> None:
    """matplotlib reads "$...$" as mathtext: a model named so must still plot, not fail to parse."""
    records = tmp_path / "r.jsonl"
    records.write_text(json.dumps({"prompt": "hi", "responses": {"$\\zz$": "hello"}}) + "\n")
    cfg = _write(tmp_path / "m.yaml", f'models:\n  "$\\\\zz$": {{provider: replay, records: [{records}], '
                 'privacy: local}\nmixes:\n  default: {strategy: route}\n')
    assert CliRunner().invoke(app, ["chat", "hi", "-c", str(cfg)]).exit_code == 0
    r = CliRunner().invoke(app, ["report", "--plot", str(tmp_path / "p.png")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "p.png").read_bytes().startswith(b"\x89PNG")


# ---------------------------------------------------------------- the privacy model


@pytest.mark.parametrize("argv", [["chat", "hi"], ["route", "hi"]])
def test_chat_and_route_check_the_privacy_model_as_serve_does(argv: list[str], db: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from moai.gate.privacy_learned import load_model

    load_model.cache_clear()  # a model loaded by an earlier command in this process would be reused
    monkeypatch.setenv("MOAI_PRIVACY_MODEL", "/nonexistent/privacy.pkl")
    one_line_error(CliRunner().invoke(app, argv), "MOAI_PRIVACY_MODEL=/nonexistent/privacy.pkl", "no such file")


# ---------------------------------------------------------------- keys: names and limits


@pytest.mark.parametrize("args,needle", [
    (["--name", "a", "--budget-day", "nan"], "--budget-day"),
    (["--name", "a", "--budget-month", "inf"], "--budget-month"),
    (["--name", "a", "--budget-day", "-1"], "--budget-day"),
    (["--name", "a", "--rpm", "99999999999999999999999"], "--rpm"),
    (["--name", "a", "--rpm", "1000000001"], "--rpm"),
    (["--name", "a", "--rpm", "0"], "--rpm"),
    (["--name", ""], "--name"),
    (["--name", "   "], "--name"),
    (["--name", "x" * 129], "--name"),
    (["--name", "a\nb"], "--name"),
])
def test_keys_create_refuses_a_limit_or_name_it_could_not_keep(args: list[str], needle: str, db: str) -> None:
    one_line_error(CliRunner().invoke(app, ["keys", "create", *args]), needle)
    assert list_keys(TelemetryStore(db)) == []  # nothing stored


def test_keys_create_keeps_limits_in_range(db: str) -> None:
    r = CliRunner().invoke(app, ["keys", "create", "--name", "team", "--budget-day", "2.5", "--budget-month", "50",
                                 "--rpm", "1000000000"])
    assert r.exit_code == 0, r.output
    [key] = list_keys(TelemetryStore(db))
    assert (key.name, key.budget_day_usd, key.budget_month_usd, key.rpm) == ("team", 2.5, 50.0, 10**9)


# ---------------------------------------------------------------- ages and retention


@pytest.mark.parametrize("argv", [["--older-than", "99999999999d", "--dry-run"], ["--older-than", "3000000d"],
                                  ["--older-than", "999999999w"]])
def test_db_prune_with_an_age_before_year_one_is_one_line(argv: list[str], db: str) -> None:
    TelemetryStore(db)
    one_line_error(CliRunner().invoke(app, ["db", "prune", *argv]), "--older-than", "too far back")


def test_db_prune_with_a_long_but_valid_age_runs(db: str) -> None:
    TelemetryStore(db)
    r = CliRunner().invoke(app, ["db", "prune", "--older-than", "700000d", "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "would delete 0 requests" in r.output


@pytest.mark.parametrize("days", ["1000000", "1e300", ".inf", ".nan"])
def test_retention_days_past_the_calendar_is_a_config_error(days: str, tmp_path: Path) -> None:
    cfg = _write(tmp_path / "r.yaml", f"settings: {{retention_days: {days}}}\n{REMOTE}{MIXES}")
    one_line_error(CliRunner().invoke(app, ["config", "check", str(cfg)]), f"{cfg}:1:", "retention_days")
    ok = parse_config(f"settings: {{retention_days: 36500}}\n{REMOTE}{MIXES}")
    assert ok.settings.retention_days == 36500


@pytest.mark.parametrize("days", [1_000_000.0, 1e300, float("inf")])
def test_retention_past_the_calendar_deletes_nothing_and_does_not_raise(days: float, tmp_path: Path) -> None:
    store = TelemetryStore(f"sqlite:///{tmp_path / 't.db'}")
    store.write(RequestRecord(id="r1", created_at=datetime.now(UTC) - timedelta(days=3), mix="d", strategy="route",
                              model="m", status="ok", http_status=200, stream=False))
    gone, _ = retain(store, days)
    assert gone.requests == 0 and [r.id for r in store.requests()] == ["r1"]


# ---------------------------------------------------------------- model cards


@pytest.mark.parametrize("field,value", [("params_b", "1e300"), ("params_b", "100001"),
                                         ("context", "99999999999999999999999"), ("context", "100000001")])
def test_model_card_sizes_past_any_real_model_are_refused(field: str, value: str, tmp_path: Path) -> None:
    cfg = _write(tmp_path / "c.yaml", 'models:\n  m: {provider: openai_compat, endpoint: "http://127.0.0.1:9/v1",\n'
                 f"      privacy: private, {field}: {value}}}\nmixes:\n  d: {{strategy: route}}\n")
    one_line_error(CliRunner().invoke(app, ["config", "check", str(cfg)]), f"{cfg}:3:", f"models.m.{field}")


def test_model_card_sizes_of_large_real_models_load() -> None:
    cfg = parse_config('models:\n  m: {provider: openai_compat, endpoint: "http://127.0.0.1:9/v1", '
                       "params_b: 1800, context: 10000000}\nmixes:\n  d: {strategy: route}\n")
    assert (cfg.models["m"].params_b, cfg.models["m"].context) == (1800, 10_000_000)


def test_a_litellm_price_on_the_model_card_gets_the_figure_to_write_under_price() -> None:
    text = ('models:\n  m: {provider: openai_compat, endpoint: "http://127.0.0.1:9/v1",\n'
            "      input_cost_per_token: 0.0000025}\n")
    with pytest.raises(ConfigError) as e:
        parse_config(text, "c.yaml")
    msg = str(e.value)
    assert msg.startswith("c.yaml:3: models.m.input_cost_per_token: unknown key 'input_cost_per_token'"), msg
    assert "USD per million tokens" in msg and "price: {input_per_mtok: 2.5}" in msg
    with pytest.raises(ConfigError, match=r"write output_per_mtok: 10$"):  # under price: as before
        parse_config(text.replace("input_cost_per_token: 0.0000025", "price: {output_cost_per_token: 0.00001}"))


# ---------------------------------------------------------------- moai models --config


def test_models_config_option_is_never_ignored(tmp_path: Path) -> None:
    one_line_error(CliRunner().invoke(app, ["models", "-c", str(tmp_path / "nothere.yaml"), "list"]),
                   "nothere.yaml", "cannot read")
    good = _write(tmp_path / "ok.yaml", REMOTE + MIXES)
    one_line_error(CliRunner().invoke(app, ["models", "-c", str(good), "list"]), "--config", "models list")
    r = CliRunner().invoke(app, ["models", "list"])
    assert r.exit_code == 0 and "local model zoo" in r.output, r.output


# ---------------------------------------------------------------- feedback --url


@pytest.mark.parametrize("url", ["http://gw:8000", "http://gw:8000/", "http://gw:8000/v1", "http://gw:8000/v1/",
                                 "http://gw:8000/v1/feedback"])
def test_feedback_url_takes_the_server_root_or_its_v1_base(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    posted: list[str] = []

    def post(target: str, **_: Any) -> httpx.Response:
        posted.append(target)
        return httpx.Response(200, json={"object": "feedback", "id": 1})

    monkeypatch.setattr(httpx, "post", post)
    r = CliRunner().invoke(app, ["feedback", "chatcmpl-x", "1", "--url", url])
    assert r.exit_code == 0, r.output
    assert posted == ["http://gw:8000/v1/feedback"]

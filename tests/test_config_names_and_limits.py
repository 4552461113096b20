"""Mix instructions that `moai config check` (and so `moai serve`) used to accept and then served wrongly: ambiguous
names, unusable database URLs, endpoints and model ids used verbatim, weights and cascades that decide nothing,
and numbers that are not numbers. Each is now one line, ``file:line: field: problem``, at load time."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_support import one_line_error
from test_config_checks import check, error_of
from typer.testing import CliRunner

from moai.config import parse_config

BASE = """\
models:
  a: {provider: openai_compat, endpoint: "http://127.0.0.1:9/v1", privacy: private}
  b: {provider: openai_compat, endpoint: "http://127.0.0.1:9/v1"}
mixes:
  d: {strategy: route}
"""


def with_model(line: str) -> str:
    """BASE with one more model (before ``mixes:``, on line 4)."""
    return BASE.replace("mixes:\n", f"  {line}\nmixes:\n")


# ---------------------------------------------------------------- names


def test_a_model_named_like_a_mix_is_refused() -> None:
    """A request for it was answered by the mix, never by the model."""
    msg = error_of(with_model('d: {provider: openai_compat, endpoint: "http://127.0.0.1:9/v1"}'))
    assert msg.startswith("mix.yaml:4: models.d: model 'd' has the name of mix 'd'"), msg
    assert "gets the mix, never the model" in msg


def test_a_mix_may_take_the_name_of_the_one_model_it_routes_to() -> None:
    """Such a mix answers with that model alone: a request for the name reaches the same model either way."""
    cfg = parse_config(BASE + "  a: {strategy: route, models: [a]}\n")
    assert [c.name for c in cfg.pool(cfg.mixes["a"])] == ["a"]
    msg = error_of(BASE + "  a: {strategy: route, models: [a, b]}\n")
    assert msg.startswith("mix.yaml:2: models.a: model 'a' has the name of mix 'a'"), msg


def test_a_model_named_moai_slash_is_refused() -> None:
    """``moai/<name>`` calls the mix <name>: /v1/models listed the id twice and requests went to the mix."""
    msg = error_of(with_model('"moai/d": {provider: openai_compat, endpoint: "http://127.0.0.1:9/v1"}'))
    assert msg.startswith("mix.yaml:4: models.moai/d: model 'moai/d' starts with 'moai/'"), msg
    assert "mix 'd'" in msg
    assert "starts with 'moai/'" in error_of(with_model('"moai/x": {provider: openai_compat, '
                                                        'endpoint: "http://127.0.0.1:9/v1"}'))


def test_model_names_that_differ_only_in_case_are_refused() -> None:
    msg = error_of(with_model('A: {provider: openai_compat, endpoint: "http://127.0.0.1:9/v1", privacy: cloud}'))
    assert msg.startswith("mix.yaml:4: models.A: model 'A' differs from model 'a' only in case"), msg


def test_mix_names_that_differ_only_in_case_are_refused() -> None:
    msg = error_of(BASE + "  D: {strategy: route, models: [b]}\n")
    assert msg.startswith("mix.yaml:6: mixes.D: mix 'D' differs from mix 'd' only in case"), msg


def test_a_model_and_a_mix_that_differ_only_in_case_are_refused() -> None:
    """``D`` (a model) and ``d`` (a mix): a client writing the wrong case reaches the other one."""
    msg = error_of(with_model('D: {provider: openai_compat, endpoint: "http://127.0.0.1:9/v1"}'))
    assert msg.startswith("mix.yaml:4: models.D: model 'D' differs from mix 'd' only in case"), msg


@pytest.mark.parametrize(
    "text,start",
    [
        (with_model('"": {provider: openai_compat, endpoint: "http://127.0.0.1:9/v1"}'),
         "mix.yaml:4: models.: a model name cannot be empty"),
        (with_model('"my model": {provider: openai_compat, endpoint: "http://127.0.0.1:9/v1"}'),
         "mix.yaml:4: models.my model: 'my model': a model name cannot contain spaces"),
        (with_model('"tab\\tname": {provider: openai_compat, endpoint: "http://127.0.0.1:9/v1"}'),
         "mix.yaml:4: models.tab\tname: 'tab\\tname': a model name cannot contain spaces"),
        (BASE + '  "": {strategy: route}\n', "mix.yaml:6: mixes.: a mix name cannot be empty"),
        (BASE + '  " d2": {strategy: route}\n', "mix.yaml:6: mixes. d2: ' d2': a mix name cannot contain spaces"),
    ],
)
def test_empty_names_and_names_with_whitespace_are_refused(text: str, start: str) -> None:
    msg = error_of(text)
    assert msg.startswith(start), msg


# ---------------------------------------------------------------- settings


@pytest.mark.parametrize(
    "url,problem",
    [
        ("notaurl", "not a database URL: 'notaurl'"),
        ("${DATABASE_URL}", "environment variables are not expanded"),
        ("mysql://moai:hunter2@db/moai", "'mysql://moai:***@db/moai': the driver of 'mysql' is not installed"),
        ("postgres://db/moai", "unknown database kind 'postgres' (did you mean postgresql+psycopg?)"),
        ("", "an empty URL"),
    ],
)
def test_a_database_url_that_cannot_work_is_refused_at_load(url: str, problem: str) -> None:
    """It passed config check, and `moai serve` then stopped on it."""
    msg = error_of(BASE + f"settings: {{database_url: '{url}'}}\n")
    assert msg.startswith("mix.yaml:6: settings.database_url: ") and problem in msg, msg
    assert "hunter2" not in msg


def test_an_environment_reference_as_database_url_names_the_ways_that_work() -> None:
    msg = error_of(BASE + "settings:\n  database_url: ${DATABASE_URL}\n")
    assert msg.startswith("mix.yaml:7: settings.database_url:"), msg
    assert "MOAI_DATABASE_URL" in msg and "--database-url" in msg


@pytest.mark.parametrize("url", ["sqlite:///moai.db", "sqlite://", "postgresql://moai@db/moai",
                                 "postgresql+psycopg://moai:pw@db:5432/moai"])
def test_sqlite_and_postgresql_urls_still_load(url: str) -> None:
    assert parse_config(BASE + f"settings: {{database_url: '{url}'}}\n").settings.database_url == url


def test_config_check_and_serve_refuse_the_same_database_url(tmp_path: Path) -> None:
    from moai.cli import app

    text = BASE + "settings: {database_url: 'mysql://db/moai'}\n"
    one_line_error(check(tmp_path, text), "mix.yaml:6: settings.database_url:", "not installed")
    r = CliRunner().invoke(app, ["serve", "--config", str(tmp_path / "mix.yaml"), "--port", "9"])
    one_line_error(r, "mix.yaml:6: settings.database_url:", "not installed")


def test_stats_refresh_has_a_lower_bound() -> None:
    """0.001 s kept an idle server busy re-reading its statistics."""
    msg = error_of(BASE + "settings: {stats_refresh_s: 0.001}\n")
    assert msg.startswith("mix.yaml:6: settings.stats_refresh_s: Input should be greater than or equal to 0.1"), msg
    assert parse_config(BASE + "settings: {stats_refresh_s: 0.1}\n").settings.stats_refresh_s == 0.1


# ---------------------------------------------------------------- what is sent upstream


@pytest.mark.parametrize(
    "endpoint,problem",
    [
        ("http://127.0.0.1:9/v1/chat/completions", "moai adds /chat/completions itself"),
        ("http://127.0.0.1:9/v1/chat/completions/", "moai adds /chat/completions itself"),
        ("http://127.0.0.1:9/v1?api-version=1", "with no query string or fragment"),
        ("http://127.0.0.1:9/v1#x", "with no query string or fragment"),
    ],
)
def test_an_endpoint_is_the_base_url(endpoint: str, problem: str) -> None:
    """The server posted to .../chat/completions/chat/completions."""
    msg = error_of(BASE.replace('"http://127.0.0.1:9/v1", privacy', f'"{endpoint}", privacy'))
    assert msg.startswith(f"mix.yaml:2: models.a.endpoint: {endpoint!r}: the endpoint is the server's base URL"), msg
    assert "http://host:8000/v1" in msg and problem in msg


def test_deployment_and_anthropic_endpoints_are_base_urls_too() -> None:
    msg = error_of(with_model("x: {provider: openai_compat, deployments: [{endpoint: 'http://h/v1'}, "
                              "{endpoint: 'http://h/v1/chat/completions'}]}"))
    assert msg.startswith("mix.yaml:4: models.x.deployments.1.endpoint: 'http://h/v1/chat/completions'"), msg
    msg = error_of(with_model("c: {provider: anthropic, endpoint: 'https://api.anthropic.com/v1/messages'}"))
    assert msg.startswith("mix.yaml:4: models.c.endpoint:") and "base URL" in msg, msg
    assert parse_config(with_model("c: {provider: anthropic, endpoint: 'https://api.anthropic.com'}"))


@pytest.mark.parametrize(
    "line,field",
    [
        ('x: {provider: openai_compat, endpoint: "http://h/v1", model: "${MODEL_ID}"}', "models.x.model"),
        ('x: {provider: openai_compat, endpoint: "http://h/v1", model: "$MODEL_ID"}', "models.x.model"),
        ("x: {provider: openai_compat, deployments: [{endpoint: 'http://h/v1', model: '${M}'}]}",
         "models.x.deployments.0.model"),
    ],
)
def test_an_environment_reference_as_model_id_is_refused(line: str, field: str) -> None:
    """It was sent upstream verbatim, while the same in endpoint or api_key_env was refused."""
    msg = error_of(with_model(line))
    assert msg.startswith(f"mix.yaml:4: {field}: "), msg
    assert "environment variables are not expanded" in msg


# ---------------------------------------------------------------- weights and cascades


def test_all_weights_zero_is_refused() -> None:
    """Every model scored the same: the first one listed answered every request."""
    msg = error_of(BASE + "  z: {strategy: route, weights: {quality: 0, cost: 0, latency: 0, carbon: 0}}\n")
    assert msg.startswith("mix.yaml:6: mixes.z.weights: every weight is 0"), msg
    assert "at least one weight positive" in msg
    assert error_of(BASE + "  z: {weights: {quality: 0}}\n").startswith("mix.yaml:6: mixes.z.weights: every weight")
    assert parse_config(BASE + "  z: {weights: {quality: 0, cost: 1}}\n").mixes["z"].weights.cost == 1


@pytest.mark.parametrize(
    "mix,start",
    [
        ("{strategy: cascade, cascade: []}", "mixes.z.cascade: an empty cascade; leave 'cascade' out"),
        ("{strategy: cascade, cascade: [a, a, b]}", "mixes.z.cascade.1: 'a' is listed twice"),
        ("{strategy: cascade, models: [a], cascade: [b, a]}", "mixes.z.cascade.0: 'b' is not among the mix's models"),
        ("{strategy: cascade, constraints: {allowed_models: [a]}, cascade: [a, b]}",
         "mixes.z.cascade.1: 'b' is not in constraints.allowed_models (a)"),
        ("{strategy: cascade, models: [a], cascade: [c, a]}", "mixes.z.cascade.0: unknown model 'c'"),
    ],
)
def test_a_cascade_runs_every_model_it_lists(mix: str, start: str) -> None:
    """An empty cascade meant the default order, a repeated model ran twice, and a model outside the mix's pool
    was dropped without a word."""
    msg = error_of(BASE + f"  z: {mix}\n")
    assert msg.startswith(f"mix.yaml:6: {start}"), msg


def test_a_cascade_item_is_reported_at_its_own_line() -> None:
    msg = error_of(BASE + "  z:\n    strategy: cascade\n    models: [a]\n    cascade:\n      - a\n      - b\n")
    assert msg.startswith("mix.yaml:11: mixes.z.cascade.1: 'b' is not among the mix's models (a)"), msg


def test_a_one_model_cascade_is_a_warning(tmp_path: Path) -> None:
    r = check(tmp_path, BASE + "  z: {strategy: cascade, cascade: [a]}\n  y: {strategy: cascade, models: [b]}\n")
    assert r.exit_code == 0, r.output
    warnings = [ln for ln in r.output.splitlines() if ln.startswith("warning:")]
    assert any("mixes.z.cascade: a cascade of one model (a) never escalates" in w for w in warnings), r.output
    assert any("mixes.y: a cascade of one model (b) never escalates" in w for w in warnings), r.output
    r = check(tmp_path, BASE + "  z: {strategy: cascade, cascade: [a, b]}\n")
    assert r.exit_code == 0 and "warning" not in r.output, r.output


# ---------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    "card,field,problem",
    [
        ("price: {input_per_mtok: true}", "price.input_per_mtok", "expects a number, not true"),
        ("price: {output_per_mtok: false}", "price.output_per_mtok", "expects a number, not false"),
        ("price: {input_per_mtok: '2'}", "price.input_per_mtok", "expects a number, not the string '2'"),
        ("context: true", "context", "expects a number, not true"),
        ("timeout_s: '30'", "timeout_s", "expects a number, not the string '30'"),
        ("price: {input_per_mtok: 1e300}", "price.input_per_mtok", "1e+300 USD per million tokens is above any"),
    ],
)
def test_model_card_numbers_are_numbers(card: str, field: str, problem: str) -> None:
    """``true`` was billed as 1 USD per million tokens, and 1e300 as a price made every cost infinite."""
    msg = error_of(with_model(f'x: {{provider: openai_compat, endpoint: "http://h/v1", {card}}}'))
    assert msg.startswith(f"mix.yaml:4: models.x.{field}: {problem}"), msg


def test_a_deployment_concurrency_is_a_number() -> None:
    msg = error_of(with_model("x: {provider: openai_compat, "
                              "deployments: [{endpoint: 'http://h/v1', concurrency: true}]}"))
    assert msg.startswith("mix.yaml:4: models.x.deployments.0.concurrency: expects a number, not true"), msg


def test_plain_and_large_prices_still_load() -> None:
    """Tests price at $1 a token to spend a budget quickly; a word is still pydantic's own error."""
    cfg = parse_config(with_model('x: {provider: openai_compat, endpoint: "http://h/v1", '
                                  "price: {input_per_mtok: 1000000, output_per_mtok: 0.5}, context: 8192}"))
    assert cfg.models["x"].price.input_per_mtok == 1e6 and cfg.models["x"].context == 8192
    msg = error_of(with_model('x: {provider: openai_compat, endpoint: "http://h/v1", price: {input_per_mtok: ten}}'))
    assert msg.startswith("mix.yaml:4: models.x.price.input_per_mtok: Input should be a valid number"), msg

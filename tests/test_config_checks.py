"""Mix instructions that used to pass `moai config check` and fail later, or failed with the wrong words: each is
now one line at load time (``file:line: field: problem``), or a warning where it is not an error."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_support import one_line_error
from click.testing import Result
from typer.testing import CliRunner

from moai.config import ConfigError, load_config, parse_config

BASE = """\
models:
  a: {provider: openai_compat, endpoint: "http://127.0.0.1:9/v1", privacy: private}
  pricey: {provider: openai_compat, endpoint: "http://127.0.0.1:9/v1"}
mixes:
  d: {strategy: route}
"""


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as e:
        parse_config(text, "mix.yaml")
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def check(tmp_path: Path, text: str, **env: str) -> Result:
    from moai.cli import app

    path = tmp_path / "mix.yaml"
    path.write_text(text)
    return CliRunner().invoke(app, ["config", "check", str(path)], env=env or None)


# ---------------------------------------------------------------- 5: settings.carbon_zone


def test_unknown_carbon_zone_is_a_load_time_error(tmp_path: Path) -> None:
    """It passed config check, then serve, chat, route and bench collect died with a ValueError traceback."""
    msg = error_of(BASE + "settings: {carbon_zone: XXX}\n")
    assert msg.startswith("mix.yaml:6: settings.carbon_zone: unknown zone 'XXX'"), msg
    assert "WOR" in msg and "FRA" in msg
    assert "(did you mean IRN, FRO or FRA?); use WOR" in error_of(BASE + "settings: {carbon_zone: FRN}\n")
    one_line_error(check(tmp_path, BASE + "settings:\n  carbon_zone: XXX\n"), "mix.yaml:7: settings.carbon_zone")


def test_known_carbon_zones_load_in_any_case() -> None:
    assert parse_config(BASE + "settings: {carbon_zone: fra}\n").settings.carbon_zone == "FRA"
    assert parse_config(BASE + "settings: {carbon_zone: WOR}\n").settings.carbon_zone == "WOR"
    assert parse_config(BASE).settings.carbon_zone == "WOR"


# ---------------------------------------------------------------- 8 and gaps: pools and allowed models


@pytest.mark.parametrize(
    "mix,problem",
    [
        ("{strategy: route, constraints: {allowed_models: [pricy]}}", "unknown model 'pricy'; did you mean 'pricey'?"),
        ("{strategy: route, constraints: {allowed_models: [zz]}}", "unknown model 'zz'"),
        ("{strategy: route, constraints: {allowed_models: []}}", "allows no model"),
        ("{strategy: route, models: [a], constraints: {allowed_models: [pricey]}}",
         "allows none of the mix's models (a)"),
    ],
)
def test_allowed_models_are_checked_like_other_model_references(mix: str, problem: str) -> None:
    """A misspelt name used to pass, and every request then failed with "more than any model's context allows"."""
    msg = error_of(BASE + f"  bad: {mix}\n")
    item = ".0" if problem.startswith("unknown model") else ""  # an unknown name is pointed at as its list item
    assert msg.startswith(f"mix.yaml:6: mixes.bad.constraints.allowed_models{item}: {problem}"), msg


def test_an_empty_model_pool_is_an_error_not_every_model() -> None:
    msg = error_of(BASE + "  bad:\n    strategy: route\n    models: []\n")
    assert msg.startswith("mix.yaml:8: mixes.bad.models: an empty pool"), msg


def test_allowed_models_that_exist_still_narrow_the_pool() -> None:
    cfg = parse_config(BASE + "  ok: {strategy: route, constraints: {allowed_models: [pricey]}}\n")
    assert [c.name for c in cfg.pool(cfg.mixes["ok"])] == ["pricey"]


# ---------------------------------------------------------------- 9: api_key_env naming an unset variable

KEYED = """\
models:
  cheap: {provider: openai_compat, endpoint: "http://127.0.0.1:9/v1", api_key_env: MOAI_TEST_KEY_UNSET}
  gpt: {provider: openai}
  vllm: {provider: openai_compat, endpoint: "http://127.0.0.1:9/v1"}
mixes:
  d: {strategy: route}
"""


def test_config_check_warns_about_unset_key_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests used to go out with no Authorization header and no word about it. A warning, not an error."""
    monkeypatch.delenv("MOAI_TEST_KEY_UNSET", raising=False)
    r = check(tmp_path, KEYED)
    assert r.exit_code == 0, r.output
    warnings = [ln for ln in r.output.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1, r.output
    assert "cheap (MOAI_TEST_KEY_UNSET)" in warnings[0] and "gpt (no api_key_env)" in warnings[0]
    assert "vllm" not in warnings[0]  # an OpenAI-compatible server without a key is normal (vLLM, Ollama)
    r = check(tmp_path, KEYED.replace("  gpt: {provider: openai}\n", ""), MOAI_TEST_KEY_UNSET="sekrit")
    assert r.exit_code == 0 and "warning" not in r.output, r.output


def test_serve_warns_about_unset_key_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cli_support import record_serving

    from moai.cli import app

    served = record_serving(monkeypatch)
    monkeypatch.setenv("MOAI_DATABASE_URL", f"sqlite:///{tmp_path / 'moai.db'}")
    monkeypatch.delenv("MOAI_TEST_KEY_UNSET", raising=False)
    path = tmp_path / "mix.yaml"
    path.write_text(KEYED)
    r = CliRunner().invoke(app, ["serve", "--config", str(path)])
    assert r.exit_code == 0 and served, r.output
    assert "warning:" in r.output and "cheap (MOAI_TEST_KEY_UNSET)" in r.output


def test_api_key_env_is_a_variable_name_not_a_reference() -> None:
    msg = error_of(BASE.replace('privacy: private}', 'privacy: private, api_key_env: "$OPENAI_API_KEY"}'))
    assert msg.startswith("mix.yaml:2: models.a.api_key_env: '$OPENAI_API_KEY' is not an environment variable"), msg


# ---------------------------------------------------------------- 10: endpoints


@pytest.mark.parametrize("url", ["not a url", "ftp://host/v1", "http://", "localhost:8000/v1", "http://h:99999/v1"])
def test_an_endpoint_must_be_an_http_url(url: str) -> None:
    msg = error_of(BASE.replace('"http://127.0.0.1:9/v1", privacy', f'"{url}", privacy'))
    assert msg.startswith(f"mix.yaml:2: models.a.endpoint: not an http(s) URL: {url!r}"), msg


def test_an_endpoint_is_not_interpolated_and_says_so() -> None:
    msg = error_of(BASE.replace('"http://127.0.0.1:9/v1", privacy', '"${MY_ENDPOINT}", privacy'))
    assert msg.startswith("mix.yaml:2: models.a.endpoint: '${MY_ENDPOINT}': environment variables are not expanded")


def test_deployment_endpoints_are_checked_and_good_urls_load() -> None:
    text = BASE + "  x: {provider: openai_compat, deployments: [{endpoint: 'http://h/v1'}, {endpoint: 'h2/v1'}]}\n"
    text = text.replace("mixes:\n  d: {strategy: route}\n", "") + "mixes:\n  d: {strategy: route}\n"
    msg = error_of(text)
    assert msg.startswith("mix.yaml:4: models.x.deployments.1.endpoint: not an http(s) URL: 'h2/v1'"), msg
    cfg = parse_config(text.replace("'h2/v1'", "'https://[::1]:8443/v1'"))
    assert cfg.models["x"].deployments[1].endpoint == "https://[::1]:8443/v1"


# ---------------------------------------------------------------- 11: values inside a role


ROLES = """\
models:
  a: {provider: openai_compat, endpoint: "http://127.0.0.1:9/v1"}
mixes:
  d: {strategy: moa, proposers: [a], aggregator: a}
"""


@pytest.mark.parametrize(
    "old,new,field,problem",
    [
        ("proposers: [a]", "proposers: {pick: 0}", "mixes.d.proposers.pick", "pick must be ≥ 1"),
        ("proposers: [a]", "proposers: {pick: worst}", "mixes.d.proposers.pick",
         "Input should be 'best', 'cheapest' or 'diverse'"),
        ("proposers: [a]", "proposers: {pick: bset}", "mixes.d.proposers.pick", "did you mean 'best'?"),
        ("proposers: [a]", "proposers: {pick: true}", "mixes.d.proposers.pick", "pick is a number ≥ 1 or one of"),
        ("aggregator: a", "aggregator: 3", "mixes.d.aggregator", "a role is a model name, a list of model names, or"),
        ("proposers: [a]", "proposers: {pick: 2, amoung: [a]}", "mixes.d.proposers.amoung",
         "unknown key 'amoung'; did you mean 'among'?"),
        ("proposers: [a]", "proposers: [a, 3]", "mixes.d.proposers.1", "Input should be a valid string"),
        ("proposers: [a]", "proposers: {pick: 2, among: [b]}", "mixes.d.proposers.among.0", "unknown model 'b'"),
    ],
)
def test_a_bad_role_value_names_its_real_problem(old: str, new: str, field: str, problem: str) -> None:
    """Each of these used to read "Input should be a valid string", from the name branch of the role's union."""
    msg = error_of(ROLES.replace(old, new))
    assert msg.startswith(f"mix.yaml:4: {field}: "), msg
    assert problem in msg, msg


def test_every_form_of_role_still_loads() -> None:
    cfg = parse_config(ROLES.replace("proposers: [a]", "proposers: {pick: '3', among: [a], allow_repeats: true}")
                       + "  c: {strategy: chain, steps: [{model: a}, {model: {pick: cheapest}}, {}]}\n")
    assert cfg.mixes["d"].proposers.pick == 3  # type: ignore[union-attr]
    assert cfg.mixes["d"].aggregator == "a"
    assert cfg.mixes["c"].steps[1].model.pick == "cheapest"  # type: ignore[index,union-attr]


# ---------------------------------------------------------------- gaps: did you mean, odd names


@pytest.mark.parametrize(
    "text,start",
    [
        (BASE.replace("models:", "modles:"), "mix.yaml:1: modles: unknown key 'modles'; did you mean 'models'?"),
        (BASE.replace('{provider: openai_compat, endpoint: "http://127.0.0.1:9/v1", privacy: private}',
                      '{provider: openai_compat, endpont: "http://127.0.0.1:9/v1"}'),
         "mix.yaml:2: models.a.endpont: unknown key 'endpont'; did you mean 'endpoint'?"),
        (BASE.replace("strategy: route", "strategy: route, wieghts: {cost: 1}"),
         "mix.yaml:5: mixes.d.wieghts: unknown key 'wieghts'; did you mean 'weights'?"),
        (BASE.replace("strategy: route", "strategy: route, weights: {qualty: 1}"),
         "mix.yaml:5: mixes.d.weights.qualty: unknown key 'qualty'; did you mean 'quality'?"),
        (BASE.replace("strategy: route", "strategy: route, weights: {zz: 1}"),
         "mix.yaml:5: mixes.d.weights.zz: unknown key 'zz'; known: quality, cost, latency, carbon"),
        (BASE.replace("strategy: route", "strategy: route, models: [prizey]"),
         "mix.yaml:5: mixes.d.models.0: unknown model 'prizey'; did you mean 'pricey'?"),
    ],
)
def test_misspelt_names_get_a_suggestion(text: str, start: str) -> None:
    msg = error_of(text)
    assert msg.startswith(start), msg


def test_a_misspelt_choice_gets_a_suggestion() -> None:
    msg = error_of(BASE.replace("strategy: route", "strategy: rout"))
    assert msg.startswith("mix.yaml:5: mixes.d.strategy: Input should be 'route', 'cascade'"), msg
    assert msg.endswith("; did you mean 'route'?"), msg


def test_a_model_named_like_a_type_keeps_its_place_in_the_path() -> None:
    """pydantic's union-branch tags ('str', 'int', ...) are dropped from error paths, but not a YAML key."""
    msg = error_of(BASE.replace("  pricey:", "  str:").replace("mixes:", "  int: {provider: bogus}\nmixes:"))
    assert msg.startswith("mix.yaml:4: models.int.provider: Input should be"), msg


# ---------------------------------------------------------------- 19: relative paths


def test_relative_paths_mean_the_config_files_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """They used to mean the current directory: `moai chat --config dir/mix.yaml` failed outside dir."""
    folder = tmp_path / "conf"
    (folder / "sub").mkdir(parents=True)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    absolute = tmp_path / "abs.jsonl"
    for f in (folder / "rec.jsonl", folder / "sub/more.jsonl", absolute, home / "home.jsonl"):
        f.write_text("")  # a replay model's records must exist (a local model's file may come later)
    (folder / "mix.yaml").write_text(
        "models:\n"
        f"  r: {{provider: replay, records: [rec.jsonl, sub/more.jsonl, {absolute}, ~/home.jsonl]}}\n"
        "  l: {provider: local, path: models/m.gguf}\n"
        "mixes:\n  d: {strategy: route}\n"
        "settings: {gate: my-gate}\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config("../conf/mix.yaml")
    base = folder.resolve()
    assert [Path(r).resolve() for r in cfg.models["r"].records[:2]] == [base / "rec.jsonl", base / "sub/more.jsonl"]
    assert cfg.models["r"].records[2:] == [str(absolute), "~/home.jsonl"]
    assert cfg.models["l"].path and Path(cfg.models["l"].path).resolve() == base / "models/m.gguf"
    assert cfg.settings.gate and Path(cfg.settings.gate).resolve() == base / "my-gate"
    assert Path(cfg.models["r"].records[0]).is_absolute()


def test_a_number_as_a_model_name_says_to_quote_it() -> None:
    """It read "models.1.: Input should be a valid string", with a stray dot and the line of `models:`."""
    msg = error_of(BASE.replace("  pricey:", "  1:"))
    assert msg == "mix.yaml:3: models.1: a name must be a string, not 1; put it in quotes", msg


def test_no_far_fetched_suggestion() -> None:
    msg = error_of(BASE.replace("strategy: route", "strategy: route, budget: 1"))
    assert msg == "mix.yaml:5: mixes.d.budget: unknown key 'budget'", msg  # not "did you mean 'judge'?"


def test_chat_warns_about_unset_key_variables_of_the_mix_it_uses(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from stub_openai import Script, StubServer

    from moai.cli import app

    monkeypatch.setenv("MOAI_DATABASE_URL", f"sqlite:///{tmp_path / 'moai.db'}")
    monkeypatch.delenv("MOAI_TEST_KEY_UNSET", raising=False)
    with StubServer(Script(reply="hello there")) as stub:
        path = tmp_path / "mix.yaml"
        path.write_text(KEYED.replace("http://127.0.0.1:9/v1", stub.url, 1)
                        + "  only_cheap: {strategy: route, models: [cheap]}\n")
        r = CliRunner().invoke(app, ["chat", "hi", "--config", str(path), "--mix", "only_cheap"])
    assert r.exit_code == 0, r.output
    assert "hello there" in r.output
    warnings = [ln for ln in r.output.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and "cheap (MOAI_TEST_KEY_UNSET)" in warnings[0]
    assert "gpt" not in warnings[0]  # not a model this mix can use


def test_an_unknown_model_in_a_block_list_is_reported_at_its_own_line() -> None:
    text = BASE + "  team:\n    strategy: moa\n    proposers:\n      - a\n      - pricy\n    aggregator: a\n"
    assert error_of(text) == "mix.yaml:10: mixes.team.proposers.1: unknown model 'pricy'; did you mean 'pricey'?"


def test_serve_on_a_port_in_use_is_one_line_before_any_start_up_work(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from cli_support import one_line_error, record_serving

    from moai.cli import app

    served = record_serving(monkeypatch)
    monkeypatch.setenv("MOAI_DATABASE_URL", f"sqlite:///{tmp_path / 'moai.db'}")
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        r = CliRunner().invoke(app, ["serve", "--port", str(port)])
    one_line_error(r, f"cannot listen on 127.0.0.1:{port}", "in use")
    assert not served and "moai serving" not in r.output
    assert not (tmp_path / "moai.db").exists()  # nothing started: not even the database


def test_config_check_refuses_a_gate_folder_without_a_gate(tmp_path: Path) -> None:
    """The server would quietly route with another chooser: the check says so before it runs."""
    base = ("models:\n  a: {provider: openai_compat, endpoint: \"http://127.0.0.1:9/v1\"}\n"
            "mixes:\n  d: {strategy: route}\n")
    one_line_error(check(tmp_path, base + f"settings: {{gate: {tmp_path / 'nope'}}}\n"), "settings.gate", "nope")
    gate = tmp_path / "gate"
    gate.mkdir()
    (gate / "gate.json").write_text("{}")  # a gate.json that is no gate's: serve would not load it either
    one_line_error(check(tmp_path, base + f"settings: {{gate: {gate}}}\n"), "settings.gate", "gate format")
    from moai.gate.runtime import DEFAULT_GATE_DIR

    r = check(tmp_path, base + f"settings: {{gate: {DEFAULT_GATE_DIR}}}\n")
    assert r.exit_code == 0, r.output

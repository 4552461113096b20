"""Mix instructions: the embedded default loads; bad files give one line with file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from moai.cli import app
from moai.config import ConfigError, load_config, parse_config

GOOD = """
models:
  gpt-4o:
    provider: openai
    api_key_env: OPENAI_API_KEY
    privacy: cloud
    price: {input_per_mtok: 2.5, output_per_mtok: 10}
    params_b: 200
  qwen:
    provider: local
    package: qwen2.5-coder-1.5b
    privacy: local
mixes:
  default:
    strategy: route
    weights: {quality: 1, cost: 0.5, latency: 0.2, carbon: 0.2}
    constraints: {sensitive_data: local_only, max_cost_usd: 0.01}
  deep:
    strategy: moa
    layers: 2
    proposers: {pick: 3}
    aggregator: {pick: best}
  reviewed: {strategy: critique, writer: {pick: cheapest}, critic: gpt-4o, rounds: 1}
"""


def test_embedded_default_is_local_only() -> None:
    cfg = load_config()
    assert "default" in cfg.mixes
    assert cfg.models and all(c.provider == "local" and c.privacy == "local" for c in cfg.models.values())


def test_design_example_parses_with_defaults_filled() -> None:
    cfg = parse_config(GOOD, "mix.yaml")
    assert cfg.models["gpt-4o"].price.output_per_mtok == 10
    assert cfg.models["gpt-4o"].cost_usd(1_000_000, 0) == pytest.approx(2.5)
    qwen = cfg.models["qwen"]
    assert qwen.params_b == 1.5 and qwen.family == "qwen2.5"  # completed from the local zoo
    assert cfg.mixes["deep"].layers == 2
    assert cfg.mixes["default"].constraints.sensitive_data == "local_only"


@pytest.mark.parametrize(
    "mutate,line,field",
    [
        (lambda t: t.replace("output_per_mtok: 10", "output_per_mtok: ten"), 7, "models.gpt-4o.price.output_per_mtok"),
        (lambda t: t.replace("privacy: local", "privacy: secret"), 12, "models.qwen.privacy"),
        (lambda t: t.replace("critic: gpt-4o", "critic: gpt-5"), 23, "mixes.reviewed.critic"),
        (lambda t: t.replace("strategy: moa", "strategy: magic"), 19, "mixes.deep.strategy"),
        (lambda t: t.replace("    layers: 2\n", "    layers: 2\n    colour: red\n"), 21, "mixes.deep.colour"),
        (lambda t: t.replace("    aggregator: {pick: best}\n", ""), 18, "mixes.deep"),
    ],
)
def test_errors_name_file_line_and_field(mutate, line: int, field: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError) as e:
        parse_config(mutate(GOOD), "mix.yaml")
    msg = str(e.value)
    assert msg.startswith(f"mix.yaml:{line}: {field}"), msg
    assert "\n" not in msg


def test_yaml_syntax_error_has_a_line() -> None:
    with pytest.raises(ConfigError, match=r"^mix.yaml:3: YAML syntax"):
        parse_config("models:\n  a: {provider: local\n  b: 1\n", "mix.yaml")


def test_cli_config_check(tmp_path: Path) -> None:
    runner = CliRunner()
    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    r = runner.invoke(app, ["config", "check", str(good)])
    assert r.exit_code == 0 and "3 mix(es)" in r.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("privacy: local", "privacy: secret"))
    r = runner.invoke(app, ["config", "check", str(bad)])
    assert r.exit_code == 2
    assert f"{bad}:12: models.qwen.privacy" in r.output
    assert "Traceback" not in r.output
    r = runner.invoke(app, ["config", "check", str(tmp_path / "missing.yaml")])
    assert r.exit_code == 2 and "cannot read" in r.output


AUTO = """
models:
  a: {provider: openai_compat, endpoint: "http://127.0.0.1:9/v1", privacy: cloud, params_b: 8}
mixes:
  team: {strategy: moa, proposers: [a, a], aggregator: a}
  entry: {strategy: auto, collaborate: first}
  first:
    strategy: auto
    collaborate: second
  second:
    strategy: auto
    collaborate: team
"""


def test_auto_mixes_may_nest_when_the_chain_ends_in_another_strategy() -> None:
    cfg = parse_config(AUTO, "mix.yaml")
    assert cfg.mixes["second"].collaborate == "team"


@pytest.mark.parametrize(
    "mutate,line,field,problem",
    [
        (lambda t: t.replace("collaborate: team", "collaborate: second"), 12, "mixes.second.collaborate",
         "mix 'second' collaborates with itself"),
        (lambda t: t.replace("collaborate: team", "collaborate: first"), 12, "mixes.second.collaborate",
         "collaboration loops back to 'first': first → second → first"),
    ],
)
def test_a_collaboration_loop_is_a_load_time_error(mutate, line: int, field: str, problem: str) -> None:  # type: ignore[no-untyped-def]
    """Such a mix used to load and then fail every request with a RecursionError."""
    with pytest.raises(ConfigError) as e:
        parse_config(mutate(AUTO), "mix.yaml")
    assert str(e.value).startswith(f"mix.yaml:{line}: {field}: {problem};"), str(e.value)


def test_a_non_auto_mix_naming_itself_in_collaborate_is_no_loop() -> None:
    """Only ``auto`` follows ``collaborate``: a moa mix carrying the field never plans through it."""
    cfg = parse_config(AUTO.replace("aggregator: a}", "aggregator: a, collaborate: team}"), "mix.yaml")
    assert cfg.mixes["team"].collaborate == "team"

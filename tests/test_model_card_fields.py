"""Mix instructions that were accepted and then silently ignored or misread: a field the provider never reads, a role
no strategy knows, a fallback the mix may not use, quoted numbers, files and gates that are not there."""

from __future__ import annotations

from pathlib import Path

import pytest

from moai.config import ConfigError, parse_config

EP = "endpoint: 'http://127.0.0.1:9/v1'"


def load(models: str, mixes: str = "  m: {}\n") -> object:
    return parse_config(f"models:\n{models}mixes:\n{mixes}")


@pytest.mark.parametrize(("card", "needle"), [
    (f"{{provider: openai_compat, {EP}, roles: [agregator]}}", "unknown role 'agregator'"),
    (f"{{provider: openai_compat, {EP}, deployments: [{{endpoint: 'http://127.0.0.1:8/v1'}}]}}",
     "either 'endpoint' or 'deployments'"),
    ("{provider: local, package: smollm2-135m, endpoint: 'http://127.0.0.1:9/v1'}", "'endpoint' is not used"),
    ("{provider: local, package: smollm2-135m, api_key_env: KEY}", "'api_key_env' is not used"),
    ("{provider: local, package: smollm2-135m, path: /m.gguf}", "either 'package'"),
    (f"{{provider: openai_compat, {EP}, power_w: 5000}}", "'power_w' is not used by provider openai_compat"),
    (f"{{provider: openai_compat, {EP}, threads: 4}}", "'threads' is not used"),
    (f"{{provider: openai_compat, {EP}, package: smollm2-135m}}", "'package' is not used"),
    (f"{{provider: openai_compat, {EP}, records: [r.jsonl]}}", "'records' is not used"),
])
def test_a_field_the_provider_does_not_read_or_an_unknown_role_is_refused(card: str, needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        load(f"  x: {card}\n")
    assert needle in str(e.value) and ":2:" in str(e.value), str(e.value)  # with its line


def test_the_fields_each_provider_reads_are_accepted() -> None:
    load(f"  a: {{provider: openai_compat, {EP}, roles: [proposer, aggregator, critic, judge, writer]}}\n"
         "  b: {provider: local, package: smollm2-135m, threads: 2, power_w: 15, roles: [drafter]}\n"
         "  c: {provider: openai_compat, deployments: [{endpoint: 'http://127.0.0.1:8/v1'}]}\n")


@pytest.mark.parametrize("mix", ["{strategy: route, models: [a], fallbacks: [b]}",
                                 "{strategy: route, fallbacks: [b], constraints: {allowed_models: [a]}}"])
def test_a_fallback_the_mix_may_not_use_is_refused(mix: str) -> None:
    """It was dropped unsaid: the request whose model failed got a 502, its fallback never tried."""
    models = f"  a: {{provider: openai_compat, {EP}}}\n  b: {{provider: openai_compat, {EP}}}\n"
    with pytest.raises(ConfigError) as e:
        load(models, f"  m: {mix}\n")
    assert "mixes.m.fallbacks.0: 'b'" in str(e.value) and "never be tried" in str(e.value), str(e.value)
    load(models, "  m: {strategy: route, models: [a, b], fallbacks: [b]}\n")  # among its models: kept


def test_config_check_warns_about_a_model_file_that_is_not_there(tmp_path: Path) -> None:
    """Check said ok, serve started, and every request to the model failed with 502 (model file not found)."""
    from typer.testing import CliRunner

    from moai.cli import app

    path = tmp_path / "mix.yaml"
    path.write_text("models:\n  l: {provider: local, path: /nonexistent/model.gguf}\nmixes:\n  d: {models: [l]}\n")
    r = CliRunner().invoke(app, ["config", "check", str(path)])
    assert r.exit_code == 0, r.output  # a local model's file may be put in place later
    assert "no such file for: l (/nonexistent/model.gguf)" in r.output, r.output


def test_config_check_refuses_a_gate_that_does_not_load(tmp_path: Path) -> None:
    """A gate.json holding garbage passed check; serve then logged "corrupt gate files" and routed without it."""
    from cli_support import one_line_error
    from typer.testing import CliRunner

    from moai.cli import app

    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "gate.json").write_text("{garbage")
    path = tmp_path / "mix.yaml"
    path.write_text(f"models:\n  a: {{provider: openai_compat, {EP}}}\nmixes:\n  d: {{}}\n"
                    f"settings: {{gate: {tmp_path / 'g'}}}\n")
    one_line_error(CliRunner().invoke(app, ["config", "check", str(path)]), "settings.gate", "corrupt gate files")


def test_config_check_warns_about_a_privacy_limit_that_leaves_no_model(tmp_path: Path) -> None:
    """Every request to such a mix is refused (422): check says so (it still loads, as serve takes it)."""
    from typer.testing import CliRunner

    from moai.cli import app

    models = (f"  a: {{provider: openai_compat, {EP}, privacy: cloud}}\n"
              f"  b: {{provider: openai_compat, {EP}, privacy: private}}\n")
    path = tmp_path / "mix.yaml"
    path.write_text(f"models:\n{models}mixes:\n  m: {{strategy: route, models: [a], constraints: {{max_privacy: "
                    "private}}\n  n: {strategy: route, constraints: {max_privacy: private}}\n")
    r = CliRunner().invoke(app, ["config", "check", str(path)])
    assert r.exit_code == 0, r.output
    warnings = [ln for ln in r.output.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and "mixes.m.constraints.max_privacy: 'private' leaves none" in warnings[0], r.output


@pytest.mark.parametrize(("mix", "settings", "needle"), [
    ('{max_tokens: "100"}', "{}", "mixes.m.max_tokens: expects a number, not the string '100'"),
    ('{weights: {quality: "1"}}', "{}", "mixes.m.weights.quality: expects a number"),
    ("{constraints: {max_cost_usd: true}}", "{}", "mixes.m.constraints.max_cost_usd: expects a number, not true"),
    ("{}", '{feedback_per_key: "no"}', "settings.feedback_per_key: expects true or false, not the string 'no'"),
    ("{}", '{request_timeout_s: "5"}', "settings.request_timeout_s: expects a number"),
    ("{}", '{cache: {mode: exact, per_key: "yes"}}', "settings.cache.per_key: expects true or false"),
])
def test_a_mixs_or_the_settings_numbers_and_switches_are_not_strings(mix: str, settings: str, needle: str) -> None:
    """``feedback_per_key: "no"`` was read as false, ``max_tokens: "100"`` as 100."""
    with pytest.raises(ConfigError) as e:
        parse_config(f"models:\n  a: {{provider: openai_compat, {EP}}}\nmixes:\n  m: {mix}\nsettings: {settings}\n")
    assert needle in str(e.value), str(e.value)


def test_config_check_warns_about_fields_the_mixs_strategy_never_reads(tmp_path: Path) -> None:
    """``proposers`` on a route mix, or a model listed twice, passed without a word and changed nothing."""
    from typer.testing import CliRunner

    from moai.cli import app

    path = tmp_path / "mix.yaml"
    path.write_text(f"models:\n  a: {{provider: openai_compat, {EP}}}\n  b: {{provider: openai_compat, {EP}}}\n"
                    "mixes:\n  d: {strategy: route, models: [a, b, a], proposers: [a], threshold: 0.3}\n"
                    "  m: {strategy: moa, proposers: [a, b], aggregator: b, layers: 2}\n")
    r = CliRunner().invoke(app, ["config", "check", str(path)])
    assert r.exit_code == 0, r.output
    warnings = [ln for ln in r.output.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 3, r.output
    assert "mixes.d.proposers: not read by strategy route (only by moa and fanout)" in warnings[0]
    assert "mixes.d.threshold: not read by strategy route (only by cascade)" in warnings[1]
    assert "mixes.d.models: a listed more than once" in warnings[2]

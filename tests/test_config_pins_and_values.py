"""Mix instructions that loaded and then misbehaved on every request: an empty ``fallbacks:`` that turned failover
off, roles pinned to models the mix can never use, weights that overflow the gate's utilities, unexpanded ``$VAR``s
in endpoints and model ids, YAML's own ``!!str`` tag, invisible characters in names, an empty ``settings:``."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_config_checks import error_of
from typer.testing import CliRunner

from moai.config import parse_config

BASE = """\
models:
  a: {provider: openai_compat, endpoint: "http://127.0.0.1:9/v1", privacy: cloud}
  b: {provider: openai_compat, endpoint: "http://127.0.0.1:9/v1", privacy: private}
  c: {provider: openai_compat, endpoint: "http://127.0.0.1:9/v1", privacy: local}
mixes:
  default: {strategy: route}
"""




# ---------------------------------------------------------------- fallbacks left empty


def test_fallbacks_left_empty_mean_the_default_not_none() -> None:
    """``fallbacks:`` with its list commented out was read as "no fallbacks": a failing first model was a 502."""
    cfg = parse_config(BASE + "  e:\n    strategy: route\n    fallbacks:\n    # fallbacks: [c]\n")
    assert cfg.mixes["e"].fallbacks == "gate" == cfg.mixes["default"].fallbacks
    assert "fallbacks" not in cfg.mixes["e"].model_fields_set  # as if the key were left out
    assert parse_config(BASE + "  e: {fallbacks: []}\n").mixes["e"].fallbacks == []  # none, said outright


def test_a_mix_with_empty_fallbacks_falls_back_when_its_model_fails() -> None:
    from stub_openai import Script, StubServer

    from moai.api import shutdown
    from moai.gate.rules import RuleChooser
    from moai.mixture import Mixture

    with StubServer(Script(fail_times=10**9)) as bad, StubServer(Script(reply="fallback answer")) as good:
        cfg = parse_config(f"""models:
  big: {{provider: openai_compat, endpoint: "{bad.url}", max_retries: 0, params_b: 400}}
  small: {{provider: openai_compat, endpoint: "{good.url}", params_b: 1,
          price: {{input_per_mtok: 500, output_per_mtok: 500}}}}
mixes:
  default:
    strategy: route
    weights: {{quality: 1, cost: 100}}
    fallbacks:
""")
        m = Mixture(cfg, chooser=RuleChooser())
        try:
            r = m.chat.completions.create(model="moai/default", messages=[{"role": "user", "content": "hi"}])
        finally:
            shutdown(m)
        assert r.moai["model"] == "small" and bad.script.calls >= 1
        assert r.choices[0].message.content == "fallback answer"


def test_other_sections_left_empty_mean_their_defaults() -> None:
    """``settings:`` with every entry commented out was refused: "Input should be a valid dictionary"."""
    cfg = parse_config(BASE + "  e:\n    weights:\n    constraints:\nsettings:\n  # carbon_zone: FRA\n")
    assert cfg.settings.carbon_zone == "WOR" and cfg.mixes["e"].weights.quality == 1.0
    assert cfg.mixes["e"].constraints.max_privacy is None
    cfg = parse_config(BASE.replace('privacy: local}', 'privacy: local, price: }'))
    assert cfg.models["c"].price.input_per_mtok == 0


# ---------------------------------------------------------------- pinned roles outside what the mix may use


@pytest.mark.parametrize(("mix", "expected"), [
    ("{strategy: critique, models: [c], writer: c, critic: a}",
     "mixes.m.critic: 'a' is not among the mix's models (c), so it would never play the critic"),
    ("{strategy: critique, writer: c, critic: a, constraints: {allowed_models: [c, b]}}",
     "mixes.m.critic: 'a' is not in constraints.allowed_models (c, b), so it would never play the critic"),
    ("{strategy: chain, models: [c], steps: [{model: c}, {model: a}]}",
     "mixes.m.steps.1.model: 'a' is not among the mix's models (c), so it would never play chain step 2"),
    ("{strategy: fanout, models: [b, c], proposers: [b, c], judge: a}",
     "mixes.m.judge: 'a' is not among the mix's models (b, c), so it would never play the judge"),
    ("{strategy: moa, models: [b, c], proposers: [a, b], aggregator: c}",
     "mixes.m.proposers.0: 'a' is not among the mix's models (b, c), so it would never play a proposer"),
    ("{strategy: critique, writer: {pick: best, among: [c, a]}, critic: c, constraints: {allowed_models: [c]}}",
     "mixes.m.writer.among.1: 'a' is not in constraints.allowed_models (c), so the gate would never pick it for the "
     "writer"),
])
def test_a_pin_the_mix_cannot_use_is_refused_at_its_line(mix: str, expected: str) -> None:
    """They passed `config check`, then the gate stood in for the pinned model on every request."""
    assert error_of(BASE + f"  m: {mix}\n") == f"mix.yaml:7: {expected}" + (
        "; add it there or name one of them" if "among the mix's models" in expected else "")


@pytest.mark.parametrize(("mix", "expected"), [
    ("{strategy: critique, writer: c, critic: a, constraints: {max_privacy: local}}",
     "mixes.m.critic: 'a' is a cloud model and constraints.max_privacy is 'local', so it would never play the critic"),
    ("{strategy: cascade, cascade: [c, a], constraints: {max_privacy: private}}",
     "mixes.m.cascade.1: 'a' is a cloud model and constraints.max_privacy is 'private', so the cascade would never "
     "call it"),
    ("{strategy: moa, proposers: [c, b], aggregator: [c, a], constraints: {max_privacy: private}}",
     "mixes.m.aggregator.1: 'a' is a cloud model and constraints.max_privacy is 'private', so it would never play "
     "the aggregator"),
    ("{strategy: route, fallbacks: [c, a], constraints: {max_privacy: local}}",
     "mixes.m.fallbacks.1: 'a' is a cloud model and constraints.max_privacy is 'local', so it would never be tried"),
])
def test_a_pin_above_the_mixs_privacy_limit_is_warned_about(mix: str, expected: str) -> None:
    """It loads (a request's own privacy needs leave models out the same way), but `config check` says so."""
    from moai.config_warnings import config_warnings

    assert expected in config_warnings(parse_config(BASE + f"  m: {mix}\n"))


def test_pins_the_mix_can_use_load() -> None:
    """Guards: pins inside the pool, the allowed models and the privacy limit load; a role the strategy never
    reads is a warning (config check), not an error."""
    cfg = parse_config(BASE + "  m: {strategy: critique, models: [b, c], writer: c, critic: [b, c],"
                              " constraints: {max_privacy: private, allowed_models: [b, c]}}\n"
                              "  r: {strategy: route, models: [c], critic: a}\n")
    assert cfg.mixes["m"].critic == ["b", "c"]


# ---------------------------------------------------------------- weights


def test_weights_are_bounded_as_a_request_s_are() -> None:
    """1e308 loaded; every utility overflowed to NaN (the gate's choice, `moai route --json`, a 500)."""
    from pydantic import ValidationError

    from moai.config_mix import MAX_WEIGHT
    from moai.server.openai_schema import MoaiOptions

    msg = error_of(BASE.replace("{strategy: route}", "{strategy: route, weights: {quality: 1, cost: 1e308}}"))
    assert msg.startswith("mix.yaml:6: mixes.default.weights.cost: Input should be less than or equal to"), msg
    assert parse_config(BASE.replace("{strategy: route}", f"{{weights: {{latency: {MAX_WEIGHT:g}}}}}"))
    with pytest.raises(ValidationError):  # the same bound for a request's moai.weights
        MoaiOptions.model_validate({"weights": {"cost": MAX_WEIGHT * 1.5}})
    MoaiOptions.model_validate({"weights": {"cost": MAX_WEIGHT}})


# ---------------------------------------------------------------- $VAR in endpoints and model ids


@pytest.mark.parametrize(("endpoint", "expected"), [
    ("http://$VLLM_HOST:8000/v1", "environment variables ($VLLM_HOST) are not expanded"),
    ("http://10.0.0.5:8000/$PREFIX/v1", "environment variables ($PREFIX) are not expanded"),
    ("http://${HOST}/v1", "environment variables (${HOST}) are not expanded"),
    ("http://%(host)s:8000/v1", "'%(host)s' is not a host name or IP address"),
    ("http://-bad-.example/v1", "is not a host name or IP address"),
])
def test_an_endpoint_with_a_variable_or_no_real_host_is_refused(endpoint: str, expected: str) -> None:
    """It passed `config check`; every request then failed to connect (502)."""
    msg = error_of(BASE.replace('"http://127.0.0.1:9/v1", privacy: cloud', f'"{endpoint}", privacy: cloud'))
    assert msg.startswith("mix.yaml:2: models.a.endpoint: ") and expected in msg, msg


@pytest.mark.parametrize("model", ["meta/$MODEL", "${ORG}/llama", "$MODEL"])
def test_a_model_id_with_a_variable_is_refused(model: str) -> None:
    msg = error_of(BASE.replace("privacy: cloud}", f'privacy: cloud, model: "{model}"}}'))
    assert msg.startswith("mix.yaml:2: models.a.model: ") and "environment variables" in msg, msg


@pytest.mark.parametrize("endpoint", ["http://my_service:8000/v1", "https://[::1]:8443/v1", "http://bücher.example/v1",
                                      "http://localhost./v1", "https://api.openai.com/v1"])
def test_real_hosts_load(endpoint: str) -> None:
    """Guard: container names (with "_"), IPv6, international names and a trailing dot are hosts."""
    cfg = parse_config(BASE.replace('"http://127.0.0.1:9/v1", privacy: cloud', f'"{endpoint}", privacy: cloud'))
    assert cfg.models["a"].endpoint == endpoint


def test_an_unexpanded_host_is_hidden_from_clients() -> None:
    """The connection error named ``$vllm_host:8000`` in a client's error body, where any other host reads
    <upstream>."""
    from moai.upstream_errors import public

    cfg = parse_config(BASE)
    text = "a: connection failed: Cannot connect to host $vllm_host:8000 ssl:default [Name or service not known]"
    out = public(text, cfg)
    assert "vllm" not in out and "8000" not in out and "Cannot connect to host <upstream> ssl:default" in out, out
    assert "<upstream>" in public("Cannot connect to host my_svc:8000", cfg)


# ---------------------------------------------------------------- YAML tags


@pytest.mark.parametrize(("old", "new", "check"), [
    ("privacy: cloud}", "privacy: cloud, model: !!str 123}", lambda c: c.models["a"].model == "123"),
    ('"http://127.0.0.1:9/v1", privacy: cloud', '!!str "http://127.0.0.1:9/v1", privacy: cloud',
     lambda c: c.models["a"].endpoint == "http://127.0.0.1:9/v1"),
    ("  a: {", "  !!str 123: {", lambda c: "123" in c.models),
    ("{strategy: route}", "{strategy: !!str route, max_tokens: !!int 64, temperature: !!float 1}",
     lambda c: c.mixes["default"].max_tokens == 64 and c.mixes["default"].temperature == 1.0),
])
def test_yaml_s_standard_tags_are_read_as_plain_values(old: str, new: str, check: object) -> None:
    """``!!str 123`` was refused ("Input should be a valid string"), and as a name became "TaggedScalar(...)"."""
    text = BASE.replace(old, new)
    assert text != BASE
    cfg = parse_config(text)
    assert check(cfg)  # type: ignore[operator]


def test_tags_are_read_through_anchors_and_merge_keys() -> None:
    """Guard: a tagged value in an anchored card reaches every card that uses it (``*b``, ``<<: *b``)."""
    text = (BASE.replace("  a: {", "  a: &b {").replace("privacy: cloud}", "model: !!str 123}")
            .replace("mixes:", "  d: *b\n  e:\n    <<: *b\n    privacy: local\nmixes:"))
    cfg = parse_config(text)
    assert [cfg.models[n].model for n in "ade"] == ["123", "123", "123"] and cfg.models["e"].privacy == "local"


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("privacy: cloud}", "privacy: cloud, model: !env MODEL}", "mix.yaml:2: models.a.model: unknown YAML tag '!env'"),
    ("{strategy: route}", "!mix {strategy: route}", "mix.yaml:6: mixes.default: unknown YAML tag '!mix'"),
    ("{strategy: route}", "{strategy: route, description: !!python/name:os.system x}",
     "mix.yaml:6: mixes.default.description: unknown YAML tag '!!python/name:os.system'"),
    ("{strategy: route}", "{strategy: route, max_tokens: !!int many}", "mix.yaml:6: YAML syntax: "),
])
def test_other_tags_are_one_line_naming_their_place(old: str, new: str, expected: str) -> None:
    assert error_of(BASE.replace(old, new)).startswith(expected)


# ---------------------------------------------------------------- names


@pytest.mark.parametrize(("old", "new", "field"), [
    ("  a: {", '  "a\\u200bb": {', "models.a\u200bb"),
    ("  default: {", '  "def\\u00adault": {', "mixes.def\u00adault"),
    ("  c: {", '  "c\\u2060": {', "models.c\u2060"),
])
def test_invisible_characters_in_names_are_refused(old: str, new: str, field: str) -> None:
    """"a\\u200bb" and "ab" looked the same to whoever read the file or the logs, and reached different models."""
    msg = error_of(BASE.replace(old, new))
    assert msg.startswith("mix.yaml:") and f": {field}: " in msg and "invisible or control characters" in msg, msg


def test_config_check_reports_the_refusals_as_one_line(tmp_path: Path) -> None:
    from cli_support import one_line_error

    from moai.cli import app

    path = tmp_path / "mix.yaml"
    path.write_text(BASE + "  m: {strategy: critique, models: [c], writer: c, critic: a}\n")
    one_line_error(CliRunner().invoke(app, ["config", "check", str(path)]), "mix.yaml:7: mixes.m.critic: 'a'")

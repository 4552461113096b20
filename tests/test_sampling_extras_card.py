"""A model card's ``sampling_extras``: which of ``top_k``, ``min_p``, ``repetition_penalty`` (``repeat_penalty``
for llama.cpp's server) and ``typical_p`` its OpenAI-compatible upstream takes. ``moai config check`` takes the
field and refuses an unknown name, or the field on a provider that never reads it, with its file and line."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_support import one_line_error
from typer.testing import CliRunner

from moai.cli import app
from moai.config import parse_config

EP = "endpoint: 'http://127.0.0.1:9/v1'"


def check(tmp_path: Path, card: str) -> object:
    path = tmp_path / "mix.yaml"
    path.write_text(f"models:\n  a: {{provider: openai_compat, {EP}}}\n  x: {card}\nmixes:\n  default: {{}}\n")
    return CliRunner().invoke(app, ["config", "check", str(path)])


@pytest.mark.parametrize("card", [
    f"{{provider: openai_compat, {EP}, sampling_extras: [top_k, min_p, repetition_penalty, typical_p]}}",
    f"{{provider: openai_compat, {EP}, sampling_extras: [top_k, repeat_penalty]}}",
    "{provider: openai, api_key_env: OPENAI_API_KEY, sampling_extras: [top_k]}",
    f"{{provider: openai_compat, {EP}, sampling_extras: []}}",
    f"{{provider: openai_compat, {EP}, send_end_user: true}}",
])
def test_config_check_takes_the_field(tmp_path: Path, card: str) -> None:
    r = check(tmp_path, card)
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize(("card", "needles"), [
    (f"{{provider: openai_compat, {EP}, sampling_extras: [topk]}}",
     ("models.x.sampling_extras", "unknown sampling extra 'topk'", "did you mean 'top_k'?")),
    (f"{{provider: openai_compat, {EP}, sampling_extras: top_k}}", ("models.x.sampling_extras", "valid list")),
    ("{provider: local, package: smollm2-135m, sampling_extras: [top_k]}",
     ("'sampling_extras' is not used by provider local",)),
    ("{provider: anthropic, sampling_extras: [min_p]}", ("'sampling_extras' is not used by provider anthropic",)),
    ("{provider: local, package: smollm2-135m, send_end_user: true}",
     ("'send_end_user' is not used by provider local",)),
    (f"{{provider: openai_compat, {EP}, send_end_user: sometimes}}", ("models.x.send_end_user",)),
])
def test_config_check_refuses_a_bad_value_with_its_line(tmp_path: Path, card: str, needles: tuple[str, ...]) -> None:
    line = one_line_error(check(tmp_path, card), *needles, code=2)
    assert "mix.yaml:3:" in line, line


def test_the_models_sent_each_extra() -> None:
    cfg = parse_config(f"""
models:
  vllm: {{provider: openai_compat, {EP}, sampling_extras: [top_k, min_p, repetition_penalty, typical_p]}}
  llama: {{provider: openai_compat, {EP}, sampling_extras: [repeat_penalty, top_k]}}
  plain: {{provider: openai_compat, {EP}}}
  gpt: {{provider: openai}}
  claude: {{provider: anthropic}}
  tiny: {{provider: local, package: smollm2-135m}}
mixes:
  default: {{}}
""")
    every = {"top_k", "min_p", "repetition_penalty", "typical_p"}
    assert {n: set(c.sampling_fields) for n, c in cfg.models.items()} == {
        "vllm": every, "llama": {"top_k", "repetition_penalty"}, "plain": set(), "gpt": set(),
        "claude": {"top_k"}, "tiny": every}

"""What clients read of upstream errors and notes keeps the config's own names whole: an Ollama-style model name
(``qwen2.5:0.5b``) reads like host:port, and became ``<upstream>.5b`` in every note of ``moai.reason``."""

from __future__ import annotations

from moai.config import parse_config
from moai.upstream_errors import public

CONFIG = parse_config("""
models:
  "qwen2.5:0.5b": {provider: openai_compat, endpoint: "http://127.0.0.1:9/v1", privacy: private}
  "llama3:8b": {provider: openai_compat, endpoint: "http://10.0.0.5:11434/v1", privacy: private,
                model: "llama3:8b-instruct"}
  "a:1": {provider: openai_compat, endpoint: "http://127.0.0.1:9/v1", privacy: private}
mixes:
  default: {strategy: route}
""")


def test_model_names_that_look_like_addresses_stay_whole() -> None:
    note = "moa: only qwen2.5:0.5b is left to propose; breaker: left out llama3:8b, qwen2.5:0.5b."
    assert public(note, CONFIG) == note
    said = public("upstream llama3:8b-instruct failed: Cannot connect to host 10.0.0.5:11434 ssl:default", CONFIG)
    assert said == "upstream llama3:8b-instruct failed: Cannot connect to host <upstream> ssl:default"


def test_an_address_holding_a_models_name_is_still_hidden() -> None:
    for text in ("connect to internal.a:1234 failed", "GET http://a:1/v1 refused", "see db.a:1 now"):
        out = public(text, CONFIG)
        assert "internal" not in out and "1234" not in out and "http" not in out and "db." not in out, out

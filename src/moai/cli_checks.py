"""What a command checks in its mix instructions and environment before it starts: one line for what cannot
work, a warning for what each request would trip over.
"""

from __future__ import annotations

import os

from moai.cli_common import guarded, warn
from moai.config import Config


def check_cache(cfg: Config) -> None:
    """A bad MOAI_CACHE* variable is one line before anything starts, not a traceback from the first engine."""
    from moai.cache import cache_settings

    guarded(lambda: cache_settings(cfg))


def check_privacy_model() -> None:
    """A MOAI_PRIVACY_MODEL that names no usable model is one line before anything starts (loaded by the server,
    it would fail start-up with a traceback), never a privacy check running without its learned half."""
    from moai.gate.privacy_learned import load_model

    guarded(load_model)


def warn_missing_local(cfg: Config) -> None:
    """A local model's file (or a replay model's records) that is not there: a warning, since a GGUF file may be put
    in place, or a zoo package pulled, after the config is checked."""
    from moai.catalog import missing_files
    from moai.local_models import ZOO, is_ready

    missing = [c.package for c in cfg.models.values() if c.provider == "local" and c.package in ZOO
               and not is_ready(c.package)]
    if missing:
        warn(f"local models not pulled yet: {', '.join(missing)} (run: moai models pull)")
    files = [f"{c.name} ({f})" for c in cfg.models.values() if c.provider != "local" or c.path
             for f in missing_files(c)]
    if files:  # every request to them would fail (502), and /readyz does not count them: said now, not per request
        warn(f"no such file for: {', '.join(files)}")


def _missing_keys(cfg: Config, only: set[str] | None = None) -> list[str]:
    """``model (VARIABLE)`` for each remote model (of ``only``, when given) whose API key variable is unset or
    empty: its requests would go out without an Authorization header. Not an error: keys are often set only where
    the server runs."""
    from moai.catalog import ANTHROPIC_KEY_ENV

    missing: list[str] = []
    for name, card in cfg.models.items():
        if only is not None and name not in only:
            continue
        if card.provider not in ("openai_compat", "openai", "anthropic"):
            continue
        default = ANTHROPIC_KEY_ENV if card.provider == "anthropic" else None
        envs = [d.api_key_env or card.api_key_env or default for d in card.deployments] or [card.api_key_env or default]
        for env in dict.fromkeys(envs):
            if env is None:
                if card.provider == "openai":  # openai_compat servers often need no key (vLLM, llama.cpp, Ollama)
                    missing.append(f"{name} (no api_key_env)")
            elif not os.environ.get(env):
                missing.append(f"{name} ({env})")
    return missing


def warn_missing_keys(cfg: Config, only: set[str] | None = None) -> None:
    missing = _missing_keys(cfg, only)
    if missing:
        warn(f"API key variable not set for: {', '.join(missing)}; their requests go out without a key")

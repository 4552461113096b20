"""Model cards: everything the gate and the strategies need to know about a model before calling it.

A card is what the mix instructions say about a model (endpoint, prices, privacy tier, size, roles),
completed with sensible defaults for the local zoo, so that cost, latency and energy can be *predicted*
per request and compared across models.
"""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

PrivacyTier = Literal["local", "private", "cloud"]
PRIVACY_RANK: dict[str, int] = {"local": 0, "private": 1, "cloud": 2}
# the variable an anthropic model's key is read from without api_key_env (here, not in the provider module:
# `config check` needs it without loading the anthropic SDK, ~1.5 s)
ANTHROPIC_KEY_ENV = "ANTHROPIC_API_KEY"
ProviderKind = Literal["local", "openai_compat", "openai", "anthropic", "replay"]


class Price(BaseModel):
    """USD per million tokens."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    input_per_mtok: float = Field(0.0, ge=0)
    output_per_mtok: float = Field(0.0, ge=0)


def is_env_reference(text: str) -> bool:
    """``${VAR}`` or ``$VAR``: mix instructions take no environment interpolation, so it would be used verbatim."""
    return "${" in text or text.strip().startswith("$")


# ``${VAR}`` or ``$VAR`` anywhere in a value (a shell would expand it; mix instructions do not)
_ENV_REFERENCE = re.compile(r"\$\{[^}]*\}?|\$[A-Za-z_][A-Za-z0-9_]*")


def env_reference(text: str) -> str | None:
    """The first ``${VAR}`` or ``$VAR`` in ``text``, or None. For an endpoint or a model id, where a ``$`` is never
    meant literally: ``http://$VLLM_HOST:8000/v1`` was sent as written, and every request failed to connect."""
    m = _ENV_REFERENCE.search(text)
    return m.group() if m else None


def _host_ok(host: str) -> bool:
    """An IP address, or a name of dot-separated labels of letters, digits, ``-`` and ``_`` (the names container
    networks give): not ``%(host)s`` or ``$HOST``, which no resolver knows."""
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return True
    name = host.removesuffix(".")
    labels = name.split(".")
    return 0 < len(name) <= 253 and all(
        0 < len(label) <= 63 and all(c.isalnum() or c in "-_" for c in label)
        and not label.startswith("-") and not label.endswith("-") for label in labels)


def check_endpoint(url: str) -> str:
    """An endpoint is an http(s) URL with a host, checked when the config loads rather than on the first request.
    ``${VAR}`` or ``$VAR`` is not expanded (mix instructions take no environment interpolation): say so rather
    than call it."""
    if (ref := env_reference(url)) is not None:
        what = "" if url.strip() == ref else f" ({ref})"
        raise ValueError(f"{url!r}: environment variables{what} are not expanded in mix instructions; "
                         "write the URL itself (keys come from the environment through api_key_env)")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number in range
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in url):
        raise ValueError(f"not an http(s) URL: {url!r} (e.g. http://10.0.0.5:8000/v1)")
    if not _host_ok(parts.hostname):
        raise ValueError(f"not an http(s) URL: {url!r}: {parts.hostname!r} is not a host name or IP address "
                         "(e.g. http://10.0.0.5:8000/v1)")
    return url


def check_key_env(name: str | None) -> str | None:
    """``api_key_env`` names a variable; ``$OPENAI_API_KEY`` or the key itself would be looked up verbatim."""
    if name is not None and (name.startswith("$") or not name.strip() or "=" in name or any(c.isspace() for c in name)):
        raise ValueError(f"{name!r} is not an environment variable name; write the name alone, e.g. OPENAI_API_KEY")
    return name


class Deployment(BaseModel):
    """One place a model is served (an endpoint, or the same endpoint with another key)."""

    model_config = ConfigDict(extra="forbid")
    endpoint: str
    api_key_env: str | None = None
    model: str | None = None
    concurrency: int = Field(8, ge=1)

    _endpoint = field_validator("endpoint")(check_endpoint)
    _key_env = field_validator("api_key_env")(check_key_env)


# what a gate-picked slot may give a model that lists roles (``drafter``: the critique writer's other name)
ROLES = ("proposer", "aggregator", "writer", "drafter", "critic", "judge")


# sampling fields beyond OpenAI's that a request may carry (vLLM's names), and what an OpenAI-compatible card's
# ``sampling_extras`` may list: the name each is sent under and the request field it carries. llama.cpp's server
# reads ``repeat_penalty`` only; vLLM reads ``repetition_penalty``. A real OpenAI endpoint refuses
# any of them (400), so none is sent to an upstream whose card does not list it
SAMPLING_EXTRAS = ("top_k", "min_p", "repetition_penalty", "typical_p")
CARD_SAMPLING_EXTRAS = {"top_k": "top_k", "min_p": "min_p", "repetition_penalty": "repetition_penalty",
                        "repeat_penalty": "repetition_penalty", "typical_p": "typical_p"}


MAX_PARAMS_B = 100_000  # billions of parameters: 100 trillion
MAX_CONTEXT = 100_000_000  # tokens


class ModelCard(BaseModel):
    """One model as the mix instructions describe it."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)

    name: str = ""
    provider: ProviderKind
    endpoint: str | None = None  # base URL of an OpenAI-compatible server (".../v1")
    model: str | None = None  # the provider's own model id; defaults to the card name
    api_key_env: str | None = None
    package: str | None = None  # local zoo entry (provider: local)
    path: str | None = None  # explicit GGUF file (provider: local), instead of a zoo package
    records: list[str] = Field(default_factory=list)  # routing-record files (provider: replay)
    price: Price = Field(default_factory=Price)
    privacy: PrivacyTier = "cloud"
    # bounded far above any real model, so that a typo (1e300) is a config error, not an energy and CO2 estimate
    # that every request records as 1e293 kWh
    params_b: float | None = Field(None, gt=0, le=MAX_PARAMS_B)
    family: str | None = None
    context: int = Field(4096, gt=0, le=MAX_CONTEXT)
    # the roles a gate-picked slot may give it (none listed: any); a role that names models keeps them as named
    roles: list[str] = Field(default_factory=list)
    supports_tools: bool = False
    tokens_per_s: float | None = Field(None, gt=0)
    ttft_s: float | None = Field(None, ge=0)
    power_w: float | None = Field(None, gt=0)  # local models: CPU power draw while generating
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(2, ge=0, le=10)
    concurrency: int | None = Field(None, ge=1)  # calls in flight (default: local 4, remote 64, Σ deployments)
    threads: int | None = Field(None, ge=1)  # local models: llama.cpp threads (None: all cores)
    deployments: list[Deployment] = Field(default_factory=list)  # several endpoints serving this model
    balance: Literal["least_busy", "latency"] = "least_busy"
    # the sampling extras an OpenAI-compatible upstream takes (``CARD_SAMPLING_EXTRAS``), sent when a request asks
    # for them; none by default (a real OpenAI endpoint refuses them)
    sampling_extras: list[str] = Field(default_factory=list)
    # whether the request's end user (``user``, ``safety_identifier``) is sent on for the upstream's abuse
    # monitoring: by default to OpenAI (and Anthropic, as metadata.user_id), not to other OpenAI-compatible servers,
    # some of which refuse fields they do not know (Mistral's API answers 422); vLLM's takes ``user``
    send_end_user: bool | None = None

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        return None if v is None else check_endpoint(v)

    _key_env = field_validator("api_key_env")(check_key_env)

    @field_validator("roles")
    @classmethod
    def _roles(cls, v: list[str]) -> list[str]:
        import difflib

        for role in v:
            if role not in ROLES:
                close = difflib.get_close_matches(role, ROLES, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"unknown role {role!r} (roles: {', '.join(ROLES)}){hint}")
        return v

    @field_validator("sampling_extras")
    @classmethod
    def _sampling_extras(cls, v: list[str]) -> list[str]:
        """Only names some server reads: a typo (``topk``) would otherwise never be sent, unsaid."""
        import difflib

        known = list(CARD_SAMPLING_EXTRAS)
        for name in v:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"unknown sampling extra {name!r} (known: {', '.join(known)}){hint}")
        return v

    @model_validator(mode="after")
    def _provider_fields(self) -> ModelCard:
        """A field the provider never reads is a mistake to point out, not to ignore (a working endpoint beside
        deployments that are down, a power draw that changes no energy figure)."""
        if self.deployments and self.provider not in ("openai_compat", "openai"):
            raise ValueError("deployments are supported for openai_compat/openai models")
        if self.deployments and self.endpoint:
            raise ValueError("give either 'endpoint' or 'deployments' (each deployment has its own endpoint), "
                             "not both")
        unread = {"local": ("endpoint", "api_key_env", "records"), "replay": ("endpoint", "package", "path")}.get(
            self.provider, ("package", "path", "records", "threads", "power_w"))
        for name in unread:
            if getattr(self, name):
                raise ValueError(f"{name!r} is not used by provider {self.provider}"
                                 + (" (it is read for local models only)" if name in ("threads", "power_w") else ""))
        if self.sampling_extras and self.provider not in ("openai_compat", "openai"):
            raise ValueError(f"'sampling_extras' is not used by provider {self.provider} (it is read for "
                             "openai_compat and openai models; local models take every one, Anthropic top_k)")
        if self.send_end_user is not None and self.provider not in ("openai_compat", "openai"):
            raise ValueError(f"'send_end_user' is not used by provider {self.provider} (it is read for openai_compat "
                             "and openai models; Anthropic's always gets metadata.user_id)")
        if self.provider == "local" and self.package and self.path:
            raise ValueError("give either 'package' (a zoo model) or 'path' (a GGUF file), not both")
        if self.provider in ("openai_compat",) and not self.endpoint and not self.deployments:
            raise ValueError("provider openai_compat needs an 'endpoint' (base URL ending in /v1)")
        if self.provider == "local" and not (self.package or self.path):
            raise ValueError("provider local needs a 'package' (zoo name) or a 'path' to a GGUF file")
        if self.provider == "replay" and not self.records:
            raise ValueError("provider replay needs 'records' (routing-record files)")
        return self

    @property
    def max_concurrency(self) -> int:
        if self.concurrency is not None:
            return self.concurrency
        if self.deployments:
            return sum(d.concurrency for d in self.deployments)
        return 4 if self.provider == "local" else 64

    @property
    def sends_end_user(self) -> bool:
        """Whether an OpenAI-compatible call carries the request's ``user`` and ``safety_identifier``."""
        return self.send_end_user if self.send_end_user is not None else self.provider == "openai"

    @property
    def sampling_fields(self) -> frozenset[str]:
        """The request's sampling extras (``SAMPLING_EXTRAS``) this model is sent: every one to a local model
        (llama-cpp-python takes them all), ``top_k`` to Anthropic's API, those its card lists to an
        OpenAI-compatible server; a replay model answers as recorded, whatever was asked."""
        if self.provider in ("local", "replay"):
            return frozenset(SAMPLING_EXTRAS)
        if self.provider == "anthropic":
            return frozenset({"top_k"})
        return frozenset(CARD_SAMPLING_EXTRAS[name] for name in self.sampling_extras)

    @property
    def upstream_model(self) -> str:
        return self.model or self.name

    @property
    def expected_tokens_per_s(self) -> float:
        """Generation speed: the card's, else a size-based guess (bigger is slower)."""
        if self.tokens_per_s:
            return self.tokens_per_s
        if self.provider == "local":
            return max(5.0, 45.0 / max(self.params_b or 0.5, 0.1) ** 0.6)
        return 60.0

    @property
    def expected_ttft_s(self) -> float:
        if self.ttft_s is not None:
            return self.ttft_s
        return 0.15 if self.provider == "local" else 0.5

    def cost_usd(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.price.input_per_mtok + output_tokens * self.price.output_per_mtok) / 1e6

    def expected_latency_s(self, output_tokens: int) -> float:
        return self.expected_ttft_s + output_tokens / self.expected_tokens_per_s


def missing_files(card: ModelCard) -> list[str]:
    """The files a model answers from that are not there now (a local model's GGUF, by ``path`` or a zoo package
    not pulled yet; a replay model's records): until they are, every call to it fails."""
    from pathlib import Path

    if card.provider == "replay":
        return [f for f in card.records if not Path(f).expanduser().is_file()]
    if card.provider != "local":
        return []
    if card.path:
        return [] if Path(card.path).expanduser().is_file() else [card.path]
    from moai.local_models import ZOO, is_ready, model_path

    if card.package in ZOO and not is_ready(card.package):
        return [str(model_path(card.package))]
    return []


def complete_card(name: str, card: ModelCard) -> ModelCard:
    """Fill a card's gaps from the local zoo (size, family, context, speed) and its own name."""
    from moai.local_models import ZOO

    updates: dict[str, object] = {"name": name}
    zoo = ZOO.get(card.package or "") if card.provider == "local" else None
    if zoo is not None:
        for field, value in (
            ("params_b", zoo.params_b),
            ("family", zoo.family),
            ("tokens_per_s", zoo.tokens_per_s),
        ):
            if getattr(card, field) is None:
                updates[field] = value
        if "context" not in card.model_fields_set:
            updates["context"] = min(zoo.context, 8192)
    if card.provider == "local" and card.power_w is None:
        updates["power_w"] = 30.0  # two busy cores of a server CPU, a conservative default
    return card.model_copy(update=updates)

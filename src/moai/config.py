"""Mix instructions: the YAML that names the models and the mixes, as validated pydantic models.

Users write these by hand, so every error must point at the place to fix: file, line and field.
We parse with ruamel.yaml (it keeps line numbers), validate with pydantic, and map pydantic's error
location back to the YAML line.
"""

from __future__ import annotations

import difflib
import re
import types
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from moai.catalog import PRIVACY_RANK, ModelCard, PrivacyTier, complete_card, is_env_reference

Strategy = Literal["route", "cascade", "moa", "chain", "fanout", "critique", "auto"]
SensitivePolicy = Literal["local_only", "private_ok", "allow", "redact"]
PickMode = Literal["best", "cheapest", "diverse"]


MIX_PREFIX = "moai/"  # a request for ``moai/<name>`` is for the mix <name> (see Mixture.resolve)
MIN_STATS_REFRESH_S = 0.1
# $1 a token: above any real price (a test rig may use it to spend a budget in one request); 1e300 overflowed costs
MAX_PRICE_PER_MTOK = 1_000_000.0


class ConfigError(ValueError):
    """Bad mix instructions; the message is one line: ``file:line: field: problem``."""


class _FieldProblem(ValueError):
    """A cross-field error that knows its YAML path, so names containing dots still find their line."""

    def __init__(self, loc: tuple[int | str, ...], problem: str) -> None:
        super().__init__(f"{'.'.join(str(p) for p in loc)}: {problem}")
        self.loc = loc
        self.problem = problem


def _masked(url: str) -> str:
    """A database URL as it may be printed: the password, if any, replaced by ``***``."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def check_database_url(url: str) -> str:
    """``moai serve`` opens the database only after the config has loaded, so a URL it cannot use passed
    ``config check`` and then stopped the server: parse it and load its dialect and driver here (no connection)."""
    if is_env_reference(url):
        raise ValueError(f"{_masked(url)!r}: environment variables are not expanded in mix instructions; leave "
                         "settings.database_url out and set MOAI_DATABASE_URL, or pass the --database-url flag")
    example = "e.g. sqlite:///path/moai.db or postgresql+psycopg://user@host/moai"
    if not url.strip():
        raise ValueError(f"an empty URL; leave settings.database_url out to use MOAI_DATABASE_URL, else SQLite under "
                         f"~/.cache/moai ({example})")
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import NoSuchModuleError

    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - ArgumentError, ValueError (a bad port): any of them is a bad URL
        raise ValueError(f"not a database URL: {_masked(url)!r} ({example})") from None
    shown = _masked(url)
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        hint = " (did you mean postgresql+psycopg?)" if parsed.drivername.startswith("postgres") else ""
        raise ValueError(f"{shown!r}: unknown database kind {parsed.drivername!r}{hint}; {example}") from None
    except Exception as e:  # noqa: BLE001 - a dialect that fails to import: the server could not open it either
        raise ValueError(f"{shown!r}: cannot load database kind {parsed.drivername!r}: {e}") from None
    try:
        dialect.import_dbapi()
    except Exception as e:  # noqa: BLE001 - ImportError mostly: the driver is not installed
        raise ValueError(f"{shown!r}: the driver of {parsed.drivername!r} is not installed ({e}); "
                         f"{example}") from None
    if getattr(dialect, "is_async", False):
        raise ValueError(f"{shown!r}: {parsed.drivername!r} is an asyncio driver; moai needs a blocking one "
                         f"({example})")
    return url


class Weights(BaseModel):
    """Soft objectives: utility = quality − cost·$ − latency·s − carbon·gCO2 (each scaled, see policy)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    quality: float = Field(1.0, ge=0)
    cost: float = Field(0.0, ge=0)
    latency: float = Field(0.0, ge=0)
    carbon: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _one_positive(self) -> Weights:
        """All zero scores every model the same: the first model listed would answer every request."""
        if not any((self.quality, self.cost, self.latency, self.carbon)):
            raise ValueError("every weight is 0, so every model scores the same and the first one listed answers "
                             "every request; make at least one weight positive (e.g. quality: 1)")
        return self


class Constraints(BaseModel):
    """Hard limits: a model (or plan) that breaks one is never chosen."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    sensitive_data: SensitivePolicy = "allow"
    max_privacy: PrivacyTier | None = None  # the least-trusted tier this mix may use at all
    max_cost_usd: float | None = Field(None, gt=0)
    max_latency_s: float | None = Field(None, gt=0)
    allowed_models: list[str] | None = None


def _pick_kind(v: Any) -> str | None:
    """Which form a ``pick`` value takes, so an error speaks of that form only (not "a valid integer" for 'worst')."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float) or (isinstance(v, str) and v.strip().lstrip("+-").isdigit()):
        return "<count>"
    return "<mode>" if isinstance(v, str) else None


PickValue = Annotated[
    Annotated[int, Tag("<count>")] | Annotated[PickMode, Tag("<mode>")],
    Discriminator(_pick_kind, custom_error_type="pick_type",
                  custom_error_message="pick is a number ≥ 1 or one of best, cheapest, diverse"),
]


class Pick(BaseModel):
    """A role the gate fills: ``pick: 3`` (the N best, distinct) or ``pick: best|cheapest|diverse``."""

    model_config = ConfigDict(extra="forbid")
    pick: PickValue = "best"
    among: list[str] | None = None  # restrict the candidates for this role
    allow_repeats: bool = False

    @field_validator("pick")
    @classmethod
    def _positive(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError("pick must be ≥ 1")
        return v


def _role_kind(v: Any) -> str | None:
    """A role is a name, a list of names or a pick: validate the input against the form it has, so that
    ``{pick: 0}`` reports the pick and not "Input should be a valid string" from the name branch."""
    if isinstance(v, str):
        return "<name>"
    if isinstance(v, list):
        return "<list>"
    if isinstance(v, dict | Pick):
        return "<pick>"
    return None


Role = Annotated[
    Annotated[str, Tag("<name>")] | Annotated[list[str], Tag("<list>")] | Annotated[Pick, Tag("<pick>")],
    Discriminator(_role_kind, custom_error_type="role_type",
                  custom_error_message="a role is a model name, a list of model names, or "
                                       "{pick: N | best | cheapest | diverse, among: [...]}"),
]

LiveKnob = Literal["weights.cost", "weights.latency", "threshold", "difficulty_threshold"]


class LiveTune(BaseModel):
    """Hold a spending or latency target online: the server nudges one knob of the mix from its telemetry."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    target: str  # cost_share=X | max_cost_usd_per_1k=X | p95_latency_s=X (quality needs grades: offline only)
    knob: LiveKnob | None = None  # default: route → the weight the target trades; cascade/auto → its threshold
    min_samples: int = Field(50, ge=1, le=100_000)  # requests seen since the last change before judging
    window: int = Field(500, ge=1, le=1_000_000)
    max_step: float = Field(1.5, gt=1, le=100)  # one change multiplies or divides the knob by at most this
    deadband: float = Field(0.05, ge=0, lt=1)

    @field_validator("target")
    @classmethod
    def _target(cls, v: str) -> str:
        from moai.tuning.targets import parse_target

        t = parse_target(v)  # TargetError is a ValueError: pydantic reports it at the field
        if t.kind == "quality":
            raise ValueError("a quality target needs graded answers; tune it offline with `moai mix tune`")
        return v

    @model_validator(mode="after")
    def _samples_fit_the_window(self) -> LiveTune:
        if self.min_samples > self.window:  # the window never holds enough requests: the tuner would never act
            raise ValueError(f"min_samples ({self.min_samples}) cannot exceed window ({self.window}): the tuner "
                             "judges the last `window` requests and would never act")
        return self


class ChainStep(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: Role = Field(default_factory=Pick)
    instruction: str = "Improve the previous answer: fix mistakes, keep what is right."


class Mix(BaseModel):
    """One mix: a strategy, its roles, and the weights and constraints the gate applies."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    strategy: Strategy = "route"
    description: str = ""
    models: list[str] | None = None  # the pool this mix draws from (default: every model)
    weights: Weights = Field(default_factory=Weights)
    constraints: Constraints = Field(default_factory=Constraints)
    fallbacks: list[str] | Literal["gate"] | None = "gate"
    max_tokens: int = Field(512, ge=1, le=32768)  # default completion budget per call
    temperature: float | None = Field(None, ge=0, le=2)
    # conversations (a session: the request's `user` field or x-moai-session header)
    sessions: Literal["sticky", "escalate", "off"] = "sticky"  # escalate: may move to a stronger model only
    # moa / fanout
    layers: int = Field(1, ge=1, le=5)
    proposers: Role | None = None
    aggregator: Role | None = None
    judge: Role | None = None
    # chain
    steps: list[ChainStep] | None = None
    # critique
    writer: Role | None = None
    critic: Role | None = None
    rounds: int = Field(1, ge=1, le=5)
    # review: the critic reads the draft; python: it writes a program recomputing a numeric answer (run
    # sandboxed): the same number approves, a different one has the answer rewritten from the program
    check: Literal["review", "python"] = "review"
    # cascade
    cascade: list[str] | None = None  # explicit order; default: by expected cost, cheapest first
    threshold: float = Field(0.5, ge=0, le=1)
    scorer: Literal["gate", "judge"] = "gate"
    # auto
    collaborate: str | None = None  # the mix to use for hard queries
    difficulty_threshold: float = Field(0.5, ge=0, le=1)
    # live tuning (route, cascade, auto)
    live_tune: LiveTune | None = None

    @model_validator(mode="after")
    def _strategy_fields(self) -> Mix:
        if self.models == []:
            raise _FieldProblem(("models",), "an empty pool; leave 'models' out to draw from every model")
        if self.constraints.allowed_models == []:
            raise _FieldProblem(("constraints", "allowed_models"),
                                "allows no model; leave it out to allow every model")
        if self.cascade == []:  # an empty list used to mean the default order, as if it were left out
            raise _FieldProblem(("cascade",), "an empty cascade; leave 'cascade' out to try the pool cheapest first")
        cascade = self.cascade or []
        for i, name in enumerate(cascade):
            if name in cascade[:i]:
                raise _FieldProblem(("cascade", i), f"{name!r} is listed twice; a cascade tries each model once")
        need = {
            "moa": ["proposers", "aggregator"],
            "fanout": ["proposers"],
            "chain": ["steps"],
            "critique": ["writer", "critic"],
            "auto": ["collaborate"],
        }.get(self.strategy, [])
        missing = [f for f in need if getattr(self, f) in (None, [])]
        if missing:
            raise ValueError(f"strategy {self.strategy} needs {', '.join(missing)}")
        if self.check == "python" and (self.strategy != "critique" or self.rounds != 1):
            raise ValueError("check: python is one program check in a critique mix (strategy: critique, rounds: 1)")
        if self.live_tune is not None and self.live_knob() is None:
            what = (f"knob {self.live_tune.knob} does not apply to" if self.live_tune.knob is not None
                    else "live tuning has no knob for")
            raise ValueError(f"live_tune: {what} strategy {self.strategy} "
                             "(route: weights.cost|weights.latency; cascade: threshold; auto: difficulty_threshold)")
        return self

    def live_knob(self) -> str | None:
        """The knob live tuning moves for this mix, or None when its strategy has none of that kind."""
        from moai.tuning.targets import parse_target

        if self.live_tune is None:
            return None
        allowed = {"route": ("weights.cost", "weights.latency"), "cascade": ("threshold",),
                   "auto": ("difficulty_threshold",)}.get(self.strategy, ())
        knob = self.live_tune.knob
        if knob is None and allowed:
            knob = allowed[0] if self.strategy != "route" else f"weights.{parse_target(self.live_tune.target).knob}"
        return knob if knob in allowed else None


class CacheSettings(BaseModel):
    """Response cache: exact (same request) or semantic (a paraphrase, same mix and privacy level)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    mode: Literal["off", "exact", "semantic"] = "exact"
    ttl_s: float = Field(3600.0, gt=0)
    max_entries: int = Field(1024, ge=1)
    threshold: float = Field(0.90, gt=0, le=1)
    per_key: bool = True  # a separate cache per gateway key (false: keys share answers)


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    # a --database-url flag wins over this; unset: MOAI_DATABASE_URL, else sqlite under ~/.cache/moai
    database_url: str | None = None
    carbon_zone: str = "WOR"  # electricity mix zone for CO2 (ISO-3 or WOR)
    grid_g_per_kwh: float | None = Field(None, gt=0)  # explicit grid intensity overrides the zone
    gate: str | None = None  # a trained gate directory; default: the one shipped with moai
    max_body_bytes: int = Field(4 << 20, gt=0)
    # how often live statistics are re-read from the database; more often than 10 times a second keeps an idle
    # server busy re-reading them
    stats_refresh_s: float = Field(2.0, ge=MIN_STATS_REFRESH_S)
    # requests older than this many days are deleted with their calls and feedback (hourly; never what a key's
    # budget still sums); unset: kept for ever (`moai db prune` deletes on demand)
    retention_days: float | None = Field(None, gt=0)
    # the sensitive-data policy every request gets at least: each mix's own is kept where stricter, and a model
    # called by name (which has no mix of its own) gets this one
    sensitive_data: SensitivePolicy = "allow"
    # a key's feedback moves routing for that key's requests only (keyless feedback, for everyone's): one tenant's
    # ratings cannot steer another's traffic. False: every rating moves routing for every request
    feedback_per_key: bool = True
    request_timeout_s: float | None = Field(None, gt=0)  # whole-request limit (504 / in-band error event)
    breaker_failures: int = Field(3, ge=1)  # consecutive failures that open a model's circuit
    breaker_cooldown_s: float = Field(30.0, gt=0)  # how long an open circuit waits before a probe
    cache: CacheSettings | None = None  # response cache (default: off, or the MOAI_CACHE variables)
    # browser origins allowed to call the API (CORS), e.g. ["https://chat.example.com"] or ["*"]; none by default
    cors_origins: list[str] = Field(default_factory=list)

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, v: str | None) -> str | None:
        return None if v is None else check_database_url(v)

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, v: list[str]) -> list[str]:
        for origin in v:
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ValueError(f"{origin!r} is not an origin: '*' or scheme://host[:port], with no path")
        return v

    @field_validator("carbon_zone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        """An unknown zone used to pass `config check` and crash every command that builds the carbon model."""
        from ecologits.electricity_mix_repository import electricity_mixes

        zones = sorted({m.zone.upper() for m in electricity_mixes.list_electricity_mixes()})
        if v.strip().upper() not in zones:
            close = difflib.get_close_matches(v.strip().upper(), zones, n=3)
            hint = f" (did you mean {' or '.join(filter(None, [', '.join(close[:-1]), close[-1]]))}?)" if close else ""
            raise ValueError(f"unknown zone {v!r}{hint}; use WOR (world average) or an ISO 3166-1 alpha-3 country "
                             f"code such as FRA, DEU, USA ({len(zones)} zones, from EcoLogits' electricity mixes)")
        return v.strip().upper()


class Config(BaseModel):
    """The whole mix instructions file."""

    model_config = ConfigDict(extra="forbid")
    models: dict[str, ModelCard]
    mixes: dict[str, Mix]
    settings: Settings = Field(default_factory=Settings)
    source: str = Field("<embedded>", exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _plain_numbers(cls, data: Any) -> Any:
        """Before pydantic's lax coercion turns ``true`` into 1 and ``"2"`` into 2.0 (it cannot be told after)."""
        models = data.get("models") if isinstance(data, dict) else None
        if isinstance(models, dict):
            for name, card in models.items():
                _check_plain_values(("models", name), card, ModelCard)
        mixes = data.get("mixes") if isinstance(data, dict) else None
        if isinstance(mixes, dict):
            for name, mix in mixes.items():
                _check_plain_values(("mixes", name), mix, Mix)
        if isinstance(data, dict):
            _check_plain_values(("settings",), data.get("settings"), Settings)
        return data

    @model_validator(mode="after")
    def _references(self) -> Config:
        if not self.models:
            raise ValueError("at least one model is needed")
        if not self.mixes:
            raise ValueError("at least one mix is needed")
        _check_names(self.models, self.mixes)
        for name, card in self.models.items():
            _check_package(name, card)
            _check_upstream(name, card)
        self.models = {name: complete_card(name, card) for name, card in self.models.items()}
        for mix_name, mix in self.mixes.items():
            for fld, ref in _model_refs(mix):
                if ref not in self.models:
                    path = tuple(int(p) if p.isdigit() else p for p in fld.split("."))
                    raise _FieldProblem(("mixes", mix_name, *path),
                                        f"unknown model {ref!r}{_did_you_mean(ref, self.models)}")
            _check_listed(mix_name, mix)
            if mix.collaborate is not None and mix.collaborate not in self.mixes:
                raise _FieldProblem(("mixes", mix_name, "collaborate"), f"unknown mix {mix.collaborate!r}")
            if not self.pool(mix):
                raise _FieldProblem(("mixes", mix_name, "constraints", "allowed_models"),
                                    f"allows none of the mix's models ({', '.join(mix.models or [])})")
        _check_collaboration_cycles(self.mixes)
        return self

    def mix(self, name: str) -> Mix:
        return self.mixes[name]

    def pool(self, mix: Mix) -> list[ModelCard]:
        """The models a mix may draw from, after its pool and allowed-model constraint."""
        names = mix.models or list(self.models)
        if mix.constraints.allowed_models is not None:
            names = [n for n in names if n in mix.constraints.allowed_models]
        return [self.models[n] for n in names]


def _plain_number_problem(value: Any) -> str | None:
    """Why ``value`` is not to be read as a number, or None: a boolean, or a number written as a string."""
    if isinstance(value, bool):
        return f"expects a number, not {str(value).lower()}"
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return None  # not a number at all: pydantic says so
        return f"expects a number, not the string {value!r}; write it without quotes"
    return None


def _check_plain_values(path: tuple[int | str, ...], values: Any, model: type[BaseModel]) -> None:
    """Numbers as YAML numbers and switches as YAML booleans, nested sections and lists of them included, before
    pydantic's lax coercion reads them: ``price: {input_per_mtok: true}`` was billed at 1 USD per million tokens,
    ``feedback_per_key: "no"`` read as false, ``max_tokens: "100"`` as 100."""
    if not isinstance(values, dict):
        return
    for key, value in values.items():
        field = model.model_fields.get(key) if isinstance(key, str) else None
        if field is None:
            continue
        forms = _annotation_forms(field.annotation)
        if bool in forms:
            if isinstance(value, str):
                raise _FieldProblem((*path, key), f"expects true or false, not the string {value!r}")
        elif any(form in (int, float) for form in forms) and (problem := _plain_number_problem(value)):
            raise _FieldProblem((*path, key), problem)
        for form in forms:  # (a role's ``pick`` reads its own forms, "2" included: see PickValue)
            if isinstance(form, type) and issubclass(form, BaseModel) and form is not Pick:
                _check_plain_values((*path, key), value, form)
            elif get_origin(form) is list and isinstance(value, list):
                item = get_args(form)[0]
                if isinstance(item, type) and issubclass(item, BaseModel):
                    for i, v in enumerate(value):
                        _check_plain_values((*path, key, i), v, item)


def _check_names(models: dict[str, ModelCard], mixes: dict[str, Mix]) -> None:
    """Names are what clients send as the request's ``model``: each must reach one thing only. A mix is called as
    ``<mix>`` or ``moai/<mix>`` before any model of that name (so a mix may take a model's name only to route to
    that model alone), and a name that differs from another only in case is one slip away from another model (and
    its privacy tier)."""
    for section, names in (("models", list(models)), ("mixes", list(mixes))):
        kind = section[:-1] if section == "models" else "mix"
        seen: dict[str, str] = {}
        for name in names:
            if not name:
                raise _FieldProblem((section, name), f"a {kind} name cannot be empty")
            if any(c.isspace() for c in name):
                raise _FieldProblem((section, name), f"{name!r}: a {kind} name cannot contain spaces or other "
                                    "whitespace (clients send it as the request's model)")
            other = seen.setdefault(name.casefold(), name)
            if other != name:
                raise _FieldProblem((section, name), f"{kind} {name!r} differs from {kind} {other!r} only in case; "
                                    f"a request with the wrong case would reach the other {kind}: rename one")
    mix_folded = {m.casefold(): m for m in mixes}
    for name in models:
        other = mix_folded.get(name.casefold())
        if other is not None and other != name:
            raise _FieldProblem(("models", name), f"model {name!r} differs from mix {other!r} only in case; a "
                                "request with the wrong case would reach the other one: rename one")
        mix = mixes.get(name)
        if mix is not None and (mix.strategy != "route" or mix.models != [name]):
            raise _FieldProblem(("models", name), f"model {name!r} has the name of mix {name!r}: a request for "
                                f"{name!r} gets the mix, never the model; rename the model or the mix (a mix may "
                                f"share a model's name only as {{strategy: route, models: [{name}]}})")
        if name.startswith(MIX_PREFIX):
            called = name.removeprefix(MIX_PREFIX)
            raise _FieldProblem(("models", name), f"model {name!r} starts with {MIX_PREFIX!r}, which names a mix: a "
                                f"request for {name!r} is one for mix {called!r}; rename the model")


def _check_upstream(name: str, card: ModelCard) -> None:
    """What is sent upstream: the model id and endpoint as written, and prices a bill can be computed from."""
    places: list[tuple[tuple[int | str, ...], str | None, str | None]] = [((), card.model, card.endpoint)]
    places += [(("deployments", i), d.model, d.endpoint) for i, d in enumerate(card.deployments)]
    for path, model, endpoint in places:
        if model is not None and is_env_reference(model):
            raise _FieldProblem(("models", name, *path, "model"), f"{model!r}: environment variables are not "
                                "expanded in mix instructions; write the provider's model id itself")
        if endpoint is not None and (problem := _endpoint_problem(endpoint, card.provider)):
            raise _FieldProblem(("models", name, *path, "endpoint"), problem)
    for fld in ("input_per_mtok", "output_per_mtok"):
        usd = getattr(card.price, fld)
        if usd > MAX_PRICE_PER_MTOK:
            raise _FieldProblem(("models", name, "price", fld), f"{usd:g} USD per million tokens is above any "
                                f"real price (at most {MAX_PRICE_PER_MTOK:,.0f}, $1 a token)")


def _endpoint_problem(url: str, provider: str) -> str | None:
    """An endpoint is the server's base URL: the provider appends the API's path to it, so a full request URL (or
    one with a query or fragment, which the appended path would land inside) posts to a path that does not exist."""
    base = "e.g. http://host:8000/v1"
    if "?" in url or "#" in url:
        return f"{url!r}: the endpoint is the server's base URL ({base}), with no query string or fragment"
    path = urlsplit(url).path.rstrip("/").lower()
    suffix = "/messages" if provider == "anthropic" else "/chat/completions"
    for full in ("/chat/completions", "/completions", suffix):
        if path.endswith(full):
            return (f"{url!r}: the endpoint is the server's base URL ({base}); moai adds {suffix} itself, so "
                    f"leave {full} out")
    return None


def _check_listed(mix_name: str, mix: Mix) -> None:
    """A cascade, or fallbacks, run only the models the mix may use: one listed outside them used to be dropped
    unsaid (a request whose model failed got a 502, its fallback never tried)."""
    lists = {  # the names, what to say outside the mix's models, what outside allowed_models
        "cascade": (mix.cascade or [], "; add it there or leave it out of the cascade",
                    ", so the cascade would never call it"),
        "fallbacks": (mix.fallbacks if isinstance(mix.fallbacks, list) else [],
                      ", so it would never be tried; add it there", ", so it would never be tried"),
    }
    allowed = mix.constraints.allowed_models
    for field, (names, not_in_models, not_allowed) in lists.items():
        for i, name in enumerate(names):
            if mix.models is not None and name not in mix.models:
                raise _FieldProblem(("mixes", mix_name, field, i),
                                    f"{name!r} is not among the mix's models ({', '.join(mix.models)}){not_in_models}")
            if allowed is not None and name not in allowed:
                raise _FieldProblem(("mixes", mix_name, field, i), f"{name!r} is not in "
                                    f"constraints.allowed_models ({', '.join(allowed)}){not_allowed}")


def _check_package(name: str, card: ModelCard) -> None:
    """A local model's zoo package must exist now, not fail on the first request that routes to it."""
    from moai.local_models import ZOO

    if card.provider == "local" and card.package is not None and card.package not in ZOO:
        raise _FieldProblem(("models", name, "package"),
                            f"unknown local package {card.package!r}; known: {', '.join(ZOO)}")


def _check_collaboration_cycles(mixes: dict[str, Mix]) -> None:
    """An ``auto`` mix plans its hard queries with its ``collaborate`` mix, and an ``auto`` target does the same
    in turn: a chain that comes back to a mix already on it would recurse on every request, so refuse it here."""
    for start, mix in mixes.items():
        if mix.strategy != "auto":
            continue
        path = [start]
        current = mix
        while current.strategy == "auto" and current.collaborate is not None:
            nxt = current.collaborate
            if nxt in path:
                loop = path[path.index(nxt):] + [nxt]
                problem = (f"mix {nxt!r} collaborates with itself" if len(loop) == 2 else
                           f"collaboration loops back to {nxt!r}: {' → '.join(loop)}")
                raise _FieldProblem(("mixes", path[-1], "collaborate"), problem + "; name a mix whose strategy "
                                    "is not auto, or an auto mix that ends in one")
            path.append(nxt)
            current = mixes[nxt]


def _model_refs(mix: Mix) -> list[tuple[str, str]]:
    """Every model name a mix mentions, with the field it is in, down to a list's item (for error messages that
    point at the item's own line)."""
    refs: list[tuple[str, str]] = [(f"models.{i}", m) for i, m in enumerate(mix.models or [])]
    refs += [(f"cascade.{i}", m) for i, m in enumerate(mix.cascade or [])]
    refs += [(f"constraints.allowed_models.{i}", m) for i, m in enumerate(mix.constraints.allowed_models or [])]
    if isinstance(mix.fallbacks, list):
        refs += [(f"fallbacks.{i}", m) for i, m in enumerate(mix.fallbacks)]
    roles: list[tuple[str, Role | None]] = [
        (f, getattr(mix, f)) for f in ("proposers", "aggregator", "judge", "writer", "critic")
    ]
    roles += [(f"steps.{i}.model", s.model) for i, s in enumerate(mix.steps or [])]
    for fld, role in roles:
        if isinstance(role, str):
            refs.append((fld, role))
        elif isinstance(role, list):
            refs += [(f"{fld}.{i}", m) for i, m in enumerate(role)]
        elif isinstance(role, Pick) and role.among:
            refs += [(f"{fld}.among.{i}", m) for i, m in enumerate(role.among)]
    return refs


# ---------------------------------------------------------------- loading with line-precise errors


def _line_of(node: Any, loc: tuple[int | str, ...]) -> int | None:
    """Walk ruamel's commented containers along a pydantic error path; return a 1-based line."""
    line: int | None = None
    for key in loc:
        lc = getattr(node, "lc", None)
        if lc is None:
            break
        try:
            if hasattr(node, "keys") and key in node:  # a mapping's key may be a number in YAML
                line = lc.key(key)[0] + 1
                node = node[key]
            elif isinstance(key, int) and isinstance(node, list) and 0 <= key < len(node):
                line = lc.item(key)[0] + 1
                node = node[key]
            else:
                break
        except (KeyError, AttributeError, TypeError):
            break
    if line is None and getattr(node, "lc", None) is not None:
        line = node.lc.line + 1
    return line


_LEGACY_TAGS = {"str", "list[str]", "Pick", "int", "float", "bool", "none"}


def _is_branch_tag(part: int | str) -> bool:
    """pydantic's names for union branches and wrapped validators: ours are ``<...>``, smart unions use the type."""
    return isinstance(part, str) and (
        (part.startswith("<") and part.endswith(">")) or part in _LEGACY_TAGS
        or part == "[key]" or part.startswith(("literal[", "function-", "list[", "dict["))
    )


def _child(node: Any, key: int | str) -> Any:
    if hasattr(node, "keys"):
        return node.get(key)
    if isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
        return node[key]
    return None


def _clean_loc(loc: tuple[int | str, ...], data: Any = None) -> tuple[int | str, ...]:
    """Drop pydantic's union-branch tags (e.g. '<pick>', 'str') so the path matches the YAML. A part that is a
    key of the YAML at that place is kept whatever it looks like (a model may be called ``str``)."""
    out: list[int | str] = []
    node = data
    for part in loc:
        if _is_branch_tag(part) and not (hasattr(node, "keys") and part in node):
            continue
        out.append(part)
        node = _child(node, part)
    return tuple(out)


def _did_you_mean(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.75)
    return f"; did you mean {close[0]!r}?" if close else ""


def _annotation_forms(tp: Any) -> list[Any]:
    """The plain types a field annotation may take: Annotated and unions unwrapped."""
    origin = get_origin(tp)
    if origin is Annotated:
        return _annotation_forms(get_args(tp)[0])
    if origin in (Union, types.UnionType):
        return [form for arg in get_args(tp) for form in _annotation_forms(arg)]
    return [tp]


def _field_names(loc: tuple[int | str, ...]) -> list[str]:
    """The keys the mapping at ``loc`` may hold (for "did you mean"): walk the models' annotations from Config."""
    forms: list[Any] = [Config]
    for key in loc:
        nxt: list[Any] = []
        for tp in forms:
            if isinstance(tp, type) and issubclass(tp, BaseModel):
                field = tp.model_fields.get(key) if isinstance(key, str) else None
                if field is not None:
                    nxt += _annotation_forms(field.annotation)
            elif get_origin(tp) is dict:
                nxt += _annotation_forms(get_args(tp)[1])
            elif get_origin(tp) is list and isinstance(key, int):
                nxt += _annotation_forms(get_args(tp)[0])
        forms = nxt
    for tp in forms:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            return [n for n, f in tp.model_fields.items() if not f.exclude]
    return []


def _choose_error(errors: list[Any], data: Any) -> Any:
    """The error to show. pydantic lists a required field before the unknown keys beside it, so a typo such as
    ``modles:`` would read "models: Field required" and never name the typo: report the typo then."""
    first = errors[0]
    if first["type"] == "missing":
        missing = _clean_loc(tuple(first["loc"]), data)
        for err in errors[1:]:
            loc = _clean_loc(tuple(err["loc"]), data)
            if (err["type"] == "extra_forbidden" and loc[:-1] == missing[:-1]
                    and _did_you_mean(str(loc[-1]), [missing[-1]])):
                return err
    return first


def _message(err: Any, loc: tuple[int | str, ...]) -> str:
    """pydantic's message, with the key or value it meant where a name was misspelt."""
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["loc"] and err["loc"][-1] == "[key]":  # `1:` or `null:` as a model or mix name
        return f"a name must be a string, not {err.get('input')!r}; put it in quotes"
    if err["type"] == "extra_forbidden" and loc:
        names = _field_names(loc[:-1])
        if "input_per_mtok" in names and (unit := _per_token_hint(str(loc[-1]), err.get("input"))):
            return f"unknown key {loc[-1]!r}: {unit}"
        hint = _did_you_mean(str(loc[-1]), names)
        if not hint and 0 < len(names) <= 8:
            hint = f"; known: {', '.join(names)}"
        return f"unknown key {loc[-1]!r}{hint}"
    if err["type"] == "literal_error" and isinstance(err.get("input"), str):
        expected = re.findall(r"'([^']*)'", str((err.get("ctx") or {}).get("expected", "")))
        return msg + _did_you_mean(err["input"], expected)
    return msg


# LiteLLM's price keys (USD per token) and the key of the same price here (USD per million tokens)
_PER_TOKEN_KEYS = {"input_cost_per_token": "input_per_mtok", "output_cost_per_token": "output_per_mtok"}
# No real price per million tokens is this low (the cheapest hosted models and cached inputs cost about $0.01 and
# up), and a price per token is below it for any model under $1,000 per million: a figure under it that is not 0
# is almost surely a per-token price written where a per-million one goes, which bills 10^6 times too little.
MIN_PRICE_PER_MTOK = 0.001


def _per_token_hint(key: str, value: Any) -> str | None:
    """For a price given per token (LiteLLM's ``input_cost_per_token``): the unit here and the figure to write."""
    ours = _PER_TOKEN_KEYS.get(key)
    if ours is None:
        return None
    try:
        converted = f"{ours}: {float(value) * 1e6:.10g}"
    except (TypeError, ValueError):
        converted = f"{ours} (the per-token price × 1,000,000)"
    return f"prices here are USD per million tokens, not per token; write {converted}"


def price_warnings(cfg: Config) -> list[str]:
    """``models.NAME.price.FIELD: ...`` for each non-zero price below ``MIN_PRICE_PER_MTOK`` (a per-token figure in
    a per-million field, most likely), with the per-million figure it would stand for. 0 (a free or local model)
    is no warning. Warnings, not errors: the config stays valid."""
    out: list[str] = []
    for name, card in cfg.models.items():
        for fld in ("input_per_mtok", "output_per_mtok"):
            usd = getattr(card.price, fld)
            if 0 < usd < MIN_PRICE_PER_MTOK:
                out.append(f"models.{name}.price.{fld}: {usd:g} USD per million tokens is below any real price "
                           f"(under {MIN_PRICE_PER_MTOK:g}); if it is a price per token, write {usd * 1e6:.10g}")
    return out


def cascade_warnings(cfg: Config) -> list[str]:
    """``mixes.NAME...: ...`` for each cascade of one model: it never escalates, so its threshold and scorer change
    nothing. A warning: it still answers (as a route to that model would)."""
    out: list[str] = []
    for name, mix in cfg.mixes.items():
        if mix.strategy != "cascade":
            continue
        models = mix.cascade or [c.name for c in cfg.pool(mix)]
        if len(models) == 1:
            where = f"mixes.{name}.cascade" if mix.cascade else f"mixes.{name}"
            out.append(f"{where}: a cascade of one model ({models[0]}) never escalates, so threshold and scorer "
                       "change nothing; list two or more models, or use strategy: route")
    return out


# the strategies that read each strategy-specific field of a mix (a field set on another is never read)
READ_BY: dict[str, tuple[str, ...]] = {
    "layers": ("moa",), "proposers": ("moa", "fanout"), "aggregator": ("moa", "fanout"),
    "judge": ("fanout", "cascade"), "steps": ("chain",), "writer": ("critique",), "critic": ("critique",),
    "rounds": ("critique",), "check": ("critique",), "cascade": ("cascade",), "threshold": ("cascade",),
    "scorer": ("cascade",), "collaborate": ("auto",), "difficulty_threshold": ("auto",),
}


def mix_field_warnings(cfg: Config) -> list[str]:
    """``mixes.NAME.FIELD: ...`` for a field the mix's strategy never reads (``proposers`` on a route mix: the mix
    runs as if it were not there), and for a model its ``models`` lists twice."""
    out = []
    for name, mix in cfg.mixes.items():
        for field, readers in READ_BY.items():
            if field in mix.model_fields_set and mix.strategy not in readers:
                out.append(f"mixes.{name}.{field}: not read by strategy {mix.strategy} (only by "
                           f"{' and '.join(readers)}); it has no effect")
        twice = sorted({m for m in mix.models or [] if (mix.models or []).count(m) > 1})
        if twice:
            out.append(f"mixes.{name}.models: {', '.join(twice)} listed more than once")
    return out


def privacy_warnings(cfg: Config) -> list[str]:
    """``mixes.NAME.constraints.max_privacy: ...`` for each mix whose privacy limit leaves none of its models: every
    request to it is refused (422 no_eligible_model)."""
    out = []
    for name, mix in cfg.mixes.items():
        limit, pool = mix.constraints.max_privacy, cfg.pool(mix)
        if limit is not None and not any(PRIVACY_RANK[c.privacy] <= PRIVACY_RANK[limit] for c in pool):
            tiers = ", ".join(f"{c.name}: {c.privacy}" for c in pool)
            out.append(f"mixes.{name}.constraints.max_privacy: {limit!r} leaves none of the mix's models ({tiers}): "
                       "every request to it is refused")
    return out


def config_warnings(cfg: Config) -> list[str]:
    """Everything ``config check`` warns about (the config stays valid): prices, one-model cascades, privacy limits
    that leave no model, fields the strategy never reads."""
    return price_warnings(cfg) + cascade_warnings(cfg) + privacy_warnings(cfg) + mix_field_warnings(cfg)


def _one_line(text: str) -> str:
    """Errors are one line: escape newlines (a YAML key may contain one)."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def parse_config(text: str, source: str = "<string>") -> Config:
    """Parse and validate mix instructions; raise ConfigError with ``file:line: field: problem``."""
    try:
        data = YAML(typ="rt").load(text)
    except MarkedYAMLError as e:
        line = e.problem_mark.line + 1 if e.problem_mark else "?"
        raise ConfigError(f"{source}:{line}: YAML syntax: {_one_line(str(e.problem))}") from None
    except YAMLError as e:  # e.g. control characters (ReaderError)
        raise ConfigError(f"{source}:1: YAML syntax: {_one_line(str(e))}") from None
    except RecursionError:
        raise ConfigError(f"{source}:1: YAML syntax: nested too deeply") from None
    except TypeError:  # ruamel builds a mapping whose key is a list or mapping ({[a]: 1}) and cannot hash it
        raise ConfigError(f"{source}:1: YAML syntax: a key must be a plain value, not a list or mapping") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}:1: the file must be a mapping with 'models' and 'mixes'")
    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        err = _choose_error(e.errors(), data)
        loc = _clean_loc(tuple(err["loc"]), data)
        msg = _message(err, loc)
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, _FieldProblem):
            loc, msg = loc + cause.loc, cause.problem
        elif not loc and ": " in msg and msg.split(": ", 1)[0].count(".") >= 1:
            # cross-field errors name their own path: "mixes.d.models: unknown model 'b'"
            path, msg = msg.split(": ", 1)
            loc = tuple(int(p) if p.isdigit() else p for p in path.split("."))
        try:
            line = _line_of(data, loc) or 1
        except RecursionError:
            line = 1
        field = _one_line(".".join(str(p) for p in loc)) or "(top level)"
        msg = _one_line(msg)
        raise ConfigError(f"{source}:{line}: {field}: {msg}") from None
    cfg.source = source
    return cfg


def _resolve_paths(cfg: Config, base: Path) -> None:
    """Relative file names in a config (replay ``records``, a local model's ``path``, ``settings.gate``) mean
    the config file's folder, not wherever the command happens to run; absolute and ``~`` paths stay as written."""

    def resolve(name: str) -> str:
        return name if Path(name).expanduser().is_absolute() else str(base / name)

    for name, card in cfg.models.items():
        update: dict[str, Any] = {}
        if card.records:
            update["records"] = [resolve(r) for r in card.records]
        if card.path:
            update["path"] = resolve(card.path)
        if update:
            cfg.models[name] = card.model_copy(update=update)
    if cfg.settings.gate:
        cfg.settings.gate = resolve(cfg.settings.gate)


def load_config(path: str | Path | None = None) -> Config:
    """Load a mix-instructions file, or the embedded default when ``path`` is None."""
    if path is None:
        text = resources.files("moai").joinpath("default_config.yaml").read_text()
        return parse_config(text, "<embedded default_config.yaml>")
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{p}:0: cannot read: {e.strerror}") from None
    except UnicodeDecodeError as e:  # a binary file, or another encoding: YAML here is UTF-8
        line = e.object[: e.start].count(b"\n") + 1
        raise ConfigError(f"{p}:{line}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start})") from None
    cfg = parse_config(text, str(p))
    _resolve_paths(cfg, p.parent.absolute())
    return cfg

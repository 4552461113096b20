"""One mix of the mix instructions: its strategy, its roles, and the weights, constraints and live tuning the gate
applies, as pydantic models."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from moai.catalog import PrivacyTier
from moai.config_errors import FieldProblem

Strategy = Literal["route", "cascade", "moa", "chain", "fanout", "critique", "auto"]
SensitivePolicy = Literal["local_only", "private_ok", "allow", "redact"]
PickMode = Literal["best", "cheapest", "diverse"]


# a weight's upper bound, as a request's ``moai.weights`` has it: far above any useful trade-off (the gate counts
# cost in cents, so a cost weight of 1e6 makes a millionth of a dollar weigh 100 times the whole 0-1 quality scale),
# and far below where a utility overflows (1e308 made them NaN: the gate's choice and `moai route --json` with them)
MAX_WEIGHT = 1e6


class Weights(BaseModel):
    """Soft objectives: utility = quality − cost·$ − latency·s − carbon·gCO2 (each scaled, see policy)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    quality: float = Field(1.0, ge=0, le=MAX_WEIGHT)
    cost: float = Field(0.0, ge=0, le=MAX_WEIGHT)
    latency: float = Field(0.0, ge=0, le=MAX_WEIGHT)
    carbon: float = Field(0.0, ge=0, le=MAX_WEIGHT)

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
            raise FieldProblem(("models",), "an empty pool; leave 'models' out to draw from every model")
        if self.constraints.allowed_models == []:
            raise FieldProblem(("constraints", "allowed_models"),
                                "allows no model; leave it out to allow every model")
        if self.cascade == []:  # an empty list used to mean the default order, as if it were left out
            raise FieldProblem(("cascade",), "an empty cascade; leave 'cascade' out to try the pool cheapest first")
        cascade = self.cascade or []
        for i, name in enumerate(cascade):
            if name in cascade[:i]:
                raise FieldProblem(("cascade", i), f"{name!r} is listed twice; a cascade tries each model once")
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

"""The engine behind every surface (HTTP server, CLI, Python API): request → mix → plan → answer → record.

One place decides which mix a ``model`` string names, applies hard constraints, asks the chooser,
builds the strategy's plan, runs it on the executor, and writes the telemetry record.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from types import EllipsisType
from typing import TYPE_CHECKING, Any

from moai import deadline
from moai.cache import ResponseCache
from moai.catalog import PRIVACY_RANK, ModelCard
from moai.config import Config, Mix, Weights, load_config
from moai.gate.rules import RuleChooser, message_text
from moai.providers.base import ChatParams, Delta, ProviderError, call_tokens, dropped_extras, text_tokens
from moai.providers.registry import ProviderRegistry
from moai.recording import Recording
from moai.refusals import BadRequest, UnknownModel, refusal
from moai.session_memory import SessionMemory
from moai.strategies import builder
from moai.strategies.auto import collaboration
from moai.strategies.budget import one_model, within_budget
from moai.strategies.context import Chooser, NoEligibleModel, RequestContext, no_trusted_model
from moai.strategies.context_count import FRAMING, FRAMING_EACH, UNDER, counted_eligible, undecided
from moai.strategies.executor import Executor
from moai.strategies.outcome import Execution, PlanFailed, Spend, attempt_spend
from moai.strategies.plan import REVIEW_ROLES, Plan
from moai.strategies.privacy_guard import privacy_guard, stricter
from moai.strategies.route import gate_reasons, session_notes
from moai.telemetry.adapt import LiveStats
from moai.telemetry.carbon import CarbonModel
from moai.telemetry.metrics import Metrics
from moai.telemetry.store import TelemetryStore
from moai.telemetry.writer import TelemetryWriter
from moai.tuning.live import LiveTuner, knob_value
from moai.tuning.targets import parse_target
from moai.upstream_errors import public, public_trace

if TYPE_CHECKING:
    from moai.server.openai_schema import MoaiOptions

NO_TOOLS = frozenset({"moa", "fanout", "chain", "critique"})  # strategies whose answer is synthesised text
log = logging.getLogger("moai")


def estimate_tokens(text: str) -> int:
    """Tokens before any model is chosen, for the context checks: ~4 ASCII characters a token and a token for any
    other character (``text_tokens``, as a call without usage is billed). It errs high for accented or Cyrillic
    text, low for scripts that take several tokens a character in some tokenizers (Thai, Hindi); at 4 characters
    a token for all, 12,000 Chinese characters passed as 3,000 and were sent to a 4,096-token model."""
    return text_tokens(text) + 1


def request_tokens(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> int:
    """A request's prompt as estimated before any model is chosen: its messages' text, the tool calls of earlier
    turns and the tools offered (sent with the prompt), the figure the context checks read."""
    tool_tokens = estimate_tokens(json.dumps(tools)) if tools else 0
    return estimate_tokens(message_text(messages)) + call_tokens(messages) + tool_tokens


def narrowed(cards: list[ModelCard], excluded: dict[str, str],
             opts: MoaiOptions | None) -> tuple[list[ModelCard], dict[str, str]]:
    """``cards`` less those the request's own ``moai.models`` and ``moai.exclude`` leave out (said in
    ``excluded``)."""
    if opts and opts.models is not None:
        for c in cards:
            if c.name not in opts.models:
                excluded[c.name] = "not in the request's moai.models"
        cards = [c for c in cards if c.name in opts.models]
    if opts and opts.exclude:
        for c in cards:
            if c.name in opts.exclude:
                excluded[c.name] = "excluded by the request"
        cards = [c for c in cards if c.name not in opts.exclude]
    return cards, excluded


@dataclass
class Prepared:
    """A request resolved to a mix and a plan, before anything runs."""

    id: str
    ctx: RequestContext
    plan: Plan
    stream: bool
    started: float = field(default_factory=time.time)
    api_key: str | None = None
    use_cache: bool = True  # False: the request opted out (moai.cache: false)
    cache: Any = None  # cache.Lookup, once the response cache was consulted
    deadline: float | None = None  # time.monotonic() at which settings.request_timeout_s runs out
    recorded: bool = False  # its answer is counted and being stored: a cancellation now changes nothing
    client_gone: bool = False  # its client disconnected: a cancellation is the client's, even while the server drains


def live_tuners(config: Config) -> dict[str, LiveTuner]:
    """One live tuner per mix with ``live_tune``, starting from the knob's value in the instructions."""
    out = {}
    for name, mix in config.mixes.items():
        knob = mix.live_knob()
        if mix.live_tune is None or knob is None:
            continue
        lt = mix.live_tune
        out[name] = LiveTuner(parse_target(lt.target), knob, value=knob_value(mix, knob), min_samples=lt.min_samples,
                              window=lt.window, max_step=lt.max_step, deadband=lt.deadband)
    return out


def load_chooser(config: Config) -> Chooser:
    """The learned gate when one can be loaded, else the rule-based chooser."""
    try:
        from moai.gate.runtime import load_default_gate
    except ImportError:
        return RuleChooser()
    gate = load_default_gate(config)
    return gate if gate is not None else RuleChooser()


def limit_field(body: Any, mix: Mix, bounded: bool = False) -> str | None:
    """The name the completion limit goes upstream under: the one the client used (a reasoning model refuses
    ``max_tokens``), else the mix's own ``max_tokens`` when its instructions set one, or when the request is
    ``bounded`` (a cost or latency cap, a key's budget: each was worked out for that many tokens, and an
    answer left unlimited would pass it); None sends no limit, as a client that asked for none expects (the
    answer is not cut at moai's default)."""
    if body.max_completion_tokens is not None:
        return "max_completion_tokens"
    if body.max_tokens is not None or "max_tokens" in mix.model_fields_set or bounded:
        return "max_tokens"
    return None


def capped(mixes: Sequence[Mix]) -> bool:
    """Whether any of these mixes bounds a request's cost or latency (worked out at its ``max_tokens``)."""
    return any(m.constraints.max_cost_usd is not None or m.constraints.max_latency_s is not None for m in mixes)


class Mixture(SessionMemory, Recording):
    """Holds the config, providers, chooser and telemetry; safe to share across concurrent requests. Its session
    lookups are SessionMemory's, the records of its finished requests Recording's."""

    def __init__(self, config: Config, store: TelemetryStore | None = None, chooser: Chooser | None = None) -> None:
        self.config = config
        self.registry = ProviderRegistry(config)
        self.closed = False  # by aclose: for good
        s = config.settings
        self.executor = Executor(self.registry, CarbonModel(s.carbon_zone, s.grid_g_per_kwh))
        self.store = store
        self.chooser = chooser or load_chooser(config)
        self.metrics = Metrics()
        # a record spooled while the database is down counts as a failed "record" operation
        self.writer = TelemetryWriter(store, on_spool=lambda n: self.metrics.observe_database_error("record", n)
                                      ) if store is not None else None
        self.stats = LiveStats(failure_threshold=s.breaker_failures, cooldown_s=s.breaker_cooldown_s,
                               feedback_per_key=s.feedback_per_key)
        self.registry.health = self.stats.healthy
        # whether the server is shutting down: a request stopped then is recorded as the 503 its client gets
        self.stopping: Callable[[], bool] = lambda: False
        self.registry.rate_limited = self.stats.observe_rate_limit
        self.cache = ResponseCache.from_config(config, self.metrics.cache)
        # (API key id, mix, session) -> model, LRU: one tenant's session names never reach another's conversations
        self._sessions: OrderedDict[tuple[str | None, str, str], str] = OrderedDict()
        self.tuners = live_tuners(config)  # mixes whose instructions ask for a target held online
        for name, t in self.tuners.items():
            self.metrics.knob.labels(name, t.knob).set(t.value)
        if store is not None:
            self.stats.refresh(store)  # resume from what earlier runs (or other replicas) observed

    @classmethod
    def from_config(cls, path: str | None = None, **kw: Any) -> Mixture:
        """A Mixture for the mix instructions at ``path`` (None: the embedded default). Requests are recorded where
        the instructions' ``settings.database_url`` or ``MOAI_DATABASE_URL`` says, as ``moai serve`` records them;
        with neither (and no ``store=``), in-process calls are not recorded."""
        config = load_config(path)
        if "store" not in kw and (url := config.settings.database_url or os.environ.get("MOAI_DATABASE_URL")):
            kw["store"] = TelemetryStore(url)
        return cls(config, **kw)

    @functools.lru_cache(maxsize=256)  # noqa: B019 - one per mix name, for the Mixture's lifetime
    def counted_from(self, model: str) -> int | None:
        """The body size (bytes) from which a request to ``model`` (a mix, or a model) may be counted by a local
        model's tokenizer before routing (``undecided``, a few milliseconds per 10 KB: its preparation is then
        better off the event loop); None when no local model of its mix (or those it hands requests to) counts.
        A byte holds at most half a token of the estimate, and a prompt is counted from a quarter of the smallest
        local context on (the answer's room aside)."""
        try:
            _, mix = self.resolve(model)
        except UnknownModel:
            return None
        pools = [mix, *(m for _, m in collaboration(self.config, mix))]
        contexts = [c.context for m in pools for c in self.config.pool(m)
                    if c.provider == "local" and not c.deployments]
        return 2 * max(0, (min(contexts) - FRAMING - FRAMING_EACH) // UNDER) if contexts else None

    @functools.cached_property
    def chat(self) -> Any:
        """``m.chat.completions.create(...)``: the OpenAI client's surface, in process (see moai.api)."""
        from moai.api import Chat

        return Chat(self)

    @functools.cached_property
    def achat(self) -> Any:
        """``await m.achat.completions.create(...)``: the async twin of ``chat`` (see moai.api)."""
        from moai.api import AsyncChat

        return AsyncChat(self)

    # ------------------------------------------------------------------ resolution

    def resolve(self, model: str) -> tuple[str, Mix]:
        """``moai/<mix>``, ``<mix>`` or a model name (a one-model route mix)."""
        name = model.removeprefix("moai/")
        if name in self.config.mixes:
            return name, self.config.mixes[name]
        if model in self.config.models:
            return model, Mix(strategy="route", models=[model], fallbacks=None)
        raise UnknownModel(f"The model '{model}' does not exist; see GET /v1/models")

    # ------------------------------------------------------------------ preparation

    def prepare(self, body: Any, api_key: str | None = None, session: str | None = None,
                session_model: str | None | EllipsisType = ..., budgeted: bool = False) -> Prepared:
        """Turn a validated ChatCompletionRequest into a plan (raises BadRequest/UnknownModel/NoEligibleModel).
        ``session_model``: the session's model as ``asession_model`` found it (``...``: looked up here);
        ``budgeted``: the request's key has a budget, held at the plan's worst case."""
        mix_name, mix = self.resolve(body.model)
        if body.tools and mix.strategy in NO_TOOLS:
            raise BadRequest(
                f"mix {mix_name!r} uses the {mix.strategy} strategy, which cannot carry tool calls: its answer is "
                "written from several models' texts. Use a route, cascade or auto mix for requests with tools.",
                "tools", "tools_not_supported")
        messages = [m.to_provider() for m in body.messages]
        opts = body.moai
        if opts and opts.max_cost_usd is not None:  # a request may tighten the mix's cap, never loosen it
            cap = min(opts.max_cost_usd, mix.constraints.max_cost_usd or opts.max_cost_usd)
            mix = mix.model_copy(update={"constraints": mix.constraints.model_copy(update={"max_cost_usd": cap})})
        weights = mix.weights
        if opts and opts.weights:
            unknown = set(opts.weights) - set(Weights.model_fields)
            if unknown:
                names = sorted(unknown)
                more = f" and {len(names) - 10} more" if len(names) > 10 else ""
                raise BadRequest(f"unknown weight(s): {', '.join(names[:10])}{more} (known: "
                                 f"{', '.join(Weights.model_fields)})", "moai.weights")
            weights = weights.model_copy(update=opts.weights)
            if not any(weights.model_dump().values()):  # refused in a config too: every model would score the same
                raise BadRequest("moai.weights makes every weight 0, so every model scores the same; make at least one "
                                 "weight positive (e.g. quality: 1)", "moai.weights")
        if opts and opts.models is not None:  # a name no model has narrows to nothing: say which, not "no model"
            absent = [m for m in dict.fromkeys(opts.models) if m not in self.config.models]
            if absent:
                more = f" and {len(absent) - 10} more" if len(absent) > 10 else ""
                raise BadRequest(f"unknown model(s) in moai.models: {', '.join(absent[:10])}{more} (see GET "
                                 "/v1/models)", "moai.models")
            if not opts.models:
                raise BadRequest("moai.models is empty: name at least one model, or leave it out", "moai.models")
        answer_tokens = body.completion_budget or 0  # the room the client asked for its answer: in the context too
        estimate = request_tokens(messages, body.tools)
        counts: dict[str, int | None] = {}

        def counted(card: ModelCard) -> int | None:
            """The prompt and tools as ``card`` reads them, counted by its own tokenizer where the estimate cannot
            tell whether they fit its context (``undecided``); None elsewhere, or when it cannot count them."""
            if not undecided(card, estimate, answer_tokens, len(messages)):
                return None
            if (body.tools and not card.supports_tools) or (opts is not None and (
                    (opts.models is not None and card.name not in opts.models) or card.name in (opts.exclude or []))):
                return None  # not one the request may use: left out whatever its count
            if card.name not in counts:
                from moai.providers.llama_cpp import prompt_tokens as local_count

                counts[card.name] = local_count(card, messages, body.tools, body.tool_choice)
            return counts[card.name]

        def size() -> str:
            """The request's size as told to a client it is refused to: estimated, and as counted."""
            exact = ", ".join(f"{n} by {name}'s tokenizer" for name, n in counts.items() if n is not None)
            return f"about {estimate} tokens" + (f" ({exact})" if exact else "")

        pool = self.config.pool(mix)
        if estimate >= max((c.context for c in pool), default=estimate + 1) and not any(
                (n := counted(c)) is not None and n < c.context for c in pool):
            # no model could read it, whatever the scan below found: refused before scanning a prompt that long
            raise BadRequest(f"This request is {size()}, more than any model's context allows", "messages",
                             "context_length_exceeded")
        # an auto mix may hand the request to its collaboration mixes: the strictest policy along them holds
        chain = collaboration(self.config, mix)
        policy = stricter(chain[-1][1].constraints.sensitive_data if chain else mix.constraints.sensitive_data,
                          self.config.settings.sensitive_data)
        guard = privacy_guard(messages, policy,
                              opts.sensitive_data if opts else None,
                              tools=body.tools, response_format=body.response_format, stop=body.stop_list,
                              tool_choice=body.tool_choice)
        tiers = [t for t in (opts.privacy if opts else None, guard.max_tier) if t is not None]
        max_tier = min(tiers, key=lambda t: PRIVACY_RANK[t]) if tiers else None

        def candidates(m: Mix) -> tuple[list[ModelCard], dict[str, str]]:
            """The models of ``m`` this request may use: its constraints, then the request's own filters. Those
            with room for the answer asked (``max_tokens``) when there are any; else those the prompt fits, as
            before: a client's large ``max_tokens`` is most often a ceiling, not a length it needs (llama.cpp, and
            Ollama, stop the answer at the room left; a server that refuses such a limit says so, and the next
            model is tried; a remote card's ``context`` left at its default says little of the model's own)."""

            def fitting(room: int) -> tuple[list[ModelCard], dict[str, str]]:
                return narrowed(*counted_eligible(self.config, m, estimate, counted, needs_tools=bool(body.tools),
                                                  max_privacy=max_tier,
                                                  output_tokens=body.completion_budget or m.max_tokens,
                                                  answer_tokens=room), opts)

            cards, excluded = fitting(answer_tokens)
            return fitting(0) if not cards and answer_tokens else (cards, excluded)

        cards, excluded = candidates(mix)
        if not cards:
            if excluded and all("exceeds context" in why for why in excluded.values()):
                raise BadRequest(
                    f"This request is {size()}"
                    f"{f' with max_tokens {answer_tokens}' if answer_tokens else ''}, more than any model's context "
                    "allows", "messages", "context_length_exceeded",
                )
            if guard.report.sensitive and guard.max_tier is not None:
                raise no_trusted_model(guard.report.kinds, mix_name, guard.max_tier, excluded)
            raise NoEligibleModel(f"no model satisfies the constraints of mix {mix_name!r}", excluded)
        params = ChatParams(
            messages=messages,
            max_tokens=body.completion_budget or mix.max_tokens,
            limit_field=limit_field(body, mix, budgeted or capped([mix, *(m for _, m in chain)])),
            temperature=body.temperature if body.temperature is not None else mix.temperature,
            top_p=body.top_p,
            frequency_penalty=body.frequency_penalty,
            presence_penalty=body.presence_penalty,
            stop=body.stop_list,
            seed=body.seed,
            tools=body.tools,
            tool_choice=body.tool_choice,
            response_format=body.response_format,
            logit_bias=body.logit_bias,
            parallel_tool_calls=body.parallel_tool_calls,
            reasoning_effort=body.reasoning_effort,
            user=body.user,
            safety_identifier=body.safety_identifier,
            top_k=body.top_k_asked,
            min_p=body.min_p,
            repetition_penalty=body.repetition_penalty,
            typical_p=body.typical_p,
        )
        ctx = RequestContext(self.config, mix_name, mix, params, self.chooser, weights, cards, excluded,
                             live=self.stats.snapshot(min(params.max_tokens, 256), api_key=api_key,
                                                      prompt_tokens=estimate),
                             privacy=guard.report,
                             trusted_tier=guard.max_tier if guard.report.sensitive else None)
        ctx.collaborators = {name: (m, *candidates(m)) for name, m in chain}
        ctx.steered = bool(opts and (opts.models is not None or opts.exclude or opts.weights))
        ctx.notes.extend(guard.notes)
        ctx.notes.extend(f"prompt counted by {name}'s tokenizer: {n} tokens (estimated {estimate})"
                         for name, n in counts.items() if n is not None)
        if ignored := body.ignored_fields():  # names a client chose: shown escaped and cut, a few of them
            names = [ascii(n[:40])[1:-1] + ("…" if len(n) > 40 else "") for n in ignored[:10]]
            more = f" and {len(ignored) - 10} more" if len(ignored) > 10 else ""
            ctx.notes.append(f"request field(s) not read, neither OpenAI's nor moai's: {', '.join(names)}{more}")
        session = session or body.user
        if session and mix.sessions != "off":
            ctx.session = session
            ctx.session_model = (self.session_model(session, mix_name, api_key) if session_model is ...
                                 else session_model)
        try:
            build = builder(mix.strategy)
            plan = build(ctx)
            if mix.strategy != "auto":  # auto applies the limits to the plan it picks
                plan = within_budget(ctx, plan, build) or one_model(ctx, plan.strategy)
        except ValueError as e:
            raise BadRequest(str(e), "model") from e
        plan.redactor = guard.redactor
        return Prepared(f"chatcmpl-{uuid.uuid4().hex}", ctx, plan, body.stream, api_key=api_key,
                        use_cache=opts.cache if opts else True)

    def route(self, messages: list[dict[str, Any]], mix: str = "default", **options: Any) -> dict[str, Any]:
        """The gate's decision for ``messages`` under a mix, without calling any model."""
        from moai.server.openai_schema import ChatCompletionRequest

        body = ChatCompletionRequest.model_validate({"model": mix, "messages": messages, **options})
        try:
            prep = self.prepare(body)
        except NoEligibleModel as e:
            from moai.gate.privacy import detect

            report = detect([m.to_provider() for m in body.messages], body.tools)
            return {"model": None, "strategy": self.resolve(body.model)[1].strategy, "sensitive": report.sensitive,
                    "kinds": report.kinds, "reasons": [f"refused: {e}", *(f"{m}: {w}" for m, w in e.excluded.items())],
                    "scores": {}, "refused": True}
        plan, d, report = prep.plan, prep.ctx.decision, prep.ctx.privacy
        final = plan.step(plan.final)
        # as the executor tries them: a model whose circuit is open (or rate limited) after the others
        held = {m: why for m in final.models if (why := self.stats.held_back(m)) is not None}
        order = [m for m in final.models if m not in held] + [m for m in final.models if m in held]
        model = order[0] if order else (d.model if d else None)
        passed = [f"{m}: {why}, tried after the others" for m, why in held.items() if len(held) < len(order)]
        return {
            "model": model,
            "strategy": plan.strategy,
            "sensitive": bool(report and report.sensitive),
            "kinds": report.kinds if report else [],
            "reasons": list(dict.fromkeys((d.reasons if d else []) + prep.ctx.notes + plan.notes + passed)),
            "scores": {k: round(v, 4) for k, v in (d.probabilities if d else {}).items()},
            "plan": [{"step": st.id, "role": st.role, "models": st.models} for st in plan.steps],
            "decision": d.to_json() if d else None,
        }

    # ------------------------------------------------------------------ execution

    async def stream(self, prep: Prepared, live: bool = True) -> AsyncIterator[Delta | Execution]:
        """Run the plan; the last item is the Execution. Telemetry is written before it is yielded."""
        cache = self.cache if self.cache.enabled else None
        look = await cache.alookup(prep) if cache is not None else None
        if cache is not None and look is not None and look.entry is not None:  # no model is called
            for cached in cache.replay(prep, look):
                if isinstance(cached, Execution):
                    await self.record(prep, cached)
                yield cached
            return
        try:
            async for item in self.executor.stream(prep.plan, live=live):
                if isinstance(item, Execution):
                    await self.record(prep, item)
                    if cache is not None:
                        await cache.astore(prep, item)
                yield item
        except PlanFailed as e:
            await self.record_failure(prep, str(e), e.results, e.status)  # the status the client is answered
            raise
        except ProviderError as e:  # failed mid-stream, after the first token
            await self.record_failure(prep, str(e), list(prep.plan.results.values()))
            raise
        except (asyncio.CancelledError, GeneratorExit):
            # the client went away mid-answer: what was generated so far was still paid for. A cancellation
            # by the request's own time limit is recorded (once) by the caller that set it, as a 504.
            if not deadline.passed(prep):
                self.record_cancelled(prep)
            raise
        except Exception as e:  # a fault of moai's own (answered 500): still a request to count and keep
            with contextlib.suppress(Exception):  # the record may be what failed: the original error matters more
                await self.record_failure(prep, refusal(e)[2], list(prep.plan.results.values()), 500)
            raise

    async def run(self, prep: Prepared) -> Execution:
        execution: Execution | None = None
        async for item in self.stream(prep, live=False):
            if isinstance(item, Execution):
                execution = item
        assert execution is not None
        return execution

    def summary(self, prep: Prepared, ex: Execution) -> dict[str, Any]:
        """The ``moai`` object of a response: what ran, what it cost, and why."""
        d = prep.ctx.decision
        by_model: dict[str, dict[str, float]] = {}

        def count(model: str, spent: Spend) -> None:
            u = by_model.setdefault(model, {"input": 0, "output": 0, "cost_usd": 0.0})
            u["input"] += spent.usage.prompt_tokens
            u["output"] += spent.usage.completion_tokens
            u["cost_usd"] += spent.cost_usd

        for r in ex.results:
            if r.model and r.charged:  # also a step that broke off or was left behind, as usage counts it
                count(r.model, Spend(r.usage, r.cost_usd))
            for a in r.attempts:  # failed tries the upstream billed all the same
                if a.get("tokens"):
                    count(a["model"], attempt_spend(a))
        reasons = gate_reasons(prep.ctx, ex.plan.strategy, ex.answer.model, ex.results)
        # notes may quote an upstream's error (a step that failed): told as an error body tells it
        reasons += [public(n, self.config) for n in session_notes(prep.ctx, ex.answer.model, ex.results)
                    + ex.plan.notes]
        writers = dict.fromkeys(r.model for r in ex.results if r.status == "ok" and r.model in self.config.models
                                and r.role not in REVIEW_ROLES)  # a judge or critic is sent none of them
        reasons += dropped_extras(prep.ctx.params, (self.config.models[m] for m in writers))
        reasons = list(dict.fromkeys(reasons))  # each once: steps (roles filled alike, layers) note the same
        return {
            "id": prep.id,
            "mix": prep.ctx.mix_name,
            "strategy": ex.plan.strategy,
            "model": ex.answer.model,
            "models_used": ex.models_used,
            "usage_by_model": by_model,
            "cost_usd": round(ex.cost_usd, 8),
            "energy_kwh": ex.energy_kwh,
            "co2_g": ex.co2_g,
            "latency_ms": round((time.time() - prep.started) * 1000, 1),
            "reason": reasons,
            "privacy": prep.ctx.privacy.to_json() if prep.ctx.privacy is not None else None,
            "cache": prep.cache.status if prep.cache is not None else None,
            "decision": d.to_json() if d else None,
            "trace": [public_trace(r.trace(), self.config) for r in ex.results],
        }

    # ------------------------------------------------------------------ feedback and lifecycle

    async def feedback(self, request_id: str, score: float, comment: str | None = None,
                       scale: str | None = None) -> dict[str, Any]:
        """Store feedback on an answered request and move that model's live quality estimate at once. A score on
        a declared ``scale`` is stored as its 0..1 quality, which every reader takes as it is."""
        if self.store is None:
            raise LookupError("feedback needs a telemetry database")
        from moai.telemetry.feedback import predicted_quality, stored_score

        shown, score = score, stored_score(score, scale)  # ValueError: off its scale
        rating = await asyncio.to_thread(self.store.rate, request_id, score, comment)
        # a new rating replaces the request's earlier one in the database: it is not another observation (the
        # live statistics take the replacement at their next refresh, within settings.stats_refresh_s)
        if rating.model and not rating.replaced:
            self.stats.observe_feedback(rating.model, score, predicted_quality(rating.decision, rating.model),
                                        api_key=rating.api_key)
        # every rating received, a replacement too, and one of a request no model answered (model "none")
        self.metrics.observe_feedback(rating.model, score, replaced=rating.replaced)
        return {"object": "feedback", "id": rating.feedback.id, "request_id": request_id, "score": shown,
                "scale": scale, "model": rating.model}

    async def refresh_stats(self) -> None:
        if self.store is not None:
            await asyncio.to_thread(self.stats.refresh, self.store)

    async def aclose(self) -> None:
        """Close the connections and flush the telemetry. The Mixture is closed for good: the Python API refuses
        later calls at once, as after ``moai.api.shutdown`` (they found the telemetry writer stopped and waited
        for ever). Used through ``m.chat`` / ``m.achat``, its connections live on the API's private loop: they are
        closed there, as ``moai.api.shutdown`` does (they were left open, and aiohttp warned of unclosed sessions)."""
        from moai.api_loop import runs_elsewhere, shutdown

        if runs_elsewhere(self):
            await asyncio.to_thread(shutdown, self)  # which comes back here, on that loop
            return
        self.closed = True
        await self.registry.aclose()
        if self.writer is not None:
            await asyncio.to_thread(self.writer.close)


__all__ = ["BadRequest", "Mixture", "NoEligibleModel", "Prepared", "UnknownModel", "refusal"]

"""Offline tuning: replay a mix over routing records for each value of one knob, pick the point that meets a target.

Why records and not a live run: each record says what every model's answer was worth and cost, so one
pass of the gate gives the whole trade-off curve in seconds. The gate *chooses* with what it would know at
request time (its predicted quality, the card's or cost model's expected cost, measured mean latency);
the point is *scored* with the record's own quality, cost_usd and latency_ms for the chosen model(s).
Scores are read on one scale per benchmark (shared/data/MANIFEST.md: 0/1, a 0-1 metric, or a 1-10 judge score,
rescaled to 0-1); a benchmark mixing scales is refused, naming the odd record, rather than rescaled for it.

Knobs: ``route`` → ``weights.cost`` (spending/quality targets) or ``weights.latency`` (latency target),
swept on a log grid; ``cascade`` → ``threshold``; ``auto`` → ``difficulty_threshold`` (linear grids).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from moai.bench.datasets import RecordError, RoutingRecord, load_records, read_json_lines
from moai.config_mix import MAX_WEIGHT
from moai.gate.policy import RecordCard
from moai.tuning.targets import Reference, Target

TUNABLE = ("route", "cascade", "auto")


class TuneError(ValueError):
    """A tuning request that cannot be carried out; one line for the user."""


class Infeasible(TuneError):
    """No point on the curve meets the target; carries the closest one."""

    def __init__(self, message: str, closest: Point) -> None:
        super().__init__(message)
        self.closest = closest


# ------------------------------------------------------------------------------------------ data


@dataclass
class Matrices:
    """Per (record, model): what the gate expects (q, ec, el, eg) and what happened (y, c, lat, co2)."""

    models: list[str]
    y: np.ndarray  # realised quality 0-1 (NaN: model not scored on that record)
    c: np.ndarray  # realised USD
    lat: np.ndarray  # realised seconds
    co2: np.ndarray  # realised grams
    q: np.ndarray  # gate's expected quality
    ec: np.ndarray  # expected USD (what the policy sees)
    el: np.ndarray  # expected seconds
    eg: np.ndarray  # expected grams

    @property
    def avail(self) -> np.ndarray:
        return np.isfinite(self.y)

    def take(self, rows: np.ndarray) -> Matrices:
        return Matrices(self.models, *(getattr(self, f)[rows] for f in ("y", "c", "lat", "co2", "q", "ec", "el", "eg")))

    def reference(self) -> Reference:
        """The most expensive and the best single model on these rows (where they were scored)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mc = np.nanmean(np.where(self.avail, self.c, np.nan), 0)
            mq = np.nanmean(self.y, 0)
        return Reference(max_model_cost=float(np.nanmax(mc)), best_quality=float(np.nanmax(mq)))


def _nonneg(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


def load_extras(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """``latency_ms``/``co2_g`` per model, which ``moai bench collect`` writes but RoutingRecord drops.

    Read in the same order and with the same blank-line rule as ``load_records`` so the rows line up; a
    value that is not ``{model: non-negative number}`` is a ``RecordError`` naming the file and line.
    """
    out: list[dict[str, Any]] = []
    for p in paths:
        path = Path(p)
        for ln, obj in read_json_lines(path, lambda ln, reason, path=path: RecordError(path, ln, reason)):
            ex: dict[str, Any] = {}
            for key in ("latency_ms", "co2_g"):
                value = obj.get(key) if isinstance(obj, dict) else None
                if value is None:
                    value = {}
                if not isinstance(value, dict) or not all(_nonneg(v) for v in value.values()):
                    rid = obj.get("id") if isinstance(obj, dict) else None
                    raise RecordError(path, ln, f"record {rid!r}: {key!r} must be an object "
                                      "{model: non-negative number}")
                ex[key] = value
            out.append(ex)
    return out


SCALES = "0/1 correctness, a 0-1 metric, or a 1-10 judge score"


def _scale_error(r: RoutingRecord, reason: str) -> TuneError:
    line = getattr(r, "line", 0)
    where = f"{r.source}:{line}: " if r.source and line else ""
    return TuneError(f"{where}record {r.id!r}: {reason}")


def _check_scale(records: Sequence[RoutingRecord], rows: Sequence[int], label: str) -> bool:
    """Whether one benchmark's scores are on the 1-10 judge scale; a benchmark's scores share one scale.

    shared/data/MANIFEST.md allows 0/1 correctness, a 0-1 metric or a 1-10 judge score per benchmark. A score
    above 1 among scores below 1 is not a scale but a mistake (a 7 among 0/1 scores, or a 0.5 among judge
    scores): rescaling the whole benchmark as 1-10 for it would push every other score to 0, so it is refused,
    naming the record that is the odd one out (on the side with fewer scores). So is a score above 10. A 0-1
    metric slightly below 0 (RouterArena has -0.033) is clipped to 0, as before."""
    hi: list[tuple[RoutingRecord, str, float]] = []
    lo: list[tuple[RoutingRecord, str, float]] = []
    for i in rows:
        r = records[i]
        for m, s in r.scores.items():
            if s > 10:
                raise _scale_error(r, f"score {s:g} for model {m!r} is off every scale ({SCALES})")
            if s > 1 + 1e-9:
                hi.append((r, m, s))
            elif s < 1 - 1e-9:
                lo.append((r, m, s))
    if not hi:
        return False
    if lo:
        if len(hi) <= len(lo):
            r, m, s = hi[0]
            raise _scale_error(r, f"score {s:g} for model {m!r} is above 1, while {len(lo)} scores of {label} "
                               f"are below 1 (0/1 or 0-1): one scale per benchmark ({SCALES})")
        r, m, s = lo[0]
        raise _scale_error(r, f"score {s:g} for model {m!r} is below 1, while {len(hi)} scores of {label} are "
                           f"above 1 (a 1-10 judge scale): one scale per benchmark ({SCALES})")
    return True


def _normalised(records: Sequence[RoutingRecord], models: Sequence[str]) -> np.ndarray:
    """Scores on 0-1: a benchmark on the 1-10 judge scale is rescaled (y - 1) / 9, 0/1 and 0-1 scores pass
    through; a benchmark whose scores mix scales is refused (``_check_scale``). Stricter than the gate's training,
    which reads each record's own scale and only warns (``moai.bench.scales``): a target is held on these very
    numbers, so a score that may be a typo is not guessed at."""
    col = {m: j for j, m in enumerate(models)}
    y = np.full((len(records), len(models)), np.nan)
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        groups.setdefault(r.benchmark or r.source, []).append(i)
        for m, s in r.scores.items():
            if m in col:
                y[i, col[m]] = s
    for key, rows in groups.items():
        label = f"benchmark {key!r}" if records[rows[0]].benchmark else f"{key or 'the records'}"
        if _check_scale(records, rows, label):  # 1-10 → 0-1, the map training uses for a judge record
            y[rows] = np.clip((y[rows] - 1.0) / 9.0, 0.0, 1.0)
    return y


def build_matrices(
    records: Sequence[RoutingRecord],
    extras: Sequence[Mapping[str, Any]] | None,
    gate: Any,
    cards: Mapping[str, Any],
    models: Sequence[str],
    grid_g_per_kwh: float = 400.0,
) -> Matrices:
    """Ask the gate once for every record; everything weight-dependent is then a cheap numpy sweep.

    Expected cost: the card's price when it has one, else the gate's cost model (as ``Gate.decide`` does),
    else the model's mean recorded cost. Expected latency: the model's mean recorded latency when the
    records have it (what live statistics feed the policy at run time), else the card's estimate.
    """
    from moai.gate.policy import expected_costs
    from moai.gate.quality import canonical

    n, m = len(records), len(models)
    y = _normalised(records, models)
    q = np.asarray(gate.quality_matrix([r.prompt for r in records], list(models), cached=True), float)
    c, lat, co2 = (np.full((n, m), np.nan) for _ in range(3))
    ec, el, eg = (np.zeros((n, m)) for _ in range(3))
    for i, r in enumerate(records):
        ex = extras[i] if extras else {}
        for j, name in enumerate(models):
            if name in r.cost_usd:
                c[i, j] = r.cost_usd[name]
            if (v := ex.get("latency_ms", {}).get(name)) is not None:
                lat[i, j] = float(v) / 1000.0
            if (v := ex.get("co2_g", {}).get(name)) is not None:
                co2[i, j] = float(v)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a model with no recorded cost/latency: NaN
        mean_c, mean_lat = np.nanmean(c, 0), np.nanmean(lat, 0)
    for i, r in enumerate(records):
        n_tok = len(r.prompt) // 4 + 1
        for j, name in enumerate(models):
            card = cards[name]
            priced = bool(card.price.input_per_mtok or card.price.output_per_mtok)
            obs = None
            if not priced:
                obs = gate.cost.predict(name, n_tok)
                if obs is None and math.isfinite(mean_c[j]):
                    obs = float(mean_c[j])
            out_tok = gate.cost.out_tokens.get(canonical(name), 256.0)
            e = expected_costs(card, n_tok, out_tok, grid_g_per_kwh, obs)
            ec[i, j], el[i, j], eg[i, j] = e["cost_usd"], e["latency_s"], e["co2_g"]
            if math.isfinite(mean_lat[j]):
                el[i, j] = mean_lat[j]
            # what happened, where the record does not say: the same estimate with its own tokens
            tok = r.tokens.get(name) or {}
            if not math.isfinite(c[i, j]):
                c[i, j] = e["cost_usd"] if priced or obs is not None else 0.0
            if not math.isfinite(lat[i, j]) or not math.isfinite(co2[i, j]):
                real = expected_costs(card, int(tok.get("input", n_tok)), float(tok.get("output", out_tok)),
                                      grid_g_per_kwh, c[i, j])
                lat[i, j] = real["latency_s"] if not math.isfinite(lat[i, j]) else lat[i, j]
                co2[i, j] = real["co2_g"] if not math.isfinite(co2[i, j]) else co2[i, j]
    return Matrices(list(models), y, c, lat, co2, q, ec, el, eg)


def split(n: int, holdout: float, seed: int = 0, groups: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Tuning and held-out row indices; rows sharing a prompt stay on the same side."""
    keys = list(groups) if groups is not None else [str(i) for i in range(n)]
    uniq = sorted(set(keys))
    rng = np.random.default_rng(seed)
    rng.shuffle(uniq)
    held = set(uniq[: int(round(len(uniq) * holdout))]) if holdout > 0 else set()
    rows = np.arange(n)
    mask = np.array([k in held for k in keys], bool)
    return rows[~mask], rows[mask]


# ------------------------------------------------------------------------------------ simulation


@dataclass
class Point:
    """One operating point: the knob's value and what the mix did on the records at that value."""

    knob: str
    value: float
    quality: float
    cost_usd: float  # mean per request
    p95_latency_s: float
    mean_latency_s: float
    co2_g: float  # mean per request
    measured: float = float("nan")  # the target's quantity
    feasible: bool = False


def _summ(knob: str, value: float, y: np.ndarray, c: np.ndarray, lat: np.ndarray, g: np.ndarray) -> Point:
    return Point(knob, value, float(np.mean(y)), float(np.mean(c)), float(np.percentile(lat, 95)),
                 float(np.mean(lat)), float(np.mean(g)))


def route_choice(mx: Matrices, w: Mapping[str, float], cost_scale: float = 0.01) -> np.ndarray:
    """The policy's argmax (moai.gate.policy.choose) for every record at once: utility, ties by quality."""
    u = (w.get("quality", 1.0) * mx.q - w.get("cost", 0.0) * mx.ec / cost_scale
         - w.get("latency", 0.0) * mx.el - w.get("carbon", 0.0) * mx.eg)
    u = np.where(mx.avail, u + 1e-9 * mx.q, -np.inf)
    return np.argmax(u, 1)


def _pick(a: np.ndarray, ch: np.ndarray) -> np.ndarray:
    return a[np.arange(len(ch)), ch]


def simulate_route(mx: Matrices, w: Mapping[str, float], knob: str, value: float) -> Point:
    ch = route_choice(mx, w)
    return _summ(knob, value, _pick(mx.y, ch), _pick(mx.c, ch), _pick(mx.lat, ch), _pick(mx.co2, ch))


def cascade_order(mx: Matrices, explicit: Sequence[str] | None) -> list[int]:
    """The mix's explicit order, else cheapest expected cost first (as strategies.cascade does)."""
    if explicit:
        return [mx.models.index(m) for m in explicit if m in mx.models]
    return sorted(range(len(mx.models)), key=lambda j: float(np.mean(mx.ec[:, j])))


def simulate_cascade(mx: Matrices, order: Sequence[int], threshold: float, judge: bool = False) -> Point:
    """Try models in order; accept the first whose score clears the threshold; every try is paid for.

    The gate scorer accepts on the gate's expected quality of that model, and, as the live cascade does, never
    calls a model (but the last) whose expected quality is under the threshold: that try is neither paid nor
    waited for. A judge scorer is modelled by the record's own score (an ideal judge: optimistic).
    """
    n = len(mx.y)
    done = np.zeros(n, bool)
    y, c, lat, g = (np.zeros(n) for _ in range(4))
    avail = mx.avail
    last = np.full(n, -1)
    for j in order:
        last = np.where(avail[:, j], j, last)
    for j in order:
        run = ~done & avail[:, j]
        if not judge:  # skipped before any call: its answer could not be accepted
            run &= (mx.q[:, j] >= threshold) | (last == j)
        c += np.where(run, mx.c[:, j], 0.0)
        lat += np.where(run, mx.lat[:, j], 0.0)
        g += np.where(run, mx.co2[:, j], 0.0)
        score = mx.y[:, j] if judge else mx.q[:, j]
        accept = run & ((score >= threshold) | (last == j))
        y = np.where(accept, np.nan_to_num(mx.y[:, j]), y)
        done |= accept
    return _summ("threshold", threshold, y, c, lat, g)


@dataclass
class Collab:
    """The ``collaborate`` mix of an auto mix as columns: proposers and the aggregator (-1: the gate's best)."""

    proposers: list[int] | int  # explicit columns, or "the k best by expected quality"
    aggregator: int = -1


def simulate_auto(mx: Matrices, w: Mapping[str, float], collab: Collab, threshold: float) -> Point:
    """Easy queries (difficulty = 1 − best expected quality < threshold) are routed with the mix's weights;
    hard ones go to the collaboration, modelled as: quality of the aggregator's own answer (a conservative
    stand-in for MoA), cost and CO2 of every proposer plus the aggregator, latency of the slowest proposer
    plus the aggregator.
    """
    qa = np.where(mx.avail, mx.q, -np.inf)
    difficulty = 1.0 - qa.max(1)
    ch = route_choice(mx, w)
    y, c, lat, g = _pick(mx.y, ch), _pick(mx.c, ch), _pick(mx.lat, ch), _pick(mx.co2, ch)
    hard = difficulty >= threshold
    if hard.any():
        rows = np.arange(len(ch))
        agg = np.full(len(ch), collab.aggregator) if collab.aggregator >= 0 else np.argmax(qa, 1)
        if isinstance(collab.proposers, int):
            props = np.argsort(-qa, 1)[:, : collab.proposers]
        else:
            props = np.tile(np.array(collab.proposers, int), (len(ch), 1))
        pc = np.nan_to_num(np.take_along_axis(mx.c, props, 1)).sum(1)
        pl = np.nan_to_num(np.take_along_axis(mx.lat, props, 1)).max(1)
        pg = np.nan_to_num(np.take_along_axis(mx.co2, props, 1)).sum(1)
        yc = np.nan_to_num(mx.y[rows, agg])
        y = np.where(hard, yc, y)
        c = np.where(hard, pc + mx.c[rows, agg], c)
        lat = np.where(hard, pl + mx.lat[rows, agg], lat)
        g = np.where(hard, pg + mx.co2[rows, agg], g)
    return _summ("difficulty_threshold", threshold, y, c, lat, g)


# ------------------------------------------------------------------------------------------ sweep


def _sig(x: float, digits: int = 3) -> float:
    """Round to significant digits, so the value written to YAML is exactly the one evaluated."""
    return 0.0 if x == 0 else float(f"{x:.{digits}g}")


def weight_grid(mx: Matrices, knob: str, n: int = 121, cost_scale: float = 0.01) -> list[float]:
    """0 and a log grid spanning 1e-3..1e3 × (the weight at which a median cost/latency costs 1 quality point),
    up to the largest weight mix instructions take (very cheap records would call for more: never written)."""
    scale_src = mx.ec / cost_scale if knob == "cost" else mx.el
    pos = scale_src[np.isfinite(scale_src) & (scale_src > 0)]
    typical = float(np.median(pos)) if pos.size else 1.0
    grid = np.logspace(-3, 3, n) / typical
    return [0.0, *sorted({_sig(v) for v in grid if _sig(v) <= MAX_WEIGHT})]


@dataclass
class Spec:
    """What is being tuned: the strategy, the knob name in the YAML, and the mix's other settings."""

    strategy: str
    knob: str  # "weights.cost", "weights.latency", "threshold", "difficulty_threshold"
    weights: dict[str, float]
    cascade: list[str] | None = None
    judge: bool = False
    collab: Collab | None = None


def evaluate(mx: Matrices, spec: Spec, value: float) -> Point:
    if spec.strategy == "cascade":
        return simulate_cascade(mx, cascade_order(mx, spec.cascade), value, spec.judge)
    w = dict(spec.weights)
    if spec.knob.startswith("weights."):
        w[spec.knob.split(".", 1)[1]] = value
    if spec.strategy == "auto":
        assert spec.collab is not None
        return simulate_auto(mx, w, spec.collab, value)
    p = simulate_route(mx, w, spec.knob, value)
    p.knob = spec.knob
    return p


def grid_for(mx: Matrices, spec: Spec) -> list[float]:
    if spec.knob.startswith("weights."):
        return weight_grid(mx, spec.knob.split(".", 1)[1])
    return [round(float(v), 3) for v in np.linspace(0.0, 1.0, 101)]


@dataclass
class Result:
    target: Target
    spec: Spec
    curve: list[Point]
    chosen: Point
    reference: Reference


def sweep(mx: Matrices, spec: Spec, target: Target) -> Result:
    """Evaluate every grid value; choose the best feasible point (see moai.tuning.targets)."""
    ref = mx.reference()
    if target.kind == "cost_share" and not ref.max_model_cost > 0:  # a share of $0 is 0/0: every point would "meet" it
        raise TuneError(f"target {target}: no model has a recorded cost above $0 in these records (cost_usd), so "
                        "the most expensive model's spend is $0 and a share of it means nothing; add cost_usd to "
                        "the records, or use quality=X_of_best or p95_latency_s=X")
    curve = []
    for v in grid_for(mx, spec):
        p = evaluate(mx, spec, v)
        p.measured = target.measure(p.quality, p.cost_usd, p.p95_latency_s, ref)
        p.feasible = target.met(p.measured)
        curve.append(p)
    ok = [p for p in curve if p.feasible]
    if not ok:
        closest = min(curve, key=lambda p: (target.violation(p.measured), -p.quality))
        raise Infeasible(
            f"target {target} cannot be met on these records; the closest reachable point is "
            f"{target.fmt(closest.measured)} at {spec.knob}={closest.value:g} (quality {closest.quality:.3f}, "
            f"${closest.cost_usd * 1000:.4g}/1k requests, p95 {closest.p95_latency_s:.2f}s)",
            closest,
        )
    if target.kind == "quality":
        # the cheapest; among equally cheap (free local models), the fastest
        chosen = min(ok, key=lambda p: (round(p.cost_usd, 12), round(p.mean_latency_s, 6), -p.quality))
    else:
        chosen = max(ok, key=lambda p: (round(p.quality, 9), -p.cost_usd, -p.p95_latency_s))
    return Result(target, spec, curve, chosen, ref)


def spec_for(
    mix: Any, mix_name: str, target: Target, config: Any, models: Sequence[str], mx: Matrices | None = None
) -> Spec:
    """Which knob to tune for this mix and target; refuses strategies that records cannot replay.

    A quality target trades against cost, unless every model is free (local zoo): then against latency.
    """
    if mix.strategy not in TUNABLE:
        raise TuneError(f"mix {mix_name!r} uses strategy {mix.strategy}; tuning supports {', '.join(TUNABLE)} "
                        "(their outputs can be replayed from routing records)")
    w = mix.weights.model_dump()
    if mix.strategy == "cascade":
        return Spec("cascade", "threshold", w, cascade=mix.cascade, judge=mix.scorer == "judge")
    if mix.strategy == "auto":
        target_mix = config.mixes[mix.collaborate]
        col = {m: j for j, m in enumerate(models)}
        props: list[int] | int = 3
        if isinstance(target_mix.proposers, list):
            props = [col[m] for m in target_mix.proposers if m in col] or 3
        elif target_mix.proposers is not None and isinstance(getattr(target_mix.proposers, "pick", None), int):
            props = target_mix.proposers.pick
        agg = target_mix.aggregator if isinstance(target_mix.aggregator, str) else None
        return Spec("auto", "difficulty_threshold", w, collab=Collab(props, col.get(agg, -1) if agg else -1))
    knob = target.knob
    if target.kind == "quality" and mx is not None and not np.any(mx.ec > 0):
        knob = "latency"
    return Spec("route", f"weights.{knob}", w)


def prepare(
    data: Sequence[str | Path], config: Any, mix_name: str, gate: Any
) -> tuple[list[RoutingRecord], Matrices]:
    """Load records and build the gate's view of them for the mix's pool (record models outside it dropped)."""
    from moai.bench.datasets import model_names

    records = load_records(data)
    extras = load_extras(data)
    names = model_names(records)
    mix = config.mixes[mix_name]
    pool = [c.name for c in config.pool(mix)]
    in_pool = [m for m in names if m in pool]
    models = in_pool if len(in_pool) >= 2 else names  # records from other models: tune over what they hold
    if len(models) < 2:
        raise TuneError("the records score fewer than two models: nothing to trade off")
    cards = {m: config.models[m] if m in config.models else RecordCard(m) for m in models}
    mx = build_matrices(records, extras, gate, cards, models, config.settings.grid_g_per_kwh or 400.0)
    keep = mx.avail.any(1)
    return [r for r, k in zip(records, keep, strict=True) if k], mx.take(np.flatnonzero(keep))

"""Mix tuning: targets met on held-out records, YAML write-back, infeasible targets, the live tuner."""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import random
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from moai.config import parse_config
from moai.gate.policy import RecordCard
from moai.tuning import offline as off
from moai.tuning.live import LiveTuner
from moai.tuning.targets import TargetError, parse_target
from moai.tuning.yaml_io import set_mix_value

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "routing"
FILES = [DATA / "routerbench-arc_challenge.jsonl", DATA / "routerbench-mbpp.jsonl"]

# How close the held-out result must be to the target: the knob is tuned on other queries, so the
# measured value moves with the sample. Absolute for shares, relative for USD and seconds.
TOL = {"cost_share": 0.05, "max_cost_usd_per_1k": 0.2, "quality": 0.06, "p95_latency_s": 0.15}

MIX_YAML = """\
# mix instructions for the tuning tests
models:
  gpt-4-1106-preview: {provider: openai, api_key_env: OPENAI_API_KEY}  # the strong one
  mistralai/mistral-7b-chat: {provider: openai_compat, endpoint: "http://127.0.0.1:9/v1"}
  mistralai/mixtral-8x7b-chat: {provider: openai_compat, endpoint: "http://127.0.0.1:9/v1"}
mixes:
  cheap:
    description: routed by the gate  # keep me
    strategy: route
    # the cost weight is tuned by `moai mix tune`
    weights: {quality: 1.0, cost: 0.0}
    constraints: {sensitive_data: allow}
  esc:
    strategy: cascade
    cascade: [mistralai/mistral-7b-chat, mistralai/mixtral-8x7b-chat, gpt-4-1106-preview]
    threshold: 0.5
  deep:
    strategy: moa
    proposers: {pick: 3}
    aggregator: {pick: best}
  smart:
    strategy: auto
    collaborate: deep
    difficulty_threshold: 0.5
    weights: {quality: 1.0, cost: 0.3}
"""


def _latency_ms(model_rank: int, rid: str) -> float:
    """Synthetic but stable latency: dearer models are slower, with per-query noise."""
    u = int(hashlib.sha1(f"{rid}/{model_rank}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return 1000 * (0.4 + 0.35 * model_rank) * (0.8 + 0.4 * u)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A small gate trained on one part of RouterBench, and records (with latency) from the other part."""
    if not all(f.exists() for f in FILES):
        pytest.skip(f"shared routing data not found under {DATA}")
    from moai.bench.datasets import load_records
    from moai.gate.store import train_gate
    from moai.gate.train import TrainConfig

    recs = load_records(FILES)
    random.Random(0).shuffle(recs)
    gate = train_gate(recs[:600], TrainConfig(epochs=5, w_factor=0.0, tfidf_features=2000))
    d = tmp_path_factory.mktemp("tune")
    gate.save(d / "gate")
    rest = recs[600:]
    models = sorted({m for r in rest for m in r.cost_usd},
                    key=lambda m: np.mean([r.cost_usd[m] for r in rest if m in r.cost_usd]))
    rank = {m: i for i, m in enumerate(models)}
    path = d / "records.jsonl"
    with path.open("w") as fh:
        for r in rest:
            fh.write(json.dumps({"id": r.id, "benchmark": r.benchmark, "prompt": r.prompt, "scores": r.scores,
                                 "cost_usd": r.cost_usd,
                                 "latency_ms": {m: _latency_ms(rank.get(m, 0), r.id) for m in r.scores}}) + "\n")
    cfg_path = d / "mix.yaml"
    cfg_path.write_text(MIX_YAML)
    return {"gate": gate, "gate_dir": d / "gate", "records": path, "cfg": parse_config(MIX_YAML), "cfg_path": cfg_path}


def _tune_and_hold(world: dict, mix: str, target: str) -> tuple[off.Result, off.Point]:
    tg = parse_target(target)
    records, mx = off.prepare([world["records"]], world["cfg"], mix, world["gate"])
    spec = off.spec_for(world["cfg"].mixes[mix], mix, tg, world["cfg"], mx.models)
    tune, held = off.split(len(records), 0.3, seed=1, groups=[r.prompt for r in records])
    res = off.sweep(mx.take(tune), spec, tg)
    hm = mx.take(held)
    p = off.evaluate(hm, spec, res.chosen.value)
    p.measured = tg.measure(p.quality, p.cost_usd, p.p95_latency_s, hm.reference())
    return res, p


@pytest.mark.parametrize(("mix", "target"), [
    ("cheap", "cost_share=0.3"),
    ("cheap", "max_cost_usd_per_1k=1.5"),
    ("cheap", "quality=0.95_of_best"),
    ("cheap", "p95_latency_s=3"),
    ("esc", "cost_share=0.3"),
    ("smart", "cost_share=0.5"),
])
def test_tuned_mix_meets_target_on_held_out_records(world: dict, mix: str, target: str) -> None:
    res, held = _tune_and_hold(world, mix, target)
    tg = res.target
    assert res.chosen.feasible and tg.met(res.chosen.measured)
    tol = TOL[tg.kind] * (tg.value if tg.kind in ("max_cost_usd_per_1k", "p95_latency_s") else 1.0)
    assert tg.met(held.measured, tolerance=tol), f"{target}: held-out {held.measured:.4g} (tuned {res.chosen})"
    # the knob matters: the chosen point is not simply the cheapest or the best end of the curve
    assert min(p.quality for p in res.curve) < max(p.quality for p in res.curve)


def test_chosen_point_is_best_quality_among_feasible(world: dict) -> None:
    res, _ = _tune_and_hold(world, "cheap", "cost_share=0.3")
    assert res.chosen.quality == pytest.approx(max(p.quality for p in res.curve if p.feasible))
    res_q, _ = _tune_and_hold(world, "cheap", "quality=0.9_of_best")
    assert res_q.chosen.cost_usd == pytest.approx(min(p.cost_usd for p in res_q.curve if p.feasible))


def test_vectorised_choice_matches_policy_choose(world: dict) -> None:
    """The sweep's argmax is the policy's own decision, record by record."""
    from moai.gate.policy import Weights, choose

    records, mx = off.prepare([world["records"]], world["cfg"], "cheap", world["gate"])
    sub = mx.take(np.arange(40))
    w = {"quality": 1.0, "cost": 0.1, "latency": 0.01}
    vec = off.route_choice(sub, w)
    cards = {m: RecordCard(m) for m in sub.models}
    for i in range(40):
        ok = [j for j in range(len(sub.models)) if sub.avail[i, j]]
        d = choose({sub.models[j]: float(sub.q[i, j]) for j in ok}, {sub.models[j]: cards[sub.models[j]] for j in ok},
                   Weights(**w), observed_costs={sub.models[j]: float(sub.ec[i, j]) for j in ok},
                   live_stats={sub.models[j]: {"latency_s": float(sub.el[i, j])} for j in ok})
        assert d.model == sub.models[vec[i]]


def test_quality_target_with_free_models_trades_latency() -> None:
    """Local models cost nothing: a quality target then buys speed, and the fastest feasible point wins."""
    n = 200
    rng = np.random.default_rng(0)
    y = np.stack([rng.random(n) < 0.3, rng.random(n) < 0.6], 1).astype(float)  # small model, big model
    q = np.clip(y * 0.5 + 0.25 + rng.normal(0, 0.05, y.shape), 0, 1)  # an informative gate
    lat = np.tile([1.0, 6.0], (n, 1))
    z = np.zeros_like(y)
    mx = off.Matrices(["small", "big"], y, z, lat, z, q, z, lat, z)
    cfg = parse_config(MIX_YAML)
    tg = parse_target("quality=0.9_of_best")
    spec = off.spec_for(cfg.mixes["cheap"], "cheap", tg, cfg, mx.models, mx)
    assert spec.knob == "weights.latency"
    res = off.sweep(mx, spec, tg)
    ok = [p for p in res.curve if p.feasible]
    assert res.chosen.mean_latency_s == pytest.approx(min(p.mean_latency_s for p in ok))
    assert res.chosen.value > 0 and res.chosen.mean_latency_s < 6.0


def test_infeasible_target_is_one_clear_line_exit_2(world: dict) -> None:
    from moai.tune_cli import app

    r = CliRunner().invoke(app, ["--mix", "cheap", "--data", str(world["records"]), "--target", "cost_share=0.001",
                                 "--gate", str(world["gate_dir"]), "--config", str(world["cfg_path"])])
    assert r.exit_code == 2
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "cannot be met" in lines[0] and "closest reachable point is cost_share=" in lines[0]
    assert world["cfg_path"].read_text() == MIX_YAML  # nothing written


def test_cli_writes_value_back_keeping_comments_and_order(world: dict, tmp_path: Path) -> None:
    from moai.tune_cli import app

    cfg = tmp_path / "mix.yaml"
    cfg.write_text(MIX_YAML)
    png = tmp_path / "curve.png"
    r = CliRunner().invoke(app, ["--mix", "cheap", "--data", str(world["records"]), "--target", "cost_share=0.3",
                                 "--gate", str(world["gate_dir"]), "--config", str(cfg), "--plot", str(png)])
    assert r.exit_code == 0, r.output
    assert "held-out" in r.output and "USD / 1k req" in r.output
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    new = cfg.read_text()
    changed = [ln for ln in difflib.unified_diff(MIX_YAML.splitlines(), new.splitlines(), n=0, lineterm="")
               if ln.startswith(("+", "-")) and not ln.startswith(("+++", "---"))]
    assert len(changed) == 2 and changed[0] == "-    weights: {quality: 1.0, cost: 0.0}"
    assert changed[1].startswith("+    weights: {quality: 1.0, cost: ")
    assert parse_config(new).mixes["cheap"].weights.cost > 0


def test_yaml_round_trip_keeps_comments_order_and_adds_missing_keys() -> None:
    out = set_mix_value(MIX_YAML, "esc", "threshold", 0.37)
    assert out == MIX_YAML.replace("\n    threshold: 0.5\n", "\n    threshold: 0.37\n")
    out = set_mix_value(MIX_YAML, "esc", "weights.latency", 0.25)
    lines = out.splitlines()
    assert lines[lines.index("    threshold: 0.5") + 1] == "    weights: {latency: 0.25}"
    assert "# the cost weight is tuned by `moai mix tune`" in out and "# keep me" in out
    assert parse_config(out).mixes["esc"].weights.latency == 0.25


def test_targets_parse_and_refuse_nonsense() -> None:
    assert parse_target("quality=0.95_of_best").relative
    assert parse_target("p95_latency_s=3").knob == "latency"
    for bad in ("cost=0.3", "cost_share=1.5", "cost_share=abc", "p95_latency_s=3_of_best", "quality=0"):
        with pytest.raises(TargetError):
            parse_target(bad)


def test_unsupported_strategy_is_refused(world: dict) -> None:
    from moai.tune_cli import app

    r = CliRunner().invoke(app, ["--mix", "deep", "--data", str(world["records"]), "--target", "cost_share=0.3",
                                 "--gate", str(world["gate_dir"]), "--config", str(world["cfg_path"])])
    assert r.exit_code == 2 and "tuning supports route, cascade, auto" in r.output


# ------------------------------------------------------------------------------------------- live


def _simulate(tuner: LiveTuner, n: int, w0: float, seed: int = 0) -> list[float]:
    """A gateway whose share of strong calls falls as the cost weight rises (w0: how hard the traffic is)."""
    rng = random.Random(seed)
    costs = []
    for _ in range(n):
        p_strong = 1.0 / (1.0 + tuner.value / w0)
        c = 0.01 if rng.random() < p_strong else 0.001
        costs.append(c)
        tuner.observe(c, 0.5 if c < 0.01 else 2.0)
    return costs


def test_live_tuner_holds_cost_share_with_bounded_logged_steps(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="moai.tuning.live")
    tuner = LiveTuner(parse_target("cost_share=0.3"), "weights.cost", value=0.001, reference_cost_usd=0.01)
    first = _simulate(tuner, 6000, w0=0.05)
    assert abs(np.mean(first[-2000:]) / 0.01 - 0.3) <= 0.05
    settled = tuner.value
    costs = _simulate(tuner, 6000, w0=0.2, seed=1)  # traffic gets harder: the strong model is picked more
    tail = np.mean(costs[-2000:]) / 0.01
    assert abs(tail - 0.3) <= 0.05, tail
    assert tuner.value > 2 * settled  # the weight had to rise to keep the same spend
    assert tuner.changes, "the tuner never moved"
    for ch in tuner.changes:
        assert 1 / 1.5 - 1e-9 <= ch.new / ch.old <= 1.5 + 1e-9
    logged = [r for r in caplog.records if "mix tuner: weights.cost" in r.getMessage()]
    assert len(logged) == len(tuner.changes)


def test_live_tuner_cascade_threshold_moves_the_other_way() -> None:
    t = LiveTuner(parse_target("max_cost_usd_per_1k=2"), "threshold", value=0.9, min_samples=10)
    for _ in range(10):
        t.observe(0.005, 1.0)  # $5 per 1k: too dear
    assert t.changes and t.value < 0.9  # a lower threshold escalates less
    with pytest.raises(ValueError, match="quality targets"):
        LiveTuner(parse_target("quality=0.9_of_best"), "weights.cost", value=0.1)


def test_live_tuner_polls_telemetry_store(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from moai.config import Mix
    from moai.telemetry.records import RequestRecord
    from moai.telemetry.store import TelemetryStore

    store = TelemetryStore(f"sqlite:///{tmp_path / 't.db'}")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [RequestRecord(id=f"r{i}", created_at=t0 + timedelta(seconds=i), mix="cheap" if i % 4 else "other",
                          strategy="route", model="m", status="ok", latency_ms=4000.0, cost_usd=0.001)
            for i in range(80)]
    store.write_many(rows[:40])
    tuner = LiveTuner(parse_target("p95_latency_s=3"), "weights.latency", value=0.1, min_samples=35)
    assert tuner.poll(store, "cheap") == [] and len(tuner._costs) == 30
    store.write_many(rows[40:])
    changes = tuner.poll(store, "cheap")
    assert len(changes) == 1 and changes[0].new == pytest.approx(0.1 * 4 / 3)  # p95 4 s vs 3 s: × 4/3
    assert tuner.poll(store, "cheap") == []  # nothing counted twice
    mix = tuner.apply(Mix(weights={"quality": 1.0, "latency": 0.1, "cost": 0.2}))
    assert mix.weights.latency == pytest.approx(0.1 * 4 / 3) and mix.weights.cost == 0.2
    store.close()


def test_records_of_other_models_tune_with_a_warning(world: dict, tmp_path: Path) -> None:
    """Public records of other models may stand in for a mix's own, but never silently."""
    from moai.tune_cli import app

    cfg = tmp_path / "other.yaml"
    cfg.write_text("models:\n  foo: {provider: openai_compat, endpoint: \"http://127.0.0.1:9/v1\"}\n"
                   "  bar: {provider: openai_compat, endpoint: \"http://127.0.0.1:9/v1\"}\n"
                   "mixes:\n  cheap: {strategy: route, weights: {quality: 1.0, cost: 0.0}}\n")
    r = CliRunner().invoke(app, ["--mix", "cheap", "--data", str(world["records"]), "--target", "cost_share=0.3",
                                 "--gate", str(world["gate_dir"]), "--config", str(cfg), "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "warning: the records score fewer than two models of mix 'cheap'" in r.output
    assert "gpt-4-1106-preview" in r.output.split("warning:")[1].splitlines()[0]


def test_offline_cascade_with_the_gate_scorer_pays_only_for_the_models_it_calls() -> None:
    """As the live cascade does, a model (but the last) expected under the threshold is skipped, not paid for."""
    nan = float("nan")
    mx = off.Matrices(
        models=["small", "big"],
        y=np.array([[1.0, 1.0], [0.0, 1.0], [1.0, nan]]),
        c=np.array([[1.0, 10.0], [1.0, 10.0], [1.0, 10.0]]),
        lat=np.array([[0.5, 2.0], [0.5, 2.0], [0.5, 2.0]]),
        co2=np.zeros((3, 2)),
        q=np.array([[0.9, 0.95], [0.2, 0.95], [0.1, 0.95]]),
        ec=np.ones((3, 2)), el=np.ones((3, 2)), eg=np.zeros((3, 2)))
    p = off.simulate_cascade(mx, [0, 1], threshold=0.5)
    # row 0: small accepted (1 USD, 0.5 s); row 1: small skipped, big answers (10 USD, 2 s); row 2: small is
    # the last model scored there, so it answers
    assert p.cost_usd == pytest.approx((1 + 10 + 1) / 3)
    assert p.mean_latency_s == pytest.approx((0.5 + 2 + 0.5) / 3)
    assert p.quality == pytest.approx(1.0)
    judged = off.simulate_cascade(mx, [0, 1], threshold=0.5, judge=True)  # a judge must see the answer: paid
    assert judged.cost_usd == pytest.approx((1 + 11 + 1) / 3)


SHARED = """models:
  a: {provider: openai_compat, endpoint: "http://127.0.0.1:1/v1", privacy: cloud}
mixes:
  base: &base
    strategy: route
    weights: {quality: 1, cost: 0.5}  # kept
  cheap: {strategy: route, weights: &w {quality: 1, cost: 0.2}}
  other: {strategy: route, weights: *w}
  merged:
    <<: *base
    max_tokens: 100
  alias: *base
  plain: &p {strategy: route, weights: {quality: 1, cost: 0.3}}
  from_plain:
    <<: *p
    max_tokens: 50
"""


@pytest.mark.parametrize("mix", ["cheap", "other", "base", "merged", "alias", "plain", "from_plain"])
def test_tuning_one_mix_never_changes_another_that_shares_its_yaml_anchor(mix: str) -> None:
    before = parse_config(SHARED)
    after = parse_config(set_mix_value(SHARED, mix, "weights.cost", 0.9))
    assert after.mixes[mix].weights.cost == 0.9
    for name, m in before.mixes.items():
        if name != mix:
            assert after.mixes[name] == m, name


def test_writing_a_tuned_value_keeps_the_files_link_and_mode(tmp_path: Path) -> None:
    """The file may hold a database password: it must not become readable by others, nor its link a copy."""
    from moai.tuning.yaml_io import write_mix_value

    real = tmp_path / "real.yaml"
    real.write_text(SHARED)
    real.chmod(0o600)
    link = tmp_path / "link.yaml"
    link.symlink_to(real)
    write_mix_value(link, "cheap", "weights.cost", 0.7)
    assert link.is_symlink() and (real.stat().st_mode & 0o777) == 0o600
    assert parse_config(real.read_text()).mixes["cheap"].weights.cost == 0.7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.yaml", "real.yaml"]  # no temporary file left


def test_the_weight_grid_stays_within_what_mix_instructions_take() -> None:
    """Records priced at a millionth of a cent asked for cost weights above the bound the config loader holds."""
    from moai.config_mix import MAX_WEIGHT

    mx = off.Matrices(models=["a", "b"], y=np.ones((2, 2)), c=np.zeros((2, 2)), lat=np.ones((2, 2)),
                      co2=np.zeros((2, 2)), q=np.ones((2, 2)), ec=np.full((2, 2), 1e-9), el=np.ones((2, 2)),
                      eg=np.zeros((2, 2)))
    grid = off.weight_grid(mx, "cost")
    assert grid[0] == 0 and max(grid) <= MAX_WEIGHT and len(grid) > 10

"""Live statistics: EWMA latency, circuit breaker, feedback shrinkage, rebuilt from the shared database."""

from __future__ import annotations

import time
from pathlib import Path

from moai.telemetry.adapt import LiveStats
from moai.telemetry.feedback import normalise_score
from moai.telemetry.records import CallRecord, FeedbackRecord, RequestRecord
from moai.telemetry.store import TelemetryStore


def test_ewma_latency_follows_a_slowdown() -> None:
    s = LiveStats()
    s.observe("m", True, 9.0, 0.01, 10)  # the cold first call is not taken as the model's speed
    for _ in range(5):
        s.observe("m", True, 0.1, 0.01, 10)
    fast = s.snapshot(10)["m"]["latency_s"]
    for _ in range(5):
        s.observe("m", True, 2.0, 0.01, 10)
    slow = s.snapshot(10)["m"]["latency_s"]
    assert fast < 0.15 and slow > 1.0
    assert "latency_s" not in s.snapshot(10, now=time.time() + 3600)["m"]  # stale: re-explored


def test_per_token_speed_comes_from_streamed_calls() -> None:
    s = LiveStats()
    s.observe("m", True, 1.0, 0.1, 100)
    s.observe("m", True, 1.0, 0.1, 100)  # 0.9 s for 100 tokens after the first
    assert abs(s.snapshot(200)["m"]["latency_s"] - (0.1 + 0.009 * 200)) < 1e-6


def test_breaker_opens_probes_and_closes() -> None:
    s = LiveStats(failure_threshold=3, cooldown_s=10)
    for t in range(3):
        s.observe("m", False, 0.1, now=100.0 + t)
    assert s.state("m") == "open" and not s.healthy("m", now=105)
    assert s.healthy("m", now=113) and s.state("m") == "half-open"
    assert not s.healthy("m", now=113.5)  # one probe at a time
    s.observe("m", False, 0.1, now=114)  # failed probe: open again
    assert s.state("m") == "open" and not s.healthy("m", now=115)
    assert s.healthy("m", now=125)
    s.observe("m", True, 0.1, now=126)
    assert s.state("m") == "closed" and s.healthy("m")


def test_an_error_rate_fades_without_calls_so_a_recovered_model_is_tried_again() -> None:
    """Failures under the breaker's threshold leave no open circuit to probe: only the error rate keeps the model
    out, and a model kept out is never called again to lower it. It halves every minute without calls."""
    s = LiveStats(failure_threshold=3)
    for t in range(4):
        s.observe("m", True, 0.1, now=100.0 + t)
    s.observe("m", False, 0.1, now=104.0)
    s.observe("m", False, 0.1, now=105.0)
    assert s.state("m") == "closed"
    high = s.snapshot(now=105.0)["m"]["error_rate"]
    assert high > 0.5
    assert s.snapshot(now=165.0)["m"]["error_rate"] == high / 2
    assert s.snapshot(now=525.0)["m"]["error_rate"] < 0.01
    s.observe("m", False, 0.1, now=165.0)  # a new failure counts from the faded rate, not the old one
    assert s.models["m"].error_rate == 0.7 * (high / 2) + 0.3


def test_a_probe_with_no_verdict_is_not_waited_for_forever() -> None:
    """A probe whose call never reported (cut short, lost) would keep the circuit half-open for good: after a
    whole cool-down another request probes; a probe handed back as cancelled frees it at once."""
    s = LiveStats(failure_threshold=3, cooldown_s=10)
    for t in range(3):
        s.observe("m", False, 0.1, now=100.0 + t)
    assert s.healthy("m", now=113) and not s.healthy("m", now=122.9)
    assert s.healthy("m", now=123) and s.state("m") == "half-open"
    s.observe_cancelled("m")
    assert s.healthy("m", now=123.5)


def test_feedback_moves_quality_in_its_direction() -> None:
    s = LiveStats()
    for _ in range(5):
        s.observe_feedback("bad", -1, predicted=0.8)
        s.observe_feedback("good", 1, predicted=0.4, scale="thumbs")
    snap = s.snapshot()
    assert snap["bad"]["quality_delta"] < -0.2 and snap["good"]["quality_delta"] > 0.15
    assert normalise_score(8) == 0.8 and normalise_score(-1) == 0 and normalise_score(0.3, "unit") == 0.3


def test_refresh_rebuilds_from_the_database(tmp_path: Path) -> None:
    store = TelemetryStore(f"sqlite:///{tmp_path / 'a.db'}")
    req = RequestRecord(id="r", mix="d", strategy="route", model="m", status="ok", http_status=200, stream=False,
                        prompt_tokens=1, completion_tokens=1, latency_ms=1, cost_usd=0, energy_kwh=0, co2_g=0,
                        decision={"quality": {"m": 0.9}})
    t0 = time.time() - 10  # the failures of the last seconds
    for i in range(4):
        req.calls.append(CallRecord(step=f"s{i}", role="answer", model="m", status="failed", started_at=t0 + i,
                                    ended_at=t0 + i + 0.5, latency_ms=10, prompt_tokens=0, completion_tokens=0,
                                    cost_usd=0, energy_kwh=0, co2_g=0))
    req.feedback.append(FeedbackRecord(score=0.0))
    store.write(req)
    other_replica = LiveStats(failure_threshold=3)
    other_replica.refresh(store)
    snap = other_replica.snapshot()["m"]
    assert snap["open"] == 1.0 and snap["error_rate"] > 0.5
    assert snap["quality_delta"] < 0


def test_a_refusal_hands_back_the_probe_without_closing_the_circuit() -> None:
    """A request the model refused for its own sake says nothing about the model: the probe it used is free again."""
    s = LiveStats(failure_threshold=3, cooldown_s=10)
    for t in range(3):
        s.observe("m", False, 0.1, now=100.0 + t)
    assert s.healthy("m", now=113) and s.state("m") == "half-open"
    before = s.snapshot(now=113)["m"]["error_rate"]
    s.observe_refusal("m")
    after = s.snapshot(now=113)["m"]["error_rate"]
    assert s.state("m") == "open" and after == before > 0.8  # neither counted nor forgiven
    assert s.healthy("m", now=113.5)  # the next request probes, instead of the circuit staying shut
    s.observe_refusal("unseen")  # a model with no statistics yet gets none from a refusal
    assert "unseen" not in s.snapshot()


def test_a_rate_limited_model_is_avoided_until_retry_after_without_counting_as_a_failure(tmp_path: Path) -> None:
    """A 429 says the model is busy, not broken: no error rate, no breaker, but no calls before its Retry-After
    (nor for a few seconds when it gave none); a refresh from the database keeps the cool-down."""
    s = LiveStats(failure_threshold=1)
    s.observe("m", True, 0.1, now=99.0)
    s.observe_rate_limit("m", 30.0, now=100.0)
    s.observe_rate_limit("m", 2.0, now=101.0)  # a shorter hint later does not cut the first one short
    assert not s.healthy("m", now=129.5) and s.state("m") == "closed"
    snap = s.snapshot(now=110.0)["m"]
    assert snap["error_rate"] == 0 and snap["open"] == 0 and snap["rate_limited_s"] == 20
    store = TelemetryStore(f"sqlite:///{tmp_path / 'a.db'}")
    req = RequestRecord(id="r", mix="d", strategy="route", model="m", status="ok", http_status=200, stream=False,
                        prompt_tokens=1, completion_tokens=1, latency_ms=1, cost_usd=0, energy_kwh=0, co2_g=0)
    for i, status in enumerate(["ok", "rate_limited", "rate_limited", "ok"]):
        req.calls.append(CallRecord(step=f"s{i}", role="answer", model="m", status=status, started_at=i,
                                    ended_at=i + 0.5, latency_ms=10, prompt_tokens=0, completion_tokens=0,
                                    cost_usd=0, energy_kwh=0, co2_g=0))
    store.write(req)
    s.refresh(store)  # the database's 429s count as nothing, and this process's cool-down survives
    assert s.models["m"].calls == 2 and s.snapshot(now=110.0)["m"]["error_rate"] == 0
    assert not s.healthy("m", now=129.5) and s.healthy("m", now=130.0)
    assert "rate_limited_s" not in s.snapshot(now=130.0)["m"]
    s.observe_rate_limit("quiet", None, now=200.0)
    assert not s.healthy("quiet", now=204.0) and s.healthy("quiet", now=205.5)


def test_a_rate_limited_probe_is_handed_back() -> None:
    s = LiveStats(failure_threshold=3, cooldown_s=10)
    for t in range(3):
        s.observe("m", False, 0.1, now=100.0 + t)
    assert s.healthy("m", now=113) and s.state("m") == "half-open"
    s.observe_rate_limit("m", 5.0, now=113.0)
    assert s.state("m") == "open" and not s.healthy("m", now=117.0)  # no probe reserved while rate limited
    assert s.healthy("m", now=118.5) and s.state("m") == "half-open"

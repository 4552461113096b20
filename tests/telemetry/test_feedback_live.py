"""Feedback in the live statistics: the documented reading of bare scores and declared scales, and a refresh that
reads only the feedback rows it has not read yet, with the same totals as a full re-read."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from sqlalchemy import delete, func, insert, select, update

from moai.telemetry.adapt import FEEDBACK_TAIL, LiveStats
from moai.telemetry.feedback import SCALES, normalise_score, stored_score
from moai.telemetry.records import FeedbackRecord, RequestRecord
from moai.telemetry.store import TelemetryStore

# ------------------------------------------------------------------------------------------ normalisation


def test_bare_scores_keep_the_documented_reading_and_a_declared_scale_settles_the_rest() -> None:
    """A bare 1 stays a thumbs-up (clients rating -1/1 or 0..1 rely on it); a 0-10 rating declares ``ten``."""
    assert [normalise_score(s) for s in (-1, -0.5, 0, 0.3, 1)] == [0.0, 0.25, 0.0, 0.3, 1.0]
    assert [normalise_score(s) for s in (2, 7, 10)] == [pytest.approx(0.2), pytest.approx(0.7), 1.0]
    assert normalise_score(1, "ten") == pytest.approx(0.1)  # a 0-10 client's 1, read as 1/10 once declared
    assert normalise_score(0, "thumbs") == 0.5


def test_declared_scales_read_their_own_range() -> None:
    assert [normalise_score(s, "thumbs") for s in (-1, 0, 1)] == [0.0, 0.5, 1.0]
    assert [normalise_score(s, "unit") for s in (0, 0.3, 1)] == [0.0, 0.3, 1.0]
    assert [normalise_score(s, "ten") for s in (0, 1, 7, 10)] == [0.0, 0.1, 0.7, 1.0]
    for scale, (lo, hi) in SCALES.items():
        read = [normalise_score(lo + (hi - lo) * i / 50, scale) for i in range(51)]
        assert all(a < b for a, b in zip(read, read[1:], strict=False))
        with pytest.raises(ValueError, match=scale):
            normalise_score(hi + 0.5, scale)
        with pytest.raises(ValueError, match=scale):
            normalise_score(lo - 0.5, scale)
    with pytest.raises(ValueError, match="unknown feedback scale"):
        normalise_score(1, "stars")
    with pytest.raises(ValueError):
        normalise_score(float("nan"))


@pytest.mark.parametrize(("score", "scale"), [(1, "thumbs"), (-1, "thumbs"), (0, "thumbs"), (0.7, "unit"),
                                              (0, "unit"), (1, "ten"), (7, "ten"), (10, "ten"), (3.5, None)])
def test_a_score_on_a_declared_scale_is_stored_as_the_bare_score_that_reads_the_same(score: float,
                                                                                       scale: str | None) -> None:
    stored = stored_score(score, scale)
    assert -1 <= stored <= 10  # inside the range the store accepts
    assert normalise_score(stored) == pytest.approx(normalise_score(score, scale), abs=1e-12)
    live = LiveStats()
    live.observe_feedback("m", score, predicted=0.5, scale=scale)
    assert live.snapshot()["m"]["quality_delta"] == pytest.approx((normalise_score(score, scale) - 0.5) / 11)


# ------------------------------------------------------------------------------------------ incremental refresh


def new_store(tmp_path: Path, name: str = "a.db") -> TelemetryStore:
    return TelemetryStore(f"sqlite:///{tmp_path / name}")


def add_requests(store: TelemetryStore, n: int, rng: random.Random, start: int = 0) -> list[str]:
    ids = []
    for i in range(start, start + n):
        model = rng.choice(["alpha", "beta", "gamma", None])
        decision = rng.choice([None, {"quality": {model: rng.random()}} if model else None, {"quality": {}}])
        store.write(RequestRecord(id=f"r{i}", mix="d", strategy="route", model=model, status="ok",
                                  api_key=rng.choice([None, None, "mk_a", "mk_b"]),
                                  http_status=200, stream=False, prompt_tokens=1, completion_tokens=1, latency_ms=1,
                                  cost_usd=0, energy_kwh=0, co2_g=0, decision=decision))
        ids.append(f"r{i}")
    return ids


def add_feedback_rows(store: TelemetryStore, request_ids: list[str], n: int, rng: random.Random,
                      ids: list[int] | None = None) -> None:
    rows = [{"request_id": rng.choice(request_ids), "score": rng.choice([-1, 0, 0.25, 1, 3, 7.5, 10, rng.random()])}
            for _ in range(n)]
    for row, fid in zip(rows, ids or [], strict=False):
        row["id"] = fid
    with store.engine.begin() as c:
        for row in rows:
            c.execute(insert(FeedbackRecord.__table__).values(**row))


def feedback_view(stats: LiveStats) -> dict[str | None, dict[str, float]]:
    """Each model's quality shift as the requests of no key, key mk_a and key mk_b see it."""
    return {key: {m: v["quality_delta"] for m, v in stats.snapshot(api_key=key).items()}
            for key in (None, "mk_a", "mk_b")}


def ratings(stats: LiveStats) -> float:
    """Ratings counted: the keyless ones and every key's."""
    return (sum(st.feedback_n for st in stats.models.values())
            + sum(n for models in stats.keyed.values() for n, _ in models.values()))


def full_read(store: TelemetryStore) -> LiveStats:
    fresh = LiveStats()
    fresh.refresh(store)
    return fresh


def test_a_refresh_reads_only_the_feedback_rows_it_has_not_read(tmp_path: Path) -> None:
    """Was: every refresh (every 2 s) re-read all feedback joined with its request's decision: 2.5-3.7 s with 92k
    rows, half a core on an idle server."""
    rng = random.Random(1)
    store = new_store(tmp_path)
    reqs = add_requests(store, 40, rng)
    add_feedback_rows(store, reqs, 200, rng)
    live = LiveStats()
    live.refresh(store)
    assert live.feedback_rows_read == 200  # the first refresh reads everything
    live.refresh(store)
    assert live.feedback_rows_read == FEEDBACK_TAIL  # nothing new: only the newest ids' (id, request, score)
    add_feedback_rows(store, add_requests(store, 5, rng, start=100), 3, rng)
    live.refresh(store)
    assert live.feedback_rows_read == FEEDBACK_TAIL + 3
    before = feedback_view(live)
    with store.engine.begin() as c:  # rewrite the rows read before: a refresh that re-read them would see it
        c.execute(update(FeedbackRecord.__table__).where(FeedbackRecord.id <= 203 - FEEDBACK_TAIL).values(score=10.0))
    live.refresh(store)
    assert live.feedback_rows_read == FEEDBACK_TAIL and feedback_view(live) == before
    assert feedback_view(full_read(store)) != before  # (a full re-read does see the rewrite)


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_incremental_refreshes_equal_one_full_read(tmp_path: Path, db: str, request: pytest.FixtureRequest) -> None:
    rng = random.Random(7)
    store = new_store(tmp_path) if db == "sqlite" else TelemetryStore(request.getfixturevalue("fresh_postgres"))
    live = LiveStats()
    reqs: list[str] = []
    for batch in range(12):
        reqs += add_requests(store, rng.randint(0, 8), rng, start=len(reqs))
        if reqs:
            add_feedback_rows(store, reqs, rng.randint(0, 40), rng)
        if batch % 3 == 0 and reqs:  # a request re-rated: its earlier rows replaced by the new one
            rid = rng.choice(reqs)
            with store.engine.begin() as c:
                c.execute(delete(FeedbackRecord.__table__).where(FeedbackRecord.request_id == rid))
            add_feedback_rows(store, [rid], 1, rng)
        live.refresh(store)
        full = full_read(store)
        assert feedback_view(live) == feedback_view(full)  # exactly, not approximately
        assert live.snapshot(now=0) == full.snapshot(now=0)
    assert sum(st.feedback_n for st in live.models.values()) > 100


def test_feedback_committed_after_a_newer_row_is_still_counted(tmp_path: Path) -> None:
    """On PostgreSQL a replica's feedback row can commit after one with a higher id was already read."""
    rng = random.Random(3)
    store = new_store(tmp_path)
    reqs = add_requests(store, 300, rng)

    def rate(*ids: int) -> None:  # one rating per request, so that none replaces another
        for fid in ids:
            add_feedback_rows(store, [reqs[fid]], 1, rng, ids=[fid])

    rate(1, 2, 4, 200)  # ids 3 and 100: transactions still in flight, 100 far below the newest id
    live = LiveStats()
    late = LiveStats(feedback_settle_s=0)  # missing ids are not looked for (but the newest ids are re-checked)
    live.refresh(store)
    late.refresh(store)
    rate(3, 100, 201)
    live.refresh(store)
    late.refresh(store)
    assert live.feedback_rows_read == 1 + 2 + 1  # the newest ids' (id, request, score), then 100 and 201 in full
    assert feedback_view(live) == feedback_view(full_read(store))
    rated = ratings(live)
    assert store.get(reqs[3]).model and store.get(reqs[100]).model  # (so that their ratings count)
    assert ratings(late) == rated - 2  # 3 and 100, given up on, are missing


def test_an_id_used_again_after_its_row_was_deleted_is_read(tmp_path: Path) -> None:
    """SQLite gives a new row the id of a deleted newest one: a request re-rated at once (``add_feedback`` replaces
    a request's rating) gets its old id back, with another score."""
    rng = random.Random(4)
    store = new_store(tmp_path)
    reqs = add_requests(store, 30, rng)
    add_feedback_rows(store, reqs[:20], 100, rng)
    live = LiveStats()
    live.refresh(store)
    for step in range(6):
        with store.engine.begin() as c:
            top = c.execute(select(func.max(FeedbackRecord.id))).scalar_one()
            rid = c.execute(select(FeedbackRecord.request_id).where(FeedbackRecord.id == top)).scalar_one()
            c.execute(delete(FeedbackRecord.__table__).where(FeedbackRecord.request_id == rid))
            c.execute(insert(FeedbackRecord.__table__).values(request_id=rid, score=rng.choice([-1, 4, 10])))
            assert c.execute(select(func.max(FeedbackRecord.id))).scalar_one() <= top  # the id is used again
        if step == 3:
            add_feedback_rows(store, reqs[20:], 2, rng)
        live.refresh(store)
        assert feedback_view(live) == feedback_view(full_read(store)), step


def test_a_refresh_from_another_database_starts_over(tmp_path: Path) -> None:
    rng = random.Random(5)
    a, b = new_store(tmp_path, "a.db"), new_store(tmp_path, "b.db")
    add_feedback_rows(a, add_requests(a, 10, rng), 30, rng)
    add_feedback_rows(b, add_requests(b, 10, rng), 5, rng)
    live = LiveStats()
    live.refresh(a)
    live.refresh(b)
    from_b = feedback_view(full_read(b))
    seen = feedback_view(live)
    assert from_b and {k: {m: seen[k][m] for m in models} for k, models in from_b.items()} == from_b


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_of_ratings_sent_at_once_exactly_one_is_new(tmp_path: Path, db: str, request: pytest.FixtureRequest) -> None:
    """Each rating says in its own transaction whether it replaced one: of eight first ratings of one request sent
    at once, one is new (counted as an observation), seven replace, and one row is left."""
    from concurrent.futures import ThreadPoolExecutor

    store = new_store(tmp_path) if db == "sqlite" else TelemetryStore(request.getfixturevalue("fresh_postgres"))
    rid = add_requests(store, 1, random.Random(3))[0]
    with ThreadPoolExecutor(8) as pool:
        ratings = list(pool.map(lambda i: store.rate(rid, i / 10), range(8)))
    assert sorted(r.replaced for r in ratings) == [False] + [True] * 7
    assert all(r.model == ratings[0].model and r.model for r in ratings)
    assert len(store.feedback_for(rid)) == 1

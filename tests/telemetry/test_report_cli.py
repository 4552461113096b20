"""`moai report` and `moai feedback`: negative scores, non-JSON server errors, --since bounds and offsets, bulk
loading (queries per report), tables that never fold a cell, upstream calls only, normalised feedback, and no
database created by a report."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from cli_support import one_line_error
from sqlalchemy import event
from typer.testing import CliRunner

from moai.cli import app
from moai.telemetry.feedback import normalise_score
from moai.telemetry.records import CallRecord, FeedbackRecord, RequestRecord
from moai.telemetry.report import Report, build_report, load_rows, parse_since
from moai.telemetry.store import TelemetryStore

T0 = datetime(2026, 12, 6, 13, 26, tzinfo=UTC)




def request(i: int, model: str = "m", *, calls: tuple[str, ...] = ("ok",), at: datetime | None = None,
            completion_tokens: int = 5, feedback: tuple[float, ...] = ()) -> RequestRecord:
    rec = RequestRecord(id=f"chatcmpl-{i}", created_at=at or T0 + timedelta(seconds=i), mix="default",
                        strategy="route", model=model, status="ok", http_status=200, stream=False, prompt_tokens=10,
                        completion_tokens=completion_tokens, latency_ms=10.0 + i, cost_usd=0.001 * (i + 1),
                        energy_kwh=1e-6, co2_g=0.0005, api_key="mk_a" if i % 2 else None)
    for n, status in enumerate(calls):
        called = status not in ("cached", "skipped")
        rec.calls.append(CallRecord(step=f"s{n}", role="answer", model=model, status=status, started_at=1.0,
                                    ended_at=1.5, latency_ms=100.0 + i + n, prompt_tokens=10 * called,
                                    completion_tokens=completion_tokens * called, cost_usd=0.001 * called,
                                    energy_kwh=1e-6 * called, co2_g=0.0005 * called))
    for s in feedback:
        rec.feedback.append(FeedbackRecord(score=s))
    return rec


@pytest.fixture()
def store(tmp_path: Path) -> TelemetryStore:
    return TelemetryStore(f"sqlite:///{tmp_path / 'r.db'}")


def _url(store: TelemetryStore) -> str:
    return str(store.url)


# ---------------------------------------------------------------- feedback


@pytest.mark.parametrize("score", ["-1", "-0.5"])
def test_feedback_takes_a_negative_score_as_written(store: TelemetryStore, score: str) -> None:
    store.write(request(1))
    r = CliRunner().invoke(app, ["feedback", "chatcmpl-1", score, "--database-url", _url(store)])
    assert r.exit_code == 0, r.output
    assert [f.score for f in store.feedback_for("chatcmpl-1")] == [float(score)]
    r = CliRunner().invoke(app, ["feedback", "chatcmpl-1", score, "--comment", "wrong", "--database-url", _url(store)])
    assert r.exit_code == 0, r.output
    assert store.feedback_for("chatcmpl-1")[-1].comment == "wrong"


def _answer(monkeypatch: pytest.MonkeyPatch, response: httpx.Response) -> None:
    monkeypatch.setattr(httpx, "post", lambda *a, **k: response)


def test_feedback_url_with_an_html_error_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    page = "<html><head><title>502 Bad Gateway</title></head><body>" + "<p>nginx</p>" * 100 + "</body></html>"
    _answer(monkeypatch, httpx.Response(502, text=page))
    line = one_line_error(CliRunner().invoke(app, ["feedback", "chatcmpl-x", "1", "--url", "http://gw"]),
                          "502", "Bad Gateway")
    assert len(line) < 300, line
    _answer(monkeypatch, httpx.Response(503, text=""))
    one_line_error(CliRunner().invoke(app, ["feedback", "chatcmpl-x", "1", "--url", "http://gw"]), "503")
    _answer(monkeypatch, httpx.Response(500, json=["not", "an", "object"]))
    one_line_error(CliRunner().invoke(app, ["feedback", "chatcmpl-x", "1", "--url", "http://gw"]), "500")
    _answer(monkeypatch, httpx.Response(404, json={"error": {"message": "no request 'chatcmpl-x'"}}))
    one_line_error(CliRunner().invoke(app, ["feedback", "chatcmpl-x", "-1", "--url", "http://gw"]),
                   "404", "no request 'chatcmpl-x'")
    _answer(monkeypatch, httpx.Response(200, text="<html>a login page</html>"))  # not moai: nothing was recorded
    one_line_error(CliRunner().invoke(app, ["feedback", "chatcmpl-x", "1", "--url", "http://gw"]),
                   "not with a feedback")
    _answer(monkeypatch, httpx.Response(200, json={"object": "feedback", "id": 1}))
    assert CliRunner().invoke(app, ["feedback", "chatcmpl-x", "1", "--url", "http://gw"]).exit_code == 0


# ---------------------------------------------------------------- --since


@pytest.mark.parametrize("spec", ["99999999999d", "10000000000w", "800000d", "1e400s".replace("e400", "0" * 400)])
def test_since_too_far_back_is_one_line(spec: str, store: TelemetryStore) -> None:
    with pytest.raises(ValueError, match="--since"):
        parse_since(spec)
    one_line_error(CliRunner().invoke(app, ["report", "--since", spec, "--database-url", _url(store)]), "--since")


def test_since_with_an_offset_selects_by_utc(store: TelemetryStore) -> None:
    store.write_many([request(i, at=T0 + timedelta(minutes=i)) for i in range(5)])  # 13:26 .. 13:30 UTC
    expected = {"chatcmpl-1", "chatcmpl-2", "chatcmpl-3", "chatcmpl-4"}  # at or after 13:27 UTC
    for spec in ("2026-12-06T13:27:00", "2026-12-06T13:27:00Z", "2026-12-06T14:27:00+01:00",
                 "2026-12-06T12:27:00-01:00"):
        since = parse_since(spec)
        assert since == datetime(2026, 12, 6, 13, 27, tzinfo=UTC) and since.utcoffset() == timedelta(0), spec
        assert {r.id for r in build_report(store, since).requests} == expected, spec
        assert {r.id for r in store.requests(since=since)} == expected, spec


# ---------------------------------------------------------------- bulk loading


def _count_queries(store: TelemetryStore, fn: Any) -> int:
    seen: list[str] = []

    def on_execute(*args: Any) -> None:
        seen.append(args[2])

    event.listen(store.engine, "before_cursor_execute", on_execute)
    try:
        fn()
    finally:
        event.remove(store.engine, "before_cursor_execute", on_execute)
    return len(seen)


def test_report_loads_in_a_fixed_number_of_queries(tmp_path: Path) -> None:
    """Not two lazy queries per request (104k requests took 84 s and 1 GB): one per table, whatever the count."""
    counts = {}
    for n in (4, 60):
        store = TelemetryStore(f"sqlite:///{tmp_path / f'{n}.db'}")
        store.write_many([request(i, calls=("failed", "ok"), feedback=(1.0,)) for i in range(n)])

        def report(store: TelemetryStore = store) -> None:
            rep = build_report(store, None)
            rep.model_rows(), rep.mix_rows(), rep.key_rows()

        counts[n] = _count_queries(store, report)
        assert counts[n] <= 3, counts
        assert _count_queries(store, lambda store=store: build_report(store, parse_since("1h"))) <= 3
        orm = _count_queries(store, store.requests)  # the ORM path (live tuner) loads in bulk too
        assert orm <= 3, orm
    assert counts[4] == counts[60]


def test_plain_rows_give_the_same_figures_as_orm_records(store: TelemetryStore) -> None:
    store.write_many([request(i, calls=("failed", "ok") if i % 3 else ("ok",), feedback=(0.5,) * (i % 2))
                      for i in range(12)] + [request(20, model="other", calls=("rate_limited", "cached"))])
    plain, orm = Report(None, load_rows(store, None)), Report(None, store.requests())
    assert plain.model_rows() == orm.model_rows()
    assert plain.mix_rows() == orm.mix_rows() and plain.key_rows() == orm.key_rows()
    assert [r.id for r in plain.requests] == [r.id for r in orm.requests]


# ---------------------------------------------------------------- figures


def test_cache_hits_are_not_model_calls(store: TelemetryStore) -> None:
    store.write_many([request(1, calls=("ok",)), request(2, calls=("cached",)), request(3, calls=("skipped", "ok"))])
    (row,) = build_report(store, None).model_rows()
    assert row["calls"] == 2 and row["errors"] == 0 and row["tokens_out"] == 10


def test_429s_are_counted_apart_from_a_models_errors(store: TelemetryStore) -> None:
    """A 429 says the model is busy, not broken: counted as an error, it made a rate-limited model look failing."""
    store.write_many([request(1, calls=("rate_limited", "ok")), request(2, calls=("failed", "ok")),
                      request(3, calls=("rate_limited",))])
    (row,) = build_report(store, None).model_rows()
    assert (row["calls"], row["errors"], row["rate_limited"]) == (5, 1, 2)


def test_feedback_mean_uses_the_gates_normalisation(store: TelemetryStore) -> None:
    store.write_many([request(1, feedback=(10.0,)), request(2, feedback=(-1.0,))])
    (row,) = build_report(store, None).model_rows()
    assert row["feedback_n"] == 2
    assert row["feedback_mean"] == pytest.approx(np.mean([normalise_score(10.0), normalise_score(-1.0)]))
    assert 0.0 <= row["feedback_mean"] <= 1.0  # not 4.5, the mean of a 0-10 rating and a thumbs down


def test_report_tables_never_fold_a_number_or_a_name(store: TelemetryStore) -> None:
    name = "a-rather-long-model-name-that-needs-room"
    store.write_many([request(i, model=name, completion_tokens=25599) for i in range(3)])
    r = CliRunner().invoke(app, ["report", "--database-url", _url(store)], env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    model_lines = [ln for ln in r.output.splitlines() if name in ln]
    assert len(model_lines) == 2, r.output  # one row in the models table, one in the mixes table's routes
    assert "76797" in model_lines[0] and "25599" not in r.output.replace("76797", "")  # 3 × 25599, in one piece


# ---------------------------------------------------------------- no database created


def test_report_on_a_missing_sqlite_file_is_one_line_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "typo" / "moai.db"
    line = one_line_error(CliRunner().invoke(app, ["report", "--database-url", f"sqlite:///{missing}"]),
                          str(missing), "does not exist")
    assert "no requests recorded" not in line
    assert not missing.exists() and not missing.parent.exists()
    TelemetryStore(f"sqlite:///{tmp_path / 'empty.db'}")  # an existing, empty database is still a report
    r = CliRunner().invoke(app, ["report", "--database-url", f"sqlite:///{tmp_path / 'empty.db'}"])
    assert r.exit_code == 0 and "no requests recorded" in r.output


def test_unanswered_requests_and_models_read_as_such(store: TelemetryStore) -> None:
    """A model with no answer has no latency (blank, not 0 ms); a request the client left is '(cancelled)'."""
    broken = request(1, "broken", calls=("failed",))
    broken.status, broken.model = "error", None
    left = request(2)
    left.status, left.model, left.http_status = "cancelled", None, 499
    store.write_many([request(0), broken, left])
    rep = build_report(store, None)
    models = {r["model"]: r for r in rep.model_rows()}
    assert models["broken"]["p50_ms"] is None and models["m"]["p50_ms"] is not None
    assert rep.mix_rows()[0]["routes"] == {"m": 1, "(failed)": 1, "(cancelled)": 1}


def test_a_request_its_client_left_is_no_error_of_the_mix(store: TelemetryStore) -> None:
    broken = request(1, calls=("failed",))
    broken.status, broken.model = "error", None
    left = request(2)
    left.status, left.model, left.http_status = "cancelled", None, 499
    store.write_many([request(0), broken, left])
    (row,) = build_report(store, None).mix_rows()
    assert (row["requests"], row["errors"], row["cancelled"]) == (3, 1, 1)


def test_a_plot_of_one_request_shows_it(store: TelemetryStore) -> None:
    """One request is one point on the cumulative cost and CO2 curves (a line of one point drew nothing)."""
    import io

    import matplotlib.image

    from moai.telemetry.report import plot_png

    store.write_many([request(0)])
    image = matplotlib.image.imread(io.BytesIO(plot_png(build_report(store, None))), format="png")
    h, w = image.shape[:2]

    def pixels(quadrant: Any, rgb: tuple[float, float, float]) -> int:
        return int((np.abs(quadrant[..., :3] - np.array(rgb)).max(axis=-1) < 0.08).sum())

    blue, green = (0.122, 0.467, 0.706), (0.173, 0.627, 0.173)  # tab:blue, tab:green
    assert pixels(image[: h // 2, : w // 2], blue) > 0
    assert pixels(image[: h // 2, w // 2:], green) > 0


def test_a_report_on_a_database_moai_never_wrote_to_leaves_it_as_it_was(tmp_path: Path) -> None:
    """PostgreSQL's empty database (or another program's SQLite file): nothing recorded, and no tables made there
    (opening a store migrates it)."""
    import sqlite3

    db = tmp_path / "other.db"
    with sqlite3.connect(db) as conn:
        conn.execute("create table notes (x text)")
    r = CliRunner().invoke(app, ["report", "--database-url", f"sqlite:///{db}"])
    assert r.exit_code == 0 and "no requests recorded" in r.output, r.output
    with sqlite3.connect(db) as conn:
        assert {t for (t,) in conn.execute("select name from sqlite_master where type = 'table'")} == {"notes"}

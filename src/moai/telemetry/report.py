"""Usage reports from the telemetry database: tables for the terminal, plots (PNG, PDF, SVG...), a self-contained
HTML page.

Per model (calls, tokens, p50/p95 latency, cost, energy, CO2, feedback) and per mix (requests, errors,
latency, spend), plus plots people would rather see than read: spend and CO2 over time, latency
distributions, route shares.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from moai.telemetry.feedback import normalise_score
from moai.telemetry.records import CallRecord, FeedbackRecord, RequestRecord
from moai.telemetry.store import TelemetryStore

_SINCE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
# calls that reached no model: a step the plan skipped, a step that reused an earlier step's answer (the
# judge's pick, an approved draft), an answer replayed from the response cache
NOT_CALLED = ("skipped", "passthrough", "cached")


def _since_error(spec: str) -> ValueError:
    return ValueError(f"--since {spec!r}: use a duration like 30m, 24h, 7d or an ISO timestamp")


def parse_since(spec: str | None) -> datetime | None:
    """``24h``, ``30m``, ``7d`` (or an ISO timestamp) → the earliest time to include, in UTC.

    Aware timestamps are converted to UTC (SQLite keeps naive UTC text and compares it as text, so
    14:27+01:00 must become 13:27); naive ones are read as UTC, as the store writes them."""
    if not spec:
        return None
    m = _SINCE.match(spec.strip())
    if m:
        try:
            return datetime.now(UTC) - timedelta(**{_UNITS[m.group(2)]: float(m.group(1))})
        except OverflowError:  # further back than datetime reaches (year 1)
            raise ValueError(f"--since {spec!r}: too far back; use a shorter duration, or leave --since "
                             "out for every request") from None
    try:
        t = datetime.fromisoformat(spec)
    except ValueError:
        raise _since_error(spec) from None
    if not t.tzinfo:
        return t.replace(tzinfo=UTC)
    try:
        return t.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is before year 1 in UTC
        raise ValueError(f"--since {spec!r}: out of range in UTC") from None


def _sqlite_file(url: str) -> str | None:
    """The file a SQLite URL names (None for another database, an in-memory one or a ``file:`` URI)."""
    try:
        u = make_url(url)
    except (ArgumentError, ValueError):
        return None  # TelemetryStore says what is wrong with it
    if u.get_backend_name() != "sqlite" or (u.query.get("uri") in ("true", "1")):
        return None
    db = u.database or ""
    if db in ("", ":memory:") or db.startswith("file:"):
        return None
    return db


def _never_written(path: Path) -> bool:
    """An empty file (0 bytes, no write-ahead log beside it): SQLite writes its header on the first table, and a
    WAL database's on opening, so no database was ever made there (a ``touch``, a temporary file's name)."""
    try:
        if not path.is_file() or path.stat().st_size:
            return False
        wal = path.with_name(path.name + "-wal")
        return not wal.exists() or wal.stat().st_size == 0
    except OSError:
        return False  # SQLite says what is wrong with it


def sqlite_file_problem(url: str) -> str | None:
    """Why a command that only reads finds no database at a SQLite URL: ``<path> does not exist``, ``<path> is an
    empty file (0 bytes), not a database``; None for anything else (a database file, another backend).

    Reading must not create a database: a mistyped path would otherwise become an empty database and a report
    saying "no requests recorded"; an empty file read the same, and came out holding the whole schema."""
    db = _sqlite_file(url)
    if db is None:
        return None
    if not Path(db).exists():
        return f"{db} does not exist"
    if _never_written(Path(db)):
        return f"{db} is an empty file (0 bytes), not a database"
    return None


def missing_sqlite_file(url: str) -> str | None:
    """The path of a SQLite database file that does not exist, or is empty (see ``sqlite_file_problem``, which says
    which); None for anything else."""
    return _sqlite_file(url) if sqlite_file_problem(url) is not None else None


@dataclass(slots=True)
class CallRow:
    """What the report reads of a model call (the CallRecord columns by the same names)."""

    model: str | None
    status: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    cost_usd: float
    energy_kwh: float
    co2_g: float


@dataclass(slots=True)
class FeedbackRow:
    score: float


@dataclass(slots=True)
class RequestRow:
    """What the report reads of a request (the RequestRecord columns by the same names), with its calls and
    feedback."""

    id: str
    created_at: datetime
    mix: str
    model: str | None
    status: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    cost_usd: float
    energy_kwh: float
    co2_g: float
    api_key: str | None
    calls: list[CallRow] = field(default_factory=list)
    feedback: list[FeedbackRow] = field(default_factory=list)


def load_rows(store: TelemetryStore, since: datetime | None) -> list[RequestRow]:
    """The requests since ``since`` (oldest first) with their calls and feedback: one query per table, only
    the columns the report reads, as plain rows (no ORM objects, no query per request)."""
    R, C, F = RequestRecord, CallRecord, FeedbackRecord
    req_cols = [getattr(R, f) for f in RequestRow.__slots__ if f not in ("calls", "feedback")]
    call_cols = [getattr(C, f) for f in CallRow.__slots__]
    q = select(*req_cols).order_by(R.created_at)
    qc = select(C.request_id, *call_cols).order_by(C.id)
    qf = select(F.request_id, F.score).order_by(F.id)
    if since is not None:
        q = q.where(R.created_at >= since)
        # by request id, through its index: a join let the database walk every call ever recorded
        recent = select(R.id).where(R.created_at >= since).scalar_subquery()
        qc = qc.where(C.request_id.in_(recent))
        qf = qf.where(F.request_id.in_(recent))
    with store.engine.connect() as conn:
        rows = [RequestRow(*t) for t in conn.execute(q)]
        by_id = {r.id: r for r in rows}
        for t in conn.execute(qc):
            if (r := by_id.get(t[0])) is not None:
                r.calls.append(CallRow(*t[1:]))
        for rid, score in conn.execute(qf):
            if (r := by_id.get(rid)) is not None:
                r.feedback.append(FeedbackRow(score))
    return rows


def _pct(values: list[float], q: float) -> float | None:
    """None when nothing answered: a blank cell, not a latency of 0."""
    return float(np.percentile(values, q)) if values else None


def _unanswered(status: str) -> str:
    """How a request no model answered is listed among a mix's routes."""
    return {"refused": "(refused)", "cancelled": "(cancelled)"}.get(status, "(failed)")


@dataclass
class Report:
    """Per model, per mix and per key figures. ``requests`` holds ``RequestRow``s (``build_report``) or
    ``RequestRecord``s with their calls and feedback loaded: the same attribute names."""

    since: datetime | None
    requests: list[Any]

    def model_rows(self) -> list[dict[str, Any]]:
        """Calls are upstream calls only (a cache hit, a skipped step or a reused answer reached no model), and so
        are the tokens, spend and latencies summed with them; feedback_mean is the mean of the scores normalised
        to 0..1 as the gate and /metrics read them."""
        acc: dict[str, dict[str, Any]] = defaultdict(lambda: defaultdict(float) | {"lat": [], "fb": []})
        for req in self.requests:
            for call in req.calls:
                if not call.model or call.status in NOT_CALLED:
                    continue
                a = acc[call.model]
                a["calls"] += 1
                a["errors"] += call.status == "failed"  # the model's own failures (what its breaker counts)
                a["rate_limited"] += call.status == "rate_limited"  # a 429: busy, not broken
                a["in"] += call.prompt_tokens
                a["out"] += call.completion_tokens
                a["cost"] += call.cost_usd
                a["kwh"] += call.energy_kwh
                a["co2"] += call.co2_g
                if call.status == "ok":
                    a["lat"].append(call.latency_ms)
            if req.model:
                acc[req.model]["fb"].extend(normalise_score(f.score) for f in req.feedback)
        rows = []
        for model, a in sorted(acc.items()):
            rows.append({"model": model, "calls": int(a["calls"]), "errors": int(a["errors"]),
                         "rate_limited": int(a["rate_limited"]),
                         "tokens_in": int(a["in"]), "tokens_out": int(a["out"]),
                         "p50_ms": _pct(a["lat"], 50), "p95_ms": _pct(a["lat"], 95), "cost_usd": a["cost"],
                         "kwh": a["kwh"], "co2_g": a["co2"], "feedback_n": len(a["fb"]),
                         "feedback_mean": float(np.mean(a["fb"])) if a["fb"] else None})
        return rows

    def mix_rows(self) -> list[dict[str, Any]]:
        groups: dict[str, list[Any]] = defaultdict(list)
        for req in self.requests:
            groups[req.mix].append(req)
        rows = []
        for mix, reqs in sorted(groups.items()):
            lat = [r.latency_ms for r in reqs if r.status == "ok"]
            routes: dict[str, int] = defaultdict(int)
            for r in reqs:
                routes[r.model or _unanswered(r.status)] += 1
            # a request its client walked away from (cancelled, 499) is no error of the mix: counted apart
            rows.append({"mix": mix, "requests": len(reqs),
                         "errors": sum(r.status not in ("ok", "cancelled") for r in reqs),
                         "cancelled": sum(r.status == "cancelled" for r in reqs),
                         "tokens": sum(r.prompt_tokens + r.completion_tokens for r in reqs),
                         "p50_ms": _pct(lat, 50), "p95_ms": _pct(lat, 95),
                         "cost_usd": sum(r.cost_usd for r in reqs), "kwh": sum(r.energy_kwh for r in reqs),
                         "co2_g": sum(r.co2_g for r in reqs), "routes": dict(routes)})
        return rows

    def key_rows(self) -> list[dict[str, Any]]:
        spend: dict[str, dict[str, float]] = defaultdict(lambda: {"requests": 0, "cost_usd": 0.0})
        for r in self.requests:
            if r.api_key:
                spend[r.api_key]["requests"] += 1
                spend[r.api_key]["cost_usd"] += r.cost_usd
        return [{"key": k, **v} for k, v in sorted(spend.items())]


def build_report(store: TelemetryStore, since: datetime | None) -> Report:
    return Report(since, load_rows(store, since))


def print_tables(report: Report, console: Any) -> None:
    """The models, mixes and keys tables on ``console``, never folding a cell: a number or a model name split
    over two lines ("2559" over "9") cannot be read or grepped. A table wider than the console (a pipe's 80
    columns, a narrow terminal) is printed at its own width instead, one line per row."""
    from rich.console import Console
    from rich.measure import Measurement
    from rich.table import Table
    from rich.text import Text

    for title, rows in (("models", report.model_rows()), ("mixes", report.mix_rows()),
                        ("spend per key", report.key_rows())):
        if not rows:
            continue
        t = Table(title=title)
        for col in rows[0]:
            t.add_column(col, no_wrap=True)
        for r in rows:
            t.add_row(*(Text(cell(c, v)) for c, v in r.items()))  # model and mix names are text, not rich markup
        need = Measurement.get(console, console.options.update_width(1_000_000), t).maximum
        out = console if need <= console.width else Console(width=need, file=console.file,
                                                            force_terminal=console.is_terminal)
        out.print(t)


# ------------------------------------------------------------------------------------------- plots


def _plain(label: str) -> str:
    """A model name as a plot label: "$...$" in it is text, not matplotlib mathtext (which can fail to parse)."""
    return label.replace("$", r"\$")


def plot_formats() -> dict[str, str]:
    """The image formats matplotlib writes here (suffix: description)."""
    from matplotlib.backend_bases import FigureCanvasBase

    return dict(FigureCanvasBase.get_supported_filetypes())


def plot_format(path: str | Path) -> str:
    """The format a plot written to ``path`` takes: the one its suffix names (``r.pdf``: PDF), PNG without a suffix;
    a suffix matplotlib cannot write is a ValueError (``r.pdf`` used to hold PNG bytes)."""
    suffix = Path(path).suffix.lower().removeprefix(".")
    if not suffix:
        return "png"
    formats = plot_formats()
    if suffix not in formats:
        raise ValueError(f"{path}: cannot write a plot as .{suffix}; use one of "
                         f"{', '.join('.' + f for f in sorted(formats))} (PNG without a suffix)")
    return suffix


def write_plot(report: Report, path: str | Path) -> None:
    """Write the plots to ``path`` in the format its suffix names (see ``plot_format``)."""
    fmt = plot_format(path)  # before the plots are drawn: a bad suffix costs nothing
    Path(path).write_bytes(plot_png(report, fmt))


POINTS_MARKED = 200  # up to this many requests, each is marked on the cumulative curves


def plot_png(report: Report, fmt: str = "png") -> bytes:
    """One image (PNG unless ``fmt`` names another format matplotlib writes): cumulative spend and CO2 over time,
    latency distribution per model, route shares."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    reqs = sorted(report.requests, key=lambda r: r.created_at)
    times = [r.created_at for r in reqs]
    ax = axes[0][0]
    if reqs:
        ax.plot(times, np.cumsum([r.cost_usd for r in reqs]), color="tab:blue", drawstyle="steps-post",
                marker="." if len(reqs) <= POINTS_MARKED else None)  # one request is a point, not an empty line
    ax.set_title("cumulative cost (USD)")
    ax.tick_params(axis="x", rotation=30)
    ax = axes[0][1]
    if reqs:
        ax.plot(times, np.cumsum([r.co2_g for r in reqs]), color="tab:green", drawstyle="steps-post",
                marker="." if len(reqs) <= POINTS_MARKED else None)
    ax.set_title("cumulative CO2e (g)")
    ax.tick_params(axis="x", rotation=30)
    ax = axes[1][0]
    per_model: dict[str, list[float]] = defaultdict(list)
    for r in reqs:
        for c in r.calls:
            if c.model and c.status == "ok":
                per_model[c.model].append(c.latency_ms / 1000)
    if per_model:
        ax.boxplot(list(per_model.values()), tick_labels=[_plain(m) for m in per_model], showfliers=False)
        ax.tick_params(axis="x", rotation=20)
    ax.set_title("call latency (s)")
    ax = axes[1][1]
    shares: dict[str, int] = defaultdict(int)
    for r in reqs:
        shares[r.model or _unanswered(r.status)] += 1
    shares = dict(sorted(shares.items(), key=lambda kv: kv[0].startswith("(")))  # answered first, in order met
    if shares:  # the models that answered, then the requests none answered (in brackets, in grey)
        ax.bar(range(len(shares)), list(shares.values()),
               color=["tab:gray" if m.startswith("(") else "tab:orange" for m in shares])
        ax.set_xticks(range(len(shares)), [_plain(m) for m in shares])
        ax.tick_params(axis="x", rotation=20)
    ax.set_title("requests by the model that answered")
    fig.suptitle(f"moai usage — {len(reqs)} requests")
    fig.tight_layout()
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format=fmt, dpi=90)
    except RuntimeError as e:  # a format whose writer needs a program that is not installed (pgf: LaTeX)
        raise ValueError(f"cannot write a plot as .{fmt}: {str(e).splitlines()[0]}") from None
    finally:
        plt.close(fig)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------- html


def _table(rows: list[dict[str, Any]], title: str) -> str:
    if not rows:
        return f"<h2>{html.escape(title)}</h2><p>No data.</p>"
    cols = list(rows[0].keys())
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell(c, r[c]))}</td>" for c in cols) + "</tr>" for r in rows
    )
    return f"<h2>{html.escape(title)}</h2><table><tr>{head}</tr>{body}</table>"


def fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 0.01 and v else f"{v:,.2f}"
    if isinstance(v, dict):
        return ", ".join(f"{k}: {n}" for k, n in v.items())
    return "" if v is None else str(v)


# significant figures a money amount keeps below $100 (from $100 up, cents): a figure off by 0.05% at most,
# where cents alone lose 31% of $0.0144 and all of a spend under half a cent
MONEY_DIGITS = 4


def money(usd: float) -> str:
    """USD with no exponent and at least ``MONEY_DIGITS`` significant figures below $100 (cents from $100 up),
    trailing zeros dropped down to cents: ``0.0144``, ``0.096``, ``1.50``, ``1,234.50``, ``0.000000042``."""
    if not usd or not math.isfinite(usd):
        return f"{usd:.2f}"
    decimals = max(2, MONEY_DIGITS - 1 - math.floor(math.log10(abs(usd))))
    text = f"{usd:,.{decimals}f}"
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.rstrip('0').ljust(2, '0')}"


def cell(column: str, v: Any) -> str:
    """A table cell: money columns (``*_usd``) as ``money``, anything else as ``fmt``."""
    return money(v) if column.endswith("_usd") and isinstance(v, int | float) else fmt(v)


def to_html(report: Report, png: bytes) -> str:
    since = report.since.isoformat(timespec="minutes") if report.since else "the beginning"
    img = base64.b64encode(png).decode()
    style = ("body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin-bottom:1.5em}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f3f3f3}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>moai report</title><style>{style}</style>"
            f"</head><body><h1>moai report</h1><p>{len(report.requests)} requests since {html.escape(since)}.</p>"
            + _table(report.model_rows(), "Models") + _table(report.mix_rows(), "Mixes")
            + _table(report.key_rows(), "Spend per API key")
            + f"<img alt='plots' src='data:image/png;base64,{img}'/></body></html>")


def write_html(report: Report, path: Path) -> None:
    path.write_text(to_html(report, plot_png(report)))

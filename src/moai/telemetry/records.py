"""The telemetry tables as ORM classes: requests, their model calls and feedback, gateway keys and their shared
limits, and settings every replica shares.

The schema itself is owned by the Alembic migrations (``telemetry/migrations``), which read ``Base.metadata``;
the store (``telemetry.store``) writes and reads these rows, and the server's key checks use them directly.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


def utcnow() -> datetime:
    return datetime.now(UTC)


class RequestRecord(Base):
    __tablename__ = "requests"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    mix: Mapped[str] = mapped_column(String(128), index=True)
    strategy: Mapped[str] = mapped_column(String(32))
    model: Mapped[str | None] = mapped_column(String(128), index=True)  # the model whose answer was returned
    # ok | error | cancelled | refused (before any model ran: a privacy refusal, no eligible model, a bad option)
    status: Mapped[str] = mapped_column(String(16))
    http_status: Mapped[int] = mapped_column(Integer, default=200)
    stream: Mapped[bool] = mapped_column(Boolean, default=False)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0)
    ttft_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    energy_kwh: Mapped[float] = mapped_column(Float, default=0.0)
    co2_g: Mapped[float] = mapped_column(Float, default=0.0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    decision: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    api_key: Mapped[str | None] = mapped_column(String(64), nullable=True)  # indexed with created_at (budgets)
    session: Mapped[str | None] = mapped_column(String(128), nullable=True)  # indexed with api_key, created_at

    calls: Mapped[list[CallRecord]] = relationship(back_populates="request", cascade="all, delete-orphan")
    feedback: Mapped[list[FeedbackRecord]] = relationship(back_populates="request", cascade="all, delete-orphan")

    __table_args__ = (Index("ix_requests_api_key_created_at", "api_key", "created_at"),
                      Index("ix_requests_session_api_key_created_at", "session", "api_key", "created_at"))


class CallRecord(Base):
    __tablename__ = "calls"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("requests.id"), index=True)
    step: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(32))
    model: Mapped[str | None] = mapped_column(String(128))  # indexed with ended_at (live statistics)
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[float] = mapped_column(Float)
    ended_at: Mapped[float] = mapped_column(Float)
    latency_ms: Mapped[float] = mapped_column(Float)
    ttft_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    energy_kwh: Mapped[float] = mapped_column(Float, default=0.0)
    co2_g: Mapped[float] = mapped_column(Float, default=0.0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    retry_after_s: Mapped[float | None] = mapped_column(Float, nullable=True)  # a 429's Retry-After, when it had one

    request: Mapped[RequestRecord] = relationship(back_populates="calls")

    __table_args__ = (Index("ix_calls_model_ended_at", "model", "ended_at"),
                      # the last minute's 429s, read by every process (a cool-down holds for every replica)
                      Index("ix_calls_rate_limited", "ended_at", sqlite_where=text("status = 'rate_limited'"),
                            postgresql_where=text("status = 'rate_limited'")))


class FeedbackRecord(Base):
    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("requests.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    score: Mapped[float] = mapped_column(Float)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)

    request: Mapped[RequestRecord] = relationship(back_populates="feedback")


class ApiKey(Base):
    """A gateway key: only its hash is stored; the secret is shown once at creation."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # public id, e.g. mk_3f2a9c1d
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    allowed_mixes: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    budget_day_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    budget_month_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    rpm: Mapped[int | None] = mapped_column(Integer, nullable=True)


class SpendHold(Base):
    """The worst-case cost of a budgeted key's requests still running, admitted in one UTC minute: counted
    against the key's budget until each is recorded with its real cost (see ``server/spend_holds.py``)."""

    __tablename__ = "spend_holds"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    minute: Mapped[int] = mapped_column(Integer, primary_key=True)
    usd: Mapped[float] = mapped_column(Float)


class RateWindow(Base):
    """Requests a key made in one UTC minute (unix time // 60): the shared state of its RPM limit."""

    __tablename__ = "rate_windows"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    minute: Mapped[int] = mapped_column(Integer, primary_key=True)
    count: Mapped[int] = mapped_column(Integer)


class Setting(Base):
    """A setting every replica sharing the database shares (``session_secret``: see ``session_digest``)."""

    __tablename__ = "settings"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)

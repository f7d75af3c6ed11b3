"""The tables of the results store (SQLAlchemy 2, one schema for SQLite and PostgreSQL).

A run keeps everything that produced it: the exact scenario version (by the
hash of its normalized content, so an edited file is a new version), the
environment, its tags, and per repetition the scalar measurements, the
per-subflow results and the per-path time series. The schema is created and
upgraded only by the Alembic migrations in `migrations/`; change both together.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class ScenarioVersion(Base):
    __tablename__ = "scenario_versions"
    __table_args__ = (UniqueConstraint("name", "content_hash"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    #: the normalized scenario; None when imported from a bare `run --json` document
    content: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    first_seen: Mapped[float] = mapped_column(Float)


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uid: Mapped[str] = mapped_column(String(32), unique=True)
    scenario_id: Mapped[int] = mapped_column(ForeignKey("scenario_versions.id"), index=True)
    label: Mapped[str | None] = mapped_column(String(200), index=True, nullable=True)
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[float] = mapped_column(Float, index=True)
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    kernel: Mapped[str] = mapped_column(String(200), index=True)
    scheduler: Mapped[str] = mapped_column(String(64))
    path_manager: Mapped[str] = mapped_column(String(32))
    backend: Mapped[str] = mapped_column(String(32))
    errors: Mapped[list[Any]] = mapped_column(JSON, default=list)

    scenario: Mapped[ScenarioVersion] = relationship(lazy="joined")
    environment: Mapped["Environment"] = relationship(back_populates="run", cascade="all, delete-orphan")
    tags: Mapped[list["Tag"]] = relationship(back_populates="run", cascade="all, delete-orphan", order_by="Tag.key")
    repetitions: Mapped[list["RepetitionRow"]] = relationship(back_populates="run", cascade="all, delete-orphan",
                                                             order_by="RepetitionRow.index")


class Environment(Base):
    """Columns to group and filter by; `document` is the whole environment, for exact round trips."""

    __tablename__ = "environments"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255), default="")
    kernel_release: Mapped[str] = mapped_column(String(200), default="")
    kernel_version: Mapped[str] = mapped_column(Text, default="")
    cmdline: Mapped[str] = mapped_column(Text, default="")
    cpu_model: Mapped[str] = mapped_column(String(200), default="")
    cpu_count: Mapped[int | None] = mapped_column(Integer, nullable=True)
    lab_version: Mapped[str] = mapped_column(String(64), default="")
    lab_commit: Mapped[str] = mapped_column(String(64), default="")
    link_backend: Mapped[str] = mapped_column(String(32), default="")
    load_before: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    load_after: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    sysctls_client: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    sysctls_server: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    link: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    document: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    run: Mapped[Run] = relationship(back_populates="environment")


class Tag(Base):
    __tablename__ = "tags"
    __table_args__ = (Index("ix_tags_key_value", "key", "value"),)

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(String(500))

    run: Mapped[Run] = relationship(back_populates="tags")


class RepetitionRow(Base):
    __tablename__ = "repetitions"
    __table_args__ = (UniqueConstraint("run_id", "index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    warmup: Mapped[bool] = mapped_column(Boolean, default=False)
    started_at: Mapped[float] = mapped_column(Float, default=0.0)
    #: completed, failed, timeout or interrupted; measured metrics are compared over completed ones only
    status: Mapped[str] = mapped_column(String(16), default="completed", server_default="completed", index=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    over_budget: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    #: [run] baseline = "best-path": the path this repetition ran on alone as plain TCP; NULL for MPTCP ones,
    #: the only ones samples() and medians read
    baseline_path: Mapped[str | None] = mapped_column(String(32), nullable=True)
    bytes: Mapped[int] = mapped_column(BigInteger)
    mptcp: Mapped[bool] = mapped_column(Boolean)
    mib: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    mib_server: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: the time series' sampling interval and sample times; None when the run kept no time series
    series_interval_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    series_t: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    #: Repetition.series, the workload's per-event series (rr latencies, stream chunk delays, flow completion
    #: times; migration 0004); NULL when it had none or was stored before 0004
    workload_series: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    #: Repetition.programs, a command workload's programs (argv, exit code, stdout, last stderr line; migration
    #: 0005_programs); NULL for the lab's own workloads and runs stored before it
    programs: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)

    run: Mapped[Run] = relationship(back_populates="repetitions")
    measurements: Mapped[list["Measurement"]] = relationship(cascade="all, delete-orphan", lazy="selectin")
    subflows: Mapped[list["SubflowRow"]] = relationship(cascade="all, delete-orphan", lazy="selectin",
                                                        order_by="SubflowRow.position")
    series: Mapped[list["SeriesRow"]] = relationship(cascade="all, delete-orphan", order_by="SeriesRow.position")


class Measurement(Base):
    """One scalar metric of one repetition (goodput_mbps, completion_s, retransmits, ...): what compare reads."""

    __tablename__ = "measurements"

    repetition_id: Mapped[int] = mapped_column(ForeignKey("repetitions.id", ondelete="CASCADE"), primary_key=True)
    metric: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[float] = mapped_column(Float)


class SubflowRow(Base):
    __tablename__ = "subflows"

    repetition_id: Mapped[int] = mapped_column(ForeignKey("repetitions.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(String(32))
    bytes_sent: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_acked: Mapped[int] = mapped_column(BigInteger, default=0)
    retransmits: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_retrans: Mapped[int] = mapped_column(BigInteger, default=0)
    rtt_ms: Mapped[float] = mapped_column(Float, default=0.0)
    min_rtt_ms: Mapped[float] = mapped_column(Float, default=0.0)
    rtt_median_ms: Mapped[float] = mapped_column(Float, default=0.0)
    subflows_opened: Mapped[int] = mapped_column(Integer, default=0)
    share: Mapped[float] = mapped_column(Float, default=0.0)
    congestion_control: Mapped[str] = mapped_column(String(64), default="", server_default="")
    #: SubflowResult.endpoint and .endpoints (migration 0004_pm): the path's endpoint flags and its subflows'
    #: endpoints; "" and NULL for runs stored before it
    endpoint: Mapped[str] = mapped_column(String(64), default="", server_default="")
    endpoints: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)


class SeriesRow(Base):
    """One path's time series in one repetition, at the repetition's series_t (JSON arrays: read whole)."""

    __tablename__ = "subflow_series"

    repetition_id: Mapped[int] = mapped_column(ForeignKey("repetitions.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(String(32))
    throughput_mbps: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    rtt_ms: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    #: TimeSeries.delivered_mbps (migration 0003); NULL for runs stored before it
    delivered_mbps: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    #: TimeSeries.cwnd (migration 0004); NULL for runs stored before it
    cwnd: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)

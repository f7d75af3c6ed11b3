"""Engines and migrations: one place knows how SQLite and PostgreSQL differ.

SQLite: WAL journal (readers never block the writer), a busy timeout, and
every transaction begins IMMEDIATE, so two runs writing one file queue for the
write lock instead of failing when a read transaction tries to become a write
(SQLITE_BUSY_SNAPSHOT, which no busy timeout retries). PostgreSQL: migrations
hold an advisory lock, so many processes opening a fresh database at once
apply the schema exactly once.
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

#: seconds a writer waits for a locked SQLite file / a PostgreSQL connection before giving up
TIMEOUT_ENV = "MPTCPLAB_DB_TIMEOUT"
DEFAULT_TIMEOUT_S = 30.0
_MIGRATION_LOCK_KEY = 0x6D70746C  # "mptl": pg_advisory_xact_lock key


def timeout_s() -> float:
    try:
        return float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
    except ValueError:
        return DEFAULT_TIMEOUT_S


def make_engine(url: URL) -> Engine:
    """An engine for `url`; for SQLite the parent directory is created."""
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": timeout_s()}, poolclass=NullPool)
        _sqlite_pragmas(engine)
        return engine
    return create_engine(url, connect_args={"connect_timeout": max(1, int(timeout_s()))}, poolclass=NullPool)


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves, below
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={int(timeout_s() * 1000)}")
        cur.close()

    @event.listens_for(engine, "begin")
    def on_begin(conn) -> None:  # type: ignore[no-untyped-def]
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("mptcplab.store") / "migrations"))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision; a no-op when it already is (the common case)."""
    cfg = _alembic_config()
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
        if MigrationContext.configure(conn).get_current_revision() == head_revision():
            return
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")

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
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

if TYPE_CHECKING:  # alembic (0.3 s to import, with mako and pygments) loads only when a schema must change
    from alembic.config import Config

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
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("mptcplab.store") / "migrations"))
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


_SCRIPT_REVISION = re.compile(r"^(revision|down_revision)\s*=\s*(?:'([^'\n]*)'|\"([^\"\n]*)\"|(None))\s*$", re.M)


@lru_cache(maxsize=1)
def script_head() -> str | None:
    """The head revision read from the migration scripts' `revision = '…'` and `down_revision = '…'` lines, without
    importing alembic; None when the scripts are not a plain chain (a merge, a tuple, a line it cannot read), and
    then alembic decides. tests/test_store.py checks it equals alembic's head."""
    revisions: dict[str, str | None] = {}
    for script in (resources.files("mptcplab.store") / "migrations" / "versions").iterdir():
        if not script.name.endswith(".py") or script.name.startswith("_"):
            continue
        found = {m[0]: m[1] or m[2] or None for m in _SCRIPT_REVISION.findall(script.read_text())}
        if "revision" not in found or "down_revision" not in found or not found["revision"]:
            return None
        revisions[found["revision"]] = found["down_revision"]  # type: ignore[index]
    heads = set(revisions) - set(revisions.values())
    return heads.pop() if len(heads) == 1 else None


def _stored_revision(conn: Connection) -> str | None:
    """What alembic_version holds (None: no table or not exactly one row: alembic decides)."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    rows = conn.execute(text("SELECT version_num FROM alembic_version")).all()
    return rows[0][0] if len(rows) == 1 else None


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision; a no-op when it already is (the common case, decided without
    importing alembic)."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
        head = script_head()
        if head is not None and _stored_revision(conn) == head:
            return
        from alembic import command
        from alembic.runtime.migration import MigrationContext

        if MigrationContext.configure(conn).get_current_revision() == head_revision():
            return
        cfg = _alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")

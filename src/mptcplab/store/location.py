"""Where results go: `--db URL|PATH`, else $MPTCPLAB_DB, else a per-user SQLite file.

The default lives in the XDG data directory ($XDG_DATA_HOME/mptcplab, else
~/.local/share/mptcplab, for root too), beside the spool directory that keeps
results a database could not take.
"""
from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from ..errors import UsageError

ENV_VAR = "MPTCPLAB_DB"


def data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "mptcplab"


def default_db_path() -> Path:
    return data_dir() / "results.db"


def spool_dir() -> Path:
    return data_dir() / "spool"


def resolve_db(db: str | None = None) -> URL:
    """A SQLAlchemy URL from --db, $MPTCPLAB_DB or the default file; a plain path is a SQLite file."""
    ref = db or os.environ.get(ENV_VAR) or str(default_db_path())
    if "://" not in ref:
        url = URL.create("sqlite", database=str(Path(ref).expanduser().resolve()))
        _check_directory(url, given="--db" if db else ENV_VAR if os.environ.get(ENV_VAR) else None)
        return url
    try:
        url = make_url(ref)
    except ArgumentError:
        raise UsageError(f"--db {ref!r} is neither a file path nor a database URL",
                         "use a path, sqlite:///PATH or postgresql+psycopg://user@host/db") from None
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise UsageError(f"--db {display(url)}: only SQLite and PostgreSQL stores are supported",
                         "use a path, sqlite:///PATH or postgresql+psycopg://user@host/db")
    if url.get_backend_name() == "postgresql" and url.get_driver_name() != "psycopg":
        url = url.set(drivername="postgresql+psycopg")
    _check_directory(url, given="--db" if db else ENV_VAR)
    return url


def _check_directory(url: URL, given: str | None) -> None:
    """A SQLite file the user named (`given`: --db or MPTCPLAB_DB) must be in a directory that exists: a mistyped
    path is a usage error (exit 2), never a new directory tree. The default location's directory is created."""
    if given is None or url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return
    parent = Path(url.database).parent
    if not parent.is_dir():
        raise UsageError(f"no results database at {url.database}: the directory {parent} does not exist",
                         f"create it (mkdir -p {parent}) or pass --db (or set {ENV_VAR}) to where your runs are")


def display(url: URL) -> str:
    """What to show users: the file for SQLite, the URL without its password otherwise."""
    if url.get_backend_name() == "sqlite" and url.database:
        return url.database
    return url.render_as_string(hide_password=True)

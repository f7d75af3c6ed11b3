"""The results store: every run with everything that produced it, in SQLite or PostgreSQL.

    store = open_store()                     # --db / $MPTCPLAB_DB / the per-user SQLite file
    result = store.load_result(store.resolve_run("3fa2"))

models.py is the schema, migrations/ the Alembic revisions applied on open,
store.py reads and writes RunResults, recorder.py stores a run while it runs
and spool.py keeps what a database could not take.
"""
from __future__ import annotations

__all__ = ["Store", "RunFilter", "Sample", "METRICS", "open_store", "resolve_db"]

from .location import resolve_db
from .store import METRICS, RunFilter, Sample, Store, open_store

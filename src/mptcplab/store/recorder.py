"""Store a run while it runs, and never lose what finished.

The recorder is a RunSink: the runner calls it when a run starts, after each
repetition and when the run stops (completed, failed or interrupted). Each
call is one small transaction. When the database cannot take a write (locked
past the timeout, disk full, server unreachable) the recorder says so once
and from then on keeps the whole result in a spool file instead, rewritten
after every repetition; `mptcplab import FILE` loads it later and skips the
repetitions the database already had.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import StoreError
from ..result import Repetition, RunResult
from ..protocols import RunSink
from ..scenario import Scenario
from . import spool
from .location import display, resolve_db, spool_dir
from .store import Store, open_store
from ..units import plural


class StoreRecorder(RunSink):
    """Write runs to the store named by `db` (a URL, a path, or None for $MPTCPLAB_DB / the default)."""

    def __init__(self, db: str | None = None, warn: Callable[[str], None] = print,
                 spool_to: Path | None = None) -> None:
        self.url = resolve_db(db)  # a bad --db is a usage error before anything runs
        self.warn = warn
        self.spool_dir = spool_to or spool_dir()
        self.store: Store | None = None
        self.broken: str | None = None  # why the store refused; then everything goes to the spool
        self.scenarios: dict[str, dict[str, Any]] = {}
        self.spooled: dict[str, Path] = {}
        self.lost: dict[str, str] = {}  # runs neither the store nor the spool could take, and why the spool could not
        self.results: dict[str, RunResult] = {}

    # -- RunSink ------------------------------------------------------------
    def run_started(self, result: RunResult, scenario: Scenario) -> None:
        self.scenarios[result.run_id] = scenario.normalized()
        self.results[result.run_id] = result
        self._write(result, lambda store: store.begin_run(result, self.scenarios[result.run_id]))

    def repetition_finished(self, result: RunResult, rep: Repetition) -> None:
        self._write(result, lambda store: store.add_repetition(result.run_id, rep))

    def run_finished(self, result: RunResult) -> None:
        self._write(result, lambda store: store.finish_run(result))

    # -- reporting ----------------------------------------------------------
    def where(self, result: RunResult) -> str:
        """One line saying where the run went."""
        n = len(result.repetitions)
        what = f"run {result.run_id} ({result.scenario}, {plural(n, 'repetition')}, {result.status})"
        if result.run_id in self.lost:
            return (f"nothing of {what} could be kept: {self.broken}; and the spool directory {self.spool_dir} "
                    f"cannot be written either ({self.lost[result.run_id]}) — its results are only in this command's "
                    f"output: `mptcplab run --json > FILE` keeps them, `mptcplab import FILE` stores them later")
        if result.run_id in self.spooled:
            path = self.spooled[result.run_id]
            return f"spooled {what} to {path} — load it later with: mptcplab import {path}"
        return f"stored {what} in {display(self.url)} — see it with: mptcplab show {result.run_id}"

    def report_lines(self) -> list[str]:
        return [self.where(r) for r in self.results.values()]

    # -- internals ----------------------------------------------------------
    def _write(self, result: RunResult, op: Callable[[Store], None]) -> None:
        if self.broken is None and result.run_id not in self.spooled:
            try:
                if self.store is None:
                    self.store = open_store(self.url)
                op(self.store)
                return
            except StoreError as e:
                self.broken = e.message
        self._spool(result)

    def _spool(self, result: RunResult) -> None:
        if result.run_id in self.lost:
            return  # said once, at the end (where)
        first = result.run_id not in self.spooled
        path = self.spooled.get(result.run_id) or spool.spool_path(self.spool_dir, result)
        try:
            spool.write(path, result, self.scenarios.get(result.run_id))
        except OSError as e:  # the run goes on: its results are still printed
            if first:
                self.lost[result.run_id] = e.strerror or str(e)
                return
            raise StoreError(f"{self.broken}; and the spool file {path} cannot be written any more: {e.strerror}",
                             "free some disk space or pass --db") from e
        self.spooled[result.run_id] = path
        if first:
            self.warn(f"{self.broken}; results go to the spool file {path} "
                      f"(load them later with: mptcplab import {path})")


def import_file(store: Store, path: Path) -> tuple[RunResult, int]:
    """Load one spool file (or `run --json` document) into `store`; returns the result and its new repetitions."""
    result, scenario = spool.read(path)
    return result, store.save_result(result, scenario)


def recorder_for(db: str | None, warn: Callable[[str], None]) -> StoreRecorder:
    """The run's store recorder for `--db` (a URL, a path, or None for the default); a bad --db is refused
    (UsageError, exit 2) before anything runs. `warn` gets one line when the store fails and the spool takes over."""
    return StoreRecorder(db, warn=warn)

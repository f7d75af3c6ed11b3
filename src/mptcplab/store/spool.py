"""The spool: results a database could not take, as JSON files that `mptcplab import` loads later.

A spool file holds the whole run so far (scenario content + RunResult) and is
rewritten atomically after every repetition, so a crash or Ctrl-C at any
moment leaves a complete, loadable file with every finished repetition.
"""
from __future__ import annotations

import gzip
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..errors import UsageError
from ..fields import validation_problem
from ..result import RunResult

FORMAT = "mptcplab-spool"
VERSION = 1


def spool_path(directory: Path, result: RunResult) -> Path:
    return directory / f"{result.scenario}-{result.run_id}.json"


def write(path: Path, result: RunResult, scenario: dict[str, Any] | None) -> Path:
    """Atomically (re)write the spool file: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"format": FORMAT, "version": VERSION, "scenario_content": scenario, "result": result.to_json()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".spool-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read(path: Path) -> tuple[RunResult, dict[str, Any] | None]:
    """A spool file, or a `mptcplab run --json` document (then the scenario's content is unknown).

    Raises UsageError (one line) for a file that is none of those; see read_all for exports."""
    docs = read_all(path)
    if len(docs) != 1:
        raise UsageError(f"{path}: holds {len(docs)} runs, not one")
    return docs[0]


def read_all(path: Path) -> list[tuple[RunResult, dict[str, Any] | None]]:
    """Every run in `path`: a spool file, a `mptcplab run --json` document (one run, or ``{"runs": [...]}`` for
    several), or an `mptcplab export --format json` list of run documents (the scenario's content unknown for all
    but the spool file); gzip-compressed (`.gz`) or not.

    Raises UsageError (one line) for a file that is none of those, or a run without a run_id.
    """
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        doc = json.loads(raw)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"{path}: not a spool file or run JSON document: {e}") from None
    if isinstance(doc, dict) and set(doc) == {"runs"} and isinstance(doc["runs"], list):
        doc = doc["runs"]  # `run A B --json`, `selftest ... --json`: {"runs": [...]}, read as the list it holds
    if isinstance(doc, list):  # mptcplab export --format json
        if not doc:
            raise UsageError(f"{path}: an empty list, no run to import")
        return [_run(path, body, None, f" (run {i + 1} of {len(doc)})") for i, body in enumerate(doc)]
    if isinstance(doc, dict) and doc.get("format") == FORMAT:
        if doc.get("version") != VERSION:
            raise UsageError(f"{path}: spool format version {doc.get('version')} is not supported by this mptcplab")
        return [_run(path, doc.get("result"), doc.get("scenario_content"))]
    return [_run(path, doc, None)]


def _run(path: Path, body: Any, scenario: dict[str, Any] | None, where: str = "") -> tuple[RunResult, dict[str, Any] | None]:
    try:
        result = RunResult.model_validate(body)
    except ValidationError as e:
        raise UsageError(f"{path}{where}: not a spool file or run JSON document ({validation_problem(e)})") from None
    if not result.run_id:
        raise UsageError(f"{path}{where}: the result has no run_id, so it cannot be imported idempotently",
                         "it was written by an mptcplab older than the results store")
    return result, scenario

"""The spool: results a database could not take, as JSON files that `mptcplab import` loads later.

A spool file holds the whole run so far (scenario content + RunResult) and is
rewritten atomically after every repetition, so a crash or Ctrl-C at any
moment leaves a complete, loadable file with every finished repetition.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..errors import UsageError
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
    """A spool file, or a `mptcplab run --json` document (then the scenario's content is unknown)."""
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"{path}: not a spool file or run JSON document: {e}") from None
    if isinstance(doc, dict) and doc.get("format") == FORMAT:
        if doc.get("version") != VERSION:
            raise UsageError(f"{path}: spool format version {doc.get('version')} is not supported by this mptcplab")
        body, scenario = doc.get("result"), doc.get("scenario_content")
    else:
        body, scenario = doc, None
    try:
        result = RunResult.model_validate(body)
    except ValidationError as e:
        raise UsageError(f"{path}: not a spool file or run JSON document ({e.errors()[0]['loc']}: {e.errors()[0]['msg']})") from None
    if not result.run_id:
        raise UsageError(f"{path}: the result has no run_id, so it cannot be imported idempotently",
                         "it was written by an mptcplab older than the results store")
    return result, scenario

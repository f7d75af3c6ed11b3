"""A results database on a disk that fills up: one warning, a spool file, nothing lost.

The disk is real: a tiny tmpfs mounted for the test and filled to the last byte.
"""
from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path

import pytest

from mptcplab.store import open_store

from .conftest import cli, requires_root, write_scenario

pytestmark = requires_root

SCENARIO = """
name = "full-disk"
[[path]]
name = "a"
rate = "20mbit"
[[path]]
name = "b"
rate = "20mbit"
[workload]
size = "2MiB"
"""


@pytest.fixture
def small_disk(tmp_path: Path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(disk: Path) -> Path:
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as e:
        assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def test_full_disk_spools_and_keeps_what_was_stored(small_disk, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))  # the spool lives on another disk
    db = small_disk / "results.db"
    scenario = write_scenario(tmp_path, SCENARIO)
    first = cli("run", str(scenario), "--repeat", "1", "--json", "--db", str(db))
    assert first.returncode == 0, first.stderr
    kept = json.loads(first.stdout)["run_id"]

    filler = _fill(small_disk)
    proc = cli("run", str(scenario), "--repeat", "2", "--json", "--db", str(db))
    assert proc.returncode == 0, proc.stderr  # the measurement itself succeeded
    doc = json.loads(proc.stdout)
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    # SQLite says "database or disk is full" or only "disk I/O error": the lab adds the free space
    assert len(warnings) == 1 and "bytes free" in warnings[0] and str(db) in warnings[0], proc.stderr
    assert "Traceback" not in proc.stderr
    spooled = tmp_path / "data" / "mptcplab" / "spool" / f"full-disk-{doc['run_id']}.json"
    assert spooled.exists()

    filler.unlink()  # space again: the spool loads, and the earlier run is intact
    imported = cli("import", str(spooled), "--db", str(db))
    assert imported.returncode == 0, imported.stderr
    store = open_store(str(db))
    assert store.load_result(kept).to_json()["run_id"] == kept
    assert len(store.load_result(doc["run_id"]).repetitions) == 2

"""A throwaway PostgreSQL server for the store tests: the Debian `postgresql` package, a temp cluster.

PostgreSQL refuses to run as root, so initdb and pg_ctl run as the `postgres`
user the package creates; the cluster listens on 127.0.0.1 at a free port,
trusts local connections, and is removed when the session ends.
"""
from __future__ import annotations

import glob
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(Path(p).parts[4]))
    if found:
        return found[-1]
    path = shutil.which(name)
    if not path:
        pytest.fail(f"{name} not found: `make install` installs the Debian postgresql package the store tests need")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(*cmd: str) -> None:
    proc = subprocess.run(["runuser", "-u", "postgres", "--", *cmd], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd[:2])} failed: {proc.stderr.strip() or proc.stdout.strip()}")


class Cluster:
    """One throwaway cluster in a temp dir; start and stop it at will (a test can kill its own server)."""

    def __init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="mptcplab-pg-"))
        shutil.chown(self.home, "postgres", "postgres")
        self.data, self.port = self.home / "data", _free_port()
        _as_postgres(_pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    @property
    def url(self) -> str:
        """The admin URL (psycopg form, no SQLAlchemy driver prefix)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}"

    def start(self) -> None:
        _as_postgres(_pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.home / "log"), "-w", "-t", "60", "-o",
                     f"-p {self.port} -k {self.home} -c listen_addresses=127.0.0.1 -c fsync=off", "start")

    def stop(self) -> None:
        """Stop at once, as a crashed or unplugged server would (no checkpoint, connections cut)."""
        subprocess.run(["runuser", "-u", "postgres", "--", _pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server():
    """The admin URL of a fresh PostgreSQL cluster (psycopg form, no SQLAlchemy driver prefix)."""
    cluster = Cluster()
    cluster.start()
    try:
        yield cluster.url
    finally:
        cluster.remove()


def create_database(server: str) -> str:
    """A new empty database on `server`; returns its SQLAlchemy URL."""
    name = f"t_{secrets.token_hex(4)}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"postgresql+psycopg://{server.removeprefix('postgresql://')}/{name}"

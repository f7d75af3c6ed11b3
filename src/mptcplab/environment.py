"""The environment recorded with every run: enough to reproduce and to group by."""
from __future__ import annotations

import os
import platform
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from . import netns


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def loadavg() -> list[float]:
    return [float(x) for x in _read("/proc/loadavg").split()[:3]] or [0.0, 0.0, 0.0]


@lru_cache(maxsize=1)
def lab_version() -> dict[str, str]:
    try:
        version = metadata.version("mptcplab")
    except metadata.PackageNotFoundError:
        version = "unknown"
    commit = ""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "--short=12", "HEAD"],
                                capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return {"version": version, "commit": commit}


def host_environment() -> dict[str, Any]:
    return {
        "hostname": os.uname().nodename,
        "kernel_release": os.uname().release,
        "kernel_version": os.uname().version,
        "cmdline": _read("/proc/cmdline"),
        "machine": os.uname().machine,
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "mptcplab": lab_version(),
        "python": platform.python_version(),
    }


def namespace_sysctls(ns: str) -> dict[str, str]:
    return netns.sysctls(ns, "net.mptcp")

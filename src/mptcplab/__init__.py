"""mptcplab: a performance lab for the Linux MPTCP packet scheduler."""
from __future__ import annotations

from typing import Any

__all__ = ["load_scenario", "run_scenario", "RunOptions", "LabError"]

from .errors import LabError


def __getattr__(name: str) -> Any:
    """What loads only when asked for, so `import mptcplab` (and every CLI command) stays light: the scenario
    models (pydantic) and the engine (pyroute2 and all)."""
    if name == "load_scenario":
        from .scenario import load_scenario

        return load_scenario
    if name in ("run_scenario", "RunOptions"):
        from . import runner

        return getattr(runner, name)
    raise AttributeError(name)

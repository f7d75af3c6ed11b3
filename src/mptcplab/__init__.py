"""mptcplab: a performance lab for the Linux MPTCP packet scheduler."""
from __future__ import annotations

from typing import Any

__all__ = ["load_scenario", "run_scenario", "RunOptions", "LabError"]

from .errors import LabError
from .scenario import load_scenario


def __getattr__(name: str) -> Any:
    """The engine (pyroute2 and all) loads only when asked for: `import mptcplab` stays light."""
    if name in ("run_scenario", "RunOptions"):
        from . import runner

        return getattr(runner, name)
    raise AttributeError(name)

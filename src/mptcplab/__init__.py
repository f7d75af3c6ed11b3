"""mptcplab: a performance lab for the Linux MPTCP packet scheduler."""
from __future__ import annotations

__all__ = ["load_scenario", "run_scenario", "RunOptions", "LabError"]

from .errors import LabError
from .runner import RunOptions, run_scenario
from .scenario import load_scenario

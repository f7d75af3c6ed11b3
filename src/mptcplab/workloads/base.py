"""The workload extension point: what traffic a repetition drives, and what it measures.

A workload kind is two pieces, as a link backend is one: its scenario model
(pure data, in `mptcplab/workload_specs.py`, so scenario files validate
without the engine) and its engine here, one module per kind registered in
`WORKLOADS`. The runner builds the lab, gives the workload the topology and
its spec, and turns what `run()` returns into a Repetition:

- `run()` drives real IPPROTO_MPTCP sockets in the client and server
  namespaces and returns an `Outcome`, or raises RunError (TransferTimeout
  for a missed timeout); then the runner calls `partial()` for what was
  measured until the failure.
- The sender's MPTCP_FULL_INFO samples (a SubflowSampler) give the per-subflow
  shares, RTTs and time series every workload has; `Outcome.metrics` carries
  what only this kind measures (latency percentiles, ...), named as in
  `mptcplab.metrics`.
"""
from __future__ import annotations

import importlib
import socket
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from ..cancel import Cancel
from ..errors import UnsupportedError
from ..mptcp import ConnectionSample
from ..probes import SubflowSampler
from ..topology import Topology


@dataclass
class Outcome:
    """What one workload run delivered.

    bytes: application bytes delivered to the receiving application(s);
    completion_s: seconds from the first connect() to the last byte (or the
    elapsed time of a failed run); mptcp: every connection was MPTCP;
    sampler: the MPTCP_FULL_INFO samples of the (main) sending socket;
    metrics: workload-specific values by metric name (units in mptcplab.metrics);
    series: optional per-event series for plots (e.g. per-transaction latency).
    """

    bytes: int
    completion_s: float
    mptcp: bool
    t0: float
    sampler: SubflowSampler
    metrics: dict[str, float] = field(default_factory=dict)
    series: dict[str, list[float]] = field(default_factory=dict)
    server_mptcp: bool = True
    errors: list[str] = field(default_factory=list)
    #: `command` workload: each program's exit code and output (result.ProgramRun)
    programs: list[Any] = field(default_factory=list)


@dataclass
class Hooks:
    """What the runner wants to hear while a workload runs."""

    #: every MPTCP_FULL_INFO sample of the sending socket (progress bars)
    on_sample: Callable[[ConnectionSample], None] | None = None
    #: once, with the monotonic time traffic starts (path events are scheduled from it)
    on_start: Callable[[float], None] | None = None
    #: with the client socket once connected (the userspace path manager opens subflows on it)
    on_connected: Callable[[socket.socket], None] | None = None
    cancel: Cancel | None = None
    #: TCP_CONGESTION for every socket the workload opens
    congestion_control: str | None = None
    #: "mptcp" (IPPROTO_MPTCP; a fallback to TCP is an error) or "tcp": plain IPPROTO_TCP sockets at both
    #: ends, what the best-path baseline runs (`[run] baseline`)
    protocol: Literal["mptcp", "tcp"] = "mptcp"
    #: a client address to bind every client socket to before connect() (the baseline's one path: source
    #: routing then keeps the connection on that path); None: the kernel picks
    bind: str | None = None


class Workload(ABC):
    """One kind of traffic. Subclasses set `kind` and implement run/partial/close/progress."""

    kind: ClassVar[str]
    #: True when the client sends the bulk of the data (the sampler then sits on the client's socket)
    upload: bool = True

    def __init__(self, topo: Topology, spec: Any, timeout_s: float, hooks: Hooks) -> None:
        self.topo = topo
        self.spec = spec
        self.timeout_s = timeout_s
        self.hooks = hooks

    @classmethod
    def preflight(cls, spec: Any, path_manager: str = "kernel") -> None:
        """Refuse, before anything is built, what this kind cannot run here (LabError); by default nothing."""

    @abstractmethod
    def run(self) -> Outcome:
        """Drive the traffic to its end; raises RunError (TransferTimeout past the timeout)."""

    @abstractmethod
    def partial(self) -> Outcome:
        """What was delivered until run() raised, while the lab still stands."""

    @abstractmethod
    def close(self) -> None:
        """Close every socket and stop every thread (called when the lab closes)."""

    def progress(self, sample: ConnectionSample, elapsed_s: float) -> float:
        """How far the workload is, 0.0 to 1.0, for progress bars."""
        return 0.0


#: kind -> "module:Class"; a new kind adds one line here, its engine module and its spec model
WORKLOADS: dict[str, str] = {
    "bulk": "mptcplab.workloads.bulk:BulkTransfer",
    "rr": "mptcplab.workloads.rr:RequestResponse",
    "stream": "mptcplab.workloads.stream:Stream",
    "flows": "mptcplab.workloads.flows:ShortFlows",
    "command": "mptcplab.workloads.command:Command",
}


def workload_class(kind: str) -> type[Workload]:
    """The engine of workload `kind`; UnsupportedError when this build has none."""
    if kind not in WORKLOADS:
        raise UnsupportedError(f"workload kind {kind!r} has no engine in this version of mptcplab (have: {', '.join(WORKLOADS)})")
    module, _, cls = WORKLOADS[kind].partition(":")
    return getattr(importlib.import_module(module), cls)

"""What the socket workloads beyond bulk share: connecting, cancelling, closing, percentiles, arrivals.

Every engine runs its client and server as threads of this process with
sockets made in their namespaces (`mptcp_socket`, TCP_CONGESTION set on each),
so both ends read one monotonic clock. `SocketWorkload` keeps every socket and
thread it made: `abort()` (Ctrl-C, via Hooks.cancel) shuts the sockets down,
which wakes any blocked send/recv/accept, and `close()` closes them and joins
the threads, however the run ended.
"""
from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..errors import FallbackError, RunError, TransferTimeout
from ..mptcp import is_mptcp
from ..probes import SubflowSampler, subflow_congestion
from ..topology import Topology
from .base import Hooks, Outcome, Workload
from .bulk import bind_client, mptcp_socket

#: the longest per-event series kept for plots; longer ones are thinned evenly (percentiles use every event)
MAX_SERIES = 20_000


def percentiles_ms(values_s: list[float], prefix: str) -> dict[str, float]:
    """p50/p90/p99/p99.9/max of `values_s` (seconds) as `<prefix>_p50_ms`... in milliseconds; {} when empty."""
    if not values_s:
        return {}
    arr = np.asarray(values_s) * 1000.0
    q = np.percentile(arr, [50, 90, 99, 99.9])
    return {f"{prefix}_p50_ms": round(float(q[0]), 4), f"{prefix}_p90_ms": round(float(q[1]), 4),
            f"{prefix}_p99_ms": round(float(q[2]), 4), f"{prefix}_p999_ms": round(float(q[3]), 4),
            f"{prefix}_max_ms": round(float(arr.max()), 4)}


def thinned(values: list[float], n: int) -> list[float]:
    """`values` itself, or every k-th of them when there are more than MAX_SERIES (`n` = len of the series)."""
    if n <= MAX_SERIES:
        return values
    step = -(-n // MAX_SERIES)
    return values[::step]


def arrival_times(rate: float, arrivals: str, seed: int | None = None) -> Iterator[float]:
    """Offsets in seconds from the start of the first, second, ... arrival at `rate` per second.

    'fixed': 0, 1/rate, 2/rate, ...; 'poisson': exponential gaps of mean
    1/rate, the first at 0.
    """
    rng = random.Random(seed)
    t = 0.0
    while True:
        yield t
        t += (1.0 / rate) if arrivals == "fixed" else rng.expovariate(rate)


def recv_exactly(sock: socket.socket, buf: memoryview, n: int) -> int:
    """Read until `n` bytes came or the peer closed; returns how many came."""
    got = 0
    while got < n:
        k = sock.recv_into(buf[: min(len(buf), n - got)])
        if k == 0:
            break
        got += k
    return got


class SocketWorkload(Workload):
    """A workload of client and server threads over MPTCP sockets: bookkeeping shared by rr, stream and flows."""

    def __init__(self, topo: Topology, spec: Any, timeout_s: float, hooks: Hooks | None = None) -> None:
        hooks = hooks or Hooks()
        super().__init__(topo, spec, timeout_s, hooks)
        self.cancel = hooks.cancel
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._t0: float | None = None
        self.sampler: SubflowSampler | None = None
        self._final_done = False
        self._remove_hook = hooks.cancel.on_cancel(self.abort) if hooks.cancel else None

    # -- sockets and threads -------------------------------------------------
    def _socket(self, ns: str) -> tuple[socket.socket, bool]:
        sock, mptcp = mptcp_socket(ns, self.hooks.congestion_control, self.hooks.protocol)
        with self._lock:
            self._socks.append(sock)
        if self._stop.is_set():  # aborted meanwhile: never leave a fresh socket blocking
            self._shutdown(sock)
        return sock, mptcp

    def _keep(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._socks.append(sock)
        if self._stop.is_set():
            self._shutdown(sock)
        return sock

    def _forget(self, sock: socket.socket) -> None:
        """Close a socket the workload is done with (flows close thousands: do not keep them)."""
        with self._lock:
            if sock in self._socks:
                self._socks.remove(sock)
        try:
            sock.close()
        except OSError:
            pass

    def _listener(self, backlog: int = 16) -> tuple[socket.socket, bool]:
        listener, mptcp = self._socket(self.topo.server)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("0.0.0.0", self.topo.server_port))
        listener.listen(backlog)
        listener.settimeout(self.timeout_s)
        return listener, mptcp

    def _connect(self, sock: socket.socket) -> None:
        """connect() to the server; RunError when refused or unreachable, Interrupted when cancelled."""
        sock.settimeout(self._left())
        try:
            bind_client(sock, self.hooks.bind)
            sock.connect((self.topo.server_addr, self.topo.server_port))
        except OSError as e:
            self._check()
            if isinstance(e, socket.timeout):
                raise TransferTimeout(f"the client could not connect within the timeout of {self.timeout_s:g}s") from None
            raise RunError(f"the client could not connect to the server: {e.strerror or e}") from None

    def _require_mptcp(self, sock: socket.socket) -> None:
        """FallbackError when an MPTCP connection fell back to TCP (plain TCP on purpose, the baseline, passes)."""
        if self.hooks.protocol == "mptcp" and not is_mptcp(sock):
            raise FallbackError("the connection fell back to plain TCP: the server did not answer MP_CAPABLE",
                                "check net.mptcp.enabled in the server namespace and any middlebox stripping options")

    def _thread(self, target: Callable[..., None], *args: Any, name: str) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()
        return thread

    def _connected(self, sock: socket.socket, errors: list[str]) -> None:
        """Hooks.on_connected on a thread (the userspace path manager opens subflows on the connection)."""
        if not self.hooks.on_connected:
            return

        def call() -> None:
            try:
                self.hooks.on_connected(sock)  # type: ignore[misc]
            except Exception as e:  # reported with the run's result
                errors.append(str(e))

        self._thread(call, name="on-connected")

    def _started(self, t0: float) -> None:
        self._t0 = t0
        if self.hooks.on_start:
            self.hooks.on_start(t0)

    # -- time and cancellation ---------------------------------------------------
    def _check(self) -> None:
        if self.cancel:
            self.cancel.check()

    def _left(self) -> float:
        """Seconds until the timeout (at least 0.05, so a last wait still happens)."""
        t0 = self._t0 if self._t0 is not None else time.monotonic()
        return max(0.05, t0 + self.timeout_s - time.monotonic())

    def _timed_out(self) -> bool:
        return self._t0 is not None and time.monotonic() >= self._t0 + self.timeout_s

    def _timeout(self) -> TransferTimeout:
        return TransferTimeout(f"the {self.kind} workload did not finish within the timeout of {self.timeout_s:g}s",
                               "raise [run] timeout or shrink the workload")

    # -- the sampler -------------------------------------------------------
    def _start_sampler(self, sock: socket.socket, t0: float) -> SubflowSampler:
        self.sampler = SubflowSampler(sock, t0, on_sample=self.hooks.on_sample).start()
        return self.sampler

    def _final_sample(self) -> None:
        """The sampler's last sample and each subflow's congestion control, before the sampled socket closes."""
        if self.sampler is None or self._final_done:
            return
        self._final_done = True
        self.sampler.stop()
        if self.sampler.sock is not None:
            self.sampler.sample()
        try:
            self.sampler.congestion = subflow_congestion(self.topo.client if self.upload else self.topo.server)
        except OSError:
            pass  # a kernel without inet_diag: the algorithm stays unknown ("")

    def _empty_sampler(self, t0: float) -> SubflowSampler:
        return SubflowSampler(sock=None, t0=t0)  # type: ignore[arg-type]

    # -- ending ------------------------------------------------------------
    @staticmethod
    def _shutdown(sock: socket.socket) -> None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def abort(self) -> None:
        """Wake every blocked send/recv/accept (close() alone does not) and every wait."""
        self._stop.set()
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            self._shutdown(s)

    def close(self) -> None:
        """Stop the sampler, shut down and close every socket, join every thread."""
        if self._remove_hook:
            self._remove_hook()
        if self.sampler:
            self.sampler.stop()
        self.abort()
        with self._lock:
            threads = list(self._threads)
        for t in threads:
            if t is not threading.current_thread():
                t.join(timeout=5)
        with self._lock:
            socks, self._socks = list(self._socks), []
        for s in socks:
            try:
                s.close()
            except OSError:
                pass

    def _outcome(self, bytes_: int, completion_s: float, mptcp: bool, server_mptcp: bool,
                 metrics: dict[str, float], series: dict[str, list[float]]) -> Outcome:
        t0 = self._t0 if self._t0 is not None else time.monotonic()
        return Outcome(bytes=bytes_, completion_s=max(completion_s, 1e-6), mptcp=mptcp, t0=t0,
                       sampler=self.sampler or self._empty_sampler(t0), metrics=metrics, series=series,
                       server_mptcp=server_mptcp)

"""Many short MPTCP connections: flow completion times, and whether a flow ever left its first subflow.

Each flow is one connection moving `size` bytes (upload: client to server;
download: server to client). Its completion time runs from the client's
connect() call to the receiving application's read of the last byte (both
ends are threads of this process: one monotonic clock). The receiver then
sends one byte back; on it the sender takes one MPTCP_FULL_INFO sample of its
socket, before either end closes, and counts the flow as multi-subflow when
that sample lists more than one subflow. Those per-flow samples are the
repetition's subflow samples (per-path bytes over all flows).

Flows run one after another, or arrive at `rate` (Poisson or fixed gaps)
and overlap; at most MAX_CONCURRENT are open at once (a later arrival waits,
and its completion time starts at its actual connect()).
"""
from __future__ import annotations

import socket
import threading
import time

from ..errors import FallbackError, Interrupted, LabError, RunError
from ..mptcp import ConnectionSample, connection_sample, is_mptcp
from ..probes import SubflowSampler
from ..topology import Topology
from ..workload_specs import FlowsSpec
from .base import Hooks, Outcome
from .common import SocketWorkload, arrival_times, recv_exactly, thinned

MAX_CONCURRENT = 64
BUF = 256 * 1024
DONE = b"\x01"


class ShortFlows(SocketWorkload):
    """`kind = "flows"`: `count` connections of `size` bytes; completion times and multi-subflow flows."""

    kind = "flows"

    def __init__(self, topo: Topology, spec: FlowsSpec, timeout_s: float, hooks: Hooks | None = None) -> None:
        super().__init__(topo, spec, timeout_s, hooks)
        self.spec: FlowsSpec = spec
        self.upload = spec.direction == "upload"
        self._payload = memoryview(bytes(min(spec.size, BUF)))
        self._received_at: dict[tuple[str, int], float] = {}  # upload: client address -> last byte read at the server
        self._start: list[float] = []  # per completed flow: connect() offset from t0
        self._fct: list[float] = []
        self._bytes = 0
        self._multi = 0
        self._t_last = 0.0
        self._errors: list[str] = []
        self._slots = threading.BoundedSemaphore(MAX_CONCURRENT)

    # -- one flow, both ends ---------------------------------------------
    def _send_all(self, sock: socket.socket) -> None:
        left = self.spec.size
        while left > 0:
            n = sock.send(self._payload[: min(left, len(self._payload))])
            left -= n

    def _sender_done(self, sock: socket.socket, t0: float) -> None:
        """Wait for the receiver's byte, then sample the connection while every subflow is still up."""
        if sock.recv(1) != DONE:
            raise RunError("the receiver closed a flow before confirming it")
        try:
            sample = connection_sample(sock)
        except OSError:
            return
        with self._lock:
            assert self.sampler is not None
            self.sampler.samples.append((time.monotonic() - t0, sample))
            self.sampler.note(sample.subflows, connection=id(sock))
            if len(sample.subflows) > 1:
                self._multi += 1
        if self.hooks.on_sample:
            self.hooks.on_sample(sample)

    def _serve(self, conn: socket.socket, t0: float) -> None:
        try:
            conn.settimeout(self._left())
            if self.hooks.protocol == "mptcp" and not is_mptcp(conn):
                self._errors.append("a flow fell back to plain TCP at the server")
            if self.upload:
                buf = memoryview(bytearray(BUF))
                got = recv_exactly(conn, buf, self.spec.size)
                if got == self.spec.size:
                    self._received_at[conn.getpeername()[:2]] = time.monotonic()
                    conn.sendall(DONE)
                while conn.recv(BUF):  # until the client closes
                    pass
            else:
                self._send_all(conn)
                self._sender_done(conn, t0)
        except OSError as e:
            if not self._stop.is_set():
                self._errors.append(f"a flow failed on the server: {e.strerror or e}")
        except LabError as e:
            self._errors.append(e.message)
        finally:
            self._forget(conn)

    def _accept(self, listener: socket.socket, t0: float) -> None:
        while not self._stop.is_set():
            try:
                listener.settimeout(self._left())
                conn, _ = listener.accept()
            except OSError:
                return
            self._keep(conn)
            self._thread(self._serve, conn, t0, name="flows-server")
            self._prune()

    def _flow(self, i: int, t0: float) -> None:
        """One flow from the client: connect, move `size` bytes, record its completion time."""
        sock, _ = self._socket(self.topo.client)
        try:
            t_connect = time.monotonic()
            self._connect(sock)
            if self.hooks.protocol == "mptcp" and not is_mptcp(sock):
                raise FallbackError(f"flow {i + 1} fell back to plain TCP: the server did not answer MP_CAPABLE",
                                    "check net.mptcp.enabled in the server namespace and any middlebox stripping options")
            self._connected(sock, self._errors)
            sock.settimeout(self._left())
            if self.upload:
                local = sock.getsockname()[:2]
                self._send_all(sock)
                self._sender_done(sock, t0)
                t_end = self._received_at.pop(local, None) or time.monotonic()
            else:
                got = recv_exactly(sock, memoryview(bytearray(BUF)), self.spec.size)
                t_end = time.monotonic()
                if got != self.spec.size:
                    raise RunError(f"flow {i + 1} delivered {got} of {self.spec.size} bytes")
                sock.sendall(DONE)
                while sock.recv(BUF):  # until the server has sampled and closed
                    pass
            with self._lock:
                self._start.append(t_connect - t0)
                self._fct.append(t_end - t_connect)
                self._bytes += self.spec.size
                self._t_last = max(self._t_last, t_end)
        finally:
            self._forget(sock)

    def _flow_in_thread(self, i: int, t0: float) -> None:
        try:
            self._flow(i, t0)
        except LabError as e:
            self._errors.append(e.message)
        except OSError as e:
            if not self._stop.is_set():
                self._errors.append(f"flow {i + 1} failed on the client: {e.strerror or e}")
        except Interrupted:
            pass  # the run was cancelled (Ctrl-C, SIGTERM): the main thread says so; no traceback from this thread
        finally:
            self._slots.release()

    # -- orchestration ---------------------------------------------------
    def run(self) -> Outcome:
        spec = self.spec
        listener, server_mptcp = self._listener(128)
        t0 = time.monotonic()
        self._t0 = t0
        self.sampler = SubflowSampler(sock=None, t0=t0)  # type: ignore[arg-type]  # fed one sample per flow
        self._thread(self._accept, listener, t0, name="flows-accept")
        self._started(t0)
        try:
            if spec.rate is None:
                for i in range(spec.count):
                    self._check()
                    if self._errors:
                        break
                    if self._timed_out():
                        raise self._timeout()
                    self._flow(i, t0)
            else:
                arrivals = arrival_times(spec.rate, spec.arrivals)
                flows: list[threading.Thread] = []
                for i in range(spec.count):
                    self._check()
                    if self._errors:
                        break
                    wait = t0 + next(arrivals) - time.monotonic()
                    if wait > 0 and self._stop.wait(wait):
                        break
                    if not self._slots.acquire(timeout=self._left()) or self._timed_out():
                        raise self._timeout()
                    flows.append(self._thread(self._flow_in_thread, i, t0, name="flows-client"))
                    self._prune()
                for f in flows:
                    f.join(self._left())
                    if f.is_alive():
                        raise self._timeout()
        except OSError as e:
            self._check()
            if isinstance(e, socket.timeout):
                raise self._timeout() from None
            raise RunError(f"a flow failed on the client: {e.strerror or e}") from None
        self._check()
        if self._errors:
            raise RunError(self._errors[0])
        if len(self._fct) < spec.count:
            raise RunError(f"{len(self._fct)} of {spec.count} flows completed")
        self._final_sample()
        return self._result(True, server_mptcp)

    def _prune(self) -> None:
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]

    def _result(self, mptcp: bool, server_mptcp: bool) -> Outcome:
        with self._lock:
            fct, start = list(self._fct), list(self._start)
        n = len(fct)
        metrics: dict[str, float] = {"flows_completed": float(n), "multi_subflow_flows": float(self._multi)}
        if fct:
            import numpy as np

            q = np.percentile(np.asarray(fct) * 1000, [50, 99])
            metrics.update(fct_p50_ms=round(float(q[0]), 4), fct_p99_ms=round(float(q[1]), 4),
                           fct_max_ms=round(max(fct) * 1000, 4))
        series = {"t": [round(t, 6) for t in thinned(start, n)], "fct_ms": [round(x * 1000, 4) for x in thinned(fct, n)]}
        t0 = self._t0 if self._t0 is not None else time.monotonic()
        t_end = self._t_last if n else time.monotonic()
        return self._outcome(self._bytes, t_end - t0, mptcp, server_mptcp, metrics, series)

    def partial(self) -> Outcome:
        """The flows completed until run() raised: their completion times, bytes and samples."""
        self._final_sample()
        return self._result(False, False)

    def progress(self, sample: ConnectionSample, elapsed_s: float) -> float:
        return min(len(self._fct) / self.spec.count, 1.0)

"""An application-limited stream: `chunk` bytes every chunk/rate seconds, e.g. video segments.

The sender hands chunk i to send() at its due time, t_start + i * chunk/rate
(at once if an earlier send() blocked past it: the path is slower than the
stream). The receiving application reads continuously; chunk i is delivered
when its last byte is read. Sender and receiver are threads of this process,
so one monotonic clock times both ends:

- chunk delay: due time to last byte read (equal to "send() call to last
  byte read" while the sender keeps up; when send() blocks, the wait for the
  socket buffer counts too, as a viewer would see it);
- late chunks: delays over `deadline`;
- stall time: the receiving application's time blocked in recv() while a
  chunk is due and not yet read whole. It includes each chunk's one-way delay
  and serialization, so compare it between runs on the same paths, not as an
  absolute.

`direction = "download"` streams from the server to the client (a video
server); the MPTCP_FULL_INFO sampler sits on the sender.
"""
from __future__ import annotations

import socket
import threading
import time

from ..errors import RunError
from ..mptcp import ConnectionSample, is_mptcp
from ..topology import Topology
from ..workload_specs import StreamSpec
from .base import Hooks, Outcome
from .common import SocketWorkload, thinned

RECV = 256 * 1024


class Stream(SocketWorkload):
    """`kind = "stream"`: chunks at an application rate; each chunk's delay, late chunks, stall time."""

    kind = "stream"

    def __init__(self, topo: Topology, spec: StreamSpec, timeout_s: float, hooks: Hooks | None = None) -> None:
        super().__init__(topo, spec, timeout_s, hooks)
        self.spec: StreamSpec = spec
        self.upload = spec.direction == "upload"
        self._due: list[float] = []  # chunk i's due time (monotonic), appended before its send()
        self._delay: list[float] = []  # chunk i's delay, s
        self._received = 0
        self._stall = 0.0
        self._t_start = 0.0
        self._t_last = 0.0
        self._read_all = threading.Event()
        self._server_out: dict[str, object] = {}
        self._server_done = threading.Event()
        self._errors: list[str] = []

    # -- the two ends ----------------------------------------------------
    def _send(self, sock: socket.socket) -> None:
        spec = self.spec
        self._start_sampler(sock, self._t0 or time.monotonic())
        payload = memoryview(bytes(spec.chunk))
        t_start = self._t_start = time.monotonic()
        n_chunks = max(1, int(-(-spec.duration // spec.interval_s)))
        for i in range(n_chunks):
            self._check()
            due = t_start + i * spec.interval_s
            wait = due - time.monotonic()
            if wait > 0 and self._stop.wait(wait):
                raise RunError("the stream was stopped")
            if self._timed_out():
                raise socket.timeout()
            self._due.append(due)
            sock.settimeout(self._left())
            sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        # the receiver reads the rest; sample once it has, before anything closes
        if not self._read_all.wait(self._left()):
            raise socket.timeout()
        self._final_sample()

    def _receive(self, sock: socket.socket) -> None:
        chunk = self.spec.chunk
        buf = bytearray(RECV)
        received = 0
        while True:
            self._check()
            sock.settimeout(self._left())
            a = time.monotonic()
            n = sock.recv_into(buf)
            b = time.monotonic()
            j = received // chunk  # the first chunk not yet read whole
            if j < len(self._due):
                self._stall += max(0.0, b - max(a, self._due[j]))
            if n == 0:
                break
            received += n
            self._received = received
            while len(self._delay) < received // chunk and len(self._delay) < len(self._due):
                self._delay.append(b - self._due[len(self._delay)])
                self._t_last = b
        self._read_all.set()

    # -- orchestration ---------------------------------------------------
    def _server(self, listener: socket.socket) -> None:
        out = self._server_out
        try:
            conn, _ = listener.accept()
            self._keep(conn)
            out["mptcp"] = is_mptcp(conn)
            if self.upload:
                self._receive(conn)
            else:
                self._send(conn)
        except BaseException as e:  # reported by the client side (Interrupted included)
            out["error"] = getattr(e, "strerror", None) or str(e)
            self._read_all.set()
        finally:
            self._server_done.set()

    def run(self) -> Outcome:
        listener, server_mptcp = self._listener(1)
        client, _ = self._socket(self.topo.client)
        t0 = time.monotonic()
        self._t0 = t0
        server = self._thread(self._server, listener, name="stream-server")
        self._connect(client)
        self._started(t0)
        self._require_mptcp(client)
        self._connected(client, self._errors)
        try:
            if self.upload:
                self._send(client)
            else:
                self._receive(client)
        except socket.timeout:
            self._check()
            raise self._timeout() from None
        except OSError as e:
            self._check()
            raise RunError(f"the stream failed on the client: {e.strerror or e}") from None
        if not self._server_done.wait(self._left()):
            raise self._timeout()
        server.join(1.0)
        self._check()
        if "error" in self._server_out:
            raise RunError(f"the stream failed on the server: {self._server_out['error']}")
        if self._errors:
            raise RunError(self._errors[0])
        if len(self._delay) < len(self._due):
            raise RunError(f"the receiver read {len(self._delay)} of {len(self._due)} chunks whole before the sender closed")
        return self._result(is_mptcp(client), bool(self._server_out.get("mptcp", server_mptcp)))

    def _result(self, mptcp: bool, server_mptcp: bool) -> Outcome:
        spec = self.spec
        delays = list(self._delay)
        n = len(delays)
        metrics: dict[str, float] = {"chunks": float(n), "stall_s": round(self._stall, 6)}
        if delays:
            metrics["chunk_delay_p50_ms"] = round(float(_pct(delays, 50)) * 1000, 4)
            metrics["chunk_delay_p99_ms"] = round(float(_pct(delays, 99)) * 1000, 4)
            metrics["chunk_delay_max_ms"] = round(max(delays) * 1000, 4)
        if spec.deadline is not None:
            metrics["late_chunks"] = float(sum(d > spec.deadline for d in delays))
        t_start = self._t_start or self._t0 or time.monotonic()
        series = {"t": [round(d - t_start, 6) for d in thinned(self._due[:n], n)],
                  "delay_ms": [round(x * 1000, 4) for x in thinned(delays, n)]}
        t0 = self._t0 if self._t0 is not None else t_start
        t_end = self._t_last if n else time.monotonic()
        return self._outcome(self._received, t_end - t0, mptcp, server_mptcp, metrics, series)

    def partial(self) -> Outcome:
        """The chunks read whole until run() raised, their delays, the stall time and the samples so far."""
        self._final_sample()
        return self._result(False, False)

    def progress(self, sample: ConnectionSample, elapsed_s: float) -> float:
        return min(elapsed_s / self.spec.duration, 1.0)


def _pct(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values), q))

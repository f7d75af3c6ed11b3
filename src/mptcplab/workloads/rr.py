"""Request/response over one MPTCP connection: what an interactive application feels.

The client sends `request` bytes, the server answers each complete request
with `response` bytes, in order, on the same connection (TCP_NODELAY on both
ends, so Nagle never holds a request back). A transaction's latency runs from
the client's send() call of the request to the client's read of the last
byte of its response, on one monotonic clock.

- closed-loop (`concurrency = N`, the default 1): N requests outstanding,
  each response starting the next request;
- open-loop (`rate = "10/s"`, Poisson or fixed arrivals): requests go out at
  their arrival times whatever is outstanding, so a stall shows as a queue of
  late answers rather than as fewer requests (no coordinated omission).

The client is one thread that waits on its socket and on the next arrival
(select), so no thread handoff adds to a latency. The MPTCP_FULL_INFO sampler
sits on the side that sends more (the server when response >= request).
"""
from __future__ import annotations

import collections
import select
import socket
import threading
import time

from ..errors import RunError
from ..mptcp import ConnectionSample, is_mptcp
from ..topology import Topology
from ..workload_specs import RRSpec
from .base import Hooks, Outcome
from .common import SocketWorkload, arrival_times, percentiles_ms, thinned

RECV = 256 * 1024


def _nodelay(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass  # an MPTCP socket on a kernel without TCP_NODELAY support: requests may wait for Nagle


class RequestResponse(SocketWorkload):
    """`kind = "rr"`: transactions of `request` then `response` bytes; every transaction's latency."""

    kind = "rr"

    def __init__(self, topo: Topology, spec: RRSpec, timeout_s: float, hooks: Hooks | None = None) -> None:
        super().__init__(topo, spec, timeout_s, hooks)
        self.spec: RRSpec = spec
        self.upload = spec.request > spec.response
        self._t_first = 0.0  # the first request's send()
        self._t_last = 0.0  # the last response's last byte
        self._done_t: list[float] = []  # per transaction: seconds since the first request, at its last byte
        self._lat: list[float] = []  # per transaction: latency in seconds
        self._server_out: dict[str, object] = {}
        self._server_done = threading.Event()
        self._errors: list[str] = []

    # -- the server --------------------------------------------------------
    def _server(self, listener: socket.socket) -> None:
        out = self._server_out
        try:
            conn, _ = listener.accept()
            self._keep(conn)
            _nodelay(conn)
            conn.settimeout(self._left())
            out["mptcp"] = is_mptcp(conn)
            if not self.upload:
                self._start_sampler(conn, self._t0 or time.monotonic())
            req, resp = self.spec.request, memoryview(bytes(self.spec.response))
            buf = bytearray(RECV)
            pending = 0
            while True:
                conn.settimeout(self._left())
                n = conn.recv_into(buf)
                if n == 0:
                    break
                pending += n
                while pending >= req:
                    pending -= req
                    conn.sendall(resp)
            if not self.upload:
                self._final_sample()  # every response is read and acknowledged: the client closed its side
        except BaseException as e:  # reported by the client side (Interrupted included)
            out["error"] = getattr(e, "strerror", None) or str(e)
        finally:
            self._server_done.set()

    # -- the client --------------------------------------------------------
    def _client_loop(self, sock: socket.socket) -> None:
        spec = self.spec
        closed_loop = spec.outstanding
        sent_at: collections.deque[float] = collections.deque()
        req = bytes(spec.request)
        buf = bytearray(RECV)
        got = 0  # bytes of the response being read
        sent = 0
        arrivals = arrival_times(spec.rate, spec.arrivals) if spec.rate else None
        t_first = self._t_first = time.monotonic()
        end = t_first + spec.duration if spec.duration else None
        give_up = (self._t0 or t_first) + self.timeout_s
        next_due = t_first + next(arrivals) if arrivals else 0.0

        def more(now: float) -> bool:
            return sent < spec.count if spec.count is not None else now < end  # type: ignore[operator]

        def issue() -> None:
            nonlocal sent
            sock.settimeout(max(0.05, give_up - time.monotonic()))
            t = time.monotonic()
            sock.sendall(req)
            sent_at.append(t)
            sent += 1

        if closed_loop:
            for _ in range(closed_loop if spec.count is None else min(closed_loop, spec.count)):
                issue()
        while True:
            self._check()
            now = time.monotonic()
            if now >= give_up:
                raise socket.timeout()
            if arrivals is not None:
                while more(now) and now >= next_due:
                    issue()
                    next_due = t_first + next(arrivals)
                    now = time.monotonic()
                can_issue = more(now)
            else:
                can_issue = False
            if not sent_at and not can_issue:
                break
            wait = give_up - now
            if can_issue:
                wait = min(wait, next_due - now)
            if not sent_at:
                if wait > 0 and self._stop.wait(wait):
                    raise RunError("the rr workload was stopped")
                continue
            ready, _, _ = select.select([sock], [], [], max(0.0, wait))
            if not ready:
                continue
            n = sock.recv_into(buf)
            now = time.monotonic()
            if n == 0:
                raise RunError("the server closed the connection with responses outstanding")
            got += n
            while got >= spec.response and sent_at:
                got -= spec.response
                started = sent_at.popleft()
                self._lat.append(now - started)
                self._done_t.append(now - t_first)
                self._t_last = now
                if closed_loop and more(now):
                    issue()

    # -- orchestration ---------------------------------------------------
    def run(self) -> Outcome:
        listener, server_mptcp = self._listener(1)
        client, _ = self._socket(self.topo.client)
        _nodelay(client)
        t0 = time.monotonic()
        self._t0 = t0
        server = self._thread(self._server, listener, name="rr-server")
        self._connect(client)
        self._started(t0)
        self._require_mptcp(client)
        self._connected(client, self._errors)
        if self.upload:
            self._start_sampler(client, t0)
        try:
            self._client_loop(client)
            if self.upload:
                self._final_sample()
            client.shutdown(socket.SHUT_WR)
        except socket.timeout:
            self._check()
            raise self._timeout() from None
        except OSError as e:
            self._check()
            raise RunError(f"the rr workload failed on the client: {e.strerror or e}") from None
        if not self._server_done.wait(self._left()):
            raise self._timeout()
        server.join(1.0)
        self._check()
        if "error" in self._server_out:
            raise RunError(f"the rr workload failed on the server: {self._server_out['error']}")
        if self._errors:
            raise RunError(self._errors[0])
        mptcp = is_mptcp(client)
        return self._result(mptcp, bool(self._server_out.get("mptcp", server_mptcp)))

    def _result(self, mptcp: bool, server_mptcp: bool) -> Outcome:
        n = len(self._lat)
        t_first = self._t_first or self._t0 or time.monotonic()
        t_end = self._t_last if n else time.monotonic()
        metrics = {k: v for k, v in percentiles_ms(self._lat, "latency").items()}
        metrics["transactions"] = float(n)
        metrics["transactions_per_s"] = round(n / max(t_end - t_first, 1e-6), 3) if n else 0.0
        series = {"t": [round(t, 6) for t in thinned(self._done_t, n)],
                  "latency_ms": [round(x * 1000, 4) for x in thinned(self._lat, n)]}
        t0 = self._t0 if self._t0 is not None else t_first
        return self._outcome(n * (self.spec.request + self.spec.response), t_end - t0, mptcp, server_mptcp, metrics, series)

    def partial(self) -> Outcome:
        """The transactions answered until run() raised: their latencies, bytes and the samples so far."""
        self._final_sample()
        return self._result(False, False)

    def progress(self, sample: ConnectionSample, elapsed_s: float) -> float:
        if self.spec.count:
            return min(len(self._lat) / self.spec.count, 1.0)
        return min(elapsed_s / float(self.spec.duration or 1), 1.0)

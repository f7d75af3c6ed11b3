"""Bulk transfer over real IPPROTO_MPTCP sockets, fixed size or fixed duration.

`direction = "both"` runs an upload and a download connection at once (as the
kernel selftests' simult_flows.sh does): see BothDirections.

Client and server are threads of this process, each with its sockets created
inside its own namespace (a socket keeps the namespace it was created in).
The receiver times the transfer from the client's connect() to the last
byte; the sender keeps its socket open until the final sample is taken, so
per-subflow counters are read before any subflow closes.
"""
from __future__ import annotations

import errno
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from .. import netns
from ..cancel import Cancel
from ..errors import FallbackError, RunError, TransferTimeout
from ..mptcp import IPPROTO_MPTCP, ConnectionSample, is_mptcp
from ..probes import SubflowSampler, subflow_congestion
from ..topology import Topology
from ..workload_specs import BulkSpec
from .base import Hooks, Outcome, Workload

CHUNK = 256 * 1024


Transfer = Outcome  # the first wave's name for a bulk outcome


def mptcp_socket(ns: str, congestion_control: str | None = None, protocol: str = "mptcp") -> tuple[socket.socket, bool]:
    """An MPTCP socket in `ns`; a plain TCP one when MPTCP is disabled there (like a legacy peer),
    or when `protocol` is "tcp" (the best-path baseline).

    With `congestion_control`, TCP_CONGESTION is set on it: MPTCP applies it to
    every subflow, those joined later included. Raises RunError when the kernel refuses it.
    """
    with netns.inside(ns):
        try:
            if protocol == "tcp":
                sock, mptcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP), False
            else:
                sock, mptcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP), True
        except OSError as e:
            if e.errno not in (errno.ENOPROTOOPT, errno.EPROTONOSUPPORT, errno.EINVAL):
                raise
            sock, mptcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM), False
    if congestion_control:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, congestion_control.encode())
        except OSError as e:
            sock.close()
            raise RunError(f"cannot set congestion control {congestion_control!r} on the socket: {e.strerror}") from None
    return sock, mptcp


def bind_client(sock: socket.socket, addr: str | None) -> None:
    """Bind a client socket to `addr` (port chosen by the kernel) before connect(); nothing when None.

    The topology's source routing sends a connection from a path's client address over that path only.
    """
    if addr:
        sock.bind((addr, 0))


class BulkTransfer(Workload):
    """`kind = "bulk"`: one connection, a fixed size or a fixed duration, upload or download."""

    kind = "bulk"

    def __new__(cls, topo: Topology, workload: BulkSpec, timeout_s: float, hooks: Hooks | None = None) -> "BulkTransfer":
        # the registry names one class per kind: "both" is two transfers at once, built here
        if cls is BulkTransfer and workload.direction == "both":
            return BothDirections(topo, workload, timeout_s, hooks)  # type: ignore[return-value]
        return super().__new__(cls)

    def __init__(self, topo: Topology, workload: BulkSpec, timeout_s: float, hooks: Hooks | None = None) -> None:
        hooks = hooks or Hooks()
        super().__init__(topo, workload, timeout_s, hooks)
        self.workload = workload
        self.on_sample = hooks.on_sample
        self.on_start = hooks.on_start
        self.on_connected = hooks.on_connected
        self.cancel = cancel = hooks.cancel
        self.congestion_control = hooks.congestion_control
        self.upload = workload.direction == "upload"
        #: the server's port (BothDirections gives its download connection the next one)
        self.port = topo.server_port
        self._received = threading.Event()
        self._sampled = threading.Event()
        self._sender_sock = threading.Event()
        self._errors: list[str] = []
        self._bytes = 0  # received so far, kept current so a failed transfer still says how far it got
        self._t_end = 0.0
        self._t0: float | None = None
        self._final_done = False
        self.sampler: SubflowSampler | None = None
        self._socks: list[socket.socket] = []
        self._remove_hook = cancel.on_cancel(self.abort) if cancel else None

    # -- the two ends ----------------------------------------------------
    def _send(self, sock: socket.socket, t0: float) -> None:
        buf = memoryview(bytearray(CHUNK))
        remaining = self.workload.size if self.workload.size is not None else None
        deadline = t0 + self.workload.duration if self.workload.duration else None
        self.sampler = SubflowSampler(sock, t0, on_sample=self.on_sample).start()
        self._sender_sock.set()
        give_up = t0 + self.timeout_s
        while True:
            self._check()
            now = time.monotonic()
            if now >= give_up:
                raise socket.timeout()
            if remaining is not None:
                if remaining <= 0:
                    break
                sock.settimeout(give_up - now)
                n = sock.send(buf[: min(CHUNK, remaining)])
                remaining -= n
            else:
                if now >= deadline:  # type: ignore[operator]
                    break
                # a send blocked past the deadline (a full send buffer behind a retransmission timeout)
                # ends the duration, not the transfer: only the run's timeout makes a timeout
                sock.settimeout(max(min(give_up, deadline) - now, 0.001))  # type: ignore[operator]
                try:
                    sock.send(buf)
                except socket.timeout:
                    continue  # the loop ends at the deadline, or raises at give_up
        sock.shutdown(socket.SHUT_WR)
        if not self._received.wait(self._left(t0)):
            raise TransferTimeout(f"the receiver did not finish within the timeout of {self.timeout_s:g}s")
        self._final_sample()
        self._sampled.set()

    def _final_sample(self) -> None:
        """The last sample and each subflow's congestion control, before anything closes."""
        if self.sampler is None or self._final_done:
            return
        self._final_done = True
        self.sampler.stop()
        self.sampler.sample()
        try:
            self.sampler.congestion = subflow_congestion(self.topo.client if self.upload else self.topo.server)
        except OSError:
            pass  # a kernel without inet_diag: the algorithm stays unknown ("")

    def _receive(self, sock: socket.socket, t0: float) -> None:
        buf = bytearray(CHUNK)
        total = 0
        give_up = t0 + self.timeout_s
        while True:
            self._check()
            left = give_up - time.monotonic()
            if left <= 0:
                raise socket.timeout()
            sock.settimeout(left)
            n = sock.recv_into(buf)
            if n == 0:
                break
            total += n
            self._bytes = total
        self._t_end = time.monotonic()
        self._bytes = total
        self._received.set()
        self._sampled.wait(self._left(t0))

    def _check(self) -> None:
        if self.cancel:
            self.cancel.check()

    def abort(self) -> None:
        """Wake every blocked send/recv/accept (close() alone does not) and every wait."""
        self._received.set()
        self._sampled.set()
        for s in list(self._socks):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def partial(self) -> Transfer:
        """What a transfer that failed or timed out delivered until now: bytes received, elapsed time, samples.

        Call it after `run()` raised RunError, while the lab still stands.
        """
        t0 = self._t0 if self._t0 is not None else time.monotonic()
        self._final_sample()
        sampler = self.sampler or SubflowSampler(sock=None, t0=t0)  # type: ignore[arg-type]
        return Transfer(bytes=self._bytes, completion_s=max(time.monotonic() - t0, 1e-6), mptcp=False, t0=t0,
                        sampler=sampler, server_mptcp=False)

    def progress(self, sample: ConnectionSample, elapsed_s: float) -> float:
        if self.workload.size:
            return min(sample.mptcp_bytes_acked / self.workload.size, 1.0)
        return min(elapsed_s / float(self.workload.duration or 1), 1.0)

    def _left(self, t0: float) -> float:
        return max(0.1, t0 + self.timeout_s - time.monotonic())

    # -- orchestration ---------------------------------------------------
    def run(self) -> Transfer:
        protocol = self.hooks.protocol
        listener, server_mptcp = mptcp_socket(self.topo.server, self.congestion_control, protocol)
        self._socks.append(listener)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("0.0.0.0", self.port))
        listener.listen(1)
        listener.settimeout(self.timeout_s)
        client, _ = mptcp_socket(self.topo.client, self.congestion_control, protocol)
        self._socks.append(client)
        bind_client(client, self.hooks.bind)
        client.settimeout(self.timeout_s)
        server_result: dict[str, object] = {}

        t0 = self._t0 = time.monotonic()
        server = threading.Thread(target=self._server, args=(listener, t0, server_result), name="bulk-server", daemon=True)
        server.start()
        try:
            client.connect((self.topo.server_addr, self.port))
        except OSError as e:
            self._check()
            raise RunError(f"the client could not connect to the server: {e.strerror or e}") from None
        if self.on_start:
            self.on_start(t0)
        mptcp = is_mptcp(client)
        if not mptcp and protocol == "mptcp":
            raise FallbackError("the connection fell back to plain TCP: the server did not answer MP_CAPABLE",
                                "check net.mptcp.enabled in the server namespace and any middlebox stripping options")
        if self.on_connected:
            # a path manager may need the connection fully established, i.e. data flowing
            threading.Thread(target=self._connected, args=(client,), name="on-connected", daemon=True).start()
        try:
            if self.upload:
                self._send(client, t0)
            else:
                self._receive(client, t0)
        except socket.timeout:
            self._check()
            raise TransferTimeout(f"the transfer did not finish within the timeout of {self.timeout_s:g}s",
                                  "raise [run] timeout or shrink the workload") from None
        except OSError as e:
            self._check()
            raise RunError(f"the transfer failed on the client: {e.strerror or e}") from None
        server.join(self._left(t0))
        self._check()
        if "error" in server_result:
            raise RunError(f"the transfer failed on the server: {server_result['error']}")
        if not self._received.is_set() or self.sampler is None:
            raise TransferTimeout(f"the transfer did not finish within the timeout of {self.timeout_s:g}s")
        mptcp = mptcp and is_mptcp(client)
        if self._errors:
            raise RunError(self._errors[0])
        return Transfer(bytes=self._bytes, completion_s=self._t_end - t0, mptcp=mptcp, t0=t0,
                        sampler=self.sampler, server_mptcp=bool(server_result.get("mptcp", server_mptcp)))

    def _connected(self, client: socket.socket) -> None:
        try:
            self.on_connected(client)  # type: ignore[misc]
        except Exception as e:  # reported with the run's result
            self._errors.append(str(e))

    def _server(self, listener: socket.socket, t0: float, out: dict[str, object]) -> None:
        try:
            conn, _ = listener.accept()
            self._socks.append(conn)
            conn.settimeout(self.timeout_s)
            out["mptcp"] = is_mptcp(conn)
            if self.upload:
                self._receive(conn, t0)
            else:
                self._send(conn, t0)
        except BaseException as e:  # reported by the client side (Interrupted included)
            out["error"] = getattr(e, "strerror", None) or str(e)
            self._received.set()
            self._sampled.set()

    def close(self) -> None:
        if self._remove_hook:
            self._remove_hook()
        if self.sampler:
            self.sampler.stop()
        for s in self._socks:
            try:
                s.close()
            except OSError:
                pass


class BothDirections(Workload):
    """`kind = "bulk"`, `direction = "both"`: an upload and a download connection at the same time.

    Two BulkTransfers (the download one on the next server port) run in
    parallel threads, each moving `size` bytes or running for `duration`.
    Goodput counts both directions' bytes over the time until the later one
    ended; `upload_goodput_mbps` and `download_goodput_mbps` give each.
    The MPTCP_FULL_INFO sampler (subflow shares, RTTs, time series, progress)
    follows the upload connection only.
    """

    kind = "bulk"

    def __init__(self, topo: Topology, workload: BulkSpec, timeout_s: float, hooks: Hooks | None = None) -> None:
        hooks = hooks or Hooks()
        super().__init__(topo, workload, timeout_s, hooks)
        self.upload = True
        self.up = BulkTransfer(topo, workload.model_copy(update={"direction": "upload"}), timeout_s, hooks)
        quiet = replace(hooks, on_sample=None, on_start=None)
        self.down = BulkTransfer(topo, workload.model_copy(update={"direction": "download"}), timeout_s, quiet)
        self.down.port = topo.server_port + 1

    def run(self) -> Outcome:
        outcomes: dict[str, Outcome] = {}
        errors: list[BaseException] = []  # in the order they happened: the first is the cause

        def one(name: str, transfer: BulkTransfer) -> None:
            try:
                outcomes[name] = transfer.run()
            except BaseException as e:  # re-raised below, in the caller's thread
                errors.append(e)
                transfer.abort()
                (self.down if transfer is self.up else self.up).abort()  # one failed: do not wait out the other

        threads = [threading.Thread(target=one, args=(name, t), name=f"bulk-{name}", daemon=True)
                   for name, t in (("up", self.up), ("down", self.down))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for e in errors:
            if not isinstance(e, RunError):
                raise e  # Interrupted and bugs first
        if errors:
            raise errors[0]
        return self._combine(outcomes["up"], outcomes["down"])

    def _combine(self, up: Outcome, down: Outcome) -> Outcome:
        t0 = min(up.t0, down.t0)
        end = max(up.t0 + up.completion_s, down.t0 + down.completion_s)
        metrics = {"upload_goodput_mbps": round(up.bytes * 8 / max(up.completion_s, 1e-6) / 1e6, 4),
                   "download_goodput_mbps": round(down.bytes * 8 / max(down.completion_s, 1e-6) / 1e6, 4)}
        return Outcome(bytes=up.bytes + down.bytes, completion_s=end - t0, mptcp=up.mptcp and down.mptcp, t0=t0,
                       sampler=up.sampler, metrics=metrics, server_mptcp=up.server_mptcp and down.server_mptcp)

    def partial(self) -> Outcome:
        """Both directions' bytes until run() raised; the upload connection's samples."""
        return self._combine(self.up.partial(), self.down.partial())

    def close(self) -> None:
        self.up.close()
        self.down.close()

    def progress(self, sample: ConnectionSample, elapsed_s: float) -> float:
        return self.up.progress(sample, elapsed_s)

"""`kind = "command"`: bring your own program (iperf3, sockperf, a web server and curl, ...).

The server command starts first, in the server namespace; once it listens
(a TCP listener appears there) the client command runs in the client
namespace. Both run under `mptcpize run` (Debian's mptcpd: LD_PRELOAD of
libmptcpwrap, which turns every TCP socket they open into an MPTCP one) or, with
`mptcp = "native"`, as written (programs with their own MPTCP flag). They enter
their namespace through `nsenter --net` (util-linux), so nothing else of the
system (mounts, /etc) changes for them.

What the lab measures: a NamespaceSampler (mptcplab.diag) dumps every MPTCP
subflow of the sending end's namespace with inet_diag at 20 Hz, so per-path
shares, RTTs and time series appear as for the lab's own workloads; MIB
counters and link counters are taken by the runner as for any workload.
Goodput is the data-level bytes ACKed on every MPTCP connection the probes
saw (mptcp_diag's mptcpi_bytes_acked, each connection at its highest count;
on kernels before 6.7, which lack it, the bytes ACKed on every subflow) over
the time from the client program's start to the last sample in which that
count grew: the program's own setup counts, its idle tail after the data does not.
Each program's stdout (the first MAX_STDOUT bytes), exit code and last
stderr line are kept in the repetition (`programs`).

A client that exits non-zero, a program that is not installed, a server that
exits non-zero on its own, or connections that were all plain TCP make a
failed repetition whose error is the program's last stderr line. [run]
timeout kills both programs (a repetition with status timeout).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from typing import IO, Any

from ..errors import EnvironmentProblem, FallbackError, RunError, TransferTimeout, UnsupportedError
from ..mptcp import ConnectionSample
from ..netns import NETNS_DIR
from ..result import ProgramRun
from ..topology import Topology
from ..workload_specs import CommandSpec
from .base import Hooks, Outcome, Workload

#: the most stdout kept per program (bytes); what is beyond is counted in ProgramRun.stdout_dropped
MAX_STDOUT = 256 * 1024
#: how long the server may take to listen before the client starts anyway
SERVER_READY_S = 5.0
#: how long the server may take to exit on its own once the client has exited
SERVER_EXIT_S = 2.0
MPTCPIZE = "mptcpize"
NSENTER = "nsenter"


def mptcpize_path() -> str | None:
    """Where `mptcpize` is (Debian package mptcpd), or None."""
    return shutil.which(MPTCPIZE)


class Program:
    """One program running in a namespace: its stdout (capped) and stderr read by threads as it runs."""

    def __init__(self, role: str, ns: str, argv: list[str], mptcpize: bool) -> None:
        self.role = role
        self.argv = argv
        prefix = [NSENTER, f"--net={os.path.join(NETNS_DIR, ns)}", "--"] + ([MPTCPIZE, "run"] if mptcpize else [])
        self.stdout = bytearray()
        self.stdout_dropped = 0
        self.stderr_tail: deque[str] = deque(maxlen=20)
        self.killed = False
        self.started = time.monotonic()
        # a session of its own: a timeout or Ctrl-C kills whatever the program started too
        self.proc = subprocess.Popen(prefix + argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, start_new_session=True)
        self._readers = [threading.Thread(target=self._read_stdout, args=(self.proc.stdout,), name=f"cmd-{role}-out",
                                          daemon=True),
                         threading.Thread(target=self._read_stderr, args=(self.proc.stderr,), name=f"cmd-{role}-err",
                                          daemon=True)]
        for t in self._readers:
            t.start()

    def _read_stdout(self, pipe: IO[bytes]) -> None:
        while chunk := pipe.read1(65536):  # type: ignore[attr-defined]
            room = MAX_STDOUT - len(self.stdout)
            self.stdout += chunk[:max(room, 0)]
            self.stdout_dropped += max(len(chunk) - max(room, 0), 0)

    def _read_stderr(self, pipe: IO[bytes]) -> None:
        for line in pipe:
            text = line.decode(errors="replace").strip()
            if text:
                self.stderr_tail.append(text)

    def wait(self, timeout: float) -> int | None:
        """The exit code once it exited within `timeout` seconds (and its pipes are read), else None."""
        try:
            code = self.proc.wait(timeout=max(timeout, 0))
        except subprocess.TimeoutExpired:
            return None
        for t in self._readers:
            t.join(timeout=2)
        return code

    def kill(self) -> None:
        """SIGKILL the program's whole session (it may have started children)."""
        if self.proc.poll() is None:
            self.killed = True
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        for t in self._readers:
            t.join(timeout=2)

    def terminate(self, grace_s: float = 2.0) -> None:
        """SIGTERM, then SIGKILL after `grace_s` (a server the client no longer needs)."""
        if self.proc.poll() is None:
            self.killed = True
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            if self.wait(grace_s) is None:
                self.kill()
        for t in self._readers:
            t.join(timeout=2)

    @property
    def last_stderr(self) -> str:
        return self.stderr_tail[-1] if self.stderr_tail else ""

    def result(self) -> ProgramRun:
        return ProgramRun(role=self.role, argv=self.argv, exit_code=self.proc.returncode,
                          killed=self.killed, stdout=self.stdout.decode(errors="replace"),
                          stdout_dropped=self.stdout_dropped, stderr_last=self.last_stderr)


class Command(Workload):
    """`kind = "command"`: the spec's server and client programs, sampled from the outside."""

    kind = "command"

    @classmethod
    def preflight(cls, spec: CommandSpec, path_manager: str = "kernel") -> None:
        """Refuse what cannot run before anything is built: mptcpize missing (exit 3), the userspace path manager."""
        if spec.mptcp == "mptcpize" and mptcpize_path() is None:
            raise EnvironmentProblem("mptcpize is not installed (the command workload runs programs under it) — "
                                     "apt-get install mptcpd, or set workload.mptcp = \"native\" for a program with "
                                     "its own MPTCP flag")
        if shutil.which(NSENTER) is None:
            raise EnvironmentProblem("nsenter is not installed (it starts the programs in the lab's namespaces) — "
                                     "apt-get install util-linux")
        if path_manager == "userspace":
            raise UnsupportedError("the command workload cannot use the userspace path manager: the lab does not own "
                                   "the program's connections to open subflows on", "use path_manager = \"kernel\"")

    def __init__(self, topo: Topology, spec: CommandSpec, timeout_s: float, hooks: Hooks | None = None) -> None:
        hooks = hooks or Hooks()
        super().__init__(topo, spec, timeout_s, hooks)
        self.upload = spec.direction == "upload"
        self.values = {"server": topo.server_addr, "port": str(topo.server_port),
                       "client": topo.paths[0].client_addr if topo.paths else ""}
        self.programs: list[Program] = []
        self._lock = threading.Lock()
        self._aborted = threading.Event()
        self._t0: float | None = None
        from ..diag import NamespaceSampler

        self.sampler = NamespaceSampler(sock=None, t0=time.monotonic(),  # type: ignore[arg-type]
                                        on_sample=hooks.on_sample, ns=topo.client if self.upload else topo.server)
        self._remove_hook = hooks.cancel.on_cancel(self.abort) if hooks.cancel else None

    # -- programs ------------------------------------------------------------
    def _start(self, role: str) -> Program:
        argv = self.spec.argv(role, self.values)
        if shutil.which(argv[0]) is None:
            raise RunError(f"the {role} program {argv[0]!r} is not installed or not on PATH",
                           "install it, or give its full path in workload." + role)
        with self._lock:
            if self._aborted.is_set():
                self._check()
                raise RunError("the run was stopped")
            prog = Program(role, self.topo.client if role == "client" else self.topo.server, argv,
                           mptcpize=self.spec.mptcp == "mptcpize")
            self.programs.append(prog)
        return prog

    def _failure(self, prog: Program, code: int) -> RunError:
        why = prog.last_stderr or (f"killed by signal {-code}" if code < 0 else "no message on stderr")
        return RunError(f"the {prog.role} program {prog.argv[0]} exited with status {code}: {why}")

    def _wait_listening(self, server: Program, deadline: float) -> None:
        """Until a TCP listener appears in the server namespace, the server exits, or `deadline`."""
        from ..diag import listening, open_diag

        ds = open_diag(self.topo.server)
        try:
            while time.monotonic() < deadline and not self._aborted.is_set():
                code = server.proc.poll()
                if code is not None:
                    server.wait(1)
                    raise self._failure(server, code) if code != 0 else \
                        RunError(f"the server program {server.argv[0]} exited (status 0) before the client started")
                if listening(ds):
                    return
                time.sleep(0.01)
        finally:
            ds.close()

    def _check(self) -> None:
        if self.hooks.cancel:
            self.hooks.cancel.check()

    # -- the run ---------------------------------------------------------------
    def run(self) -> Outcome:
        start = time.monotonic()
        server = None
        if self.spec.server is not None:
            server = self._start("server")
            self._wait_listening(server, start + min(SERVER_READY_S, self.timeout_s))
        self._check()
        client = self._start("client")
        t0 = self._t0 = client.started
        self.sampler.t0 = t0
        self.sampler.start()
        if self.hooks.on_start:
            self.hooks.on_start(t0)
        code = client.wait(t0 + self.timeout_s - time.monotonic())
        self.sampler.stop()
        self._check()
        if code is None:
            for p in self.programs:
                p.kill()
            raise TransferTimeout(f"the client program {client.argv[0]} did not exit within the timeout of "
                                  f"{self.timeout_s:g}s (both programs were killed)",
                                  "raise [run] timeout or shorten the program's run (iperf3 -t)")
        if server is not None:
            scode = server.wait(SERVER_EXIT_S)
            if scode is None:
                server.terminate()  # a server that serves forever: stopped, not a failure
            elif scode != 0 and code == 0:
                raise self._failure(server, scode)
        if code != 0:
            raise self._failure(client, code)
        if self.sampler.error:
            raise RunError(f"the probes could not read the program's connections: {self.sampler.error}")
        if not self.sampler.connections_seen:
            if self.sampler.plain_tcp:
                raise FallbackError("the programs' connections were plain TCP, not MPTCP",
                                    "run them under mptcpize (workload.mptcp = \"mptcpize\") or give the program's "
                                    "own MPTCP flag")
            raise RunError("the probes saw no MPTCP connection in the "
                           f"{'client' if self.upload else 'server'} namespace while the client program ran",
                           "check that the client connects to {server} and workload.direction; a connection "
                           "shorter than the 50 ms sampling interval is not seen: run the program longer")
        return self._outcome(t0, completed=True)

    def _outcome(self, t0: float, completed: bool) -> Outcome:
        s = self.sampler
        elapsed = s.last_growth_s if completed and s.last_growth_s > 0 else time.monotonic() - t0
        return Outcome(bytes=s.delivered_bytes, completion_s=max(elapsed, 1e-6), mptcp=bool(s.connections_seen), t0=t0,
                       sampler=s, server_mptcp=bool(s.connections_seen), programs=[p.result() for p in self.programs])

    def partial(self) -> Outcome:
        """What the probes saw until the failure, the programs' output so far (they are stopped first)."""
        self.sampler.stop()
        for p in self.programs:
            p.kill()
        return self._outcome(self._t0 if self._t0 is not None else time.monotonic(), completed=False)

    def abort(self) -> None:
        """Ctrl-C / SIGTERM: kill both programs (the runner then raises Interrupted)."""
        self._aborted.set()
        with self._lock:
            progs = list(self.programs)
        for p in progs:
            p.kill()

    def close(self) -> None:
        if self._remove_hook:
            self._remove_hook()
        self.sampler.stop()
        self.abort()

    def progress(self, sample: ConnectionSample, elapsed_s: float) -> float:
        return min(elapsed_s / self.timeout_s, 1.0)

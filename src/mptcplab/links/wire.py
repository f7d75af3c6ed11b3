"""Userspace link emulation: works on any kernel with AF_PACKET and veth.

Each path is cut in two in the emulator namespace (c<i> faces the client,
r<i> the router); a forwarder process (links/forwarder.py) sits between the
halves and applies the path's queue, rate or trace, delay, jitter and loss
to every frame, per direction. Path events go to the forwarder over a
control pipe; a path taken down is a silent blackhole (frames vanish, no
carrier is lost), which is how real paths fail.

One process per path serving both directions, at SCHED_FIFO, is the default:
on this 2-core machine it kept the delay p99 error stable under two loaded
paths, where one process per direction (twice the processes competing for
two cores) did not (shared/notes/wire-emulator-measurements.md, and
bench/link_accuracy.py --workers direction to measure it again).
"""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, ClassVar, Literal

from ..errors import RunError
from ..lab import Lab
from ..scenario import Event, GilbertElliott, LinkSpec, Scenario
from ..topology import Topology
from .base import LinkBackend, queue_limit_bytes, specs
from .traces import load_trace, mean_rate_bps

FORWARDER = Path(__file__).with_name("forwarder.py")
READY_TIMEOUT_S = 10.0
RT_PRIORITY = 10  # SCHED_FIFO: above every normal task, below the kernel's own RT threads
Workers = Literal["path", "direction"]


def _loss(loss: float | GilbertElliott) -> float | dict[str, float]:
    if isinstance(loss, GilbertElliott):
        return {"p": loss.p, "r": loss.r, "loss_bad": loss.loss_bad, "loss_good": loss.loss_good}
    return loss


def _rate(spec: LinkSpec) -> float:
    """The rate a direction runs at: fixed, or a trace's mean (for default queue sizes)."""
    if spec.rate_bps is not None:
        return spec.rate_bps
    assert spec.trace is not None
    return mean_rate_bps(load_trace(spec.trace))


def direction_config(spec: LinkSpec, name: str, rx_if: str, tx_if: str, epoch: float) -> dict[str, Any]:
    """What the forwarder needs for one direction (all units SI, rates in bit/s)."""
    return {
        "name": name, "rx_if": rx_if, "tx_if": tx_if,
        "rate_bps": spec.rate_bps, "trace": spec.trace, "trace_epoch": epoch,
        "limit_bytes": queue_limit_bytes(spec, _rate(spec)),
        "delay_s": spec.delay_s, "jitter_s": spec.jitter_s,
        "jitter_distribution": spec.jitter_distribution, "reorder": spec.reorder,
        "loss": _loss(spec.loss),
    }


class Forwarder:
    """One forwarder process and its control pipe."""

    def __init__(self, lab: Lab, netns: str, directions: list[dict[str, Any]], priority: int) -> None:
        self.directions = [d["name"] for d in directions]
        self._lock = threading.Lock()
        fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
        try:
            # the namespace's name is only for people and tools reading the command line
            # (ps, `mptcplab cleanup`'s tests): the forwarder enters it through the fd
            config = {"netns": netns, "netns_fd": fd, "parent_pid": os.getpid(), "priority": priority,
                      "directions": directions}
            self.proc = lab.add_process(subprocess.Popen(
                [sys.executable, str(FORWARDER), json.dumps(config)], pass_fds=(fd,),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        finally:
            os.close(fd)
        self.hello: dict[str, Any] = {}

    def wait_ready(self) -> None:
        self.hello = self._read(READY_TIMEOUT_S)

    def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            self.proc.kill()
            err = self.proc.stderr.read().decode(errors="replace").strip().splitlines() if self.proc.stderr else []
            raise RunError(f"the wire forwarder for {'/'.join(self.directions)} stopped: {err[-1] if err else 'no answer'}")
        return json.loads(line)

    def call(self, command: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        with self._lock:
            if self.proc.poll() is not None:
                raise RunError(f"the wire forwarder exited with status {self.proc.returncode}")
            assert self.proc.stdin is not None
            self.proc.stdin.write((json.dumps(command) + "\n").encode())
            self.proc.stdin.flush()
            return self._read(timeout)


class WireLink(LinkBackend):
    name = "wire"
    needs_emulator_ns: ClassVar[bool] = True
    # README, "Link emulation accuracy": rate within 0.3% up to 500 mbit on one path; 600 mbit over two
    # paths with the delay error's p99 under 1 ms (a 2-vCPU VM; the forwarders share its cores)
    max_path_rate_bps: ClassVar[float | None] = 500e6
    max_total_rate_bps: ClassVar[float | None] = 600e6
    ceiling_source: ClassVar[str] = "measured on a 2-vCPU VM: README.md, Link emulation accuracy"
    unseeded_draws: ClassVar[bool] = True  # the forwarder draws loss and jitter from Python's random, seeded by the OS

    def __init__(self, lab: Lab, topo: Topology, scenario: Scenario, workers: Workers = "path",
                 priority: int = RT_PRIORITY) -> None:
        super().__init__(lab, topo, scenario)
        self.workers = workers
        self.priority = priority
        self.forwarders: dict[str, list[Forwarder]] = {}
        self.final_stats: dict[str, Any] | None = None
        self.epoch = 0.0
        #: each direction's spec as `set` events left it, once one has (the queue limit follows the current rate)
        self.current: dict[tuple[str, str], LinkSpec] = {}

    @classmethod
    def cannot_emulate(cls, scenario: Scenario) -> str | None:
        return None  # every path property and event of the scenario format

    def _configs(self, path: str) -> list[dict[str, Any]]:
        ports = self.ports(path)
        assert ports.emu_client_if and ports.emu_router_if
        p = self.scenario.path(path)
        return [direction_config(p.link("up"), "up", ports.emu_client_if, ports.emu_router_if, self.epoch),
                direction_config(p.link("down"), "down", ports.emu_router_if, ports.emu_client_if, self.epoch)]

    def start(self) -> None:
        assert self.topo.emulator is not None
        self.epoch = time.monotonic()  # trace replay starts here, on every path
        for p in self.scenario.paths:
            configs = self._configs(p.name)
            groups = [configs] if self.workers == "path" else [[c] for c in configs]
            self.forwarders[p.name] = [Forwarder(self.lab, self.topo.emulator, g, self.priority) for g in groups]
        for fwd in self.all_forwarders():
            fwd.wait_ready()

    def all_forwarders(self) -> list[Forwarder]:
        return [f for group in self.forwarders.values() for f in group]

    def _send(self, path: str, direction: str, command: dict[str, Any]) -> None:
        for fwd in self.forwarders[path]:
            for d in fwd.directions:
                if direction in ("both", d):
                    fwd.call({**command, "dir": d})

    def apply(self, event: Event) -> None:
        if event.action in ("down", "up"):
            self._send(event.path, event.direction, {"op": event.action})
            return
        for direction in ("up", "down"):
            if event.direction not in ("both", direction):
                continue
            key = (event.path, direction)
            spec = self.current.get(key) or self.scenario.path(event.path).link(direction)  # type: ignore[arg-type]
            spec = self.current[key] = spec.model_copy(update=event.link_changes())
            command: dict[str, Any] = {"op": "set"}
            if event.rate is not None:
                command["rate_bps"] = event.rate
            if event.rate is not None or event.queue is not None:
                command["limit_bytes"] = queue_limit_bytes(spec, _rate(spec))
            if event.delay is not None:
                command["delay_s"] = event.delay
            if event.jitter is not None:  # the forwarder takes jitter with its distribution and reordering
                command.update(jitter_s=event.jitter, jitter_distribution=spec.jitter_distribution, reorder=spec.reorder)
            if event.loss is not None:
                command["loss"] = _loss(event.loss)
            self._send(event.path, direction, command)

    def stats(self, reset: bool = False) -> dict[str, Any]:
        """The forwarders' own counters: frames, drops by cause, lateness, CPU."""
        out: dict[str, Any] = {"paths": {}, "cpu_s": 0.0, "elapsed_s": 0.0}
        for path, group in self.forwarders.items():
            for fwd in group:
                report = fwd.call({"op": "stats", "reset": reset})
                out["paths"].setdefault(path, {}).update(report["directions"])
                out["cpu_s"] += report["cpu_s"]
                out["elapsed_s"] = max(out["elapsed_s"], report["elapsed_s"])
        return out

    def stop(self) -> None:
        """Collect the final statistics; the lab ends the processes."""
        if self.final_stats is not None or not self.forwarders:
            return
        try:
            self.final_stats = self.stats()
        except RunError:
            self.final_stats = {}

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "backend": self.name, "workers": self.workers, "priority": self.priority,
            "realtime": all(f.hello.get("realtime") for f in self.all_forwarders()), "paths": {},
        }
        for path, direction, spec in specs(self.scenario):
            cfg = direction_config(spec, direction, "", "", self.epoch)
            for key in ("name", "rx_if", "tx_if", "trace_epoch"):
                cfg.pop(key)
            out["paths"].setdefault(path, {})[direction] = cfg
        return out

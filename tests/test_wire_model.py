"""The wire backend's link model, property by property.

Where a property is about frames (jitter and its distribution, ordering,
bursty loss), real UDP datagrams go through the real forwarder between real
namespaces and the receiver's kernel timestamps are compared with the
sender's, on CLOCK_MONOTONIC, which every namespace shares. Where it is about
what a scheduler sees (retransmissions, RTT, rates, events), real MPTCP runs
through the emulated paths. Tolerances are statistical (sample sizes are
given with each), never a wall-clock limit.
"""
from __future__ import annotations

import math
import signal
import socket
import statistics
import struct
import subprocess
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from mptcplab import netns
from mptcplab.lab import Lab
from mptcplab.links.wire import WireLink
from mptcplab.scenario import GilbertElliott, parse_scenario
from mptcplab.topology import Topology, build

from .conftest import CLI, cli, lab_namespaces, leftovers, namespaces_of_pid, requires_root, run_once, wait_for, write_scenario

pytestmark = requires_root

SO_TIMESTAMPNS = 35
PORT = 7100


# -- frames through the real forwarder ------------------------------------------
@contextmanager
def wire_lab(paths: list[dict[str, Any]]) -> Iterator[tuple[Topology, WireLink]]:
    """Namespaces and running forwarders for `paths`, no MPTCP workload."""
    scenario = parse_scenario({"name": "model", "path": paths, "workload": {"size": "1MiB"}})
    with Lab() as lab:
        topo = build(lab, scenario, emulator=True)
        link = WireLink(lab, topo, scenario)
        link.start()
        lab.on_close(link.stop)
        yield topo, link
    assert not leftovers()


@dataclass
class Received:
    """What one path's receiver saw: sequence numbers and one-way delays in arrival order."""

    seqs: list[int] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)

    def reordered(self) -> int:
        """Datagrams that arrived after one sent later than them."""
        highest, late = -1, 0
        for s in self.seqs:
            if s < highest:
                late += 1
            highest = max(highest, s)
        return late

    def lost(self, sent: int) -> list[bool]:
        """Per datagram sent: was it lost?"""
        got = set(self.seqs)
        return [i not in got for i in range(sent)]


def udp_through(topo: Topology, count: int, interval: float) -> tuple[dict[str, Received], int]:
    """Send `count` numbered datagrams client -> server on every path; return what arrived.

    The sender stamps CLOCK_MONOTONIC into each datagram, the receiving
    kernel stamps its arrival (SO_TIMESTAMPNS, mapped to CLOCK_MONOTONIC).
    """
    got = {p.name: Received() for p in topo.paths}
    receivers = []
    with netns.inside(topo.server):
        for p in topo.paths:
            rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            rx.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            rx.bind((topo.server_addr, PORT + p.index))
            rx.settimeout(0.5)
            receivers.append((rx, got[p.name]))
    with netns.inside(topo.client):
        senders = []
        for p in topo.paths:
            tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            tx.bind((p.client_addr, 0))  # source routing: this path only
            senders.append((tx, (topo.server_addr, PORT + p.index)))
    done = threading.Event()
    threads = [threading.Thread(target=_receive, args=(rx, r, done), daemon=True) for rx, r in receivers]
    for t in threads:
        t.start()
    next_t = time.monotonic()
    for seq in range(count):
        for tx, addr in senders:
            tx.sendto(struct.pack("qd", seq, time.monotonic()), addr)
        next_t += interval
        time.sleep(max(0.0, next_t - time.monotonic()))
    time.sleep(0.5)  # the last datagrams still wait out their delay
    done.set()
    for t in threads:
        t.join(timeout=5)
    for tx, _ in senders:
        tx.close()
    return got, count


def _receive(rx: socket.socket, out: Received, done: threading.Event) -> None:
    while not done.is_set():
        try:
            data, anc, _, _ = rx.recvmsg(64, 64)
        except socket.timeout:
            continue
        off = time.time_ns() - time.monotonic_ns()
        seq, sent = struct.unpack("qd", data[:16])
        for level, kind, raw in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = struct.unpack("qq", raw[:16])
                out.seqs.append(seq)
                out.delays.append((sec * 1_000_000_000 + nsec - off) * 1e-9 - sent)
    rx.close()


def iqr(values: list[float]) -> float:
    q = statistics.quantiles(values, n=4)
    return q[2] - q[0]


def test_jitter_follows_its_distribution_and_reorders_only_when_asked():
    # 100 mbit: a 60-byte datagram serializes in 5 us, so the spread is the jitter's alone
    base = {"rate": "100mbit", "delay": "10ms"}
    paths = [
        {"name": "plain", **base},
        {"name": "fifo", **base, "jitter": "3ms"},
        {"name": "normal", **base, "jitter": "3ms", "reorder": True},
        {"name": "uniform", **base, "jitter": "3ms", "jitter_distribution": "uniform", "reorder": True},
    ]
    with wire_lab(paths) as (topo, link):
        got, sent = udp_through(topo, count=3000, interval=0.0005)
        stats = link.stats()["paths"]
    for name, r in got.items():
        assert len(r.seqs) == sent, (name, len(r.seqs), stats[name]["up"]["drops"])
        # nothing but the datagrams crossed the path: ARP is pinned, it never rides the emulated link
        assert stats[name]["up"]["frames_in"] == sent, (name, stats[name]["up"])
    # ordering: jitter never lets a frame overtake unless reorder = true
    assert got["plain"].reordered() == 0
    assert got["fifo"].reordered() == 0
    # consecutive datagrams 0.5 ms apart, each delayed by N(10 ms, 3 ms): about 45% are overtaken
    assert got["normal"].reordered() > 0.2 * sent, got["normal"].reordered()
    assert got["uniform"].reordered() > 0.2 * sent, got["uniform"].reordered()
    # the distributions, from the interquartile range (robust against the VM's rare stalls):
    # normal: IQR = 1.349 sigma; uniform on [-J, J]: IQR = J. 3000 samples: the IQR's own
    # standard error is about 2.5%, the clock's noise adds tens of us.
    assert abs(iqr(got["normal"].delays) / 1.349 / 0.003 - 1) <= 0.10, iqr(got["normal"].delays)
    assert abs(iqr(got["uniform"].delays) / 0.003 - 1) <= 0.10, iqr(got["uniform"].delays)
    # centred on the configured delay (jitter is zero-mean; clamping at -delay is 3.3 sigma away)
    for name in ("normal", "uniform"):
        assert abs(statistics.median(got[name].delays) - 0.010) <= 0.0005, (name, statistics.median(got[name].delays))
    # in order, the spread stays but is cut by the frames ahead; without jitter there is none
    assert iqr(got["fifo"].delays) > 5 * iqr(got["plain"].delays), (iqr(got["fifo"].delays), iqr(got["plain"].delays))
    # and a frame held back by the one ahead of it only ever leaves later: the median grows
    assert statistics.median(got["fifo"].delays) > statistics.median(got["normal"].delays) + 0.001


def _burst_lengths(lost: list[bool]) -> list[int]:
    bursts, run = [], 0
    for x in lost:
        if x:
            run += 1
        elif run:
            bursts.append(run)
            run = 0
    if run:
        bursts.append(run)
    return bursts


def _ge_sigma(model: GilbertElliott, n: int) -> float:
    """Standard error of the loss rate over n frames of a Gilbert chain (losses are correlated).

    For a two-state chain with lag-one correlation lambda = 1 - p - r, the
    variance of the mean of the state indicator is pi (1 - pi) / n * (1 + lambda) / (1 - lambda).
    """
    pi, lam = model.mean_loss, 1 - model.p - model.r
    return math.sqrt(pi * (1 - pi) / n * (1 + lam) / (1 - lam))


def test_gilbert_elliott_loss_comes_in_bursts_of_the_models_length():
    ge = {"model": "gilbert-elliott", "p": "2%", "r": "25%"}  # mean loss 7.4%, mean burst 4 frames
    paths = [{"name": "bursty", "rate": "100mbit", "loss": ge, "queue": "2000p"},
             {"name": "random", "rate": "100mbit", "loss": "7.4%", "queue": "2000p"}]
    with wire_lab(paths) as (topo, link):
        got, sent = udp_through(topo, count=10000, interval=0.0002)
        stats = link.stats()["paths"]
    model = GilbertElliott(p="2%", r="25%")
    bursty, random_ = got["bursty"].lost(sent), got["random"].lost(sent)
    # the receiver's count matches the forwarder's own (nothing else loses frames here)
    assert sum(bursty) == stats["bursty"]["up"]["drops"]["burst_loss"]
    assert sum(random_) == stats["random"]["up"]["drops"]["loss"]
    # mean loss: within 4 standard errors of the chain's (1 in 16 000 to fail by chance)
    assert abs(sum(bursty) / sent - model.mean_loss) <= 4 * _ge_sigma(model, sent), sum(bursty) / sent
    # bursts: geometric with mean 1/r = 4 frames; independent loss at 7.4% gives 1.08
    bursts = _burst_lengths(bursty)
    mean_burst = statistics.fmean(bursts)
    # ~185 bursts, sd of a burst length sqrt(1-r)/r = 3.5: standard error 0.25 frames
    assert abs(mean_burst - 1 / model.r) <= 1.0, mean_burst
    assert statistics.fmean(_burst_lengths(random_)) < 1.3


# -- real MPTCP through the emulated paths --------------------------------------
def _run(tmp_path: Path, body: str, name: str = "s.toml"):
    return run_once(tmp_path, body, name, backend="wire")


def _window(rep, series: str, path: str, start: float, end: float) -> list[float]:
    ts = rep.timeseries
    assert ts is not None
    return [v for t, v in zip(ts.t, getattr(ts, series)[path]) if start <= t < end and v > 0]


def _rate(rep, path: str, start: float, end: float) -> float:
    """Path `path`'s ACKed data over the window [start, end) s, in Mbit/s: bytes over time, each sample's rate
    weighted by its interval. Not the mean of the samples' rates: a sample read late (the sampler is one thread
    among the lab's on two cores) and the next read on time give two rates whose mean is above the true one."""
    ts = rep.timeseries
    assert ts is not None
    moved = elapsed = 0.0
    for prev, t, v in zip([0.0, *ts.t], ts.t, ts.throughput_mbps[path]):
        if start <= t < end:
            moved, elapsed = moved + v * (t - prev), elapsed + (t - prev)
    assert elapsed > 0, (path, start, end)
    return moved / elapsed


def test_rtt_spread_grows_with_jitter(tmp_path):
    # a shallow queue (5 ms at the rate) keeps TCP's own sawtooth small next to the jitter
    _, rep = _run(tmp_path, """
        name = "jitter-rtt"
        [[path]]
        name = "steady"
        rate = "20mbit"
        delay = "10ms"
        queue = "5ms"
        [[path]]
        name = "jittery"
        rate = "20mbit"
        delay = "10ms"
        jitter = "12ms"
        queue = "5ms"
        [workload]
        duration = "4s"
        [run]
        link_backend = "wire"
    """)
    steady, jittery = _window(rep, "rtt_ms", "steady", 1, 5), _window(rep, "rtt_ms", "jittery", 1, 5)
    assert len(steady) > 40 and len(jittery) > 40
    # smoothed RTT (TCP's srtt, 20 Hz): the queue's sawtooth alone spreads it by ~2 ms (IQR);
    # 12 ms of jitter each way (in order, so frames bunch behind late ones) by 3 times that or more
    assert iqr(jittery) > 2 * iqr(steady), (iqr(jittery), iqr(steady))
    sf = {s.path: s for s in rep.subflows}
    # without jitter the configured delay is a floor: no RTT sample can beat 2 x 10 ms.
    # (That jitter is two-sided is checked frame by frame above: on a loaded in-order link
    # an early frame usually waits behind a late one, so TCP's min_rtt need not show it.)
    assert sf["steady"].min_rtt_ms >= 20, sf["steady"].min_rtt_ms


def _ge_tolerance(model: GilbertElliott, frames: int) -> float:
    return 4 * _ge_sigma(model, frames)


def test_gilbert_elliott_loss_through_mptcp(tmp_path):
    result, rep = _run(tmp_path, """
        name = "bursty"
        [[path]]
        name = "bursty"
        rate = "100mbit"
        delay = "1ms"
        loss = { model = "gilbert-elliott", p = "1%", r = "30%" }
        queue = "2000p"
        [[path]]
        name = "clean"
        rate = "20mbit"
        delay = "1ms"
        queue = "2000p"
        [workload]
        duration = "3s"
        [run]
        link_backend = "wire"
    """)
    sf = {s.path: s for s in rep.subflows}
    assert sf["bursty"].retransmits > sf["clean"].retransmits, (sf["bursty"], sf["clean"])  # not == 0: load elsewhere
    model = GilbertElliott(p="1%", r="30%")  # mean loss 3.23%
    stats = result.environment["link_stats"][0]["paths"]
    for direction in ("up", "down"):  # data and ACKs each go through a chain of their own
        d = stats["bursty"][direction]
        measured = d["drops"]["burst_loss"] / d["frames_in"]
        # tens of thousands of frames up, half as many down: within 4 standard errors of the chain
        assert abs(measured - model.mean_loss) <= _ge_tolerance(model, d["frames_in"]), (direction, measured, d["frames_in"])
        assert d["drops"]["loss"] == 0  # only the chain drops here; queue drops are the machine's, not asked for
        assert stats["clean"][direction]["drops"]["loss"] == stats["clean"][direction]["drops"]["burst_loss"] == 0


def test_set_events_change_rate_and_delay_mid_run(tmp_path):
    _, rep = _run(tmp_path, """
        name = "set-events"
        [[path]]
        name = "a"
        rate = "20mbit"
        delay = "5ms"
        queue = "20ms"
        [[path]]
        name = "b"
        rate = "20mbit"
        delay = "5ms"
        queue = "20ms"
        [workload]
        duration = "6s"
        [run]
        link_backend = "wire"
        [[event]]
        at = "2.5s"
        path = "a"
        action = "set"
        rate = "5mbit"
        [[event]]
        at = "2.5s"
        path = "b"
        action = "set"
        delay = "30ms"
    """)
    # the rate: path a's throughput drops to a quarter (TCP fills both rates alike, ~94%)
    before, after = _rate(rep, "a", 0.5, 2.5), _rate(rep, "a", 3.5, 6.0)
    assert abs(after / before - 0.25) <= 0.05, (before, after)
    assert after <= 5.0 * 1.02, after
    # the delay: path b's smoothed RTT moves from 2 x 5 ms to 2 x 30 ms; queueing (20 ms at most)
    # and a frame's serialization can only add to either
    b_before, b_after = min(_window(rep, "rtt_ms", "b", 0.5, 2.5)), min(_window(rep, "rtt_ms", "b", 3.5, 6.0))
    assert 10 <= b_before <= 10 + 20 + 2, b_before
    assert 60 <= b_after <= 60 + 20 + 2, b_after


def test_up_and_down_overrides_make_directions_differ(tmp_path):
    body = """
        name = "asymmetric"
        [[path]]
        name = "a"
        rate = "10mbit"
        delay = "5ms"
        up = {{ rate = "20mbit" }}
        down = {{ rate = "5mbit" }}
        [[path]]
        name = "b"
        rate = "10mbit"
        up = {{ delay = "5ms" }}
        down = {{ delay = "20ms" }}
        [workload]
        direction = "{direction}"
        duration = "3s"
        [run]
        link_backend = "wire"
    """
    rates = {}
    for direction in ("upload", "download"):
        result, rep = _run(tmp_path, body.format(direction=direction), f"{direction}.toml")
        rates[direction] = {p: _rate(rep, p, 1.0, 3.0) for p in ("a", "b")}
        sf = {s.path: s for s in rep.subflows}
        # one-way delays add up once each: 5 + 5 on a, 5 + 20 on b (plus serialization and queueing)
        assert 10 <= sf["a"].min_rtt_ms <= 10 + 3 and 25 <= sf["b"].min_rtt_ms <= 25 + 3, (sf["a"], sf["b"])
        link = result.environment["link"]["paths"]
        assert (link["a"]["up"]["rate_bps"], link["a"]["down"]["rate_bps"]) == (20e6, 5e6)
    # path a: 20 mbit up, 5 mbit down -> a ratio of 4; path b: the same rate both ways -> 1
    assert abs(rates["upload"]["a"] / rates["download"]["a"] / 4 - 1) <= 0.15, rates
    assert abs(rates["upload"]["b"] / rates["download"]["b"] - 1) <= 0.15, rates
    assert rates["upload"]["a"] <= 20 * 1.02 and rates["download"]["a"] <= 5 * 1.02, rates


# -- the forwarders die with their lab -------------------------------------------
def forwarders_in(namespaces: set[str]) -> list[int]:
    """Pids of forwarder processes whose command line names one of `namespaces`."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "forwarder.py" in cmdline and any(f'"{ns}"' in cmdline for ns in namespaces):
            pids.append(int(proc.name))
    return pids


def test_forwarders_die_when_the_lab_is_sigkilled(tmp_path):
    path = write_scenario(tmp_path, """
        name = "sigkill"
        [[path]]
        name = "a"
        rate = "10mbit"
        delay = "5ms"
        [[path]]
        name = "b"
        rate = "10mbit"
        delay = "5ms"
        [workload]
        duration = "60s"
        [run]
        timeout = "90s"
        link_backend = "wire"
    """)
    proc = subprocess.Popen([CLI, "run", str(path), "--repeat", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: len(forwarders_in(namespaces_of_pid(proc.pid))) == 2, timeout=90), "the forwarders never started"
        mine = namespaces_of_pid(proc.pid)
        assert any(ns.endswith("-emu") for ns in mine)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    # nobody cleaned up (SIGKILL): the namespaces are still there, the forwarders are not
    assert mine & lab_namespaces()
    assert wait_for(lambda: not forwarders_in(mine), timeout=30), f"forwarders outlived their lab: {forwarders_in(mine)}"
    done = cli("cleanup")
    assert done.returncode == 0, done.stderr
    assert not forwarders_in(mine) and not (mine & lab_namespaces())

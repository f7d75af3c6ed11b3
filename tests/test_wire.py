"""The wire backend: real MPTCP through the userspace link emulator.

Every test runs the real kernel's MPTCP over veth pairs cut by a forwarder
process in the emulator namespace, and checks what TCP itself reports
(TCP_INFO via MPTCP_FULL_INFO) plus the forwarder's own counters.
"""
from __future__ import annotations

import math
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mptcplab import RunOptions, load_scenario, netns, run_scenario
from mptcplab.lab import Lab
from mptcplab.links import offloads
from mptcplab.links.traces import capacity_bytes, load_trace
from mptcplab.links.wire import WireLink
from mptcplab.scenario import parse_scenario
from mptcplab.topology import Topology, build

from .conftest import cli, cli_in_process, leftovers, requires_root, run_once, write_scenario, light

pytestmark = requires_root


def _run(tmp_path: Path, body: str, name: str = "s.toml"):
    return run_once(tmp_path, body, name, backend="wire")


def _window_mean(series: list[float], t: list[float], start: float, end: float) -> float:
    values = [v for ti, v in zip(t, series) if start <= ti < end]
    return statistics.fmean(values) if values else 0.0


def test_rtts_follow_the_configured_delays(tmp_path):
    result, rep = _run(tmp_path, """
        name = "rtt"
        [[path]]
        name = "near"
        rate = "20mbit"
        delay = "10ms"
        [[path]]
        name = "far"
        rate = "20mbit"
        delay = "40ms"
        [workload]
        duration = "4s"
        [run]
        link_backend = "wire"
    """)
    rtt = {sf.path: sf for sf in rep.subflows}
    # the path's own RTT: 2 x one-way delay plus serialization of a frame and an ACK at 20 mbit
    assert abs(rtt["near"].min_rtt_ms - 20) <= 3, rtt["near"]
    assert abs(rtt["far"].min_rtt_ms - 80) <= 3, rtt["far"]
    # queueing the scenario asked for (100 ms at the rate) can only add to it
    assert rtt["near"].rtt_median_ms >= rtt["near"].min_rtt_ms
    assert rep.goodput_mbps >= 0.75 * 40, rep.goodput_mbps
    link = result.environment["link"]
    assert link["backend"] == "wire" and link["paths"]["far"]["up"]["delay_s"] == 0.04
    stats = result.environment["link_stats"][0]["paths"]
    for path in ("near", "far"):
        for direction in ("up", "down"):
            d = stats[path][direction]
            assert d["frames_out"] > 0
            assert d["frames_out"] + sum(d["drops"].values()) + d["queued"] == d["frames_in"], d


def test_loss_shows_up_on_that_subflow_only(tmp_path):
    result, rep = _run(tmp_path, """
        name = "loss"
        [[path]]
        name = "lossy"
        rate = "10mbit"
        delay = "5ms"
        loss = "1%"
        queue = "2000p"
        [[path]]
        name = "clean"
        rate = "10mbit"
        delay = "5ms"
        queue = "2000p"
        [workload]
        duration = "3s"
        [run]
        link_backend = "wire"
    """)
    sf = {s.path: s for s in rep.subflows}
    stats = result.environment["link_stats"][0]["paths"]
    # judged: the loss this test asked for, where it asked for it. Not judged: zero retransmissions or queue
    # drops on the clean path, which another lab loading the machine at the same time can cause.
    assert stats["lossy"]["up"]["drops"]["loss"] > 0
    assert all(stats["clean"][d]["drops"]["loss"] == 0 for d in ("up", "down"))
    assert sf["lossy"].retransmits > sf["clean"].retransmits, (sf["lossy"], sf["clean"])


def test_path_down_moves_traffic_and_up_brings_it_back(tmp_path):
    result, rep = _run(tmp_path, """
        name = "failover"
        [[path]]
        name = "a"
        rate = "10mbit"
        delay = "5ms"
        [[path]]
        name = "b"
        rate = "10mbit"
        delay = "5ms"
        [workload]
        duration = "10s"
        [run]
        link_backend = "wire"
        [[event]]
        at = "2s"
        path = "a"
        action = "down"
        [[event]]
        at = "5s"
        path = "a"
        action = "up"
    """)
    ts = rep.timeseries
    assert ts is not None
    a, b = ts.throughput_mbps["a"], ts.throughput_mbps["b"]
    assert _window_mean(a, ts.t, 0.5, 2.0) > 5, "path a carried traffic before it failed"
    assert _window_mean(a, ts.t, 2.5, 5.0) < 0.5, "path a carried traffic while down"
    # b first stalls too (usually 0.5-1 s under cubic: the receiver waits for what was stranded on a until the
    # sender marks a's subflow stale after its RTOs back off and reinjects it, README 'failover'; once in about
    # five runs the stall lasted ~1.8 s, to 3.8 s), then carries everything
    assert _window_mean(b, ts.t, 4.0, 5.0) > 8, "path b did not take the whole transfer over"
    assert _window_mean(a, ts.t, 7.0, 10.0) > 5, "traffic did not come back to path a"
    assert 9.5 < rep.completion_s < 13 and rep.goodput_mbps > 10
    assert result.environment["link_stats"][0]["paths"]["a"]["up"]["drops"]["down"] > 0


def test_cellular_trace_replays_its_mean_rate(tmp_path):
    trace = "ATT-LTE-driving-2016.up"  # bundled with mptcplab
    result, rep = _run(tmp_path, f"""
        name = "cell"
        [[path]]
        name = "lte"
        trace_up = "{trace}"
        rate = "10mbit"
        delay = "10ms"
        queue = "300p"
        [[path]]
        name = "wifi"
        rate = "10mbit"
        delay = "5ms"
        [workload]
        duration = "6s"
        [run]
        link_backend = "wire"
    """)
    up = result.environment["link_stats"][0]["paths"]["lte"]["up"]
    stamps = load_trace(result.environment["link"]["paths"]["lte"]["up"]["trace"])
    # a 6 s replay covers a slice of the 120 s trace: compare with that slice's own mean
    start, end = up["first_out"] - up["trace_epoch"], up["last_out"] - up["trace_epoch"]
    delivered = up["bytes_out"] - 14 * up["frames_out"]  # IP bytes, as Mahimahi counts
    expected = capacity_bytes(stamps, start, end)
    assert abs(delivered / expected - 1) <= 0.05, (delivered, expected)
    assert {s.path for s in rep.subflows if s.bytes_acked > 0} == {"lte", "wifi"}


def test_offloads_are_off_on_every_emulated_interface(tmp_path):
    seen = {}

    def check(topo):
        for p in topo.paths:
            seen[(topo.emulator, p.emu_client_if)] = offloads.enabled(topo.emulator, p.emu_client_if)
            seen[(topo.emulator, p.emu_router_if)] = offloads.enabled(topo.emulator, p.emu_router_if)
            seen[(topo.client, p.client_if)] = offloads.enabled(topo.client, p.client_if)
            seen[(topo.router, p.router_if)] = offloads.enabled(topo.router, p.router_if)

    path = write_scenario(tmp_path, """
        name = "offloads"
        [[path]]
        name = "a"
        rate = "10mbit"
        delay = "1ms"
        [[path]]
        name = "b"
        rate = "10mbit"
        [workload]
        size = "256KiB"
        [run]
        link_backend = "wire"
    """)
    run_scenario(load_scenario(path), RunOptions(repeat=1, setup=check))
    assert len(seen) == 8
    for where, features in seen.items():
        assert features and not any(features.values()), (where, features)
    assert not leftovers()


BASE = 'name="x"\n[[path]]\nname="a"\nrate="10mbit"\n{path}[workload]\nduration="3s"\n[run]\nlink_backend="wire"\n{events}'
BAD = {
    "missing trace": (BASE.format(path='trace_up="no-such-trace.up"\n', events=""), "does not exist"),
    "malformed trace": (BASE.format(path='trace_up="{bad}"\n', events=""), "not a whole number of milliseconds"),
    "event after the end": (BASE.format(path="", events='[[event]]\nat="5s"\npath="a"\naction="down"\n'), "after the run ends"),
    "event on unknown path": (BASE.format(path="", events='[[event]]\nat="1s"\npath="zz"\naction="down"\n'), "path 'zz', which does not exist"),
}


@light
@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_values_give_one_line_and_build_nothing(tmp_path, case):
    body, words = BAD[case]
    bad_trace = tmp_path / "bad.up"
    bad_trace.write_text("0\n5\nfive\n")
    before = set(leftovers())
    run_cli = cli if case == min(BAD) else cli_in_process  # one case as a user runs it, the rest in this process (same exit code and line)
    proc = run_cli("run", str(write_scenario(tmp_path, body.replace("{bad}", str(bad_trace)))), "--link-backend", "wire")
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert set(leftovers()) <= before


@light
def test_every_scenario_property_reaches_the_forwarder_model():
    """Every path property and `set` event of the format arrives, with its value, in the forwarder's model.

    (WireLink.unsupported refuses nothing, so asserting it returns None would test nothing.) The
    configuration and event commands the backend builds are fed to the forwarder's own Direction.configure.
    """
    from mptcplab.links.forwarder import Direction
    from mptcplab.links.wire import WireLink, direction_config

    scenario = parse_scenario({
        "name": "all",
        "path": [{"name": "a", "rate": "5mbit", "delay": "20ms", "jitter": "2ms", "jitter_distribution": "pareto",
                  "reorder": True, "loss": {"model": "gilbert-elliott", "p": "1%", "r": "30%"}, "queue": "64KiB",
                  "up": {"rate": "1mbit"}}],
        "workload": {"size": "1MiB"},
        "event": [{"at": "1s", "path": "a", "action": "set", "rate": "2mbit", "delay": "5ms", "loss": "2%"},
                  {"at": "2s", "path": "a", "action": "set", "jitter": "3ms", "queue": "10p"}],
    })
    path = scenario.path("a")
    model = {}
    for name in ("up", "down"):
        cfg = direction_config(path.link(name), name, "rx0", "tx0", 0.0)
        assert cfg["jitter_distribution"] == "pareto"
        model[name] = Direction.__new__(Direction)  # the model only: no sockets, no namespace
        model[name].configure(cfg)
    assert model["up"].rate_bps == 1e6 and model["down"].rate_bps == 5e6  # the up override, the path's rate
    for d in model.values():
        assert d.delay == pytest.approx(0.020) and d.jitter == pytest.approx(0.002) and d.reorder is True
        assert d.loss == 0.0 and d.ge[:2] == pytest.approx((0.01, 0.30))
        assert d.limit == 64 * 1024
    link = WireLink.__new__(WireLink)
    link.scenario, link.current = scenario, {}
    sent = []
    link._send = lambda p, direction, command: sent.append((p, direction, command))  # what the forwarders would get
    link.apply(scenario.events[0])
    assert [(p, direction) for p, direction, _ in sent] == [("a", "up"), ("a", "down")]
    for _, direction, command in sent:
        model[direction].configure(command)
        assert model[direction].rate_bps == 2e6 and model[direction].delay == pytest.approx(0.005)
        assert model[direction].loss == pytest.approx(0.02) and model[direction].ge is None
    sent.clear()
    link.apply(scenario.events[1])  # jitter (with the path's distribution and reordering) and the queue, the rate kept
    for _, direction, command in sent:
        model[direction].configure(command)
        assert model[direction].jitter == pytest.approx(0.003) and model[direction].reorder is True
        assert model[direction].limit == 10 * 1514 and model[direction].rate_bps == 2e6

# -- frame-level accuracy: what the emulator itself counted, on frames this test sent ---------------
@contextmanager
def _wire_lab(path: dict) -> Iterator[tuple[Topology, WireLink]]:
    """One wire path, built and attached as a run does; removed on the way out."""
    scenario = parse_scenario({"name": "acc", "path": [{"name": "a", **path}], "workload": {"size": "1MiB"}})
    with Lab() as lab:
        topo = build(lab, scenario, emulator=True)
        link = WireLink(lab, topo, scenario)
        link.start()
        yield topo, link


class _UdpBlast:
    """UDP frames from the client over path a at a paced rate (bit/s of Ethernet frames), until stopped."""

    def __init__(self, topo: Topology, frame_bytes: int, rate_bps: float) -> None:
        p = topo.paths[0]
        with netns.inside(topo.client):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind((p.client_addr, 0))
        self.dest = (topo.server_addr, 9)
        self.payload = bytes(frame_bytes - 14 - 20 - 8)  # Ethernet + IPv4 + UDP headers
        self.interval = frame_bytes * 8 / rate_bps
        self.stop = threading.Event()
        self.sent = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        t = time.monotonic()
        while not self.stop.is_set():
            now = time.monotonic()
            while t <= now:  # catch up in a burst after a late wakeup: the average rate is what counts
                self.sock.sendto(self.payload, self.dest)
                self.sent += 1
                t += self.interval
            time.sleep(min(0.001, max(0.0, t - time.monotonic())))

    def __enter__(self) -> "_UdpBlast":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()


@pytest.mark.parametrize("mbit", [10, 100])
def test_frame_rate_is_within_two_percent_of_the_asked_rate(mbit):
    """Offered 1.3x the rate, the path sends exactly its rate: Ethernet bytes out over the time they took."""
    # a 200 ms queue fills in 0.67 s at 1.3x, and rides out the sender's own stalls (it shares two cores)
    with _wire_lab({"rate": f"{mbit}mbit", "delay": "5ms", "queue": "200ms"}) as (topo, link):
        with _UdpBlast(topo, 1514, 1.3 * mbit * 1e6):
            time.sleep(1.0)  # the queue is backlogged
            link.stats(reset=True)
            time.sleep(2.0)
            up = link.stats()["paths"]["a"]["up"]
    frames, seconds = up["frames_out"], up["last_out"] - up["first_out"]
    # n frames leave over the serialization of n - 1 of them (the first one's started before the window)
    achieved = (up["bytes_out"] - up["bytes_out"] / frames) * 8 / seconds
    assert abs(achieved / (mbit * 1e6) - 1) <= 0.02, (achieved, up)
    assert up["drops"]["queue"] > 0, "the offered load did not keep the queue backlogged"


@pytest.mark.parametrize("loss", [0.01, 0.05])
def test_random_loss_is_within_four_standard_errors(loss):
    """Frames the model saw vs frames it dropped for loss: a binomial count, judged by its own standard error."""
    with _wire_lab({"rate": "100mbit", "loss": f"{loss * 100:g}%", "queue": "2000p"}) as (topo, link):
        link.stats(reset=True)
        with _UdpBlast(topo, 256, 40e6):  # about 20 000 frames/s, under the rate: only loss drops
            time.sleep(2.0)
        time.sleep(0.1)
        up = link.stats()["paths"]["a"]["up"]
    n, k = up["frames_in"], up["drops"]["loss"]
    se = math.sqrt(loss * (1 - loss) / n)
    assert n >= 20_000, up
    assert abs(k / n - loss) <= 4 * se, (k, n, k / n, loss, se)
    assert up["drops"]["queue"] == 0 and up["drops"]["burst_loss"] == 0, up["drops"]


def test_a_packet_count_queue_drops_and_bounds_the_delay(tmp_path):
    """queue = 8 packets: a TCP flow overflows it (queue drops), and queueing adds at most 8 frames' time to the RTT."""
    result, rep = _run(tmp_path, """
        name = "small-queue"
        [[path]]
        name = "a"
        rate = "10mbit"
        delay = "10ms"
        queue = "8p"
        [workload]
        duration = "3s"
        [run]
        link_backend = "wire"
    """)
    up = result.environment["link"]["paths"]["a"]["up"]
    assert up["limit_bytes"] == 8 * 1514, up
    drops = result.environment["link_stats"][0]["paths"]["a"]["up"]["drops"]
    assert drops["queue"] > 0, drops
    (sf,) = rep.subflows
    # 2 x 10 ms, plus at most 8 queued frames and the one being sent at 10 mbit (10.9 ms), plus the ACK's frame
    bound_ms = 20 + 9 * 1514 * 8 / 10e6 * 1e3 + 66 * 8 / 10e6 * 1e3
    assert sf.min_rtt_ms >= 20 - 0.5, sf
    assert sf.rtt_median_ms <= bound_ms + 3, (sf.rtt_median_ms, bound_ms)

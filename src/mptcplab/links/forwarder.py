"""The wire backend's forwarder: a userspace link emulator for one path.

Run as a script (``python forwarder.py CONFIG_JSON``) in its own process, so
it imports nothing from mptcplab (fast start, no pydantic) and can run at
real-time priority without the lab's threads. It enters the emulator
namespace through an inherited fd, opens one AF_PACKET socket per direction
with a TPACKET_V2 receive ring, and forwards every frame to the other
interface after the link model has decided when (or whether) it leaves:

    arrival (kernel timestamp) -> loss -> tail-drop queue -> serialization
    at the rate (or a trace's delivery opportunities) -> delay + jitter -> send

Why this shape (see shared/notes/wire-emulator-measurements.md, measured here):
- A ring batches receives and carries each frame's kernel arrival time;
  scheduling from that time makes the ring's hand-over lag harmless.
  TPACKET_V2 rather than V3: V3 hands a block over only when it is full or its
  timer (one 4 ms tick here) expires; V2 wakes the reader per frame.
- The queue limit counts only bytes waiting for serialization, computed in
  O(1) from the time the link stays busy: frames waiting out their delay never
  count against it (netem's does, and caps throughput below the BDP).
- Without reordering, departures are a FIFO (in-order: jitter never lets a
  frame overtake); a heap only when ``reorder`` is asked for.
- Frames are copied into a preallocated arena of 2 KiB slots: nothing is
  allocated per frame but Python's small objects.
- SCHED_FIFO, GC off and 1 ns timer slack: the measured p99 killers.

Control: JSON lines on stdin (set / down / up / stats / stop), answers and
statistics as JSON lines on stdout. EOF on stdin, SIGTERM or the parent's
death end it.
"""
from __future__ import annotations

import array
import bisect
import ctypes
import gc
import heapq
import json
import math
import mmap
import os
import random
import select
import signal
import socket
import sys
import time
from collections import deque

SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_QDISC_BYPASS = 20
PACKET_IGNORE_OUTGOING = 23
TPACKET_V2 = 1
ETH_P_ALL = 0x0003
TP_STATUS_USER = 1
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
PR_SET_TIMERSLACK = 29

RING_FRAME = 2048          # one slot holds a 1514-byte frame plus the tpacket2 header
RING_BLOCK = 1 << 16       # 32 frames per kernel block
RING_FRAMES = 4096         # absorbs ~80 ms of 500 mbit between two drains
RING_HORIZON_S = 0.02      # read every ring at least this often (~1700 frames at 1 gbit)
WATCH_BELOW_S = 0.001      # an idle direction with less delay than this is watched, not polled
ARENA_SLOT = 2048
ETH_HLEN = 14
TRACE_MTU = 1500           # Mahimahi: one delivery opportunity = 1500 bytes (IP)
LATE_BINS = 100_000        # lateness histogram, 1 us bins, last bin = overflow
DROP_CAUSES = ("loss", "burst_loss", "queue", "down", "arena", "send", "ring")

mono = time.monotonic
_libc = ctypes.CDLL(None, use_errno=True)


# -- the link model of one direction ----------------------------------------
class Direction:
    """One direction of the path: receive ring in, model, send out."""

    def __init__(self, cfg: dict, rx: socket.socket, tx: socket.socket, arena_slots: int) -> None:
        self.name = cfg["name"]
        self.rx = rx
        self.tx = tx
        self.ring_map = mmap.mmap(rx.fileno(), RING_FRAME * RING_FRAMES, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.ring = memoryview(self.ring_map)
        self.ring32 = self.ring.cast("I")
        self.ring16 = self.ring.cast("H")
        self.head = 0
        self.arena = memoryview(mmap.mmap(-1, ARENA_SLOT * arena_slots))
        self.free = list(range(arena_slots - 1, -1, -1))
        self.length = array.array("i", bytes(4 * arena_slots))
        self.depart = array.array("d", bytes(8 * arena_slots))
        self.fifo: deque[int] = deque()
        self.heap: list[tuple[float, int, int]] = []
        self.seq = 0
        self.down = False
        self.busy_until = 0.0
        self.last_depart = 0.0
        self.stats = {"frames_in": 0, "bytes_in": 0, "frames_out": 0, "bytes_out": 0,
                      "first_out": 0.0, "last_out": 0.0, "first_in": 0.0}
        self.drops = dict.fromkeys(DROP_CAUSES, 0)
        self.late = array.array("I", bytes(4 * LATE_BINS))
        self.late_max = 0.0
        self.late_sum = 0.0
        self.early = 0
        self.ge_bad = False
        self.trace: tuple[int, ...] = ()
        self.configure(cfg)

    # configuration (also what `set` events change)
    def configure(self, cfg: dict) -> None:
        if cfg.get("rate_bps"):  # a fixed rate (an event may replace a trace by one)
            self.rate_bps = float(cfg["rate_bps"])
            self.s_per_byte = 8.0 / self.rate_bps
            self.bytes_per_s = self.rate_bps / 8.0
            self.trace = ()
        if cfg.get("trace"):
            self.trace = tuple(int(x) for x in open(cfg["trace"]).read().split())
            self.trace_period = self.trace[-1]
            self.trace_k = 0
            self.trace_left = 0
            self.trace_epoch = cfg["trace_epoch"]
        if "limit_bytes" in cfg:
            self.limit = int(cfg["limit_bytes"])
        if "delay_s" in cfg:
            self.delay = float(cfg["delay_s"])
        if "jitter_s" in cfg:
            self.jitter = float(cfg["jitter_s"])
            self.reorder = bool(cfg.get("reorder", False))
            self.jitter_sample = _jitter_sampler(cfg.get("jitter_distribution", "normal"), self.jitter)
        if "loss" in cfg:
            loss = cfg["loss"]
            if isinstance(loss, dict):
                self.loss = 0.0
                self.ge = (float(loss["p"]), float(loss["r"]), float(loss.get("loss_bad", 1.0)), float(loss.get("loss_good", 0.0)))
            else:
                self.loss = float(loss)
                self.ge = None

    # receive: drain the ring, run the model on every frame
    def receive(self, off_ns: int) -> None:
        ring32, ring16, i, nframes = self.ring32, self.ring16, self.head, RING_FRAMES
        while True:
            base = i * RING_FRAME
            w = base >> 2
            if not ring32[w] & TP_STATUS_USER:
                break
            length = ring32[w + 2]
            start = base + ring16[(base + 12) >> 1]
            arrival = (ring32[w + 4] * 1_000_000_000 + ring32[w + 5] - off_ns) * 1e-9
            self.arrive(arrival, start, length)
            ring32[w] = 0  # TP_STATUS_KERNEL: the slot is the kernel's again
            i += 1
            if i == nframes:
                i = 0
        self.head = i

    def arrive(self, t: float, start: int, length: int) -> None:
        st = self.stats
        st["frames_in"] += 1
        st["bytes_in"] += length
        if not st["first_in"]:
            st["first_in"] = t
        if self.down:
            self.drops["down"] += 1
            return
        if self.ge is not None:
            p, r, loss_bad, loss_good = self.ge
            if self.ge_bad:
                lost = random.random() < loss_bad
                if random.random() < r:
                    self.ge_bad = False
            else:
                lost = random.random() < loss_good
                if random.random() < p:
                    self.ge_bad = True
            if lost:
                self.drops["burst_loss"] += 1
                return
        elif self.loss and random.random() < self.loss:
            self.drops["loss"] += 1
            return
        finish = self.serialize_trace(t, length) if self.trace else self.serialize(t, length)
        if finish < 0:
            self.drops["queue"] += 1
            return
        depart = finish + self.delay
        if self.jitter:
            depart += self.jitter_sample()
            if depart < finish:
                depart = finish
        if not self.free:
            self.drops["arena"] += 1
            return
        slot = self.free.pop()
        off = slot * ARENA_SLOT
        self.arena[off:off + length] = self.ring[start:start + length]
        self.length[slot] = length
        if self.jitter and self.reorder:
            self.seq += 1
            heapq.heappush(self.heap, (depart, self.seq, slot))
        else:
            if depart < self.last_depart:
                depart = self.last_depart
            self.last_depart = depart
            self.depart[slot] = depart
            self.fifo.append(slot)

    def serialize(self, t: float, length: int) -> float:
        """Finish time of serializing `length` bytes, or -1 when the queue is full."""
        busy = self.busy_until
        if busy > t:
            if (busy - t) * self.bytes_per_s + length > self.limit:
                return -1.0
            t = busy
        finish = t + length * self.s_per_byte
        self.busy_until = finish
        return finish

    def opportunity(self, k: int) -> float:
        n = len(self.trace)
        return self.trace_epoch + ((k // n) * self.trace_period + self.trace[k % n]) * 1e-3

    def first_opportunity(self, t: float) -> int:
        ms = (t - self.trace_epoch) * 1e3
        cycle = int(ms // self.trace_period)
        return cycle * len(self.trace) + bisect.bisect_left(self.trace, ms - cycle * self.trace_period)

    def serialize_trace(self, t: float, length: int) -> float:
        """Mahimahi's link: a frame leaves at the opportunity that carries its last byte."""
        now_k = self.first_opportunity(t)
        if self.busy_until > t:
            backlog = (self.trace_k - now_k) * TRACE_MTU + (TRACE_MTU - self.trace_left)
            if backlog + length > self.limit:
                return -1.0
        elif now_k > self.trace_k or (now_k == self.trace_k and self.trace_left == 0):
            self.trace_k, self.trace_left = now_k, TRACE_MTU  # unused opportunities are lost
        need = length - ETH_HLEN
        k, left = self.trace_k, self.trace_left
        while need > left:
            need -= left
            k += 1
            left = TRACE_MTU
        left -= need
        finish = self.opportunity(k)
        if left == 0:
            k, left = k + 1, TRACE_MTU
        self.trace_k, self.trace_left = k, left
        self.busy_until = finish
        return finish

    # transmit: every frame whose time has come, in order
    def transmit(self, now: float) -> float:
        """Send what is due; return when the next frame is due (inf: none waiting)."""
        fifo, heap = self.fifo, self.heap
        while True:
            if fifo:
                slot = fifo[0]
                due = self.depart[slot]
                if due > now:
                    return due if not heap else min(due, heap[0][0])
                fifo.popleft()
            elif heap:
                due = heap[0][0]
                if due > now:
                    return due
                slot = heapq.heappop(heap)[2]
            else:
                return math.inf
            length = self.length[slot]
            off = slot * ARENA_SLOT
            try:
                self.tx.send(self.arena[off:off + length])
            except OSError:
                self.drops["send"] += 1
                self.free.append(slot)
                continue
            self.free.append(slot)
            now = mono()
            late = now - due
            if late < 0:
                self.early += 1
                late = 0.0
            self.late_sum += late
            if late > self.late_max:
                self.late_max = late
            us = int(late * 1e6)
            self.late[us if us < LATE_BINS else LATE_BINS - 1] += 1
            st = self.stats
            st["frames_out"] += 1
            st["bytes_out"] += length
            if not st["first_out"]:
                st["first_out"] = now
            st["last_out"] = now

    def drain_by(self, now: float) -> float:
        """The latest time this direction's ring may wait unread (`now`: watch it).

        A frame that arrives now cannot leave before the last queued frame
        (in order) or before the delay (without jitter), and the model works
        from its kernel arrival stamp, not from when it is read: until then
        the ring needs no wakeup per frame. This is what keeps wakeups near
        one per departure batch at high rates.
        """
        if self.jitter and self.reorder:
            return now
        if self.fifo:
            return min(self.last_depart, now + RING_HORIZON_S)
        floor = 0.0 if self.jitter else min(self.delay, RING_HORIZON_S)
        return now + floor if floor >= WATCH_BELOW_S else now

    def set_down(self, down: bool, now: float) -> None:
        """A silent failure: the link drops everything, including what is in flight."""
        self.down = down
        if down:
            while self.fifo:
                self.free.append(self.fifo.popleft())
                self.drops["down"] += 1
            while self.heap:
                self.free.append(heapq.heappop(self.heap)[2])
                self.drops["down"] += 1
        self.busy_until = self.last_depart = now

    def report(self) -> dict:
        """The counters so far. They add up: frames_in = frames_out + every drop + in_flight (frames the ring
        lost count as in and dropped; in_flight: accepted, waiting out their serialization and delay)."""
        try:
            raw = self.rx.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
            lost = int.from_bytes(raw[4:8], sys.byteorder)  # tp_drops (reset on read)
            self.drops["ring"] += lost
            self.stats["frames_in"] += lost  # they reached the interface: in, and dropped
        except OSError:
            pass
        out = dict(self.stats)
        out["drops"] = dict(self.drops)
        n = out["frames_out"]
        out["lateness_us"] = {
            "p50": _percentile(self.late, n, 0.50), "p99": _percentile(self.late, n, 0.99),
            "max": round(self.late_max * 1e6, 1), "mean": round(self.late_sum / n * 1e6, 1) if n else 0.0,
        }
        out["queued"] = out["in_flight"] = len(self.fifo) + len(self.heap)
        if self.trace:
            out["trace_epoch"] = self.trace_epoch
        return out

    def reset_stats(self) -> None:
        for k in self.stats:
            self.stats[k] = 0 if isinstance(self.stats[k], int) else 0.0
        # what is in flight now leaves (or is dropped) after the reset: count it in, so the counters still add up
        in_flight = list(self.fifo) + [slot for _, _, slot in self.heap]
        self.stats["frames_in"] = len(in_flight)
        self.stats["bytes_in"] = sum(self.length[slot] for slot in in_flight)
        self.drops = dict.fromkeys(DROP_CAUSES, 0)
        self.late = array.array("I", bytes(4 * LATE_BINS))
        self.late_max = self.late_sum = 0.0
        self.early = 0


def _percentile(hist: array.array, n: int, q: float) -> float:
    """The q-quantile (us) of a 1-us histogram of n values."""
    if not n:
        return 0.0
    want, seen = q * n, 0
    for us, count in enumerate(hist):
        seen += count
        if seen >= want and count:
            return float(us)
    return float(len(hist) - 1)


def _jitter_sampler(distribution: str, jitter: float):
    """Zero-mean jitter of scale `jitter` (netem's distributions)."""
    gauss, pareto = random.gauss, random.paretovariate
    if distribution == "uniform":
        return lambda: random.uniform(-jitter, jitter)
    if distribution == "pareto":  # alpha 3: mean 1.5, sd 0.866, standardized
        return lambda: (pareto(3.0) - 1.5) / 0.866 * jitter
    if distribution == "paretonormal":  # netem: a quarter normal, three quarters pareto
        return lambda: 0.25 * gauss(0.0, jitter) + 0.75 * (pareto(3.0) - 1.5) / 0.866 * jitter
    return lambda: gauss(0.0, jitter)


# -- sockets and process setup ------------------------------------------------
def rx_socket(ifname: str) -> socket.socket:
    """A receive-only packet socket on `ifname` with a TPACKET_V2 ring."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    s.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
    req = array.array("I", [RING_BLOCK, RING_FRAME * RING_FRAMES // RING_BLOCK, RING_FRAME, RING_FRAMES])
    s.setsockopt(SOL_PACKET, PACKET_RX_RING, req.tobytes())
    s.bind((ifname, ETH_P_ALL))
    s.setblocking(False)
    return s


def tx_socket(ifname: str) -> socket.socket:
    """A send-only packet socket (protocol 0 receives nothing), past the qdisc."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    s.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
    s.bind((ifname, 0))
    return s


def setup_process(netns_fd: int, priority: int, parent_pid: int | None = None) -> bool:
    """Die with the parent, enter the namespace, ask for real-time; True if granted.

    PR_SET_PDEATHSIG fires when the thread that started us ends, so a lab
    killed with SIGKILL (no cleanup of its own can run) takes its forwarders
    along. A parent that died before the prctl is caught by comparing the
    parent's pid: we would already have been re-parented.
    """
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)
    if _libc.setns(netns_fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")
    os.close(netns_fd)
    _libc.prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the lab's; it stops us
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if priority > 0:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
            return True
        except OSError:
            return False
    return False


def write(obj: dict) -> None:
    os.write(1, (json.dumps(obj) + "\n").encode())


WAKEUPS = [0]  # loop iterations: CPU per frame is mostly per wakeup at low rates


def report(dirs: list[Direction], t0: float, realtime: bool) -> dict:
    usage = os.times()
    return {"directions": {d.name: d.report() for d in dirs}, "elapsed_s": mono() - t0,
            "cpu_s": usage.user + usage.system, "user_s": usage.user, "wakeups": WAKEUPS[0], "realtime": realtime}


def control(line: bytes, dirs: list[Direction], t0: float, realtime: bool) -> bool:
    """Apply one command; False when asked to stop."""
    cmd = json.loads(line)
    op = cmd.get("op")
    chosen = [d for d in dirs if cmd.get("dir", "both") in ("both", d.name)]
    if op == "set":
        for d in chosen:
            d.configure(cmd)
    elif op in ("down", "up"):
        for d in chosen:
            d.set_down(op == "down", mono())
    elif op == "stats":
        out = report(dirs, t0, realtime)
        if cmd.get("reset"):
            for d in dirs:
                d.reset_stats()
        write(out)
        return True
    elif op == "stop":
        write(report(dirs, t0, realtime))
        return False
    write({"ok": op})
    return True


def run(dirs: list[Direction], t0: float, realtime: bool) -> None:
    ctl = sys.stdin.buffer.raw.fileno()
    pending = b""
    off_ns = time.time_ns() - time.monotonic_ns()
    next_sync = mono() + 1.0
    while True:
        WAKEUPS[0] += 1
        for d in dirs:
            d.receive(off_ns)
        now = mono()
        due = math.inf
        for d in dirs:
            t = d.transmit(now)
            if t < due:
                due = t
        now = mono()
        if now >= next_sync:  # realtime may be slewed: keep the kernel stamps mapped to monotonic
            off_ns = time.time_ns() - time.monotonic_ns()
            next_sync = now + 1.0
        fds = [ctl]
        for d in dirs:
            t = d.drain_by(now)
            if t <= now:
                fds.append(d.rx.fileno())
            elif t < due:
                due = t
        timeout = None if due == math.inf else max(0.0, due - now)
        ready = select.select(fds, [], [], timeout)[0]
        if ctl in ready:
            chunk = os.read(ctl, 65536)
            if not chunk:
                return
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                if line.strip() and not control(line, dirs, t0, realtime):
                    return


def main() -> None:
    cfg = json.loads(sys.argv[1])
    realtime = setup_process(cfg["netns_fd"], cfg.get("priority", 0), cfg.get("parent_pid"))
    dirs = [Direction(d, rx_socket(d["rx_if"]), tx_socket(d["tx_if"]), cfg.get("arena_slots", 32768))
            for d in cfg["directions"]]
    gc.collect()
    gc.freeze()
    gc.disable()
    t0 = mono()
    write({"ready": True, "pid": os.getpid(), "realtime": realtime})
    run(dirs, t0, realtime)


if __name__ == "__main__":
    main()

"""Inside the guest: run one job with the ordinary runner and report as JSON lines.

The guest's init runs this with the host's own Python over the read-only
host filesystem (virtiofs in QEMU, hostfs in UML); the protocol is executors/job.py's; in QEMU
stdin and stdout are the guest's second serial port. Jobs
come in one JSON line each; out go ``ready`` once (booted), then per job
``progress`` lines (repetition started / sampled / finished) and exactly
one ``result`` or ``error``.
Under emulation the guest CPU may be the bottleneck, so every repetition
carries how busy the guest's CPUs were while it ran.
"""
from __future__ import annotations

import os
import sys
import time


def uptime() -> float:
    """The guest's clock: seconds since its kernel booted."""
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


def process_started() -> float:
    """When this interpreter was started (guest clock), from /proc/self/stat."""
    with open("/proc/self/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")


#: When this module began to run (guest clock): after the interpreter's start and `mptcplab`'s own import.
STARTED_S = uptime()


def lazy_package(name: str) -> None:
    """Register package `name` without running its ``__init__``: its submodules import alone.

    pyroute2's ``__init__`` imports every pyroute2 family (NDB, IPDB, conntrack,
    nftables, wireguard, ... 160 modules) to re-export their classes; the lab
    imports only the submodules it uses, so under TCG the rest is seconds of
    waiting. The first access to a name that is not a submodule runs the real
    ``__init__``, so code that does ``from pyroute2 import X`` still works.
    """
    import importlib
    import importlib.util

    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None or name in sys.modules:
        return
    module = importlib.util.module_from_spec(spec)

    def __getattr__(attr: str) -> object:
        try:
            return importlib.import_module(f"{name}.{attr}")
        except ModuleNotFoundError as e:
            if e.name != f"{name}.{attr}":
                raise
        del module.__getattr__  # type: ignore[attr-defined]
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        return getattr(module, attr)

    module.__getattr__ = __getattr__  # type: ignore[attr-defined]
    sys.modules[name] = module


if __name__ == "__main__":  # the guest's own process: nothing else there imports pyroute2
    lazy_package("pyroute2")

import codecs  # noqa: E402
import json  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import traceback  # noqa: E402
from typing import Any  # noqa: E402

from ..errors import LabError  # noqa: E402
from ..protocols import Progress, RunSink  # noqa: E402
from ..result import Repetition, RunResult  # noqa: E402
from ..runner import run_scenario  # noqa: E402
from ..scenario import Scenario  # noqa: E402
from . import job as jobs  # noqa: E402

#: Above these busy fractions a repetition counts as CPU bound. Empirical (bench/guest_overhead.py,
#: TCG, 2 vCPUs): runs that reached the host's goodput had their busiest vCPU at 0.29-0.67, runs that fell short
#: of it at 0.70-0.95, while all vCPUs together stayed below 0.75 (one flow's softirq work does not spread).
#: A heuristic with a thin margin: the raw fractions are recorded with every result.
SATURATED_ALL, SATURATED_ONE = 0.9, 0.7
SAMPLE_EVERY_S = 0.5


_EMIT = threading.Lock()


def emit(doc: dict[str, Any]) -> None:
    line = json.dumps(doc, separators=(",", ":")) + "\n"
    with _EMIT:  # a command job's two output streams emit from their own threads
        sys.stdout.write(line)
        sys.stdout.flush()


def cpu_times() -> list[tuple[int, int]]:
    """(busy, total) jiffies for all CPUs together, then each CPU, from /proc/stat."""
    out = []
    with open("/proc/stat") as f:
        for line in f:
            if not line.startswith("cpu"):
                break
            vals = [int(x) for x in line.split()[1:]]
            idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
            out.append((sum(vals) - idle, sum(vals)))
    return out


def busy_fraction(before: list[tuple[int, int]], after: list[tuple[int, int]]) -> tuple[float, float]:
    """(all CPUs, busiest CPU) busy fraction between two cpu_times()."""
    fracs = [(b1 - b0) / (t1 - t0) if t1 > t0 else 0.0 for (b0, t0), (b1, t1) in zip(before, after)]
    return round(fracs[0], 3), round(max(fracs[1:] or [0.0]), 3)


class GuestProgress(Progress):
    """Forwards the runner's progress to the host and measures CPU load per repetition."""

    def __init__(self) -> None:
        self.cpu: list[dict[str, float]] = []
        self._start: list[tuple[int, int]] = []
        self._last_sample = 0.0
        #: (repetition index, started_at) -> its CPU load, taken when the runner said it finished (started_at:
        #: a matrix runs many one-repetition jobs in one guest, each with an index 0)
        self.finished_cpu: dict[tuple[int, float], dict[str, float]] = {}

    def repetition_started(self, index: int, total: int) -> None:
        self._start = cpu_times()
        emit({"type": "progress", "event": "started", "index": index, "total": total})

    def sample(self, index: int, done: float, total: float) -> None:
        now = time.monotonic()
        if now - self._last_sample >= SAMPLE_EVERY_S:
            self._last_sample = now
            emit({"type": "progress", "event": "sample", "index": index, "done": done, "total": total})

    def status(self, text: str) -> None:
        emit({"type": "progress", "event": "status", "text": text})

    def repetition_finished(self, rep: Repetition) -> None:
        # the sink may hear of it later (a best-path round tells it after the baselines): its CPU load is now's
        total, busiest = busy_fraction(self._start, cpu_times())
        self.finished_cpu[(rep.index, rep.started_at)] = {"busy": total, "busiest_cpu": busiest}
        emit({"type": "progress", "event": "finished", "repetition": rep.model_dump(mode="json", exclude={"timeseries"})})


class GuestSink(RunSink):
    """Streams the run to the host as it happens: the host stores each repetition the moment it ends,
    so a guest that stalls, panics or is killed loses no finished repetition."""

    def __init__(self, progress: GuestProgress, timeseries: bool) -> None:
        self.progress = progress
        self.timeseries = timeseries

    def run_started(self, result: RunResult, scenario: Scenario) -> None:
        emit({"type": "run_started", "result": result.to_json(timeseries=False)})

    def repetition_finished(self, result: RunResult, rep: Repetition) -> None:
        cpu = self.progress.finished_cpu.pop((rep.index, rep.started_at), None)
        if cpu is None:
            total, busiest = busy_fraction(self.progress._start, cpu_times())
            cpu = {"busy": total, "busiest_cpu": busiest}
        total, busiest = cpu["busy"], cpu["busiest_cpu"]
        self.progress.cpu.append(cpu)
        emit({"type": "repetition", "repetition": rep.model_dump(mode="json", exclude=None if self.timeseries else {"timeseries"}),
              "cpu": cpu, "saturated": total >= SATURATED_ALL or busiest >= SATURATED_ONE,
              "environment": {k: v for k, v in result.environment.items() if k != "guest_cpu"}})


def run_job(job: dict[str, Any]) -> None:
    scenario = jobs.decode_scenario(job)
    progress = GuestProgress()
    options = jobs.decode_options(job, progress, [GuestSink(progress, job.get("timeseries", True))])
    result = run_scenario(scenario, options)
    busy = [c["busy"] for c in progress.cpu]
    result.environment["guest_cpu"] = {
        "per_repetition": progress.cpu,
        "saturated": any(c["busy"] >= SATURATED_ALL or c["busiest_cpu"] >= SATURATED_ONE for c in progress.cpu),
        "max_busy": max(busy, default=0.0),
        "cpus": os.cpu_count(),
    }
    doc = result.to_json(timeseries=False)
    doc["repetitions"] = []  # the host has every repetition already, streamed as each ended
    emit({"type": "result", "result": doc})


#: how a command job runs its command: in a mount namespace of its own whose /tmp is a fresh tmpfs (the host's
#: files stay read-only; its network namespace is the guest's root one), from there, with NO_COLOR=1
EXEC_WRAPPER = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                'mount -t tmpfs -o mode=1777 mptcplab-scratch /tmp && cd /tmp && exec "$@"', "mptcplab-exec"]


def _pump(stream: Any, name: str) -> None:
    """Forward one output stream of a command as `output` lines, as it writes (UTF-8, bad bytes replaced)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    fd = stream.fileno()
    while True:
        chunk = os.read(fd, 16384)
        text = decoder.decode(chunk, final=not chunk)
        if text:
            emit({"type": "output", "stream": name, "data": text})
        if not chunk:
            return


def run_exec(job: dict[str, Any]) -> None:
    """A command job: run `argv` (EXEC_WRAPPER), stream its output, kill its process group at `timeout_s`, answer
    with its exit code (a shell's 127 when it is not found, -N when signal N killed it)."""
    env = {**os.environ, "NO_COLOR": "1", "TMPDIR": "/tmp"}
    t0 = time.monotonic()
    proc = subprocess.Popen([*EXEC_WRAPPER, *job["argv"]], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, start_new_session=True)
    pumps = [threading.Thread(target=_pump, args=(s, n), daemon=True) for s, n in ((proc.stdout, "stdout"), (proc.stderr, "stderr"))]
    for t in pumps:
        t.start()
    timed_out = False
    try:
        proc.wait(timeout=float(job.get("timeout_s") or 0) or None)
    except subprocess.TimeoutExpired:
        timed_out = True
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    for t in pumps:
        t.join(timeout=5)
    emit({"type": "exec_result", "exit_code": proc.returncode, "timed_out": timed_out,
          "wall_s": round(time.monotonic() - t0, 3)})


def answer(msg: dict[str, Any]) -> None:
    """Run one job and answer with its `result` (`exec_result` for a command job), or an `error` (never an
    exception: the host must hear back)."""
    try:
        if msg.get("type") == "exec":
            run_exec(msg)
        else:
            run_job(msg)
    except LabError as e:
        emit({"type": "error", "kind": type(e).__name__, "exit_code": e.exit_code, "message": e.message, "hint": e.hint})
    except Exception as e:  # the traceback goes to the console
        traceback.print_exc()
        emit({"type": "error", "kind": "RunError", "exit_code": 1, "message": f"{type(e).__name__}: {e}", "hint": None})


def main(argv: list[str] | None = None) -> int:
    """Answer jobs from stdin until the host says quit or goes away (QEMU), or the one job in a file (`--job FILE`:
    a UML guest, whose job is written before it boots; waiting for input would race through simulated time)."""
    argv = sys.argv[1:] if argv is None else argv
    emit({"type": "ready", "kernel": os.uname().release, "uptime_s": uptime(),
          "python_started_s": process_started(), "guest_main_started_s": STARTED_S})
    if argv[:1] == ["--job"]:
        with open(argv[1]) as f:
            answer(json.load(f))
        return 0
    for line in sys.stdin:
        try:
            msg = json.loads(line)
        except ValueError:
            continue  # line noise on the serial port
        if msg.get("type") == "quit":
            break
        answer(msg)
    return 0


if __name__ == "__main__":
    sys.exit(main())

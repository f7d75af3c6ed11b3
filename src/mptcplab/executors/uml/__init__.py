"""Runs in a User-Mode Linux kernel with time travel: simulated time, the same numbers on any machine under any load.

A UML kernel (`mptcplab kernel build SOURCE --flavour uml`) is an ordinary
host process, `linux`, that boots with the host's root filesystem read-only
over hostfs. With `time-travel=inf-cpu` its clock advances only while it is
idle, so computation takes no simulated time: what the lab measures depends on
the kernel's code and the emulated paths, not on the CPU or on what else the
machine does (../shared/notes/uml-time-travel.md has the measurements).

Each repetition is one boot (0.3 s plus Python's start), so repetition i of a
run draws seed `base + i` whatever ran before it, and two kernels see the same
random draws repetition by repetition (common random numbers: compare pairs
them). Deterministic mode, the default under time travel, holds fixed what
the kernel mixes into its randomness or its memory layout: the kernel command
line (identical in every boot: a job's variable parts are files under the
fixed path JOB_DIR, bind-mounted per instance in a private mount namespace),
address randomisation (`setarch -R`), and the host randomness UML reads
(`getrandom()` from a seeded stream: seeded_random.c, preloaded on `linux`).

The job is written before the boot (a guest that waited for input in
inf-cpu mode would race through simulated time); the guest's lines go to a
file on the writable hostfs directory and are followed from the host as they
are written, so a killed UML still leaves its finished repetitions. The
watchdog is the host's wall clock (the lab's own timeouts inside are
simulated time). Each instance is pinned to a core of its own (a lock per
core), so several kernels run at once, one per core.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from collections.abc import Iterator
from typing import Any

from ...errors import EnvironmentProblem, RunError, UsageError
from ...protocols import Progress
from ...result import RunResult, run_status
from ...scenario import Scenario
from ..base import KernelExecutor, continuing, register

#: the fixed path, the same in every boot and on every machine, where an instance finds its job (a bind mount)
JOB_DIR = "/var/lib/mptcplab/uml-job"
#: simulated boot time (ns since the epoch): 2026-01-01, fixed, so the guest's clock is the same in every boot
TIME_TRAVEL_START_NS = 1767225600000000000
TIME_MODES = ("travel", "real")
TIME_ENV = "MPTCPLAB_TIME"
MEMORY_MB = 1024
BOOT_SLACK_S = 60.0  # wall seconds beyond the run's own timeouts before the watchdog kills an instance
#: under time travel every repetition's traffic starts at the next whole second of simulated time (runner.align_start)
ALIGN_START_S = 1.0
POLL_S = 0.02
CPU_LOCKS = Path("/run/mptcplab")
#: `auto` under UML: the userspace forwarders agree with the host and QEMU guests (simult-opposed-delay 11.31-11.35 s
#: against 11.25-11.30 on the host); netem with infinitely fast CPUs keeps packets in exact step (min RTT exactly
#: the configured one) and MPTCP's retransmission timing changes (11.55 s): allowed, with NETEM_NOTE
DEFAULT_LINK_BACKEND = "wire"
NETEM_NOTE = ("netem under UML time travel has no processing delay: packets stay in exact step and MPTCP's retransmission "
              "timing differs from real machines (simult-opposed-delay 11.55 s vs 11.3 s with wire); "
              "prefer --link-backend wire for numbers comparable with the host")

INIT = """#!/bin/sh
# mptcplab UML init (PID 1): the host's root is mounted read-only; the job directory is writable.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /run; mount -t tmpfs tmpfs /tmp; mkdir -p /dev/shm; mount -t tmpfs tmpfs /dev/shm
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
J={job_dir}
mount -t hostfs -o $J hostfs $J
echo 1 > /proc/sys/net/mptcp/enabled
ip link set lo up 2>/dev/null
cd /tmp
env -i PATH=$PATH HOME=/tmp TMPDIR=/tmp PYTHONHASHSEED=0 PYTHONDONTWRITEBYTECODE=1 PYTHONPATH={pythonpath} \\
    PYDANTIC_DISABLE_PLUGINS=__all__ {python} -m mptcplab.executors.guest_main --job $J/job.json > $J/out.jsonl 2> $J/stderr.log
echo "job exited with status $?" > $J/exit
{busybox} poweroff -f
"""


@dataclass(frozen=True)
class UmlConfig:
    """How UML kernels boot: `time_mode` travel (simulated time, deterministic) or real; guest memory in MiB."""

    time_mode: str = "travel"
    memory_mb: int = MEMORY_MB

    @classmethod
    def from_environment(cls) -> "UmlConfig":
        """`MPTCPLAB_TIME` (set by `--time`): travel (default) or real. Raises UsageError for another value."""
        mode = os.environ.get(TIME_ENV, "travel").strip().lower() or "travel"
        if mode not in TIME_MODES:
            raise UsageError(f"{TIME_ENV}={mode!r} is not a time mode", f"use one of {', '.join(TIME_MODES)}")
        return cls(time_mode=mode)


def kernel_command_line(cfg: UmlConfig) -> list[str]:
    """The UML kernel's arguments: the same for every boot of a config (the kernel mixes them into its randomness)."""
    args = [f"mem={cfg.memory_mb}M", "root=/dev/root", "rootfstype=hostfs", "rootflags=/", "ro", f"init={JOB_DIR}/init",
            "con0=null,fd:1", "con=null", "ssl=null", f"uml_dir={JOB_DIR}/uml", "umid=mptcplab", "quiet"]
    if cfg.time_mode == "travel":
        args += ["time-travel=inf-cpu", f"time-travel-start={TIME_TRAVEL_START_NS}"]
    return args


def work_root() -> str:
    """Where instances' job directories go (`mptcplab-uml-<run id>-*`): /dev/shm (memory: UML's RAM file is there too)."""
    return "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()


def _die_with_parent() -> None:
    import ctypes
    import signal

    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: killed with the lab, however the lab dies
    os.setpgrp()  # its own group: the lab stops UML and UML's own processes together


def seeded_random_library() -> Path:
    """The preload library that seeds UML's randomness (seeded_random.c), compiled once per content into the cache.

    Raises EnvironmentProblem (exit 3) when gcc is missing."""
    from ...kernels.catalog import cache_root

    source = Path(__file__).with_name("seeded_random.c")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    target = cache_root() / "uml" / f"seeded_random-{digest}.so"
    if target.exists():
        return target
    if shutil.which("gcc") is None:
        raise EnvironmentProblem("gcc is not installed: deterministic UML runs need a small preload library built here",
                                 "apt-get install gcc (or make install)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    proc = subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(tmp), str(source), "-ldl"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise EnvironmentProblem(f"cannot compile {source.name}: {(proc.stderr.strip().splitlines() or ['gcc failed'])[-1]}")
    tmp.replace(target)
    return target


class _Core:
    """One host core held for one UML instance (a lock file per core; the lock goes with the process)."""

    def __init__(self) -> None:
        CPU_LOCKS.mkdir(parents=True, exist_ok=True)
        cores = sorted(os.sched_getaffinity(0))
        self.fd, self.cpu = -1, cores[0]
        for _ in range(2):
            for cpu in cores:
                fd = os.open(CPU_LOCKS / f"uml-cpu{cpu}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                self.fd, self.cpu = fd, cpu
                return
            time.sleep(0.05)
        # every core is taken by other instances: share one (results do not depend on load, only wall time does)

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@register
class UmlExecutor(KernelExecutor):
    """A UML kernel: one boot per repetition, pinned to a free core, in simulated time by default."""

    kind = "uml"
    flavours = ("uml",)
    auto_link_backend = DEFAULT_LINK_BACKEND

    def __init__(self, kernel: Any, cfg: UmlConfig | None = None) -> None:
        super().__init__(kernel)
        self.cfg = cfg if isinstance(cfg, UmlConfig) else UmlConfig.from_environment()
        self.load_independent = self.cfg.time_mode == "travel"  # in real time a busy core slows the guest's clock too
        self._dead = False
        self.boot_s: list[float] = []
        self._live: set[subprocess.Popen] = set()  # instances booted now (matrix cells may run in threads)

    def __enter__(self) -> "UmlExecutor":
        for tool in ("unshare", "setarch", "taskset"):
            if shutil.which(tool) is None:
                raise EnvironmentProblem(f"{tool} is not installed: UML kernels boot through it", "apt-get install util-linux")
        if not Path(self.image).exists():
            raise EnvironmentProblem(f"kernel {self.release}: its UML binary {self.image} is missing",
                                     f"build it again: mptcplab kernel build {getattr(self._kernel, 'version', '')} --flavour uml")
        if self.cfg.time_mode == "travel":
            seeded_random_library()
        from ...lab import Lab

        self._lab = Lab().__enter__()  # a run id with a lock (cleanup knows a live run), SIGTERM as an exception
        return self

    def close(self) -> None:
        for proc in list(self._live):
            _stop(proc)
        lab, self._lab = getattr(self, "_lab", None), None
        if lab is not None:
            lab.close()

    @property
    def image(self) -> str:
        return str(getattr(self._kernel, "image", ""))

    @property
    def alive(self) -> bool:
        return not self._dead

    def describe(self) -> dict[str, Any]:
        """Kind, release, accelerator and time mode, and the `guest` block a run records (its conditions: a UML run
        never joins a host or QEMU series), without what only a run knows (seed, boot and wall times)."""
        meta = _build_meta(self._kernel)
        return {**super().describe(), "accelerator": "none (UML)", "time_mode": self.cfg.time_mode,
                "host_kernel_release": os.uname().release, "guest": {
                    "accelerator": "none (UML)", "executor": self.kind, "time_mode": self.cfg.time_mode,
                    "cpus": 1, "hz": 100, "memory_mb": self.cfg.memory_mb,
                    "guest_cpu": "not applicable: under time travel computation takes no simulated time",
                    "kernel_version": getattr(self._kernel, "version", ""), "kernel_origin": getattr(self._kernel, "origin", ""),
                    "kernel_source": meta.get("source") or getattr(self._kernel, "origin", ""),
                    "config_hash": meta.get("config_hash", ""), "cmdline": " ".join(kernel_command_line(self.cfg))}}

    def run(self, scenario: Scenario, options: Any = None, into: RunResult | None = None, finish: bool = True,
            timeseries: bool = True) -> RunResult:
        """Every repetition of `scenario` (options.repeat, else the scenario's; warm-ups first), one boot each.

        See executors/base.py for `into` and `finish`. A boot that fails or
        passes its watchdog is a failed repetition-less error: what arrived
        before stays in the result and the sinks (RunError raised at the end)."""
        from ...runner import RunOptions, repetition_seed
        from .. import job as jobs

        options = options or RunOptions()
        if options.link_backend is None and scenario.run.link_backend == "auto":
            options = replace(options, link_backend=DEFAULT_LINK_BACKEND)
        backend = options.link_backend or scenario.run.link_backend
        if backend == "netem" and options.progress is not None:
            options.progress.status(f"note: {NETEM_NOTE}")
        repeat = options.repeat or scenario.run.repeat
        total = options.warmup + repeat
        base = repetition_seed(scenario, 0)  # the run's seed base: `[run] seed`, None for seed = "random"
        follower = jobs.JobFollower(scenario=scenario, sinks=list(options.sinks), into=into, progress=options.progress, finish=finish)
        t0 = time.monotonic()
        failure: BaseException | None = None
        # a matrix cell (`into`) gets one repetition per call: its seed follows the cell's MPTCP repetitions so far;
        # a fleet job runs repetition options.first_repetition of its cell alone: its seed is the same as in a run
        first = continuing(options, into).first_repetition
        # in simulated time the repetitions' boots do not disturb each other: as many boot at once as there are cores,
        # ahead of the one whose lines are followed (in order: the sinks hear of repetition i before i+1)
        ahead = len(os.sched_getaffinity(0)) if self.load_independent else 1
        booted: dict[int, tuple[contextlib.ExitStack, subprocess.Popen, Path, float]] = {}

        def boot(i: int) -> None:
            seed = None if base is None else base + first + i
            job = jobs.encode(scenario, replace(options, repeat=1, warmup=0, first_repetition=first + i,
                                                align_start_s=self._align_start_s()), timeseries, 1, self.kind)
            stack = contextlib.ExitStack()
            what = f"repetition {i + 1} of {total}" if into is None else f"repetition {first + i + 1} of its cell"
            proc, work = stack.enter_context(self._instance(job, seed, what, options.progress))
            booted[i] = (stack, proc, work, time.monotonic())

        try:
            for i in range(total):
                for j in range(i, min(total, i + ahead)):
                    if j not in booted:
                        boot(j)
                stack, proc, work, started = booted.pop(i)
                with stack:
                    self._follow_boot(proc, work, scenario, follower, i, total, started, options.progress)
                if follower.result is not None and options.fail_fast and any(not r.completed for r in follower.result.repetitions):
                    break
        except BaseException as e:
            failure = e
        finally:
            for stack, *_ in booted.values():  # booted ahead and not followed (fail-fast, an error, Ctrl-C): killed
                stack.close()
        result = follower.result
        if result is None:  # not even a first repetition started
            if failure is not None:
                raise failure
            raise RunError(f"kernel {self.release}: the UML guest never started the run")
        if failure is None:
            result.status = run_status(result.repetitions)  # the one rule: a best-path baseline's timeout fails no run
        else:
            result.status = "interrupted" if isinstance(failure, KeyboardInterrupt) else "failed"
            if not isinstance(failure, KeyboardInterrupt):
                result.errors.append(getattr(failure, "message", str(failure)))
        result.ended_at = round(time.time(), 6)
        self._stamp(result, t0, base)
        follower.end(result)
        if failure is not None:
            raise failure
        return result

    def _align_start_s(self) -> float:
        """Seconds of the grid each repetition's traffic starts on (runner.RunOptions.align_start_s): ALIGN_START_S
        under time travel, where the lab's own setup costs a few microseconds of simulated time that differ by
        install; 0 in real time, where a grid would only add waiting."""
        return ALIGN_START_S if self.cfg.time_mode == "travel" else 0.0

    def _stamp(self, result: RunResult, t0: float, base: int | None) -> None:
        result.environment.pop("guest_cpu", None)
        result.environment.update({
            "executor": self.kind, "time_mode": self.cfg.time_mode, "seed": base, "host_kernel_release": os.uname().release,
        })
        if result.environment.get("link_backend") == "netem":
            notes = result.environment.setdefault("notes", [])
            if NETEM_NOTE not in notes:
                notes.append(NETEM_NOTE)
        result.environment["guest"] = {
            **self.describe()["guest"],
            "seed_base": base,
            "seeds": ("host randomness" if base is None else "base + repetition index" if self.cfg.time_mode == "travel"
                      else "base + repetition index for netem only: in real time the kernel's randomness is the host's"),
            "traffic_start": (f"on a {self._align_start_s():g} s grid of simulated time, at a phase drawn from the repetition's "
                              "seed (runner.start_phase)" if self._align_start_s() else "as soon as the lab is ready"),
            "boot_s": round(sorted(self.boot_s)[len(self.boot_s) // 2], 3) if self.boot_s else None,
            "run_wall_s": round(time.monotonic() - t0, 3),
        }

    @contextlib.contextmanager
    def _instance(self, job: dict[str, Any], seed: int | None, what: str,
                  progress: Progress | None) -> Iterator[tuple[subprocess.Popen, Path]]:
        """One UML boot running `job` (executors/job.py) with randomness seeded by `seed` (None: the host's), pinned
        to a free core: yields (its process, its job directory, whose out.jsonl the guest writes). However the
        block is left, the instance and everything it started are killed and the job directory is removed."""
        run_id = self._lab.run_id if getattr(self, "_lab", None) is not None else "nolab"
        work = Path(tempfile.mkdtemp(prefix=f"mptcplab-uml-{run_id}-", dir=work_root()))
        core = _Core()
        proc: subprocess.Popen | None = None
        try:
            self._write_job(work, job)
            env = {k: v for k, v in os.environ.items() if not k.startswith(("LD_", "MPTCPLAB_UML"))}
            env["TMPDIR"] = str(work / "tmp")
            seeded = self.cfg.time_mode == "travel" and seed is not None  # in real time the kernel draws the host's
            if seeded:
                env["LD_PRELOAD"] = str(seeded_random_library())
                env["MPTCPLAB_UML_SEED"] = str(seed)
            script = f'mount --bind "$1" {JOB_DIR} && shift && exec "$@"'
            cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", str(work),
                   "setarch", "x86_64", "-R", "taskset", "-c", str(core.cpu), self.image, *kernel_command_line(self.cfg)]
            Path(JOB_DIR).mkdir(parents=True, exist_ok=True)
            if progress is not None:
                progress.status(f"kernel {self.release}: booting UML ({'time travel' if self.cfg.time_mode == 'travel' else 'real time'}, "
                                f"core {core.cpu}{f', seed {seed}' if seeded else ''}) for {what} ...")
            with open(work / "console.log", "wb") as console:
                proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT, env=env,
                                        preexec_fn=_die_with_parent)
            self._live.add(proc)
            yield proc, work
        finally:
            if proc is not None:
                _stop(proc)
                self._live.discard(proc)
            core.release()
            shutil.rmtree(work, ignore_errors=True)

    def _follow_boot(self, proc: subprocess.Popen, work: Path, scenario: Scenario, follower: Any, index: int, total: int,
                     started: float, progress: Progress | None) -> None:
        """Follow the boot of repetition `index` of `total` (started at host monotonic time `started`); its lines go
        to `follower`, renumbered as repetition `index`. Its wall-clock watchdog counts from `started`."""
        per_round = 1 + (len(scenario.paths) if scenario.run.baseline != "none" else 0)
        watchdog = per_round * scenario.run.timeout + BOOT_SLACK_S
        offset = len(follower.result.repetitions) if follower.result is not None and follower.own else 0
        try:
            self._follow(proc, work, follower, offset, index, started + watchdog, progress, started, total)
        except _Late:
            raise RunError(f"kernel {self.release}: repetition {index + 1} did not finish within {watchdog:.0f} s of "
                           f"wall time (UML killed); last console lines: {_tail(work / 'console.log', work / 'stderr.log')}") from None

    def _write_job(self, work: Path, job: dict[str, Any]) -> None:
        import mptcplab

        from ...executors.qemu.initramfs import BUSYBOX

        pythonpath = str(Path(mptcplab.__file__).resolve().parents[1])
        (work / "tmp").mkdir()
        (work / "uml").mkdir()
        (work / "job.json").write_text(json.dumps(job))
        init = work / "init"
        init.write_text(INIT.format(job_dir=JOB_DIR, pythonpath=pythonpath, python=sys.executable, busybox=BUSYBOX))
        init.chmod(0o755)
        (work / "out.jsonl").touch()

    def _messages(self, proc: subprocess.Popen, work: Path, deadline: float, started: float | None = None) -> Iterator[dict[str, Any]]:
        """The guest's JSON lines (executors/job.py) as it writes them to out.jsonl, in order; the first `ready`
        records the boot time (from `started`, the host monotonic time UML was started; default now). Raises the
        guest's `error` line as its LabError, RunError when UML stops before the caller stops reading, _Late past
        `deadline` (host monotonic clock, wall time)."""
        from .. import job as jobs

        pos, buf, t0 = 0, b"", time.monotonic() if started is None else started
        booted = False
        with open(work / "out.jsonl", "rb") as f:
            while True:
                ended = proc.poll() is not None  # before the read: what it wrote before it ended is read below
                f.seek(pos)
                chunk = f.read()
                pos += len(chunk)
                buf += chunk
                while b"\n" in buf:
                    raw, buf = buf.split(b"\n", 1)
                    msg = jobs.parse(raw)
                    if msg is None:
                        continue
                    if msg.get("type") == "ready" and not booted:
                        booted = True
                        self.boot_s.append(time.monotonic() - t0)
                    if msg.get("type") == "error":
                        raise jobs.guest_error(msg, f"in the UML guest (kernel {self.release})")
                    yield msg
                if ended and not chunk:
                    raise RunError(f"kernel {self.release}: the UML guest stopped without a result; last console lines: "
                                   f"{_tail(work / 'console.log', work / 'stderr.log')}")
                if time.monotonic() > deadline:
                    raise _Late()
                if not chunk:
                    time.sleep(POLL_S)

    def _follow(self, proc: subprocess.Popen, work: Path, follower: Any, offset: int, index: int, deadline: float,
                progress: Progress | None, started: float | None = None, total: int = 1) -> None:
        """Follow a repetition's lines until its result: progress to `progress` (as repetition `index` of `total`:
        each boot runs one), the repetition to `follower`."""
        from .. import job as jobs

        for msg in self._messages(proc, work, deadline, started):
            kind = msg.get("type")
            if kind == "run_started":
                follower.started(msg)
            elif kind == "progress":
                if progress is not None:
                    if msg.get("event") in ("started", "sample"):
                        msg = {**msg, "index": index, **({"total": total} if msg.get("event") == "started" else {})}
                    if msg.get("event") != "finished":
                        jobs.forward_progress(progress, msg)
            elif kind == "repetition":
                rep = msg["repetition"]
                rep["index"] = rep.get("index", 0) + offset if follower.own else rep.get("index", 0)
                if progress is not None:
                    jobs.forward_progress(progress, {"event": "finished", "repetition": rep})
                follower.repetition(msg)
            elif kind == "result":
                result = follower.result
                final = RunResult.model_validate(msg["result"])
                if result is not None:
                    result.environment.update({k: v for k, v in final.environment.items() if k != "guest_cpu"})
                    result.errors.extend(e for e in final.errors if e not in result.errors)
                return

    def ready(self, progress: Progress | None = None) -> None:
        """Nothing to wait for (each job boots its own instance); `progress` hears of the boots of `exec`."""
        self._progress = progress

    def exec(self, argv: list[str], timeout_s: float, on_output: Any = None, seed: int | str | None = 1) -> tuple[int, bool]:
        """Run command line `argv` in one UML boot (a command job written before the boot, as every UML job):
        (its exit code, whether `timeout_s` killed it).

        `timeout_s` is the host's wall clock (a watchdog that kills the instance): under time travel the guest's
        clock is simulated (a `sleep 600` there ends in well under a second of wall time, a busy loop stops it),
        so the guest sets no limit of its own. `seed` seeds the kernel's randomness under time travel (an
        integer: the same command gives the same run; "random" or None: the host's). Output reaches
        `on_output(stream, text)` as the guest writes it. Raises RunError when UML stops without an answer."""
        from .. import job as jobs

        seed_value = None if seed in (None, "random") else int(seed)
        job = jobs.encode_exec(argv, 0)  # 0: no limit in simulated time
        with self._instance(job, seed_value, f"command {argv[0]}", getattr(self, "_progress", None)) as (proc, work):
            try:
                for msg in self._messages(proc, work, time.monotonic() + timeout_s):
                    if msg.get("type") == "output" and on_output is not None:
                        on_output(str(msg.get("stream")), str(msg.get("data", "")))
                    elif msg.get("type") == "exec_result":
                        return int(msg.get("exit_code", 1)), bool(msg.get("timed_out"))
            except _Late:
                return -9, True  # UML and the command with it killed by the watchdog (SIGKILL)
        raise RunError(f"kernel {self.release}: the UML guest stopped without answering the command")


class _Late(Exception):
    """The wall-clock watchdog of one UML instance passed."""


def _build_meta(kernel: Any) -> dict[str, Any]:
    """What `kernel build` recorded of a kernel (its build.json: source, commit, config hash, patches), {} if none."""
    try:
        return json.loads(Path(kernel.build).read_text())
    except (AttributeError, TypeError, OSError, ValueError):
        return {}


def _stop(proc: subprocess.Popen) -> None:
    """Kill a UML instance and everything it started (its own process group), and reap it."""
    import signal

    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _tail(*paths: Path, n: int = 4) -> str:
    lines: list[str] = []
    for path in paths:
        try:
            lines += [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            pass
    return " | ".join(lines[-n:]) or "(no console output)"

"""Boot a kernel in QEMU and run a scenario inside it: same runner, same result.

The guest needs no disk: the host's root filesystem is shared read-only over
virtiofs (the Debian cloud kernels have no 9p), the lab's initramfs mounts
it and runs the host's own Python on the job (see guest_main.py). The
kernel console goes to a file kept for error messages; results come back
as JSON lines on the guest's second serial port (QEMU's stdout). KVM is
used when it really works, TCG otherwise.

Nothing outlives a run: qemu and virtiofsd are children of a Lab (stopped
on success, error, Ctrl-C and SIGTERM, and killed by the kernel if this
process dies), and the temporary directory is removed with them.
"""
from __future__ import annotations

import ctypes
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from collections.abc import Callable
from typing import Any

from ... import errors
from ...errors import EnvironmentProblem, RunError
from ...kernels.catalog import Kernel
from ...lab import Lab
from ...protocols import Progress
from ...result import Repetition, RunResult
from ...runner import RunOptions
from ...scenario import Scenario
from .. import job as jobs
from ..base import continuing
from . import accel as accelerators, initramfs

QEMU = accelerators.QEMU
VIRTIOFSD = ("/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd")
BOOT_TIMEOUT_S = 120.0  # TCG, a cold page cache and a loaded machine: generous
PER_REPETITION_SLACK_S = 30.0
CONSOLE_TAIL = 4
QEMU_SATURATED = 0.9  # QEMU busy on (nearly) all its vCPU threads: the emulator is the bottleneck


@dataclass
class GuestConfig:
    memory_mb: int = 1024
    cpus: int = 2
    accelerator: str | None = None  # None: what executors.qemu.accel.choose() says (MPTCPLAB_ACCEL, --accel)
    extra_cmdline: list[str] = field(default_factory=list)
    boot_timeout_s: float = BOOT_TIMEOUT_S


def virtiofsd_path() -> str | None:
    return next((p for p in VIRTIOFSD if os.access(p, os.X_OK)), None)


def check_tools() -> None:
    if shutil.which(QEMU) is None:
        raise EnvironmentProblem(f"{QEMU} is not installed: guests need QEMU", "apt-get install qemu-system-x86 (or make install)")
    if virtiofsd_path() is None:
        raise EnvironmentProblem("virtiofsd is not installed: the guest reads the lab from the host over virtiofs",
                                 "apt-get install qemu-system-x86 (bookworm) or virtiofsd")


def _die_with_parent() -> None:
    """In the child: SIGKILL when the lab's process dies, however it dies."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    os.setpgrp()  # a terminal's Ctrl-C reaches the lab, which stops the guest itself


def qemu_command(kernel: Kernel, initrd: Path, tmp: Path, cmdline: str, cfg: GuestConfig, accel: str) -> list[str]:
    mem = f"{cfg.memory_mb}M"
    return [
        QEMU, "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-accel", "kvm" if accel == "kvm" else "tcg,thread=multi", "-cpu", "host" if accel == "kvm" else "max",
        "-smp", str(cfg.cpus), "-m", mem,
        "-object", f"memory-backend-memfd,id=mem,size={mem},share=on", "-numa", "node,memdev=mem",
        "-kernel", kernel.image, "-initrd", str(initrd), "-append", cmdline,
        "-serial", f"file:{tmp / 'console.log'}",
        "-chardev", "stdio,id=out,signal=off", "-serial", "chardev:out",
        "-chardev", f"socket,id=fs,path={tmp / 'fs.sock'}",
        "-device", "vhost-user-fs-pci,queue-size=1024,chardev=fs,tag=hostroot",
        *(accelerators.test_kvm_args() if accel == "kvm" else []),
    ]


def _guest_cmdline(cfg: GuestConfig) -> str:
    import mptcplab

    pythonpath = str(Path(mptcplab.__file__).resolve().parents[1])
    python = sys.executable
    for value in (pythonpath, python):
        if any(c.isspace() for c in value):
            raise EnvironmentProblem(f"{value!r} contains whitespace, which the guest's kernel command line cannot carry",
                                     "install the lab in a path without spaces")
    return " ".join(["console=ttyS0", "panic=-1", "loglevel=4", f"mptcplab.python={python}",
                     f"mptcplab.pythonpath={pythonpath}", *cfg.extra_cmdline])


def console_tail(path: Path, n: int = CONSOLE_TAIL) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no console output)"
    panic = next((line for line in lines if "Kernel panic" in line), None)
    tail = lines[-n:]
    if panic and panic not in tail:
        tail = [panic, *tail]
    return " | ".join(tail) or "(no console output)"


class GuestSession:
    """One booted guest that runs jobs on request: `with GuestSession(k) as g: g.run(...)`.

    Booting (kernel plus the lab's imports over virtiofs under TCG) costs far
    more than a short repetition, so a guest stays up for all the jobs of a
    `run --kernel` or a matrix; every repetition still gets fresh namespaces
    inside it, exactly as on the host. Jobs go in as JSON lines on the
    guest's second serial port, answers come back on the same port.
    """

    def __init__(self, kernel: Kernel, cfg: GuestConfig | None = None) -> None:
        self.kernel = kernel
        self.cfg = cfg or GuestConfig()
        if self.cfg.accelerator is None:
            self.choice = accelerators.choose()  # before anything is built: `--accel kvm` that cannot work is refused here
        else:
            self.choice = accelerators.Choice(self.cfg.accelerator, "set by the caller", prove=self.cfg.accelerator == "kvm")
        self.accel = self.choice.accel
        self.fallback = self.choice.fallback  # why KVM was not used although /dev/kvm is there ('' otherwise)
        self.kvm_try_s: float | None = None  # launch to giving up on KVM, when a KVM boot failed and TCG took over
        self.boot_s: float | None = None  # launch to the lab answering, host clock
        self.uptime_at_ready: float | None = None  # the same, guest clock
        self.ready_info: dict[str, Any] = {}  # the guest's ready line: its clock at Python's start, at ready, ...
        self._lab: Lab | None = None
        self._buf = b""
        self._cmd: list[str] = []
        self.qemu_cpu: list[float] = []  # per repetition of the current job
        self._dead = False  # killed, crashed or hung: no more jobs
        self._job = jobs.JobFollower()

    # -- lifecycle -------------------------------------------------------
    def __enter__(self) -> "GuestSession":
        check_tools()
        self._initrd = initramfs.build(self.kernel)
        initramfs.compile_lab()
        self._lab = Lab().__enter__()
        try:
            self._tmp = Path(tempfile.mkdtemp(prefix=f"mptcplab-guest-{self._lab.run_id}-"))
            self._procs: list[subprocess.Popen] = []
            self._lab.on_close(self._teardown)
            self._launch()
        except BaseException:
            self._lab.close()
            raise
        return self

    def _launch(self) -> None:
        """Start virtiofsd and QEMU under `self.accel`, without waiting for the boot."""
        self._procs.append(self._start_virtiofsd())
        self._cmd = qemu_command(self.kernel, self._initrd, self._tmp, _guest_cmdline(self.cfg), self.cfg, self.accel)
        self._t0 = time.monotonic()
        self.qemu = subprocess.Popen(self._cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=open(self._tmp / "qemu.err", "wb"), preexec_fn=_die_with_parent)
        self._procs.append(self.qemu)

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._lab is not None:
            self._lab.close()
            self._lab = None

    def _teardown(self) -> None:
        qemu = getattr(self, "qemu", None)
        if qemu is not None and qemu.poll() is None and qemu.stdin:
            try:  # ask the guest to power off; it takes a moment, then it is killed anyway
                qemu.stdin.write(b'{"type":"quit"}\n')
                qemu.stdin.close()
                qemu.wait(timeout=3)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self._stop_processes()
        try:  # the last boot's whole console stays with the kernel, for whoever debugs it
            shutil.copyfile(self._tmp / "console.log", self.kernel.dir / "last-console.log")
        except OSError:
            pass
        shutil.rmtree(self._tmp, ignore_errors=True)

    def _stop_processes(self) -> None:
        for proc in reversed(self._procs):
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream:
                    try:
                        stream.close()
                    except OSError:
                        pass
        self._procs.clear()

    def _prove_kvm(self) -> None:
        """Watch a KVM boot until the kernel prints its first line (accel.kvm_failure's signs); on a failure, boot the
        same kernel under TCG, say so once on stderr and remember it for this machine, or, when KVM was asked for,
        raise EnvironmentProblem (exit 3)."""
        while True:
            console = _read(self._tmp / "console.log")
            why = accelerators.kvm_failure(console, _read(self._tmp / "qemu.err"), self.qemu.poll() is not None,
                                           time.monotonic() - self._t0)
            if why:
                break
            if "Linux version" in console:
                self.choice = replace(self.choice, prove=False)
                return
            time.sleep(0.05)
        self.kvm_try_s = round(time.monotonic() - self._t0, 3)
        self._stop_processes()
        if self.cfg.accelerator == "kvm" or accelerators.requested() == "kvm":
            self._dead = True
            raise EnvironmentProblem(f"KVM cannot run kernel {self.kernel.release} here ({why})", "use --accel tcg or --accel auto")
        if not _FELL_BACK:
            print(f"note: KVM cannot run this kernel here ({why}): using TCG", file=sys.stderr, flush=True)
            _FELL_BACK.append(why)
        accelerators.remember_failure(why, self.kernel.release)
        self.accel, self.fallback = "tcg", f"KVM failed: {why}"
        self.choice = accelerators.Choice("tcg", f"KVM failed on this kernel ({why})", fallback=self.fallback)
        for name in ("console.log", "qemu.err"):
            (self._tmp / name).unlink(missing_ok=True)
        self._launch()

    def _start_virtiofsd(self) -> subprocess.Popen:
        sock = self._tmp / "fs.sock"
        proc = subprocess.Popen([virtiofsd_path() or "virtiofsd", f"--socket-path={sock}", "-o", "source=/", "-o", "cache=always",
                                 "-o", "sandbox=chroot", "-o", "log_level=err"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(self._tmp / "virtiofsd.err", "wb"),
                                preexec_fn=_die_with_parent)
        end = time.monotonic() + 10
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > end:
                err = (self._tmp / "virtiofsd.err").read_text(errors="replace").strip().splitlines()
                proc.kill()
                proc.wait()
                raise EnvironmentProblem(f"virtiofsd did not start: {err[-1] if err else 'no socket after 10 s'}")
            time.sleep(0.02)
        return proc

    # -- jobs ------------------------------------------------------------
    def wait_ready(self, progress: Progress | None = None) -> float:
        """Block until the guest's lab answers; the boot time in seconds. Says what it waits for on `progress`."""
        if self.boot_s is None:
            if self.choice.prove:
                self._prove_kvm()
            if progress is not None:
                note = "" if self.accel == "kvm" else f" under TCG (emulated CPUs, slower than the host: {self.choice.why})"
                progress.status(f"booting kernel {self.kernel.release} in QEMU{note} ...")
            self._until({"ready"}, self._t0 + self.cfg.boot_timeout_s, None,
                        f"did not boot within {self.cfg.boot_timeout_s:g} s (guest killed)")
            if progress is not None:
                progress.status(f"kernel {self.kernel.release}: guest ready in {self.boot_s:.1f} s")
        assert self.boot_s is not None
        return self.boot_s

    @property
    def alive(self) -> bool:
        return getattr(self, "qemu", None) is not None and self.qemu.poll() is None and not self._dead

    def run(self, scenario: Scenario, options: RunOptions | None = None, timeseries: bool = True,
            into: RunResult | None = None, finish: bool = True) -> RunResult:
        """`run_scenario` inside the guest; the result carries the guest's kernel and CPU load.

        Each repetition reaches `options.sinks` (the host's store) the moment it
        ends in the guest, exactly as on the host (executors/job.py). With `into`
        (a matrix cell) the repetitions are appended to that result, renumbered
        after its own, and sinks hear of the run's start and end from the caller;
        otherwise a new result is made and, with `finish`, sinks hear of its end
        however the job ends. Raises RunError when the guest dies, hangs past its
        timeout or reports an error; what arrived before is kept in the result
        and the sinks.
        """
        options = options or RunOptions()
        self.wait_ready(options.progress)
        repeat = options.repeat or scenario.run.repeat
        options = continuing(options, into)  # a matrix cell: the seeds continue after its repetitions so far
        job = jobs.encode(scenario, options, timeseries, repeat, "qemu")
        self._job = jobs.JobFollower(scenario=scenario, sinks=list(options.sinks), into=into, progress=options.progress, finish=finish)
        t0 = time.monotonic()
        self.qemu_cpu = []
        try:
            assert self.qemu.stdin is not None
            try:
                self.qemu.stdin.write(json.dumps(job).encode() + b"\n")
                self.qemu.stdin.flush()
            except OSError:
                raise self._fail("the guest stopped before it took the job") from None
            per_round = 1 + (len(scenario.paths) if scenario.run.baseline != "none" else 0)  # + plain TCP on each path
            timeout = (repeat + job["warmup"]) * per_round * (scenario.run.timeout + PER_REPETITION_SLACK_S)
            doc = self._until({"result"}, t0 + timeout, options.progress, f"did not finish the run within {timeout:.0f} s (guest killed)")
            result = self._job_result()
            final = RunResult.model_validate(doc["result"])
            env = dict(final.environment)
            env["guest_cpu"] = {**env.get("guest_cpu", {}), **result.environment.get("guest_cpu", {})}
            result.environment.update(env)
            result.errors.extend(e for e in final.errors if e not in result.errors)
            result.status, result.ended_at = final.status, final.ended_at
        except BaseException as e:
            result = self._job.result
            if result is not None:
                result.status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
                if not isinstance(e, KeyboardInterrupt):
                    result.errors.append(getattr(e, "message", str(e)))
                    self._dead = self._dead or not (isinstance(e, errors.LabError) and self.qemu.poll() is None)
                self._stamp(result, t0)
                self._job.end(result)
            raise
        self._stamp(result, t0)
        self._job.end(result)
        return result

    def exec(self, argv: list[str], timeout_s: float, on_output: Callable[[str, str], None] | None = None) -> tuple[int, bool]:
        """Run command line `argv` in the guest (a command job, executors/job.py): (its exit code, timed out).

        Its output reaches `on_output(stream, text)` ("stdout"/"stderr") as it is written. At `timeout_s` the
        guest kills it (timed out: True, its exit code the signal's, negative). Raises RunError when the guest
        dies or does not answer within the timeout and a margin (the guest is then killed)."""
        self.wait_ready(None)
        assert self.qemu.stdin is not None
        self._on_output = on_output
        try:
            try:
                self.qemu.stdin.write(json.dumps(jobs.encode_exec(argv, timeout_s)).encode() + b"\n")
                self.qemu.stdin.flush()
            except OSError:
                raise self._fail("the guest stopped before it took the command") from None
            doc = self._until({"exec_result"}, time.monotonic() + timeout_s + PER_REPETITION_SLACK_S, None,
                              f"did not answer within {timeout_s + PER_REPETITION_SLACK_S:.0f} s (guest killed)")
        finally:
            self._on_output = None
        return int(doc.get("exit_code", 1)), bool(doc.get("timed_out"))

    def _stamp(self, result: RunResult, t0: float) -> None:
        """What the host knows about the guest run: accelerator, boot time, QEMU, its own view of the CPU."""
        cpu = result.environment.setdefault("guest_cpu", {})
        cpu["saturated"] = bool(cpu.get("saturated")) or any(q >= QEMU_SATURATED for q in cpu.get("qemu_host_cpu", []))
        result.environment["guest"] = {
            "accelerator": self.accel, "accelerator_why": self.choice.why,
            **({"accelerator_fallback": self.fallback} if self.fallback else {}),
            **({"kvm_try_s": self.kvm_try_s} if self.kvm_try_s is not None else {}),
            "cpus": self.cfg.cpus, "memory_mb": self.cfg.memory_mb, "boot_s": round(self.boot_s or 0, 3),
            "uptime_at_ready_s": self.uptime_at_ready, "run_wall_s": round(time.monotonic() - t0, 3),
            "kernel_version": self.kernel.version, "kernel_origin": self.kernel.origin, "qemu": accelerators.qemu_version(),
            "cmdline": self._cmd[self._cmd.index("-append") + 1],
        }
        result.environment["host_kernel_release"] = os.uname().release

    def _job_result(self) -> RunResult:
        if self._job.result is None:
            raise self._fail("the guest answered without starting the run")
        return self._job.result

    def _repetition(self, msg: dict[str, Any]) -> None:
        """A finished repetition: to the result and the sinks (JobFollower), with the guest's and QEMU's CPU load."""
        job = self._job
        result = self._job_result()
        rep = Repetition.model_validate(msg["repetition"])
        cpu = result.environment.setdefault("guest_cpu", {"per_repetition": [], "qemu_host_cpu": [], "saturated": False, "max_busy": 0.0})
        cpu.setdefault("per_repetition", []).append(msg.get("cpu") or {})
        qemu = self.qemu_cpu[-1] if self.qemu_cpu else None
        if qemu is not None:
            cpu.setdefault("qemu_host_cpu", []).append(qemu)
        saturated = bool(msg.get("saturated")) or (qemu is not None and qemu >= QEMU_SATURATED)
        cpu["saturated"] = bool(cpu.get("saturated")) or saturated
        cpu["max_busy"] = max(cpu.get("max_busy", 0.0), (msg.get("cpu") or {}).get("busy", 0.0))
        if saturated and job.progress is not None:
            job.progress.status(f"kernel {self.kernel.release}: repetition {rep.index + 1} saturated the guest's CPU "
                                f"(all vCPUs {(msg.get('cpu') or {}).get('busy', 0):.2f}, busiest {(msg.get('cpu') or {}).get('busiest_cpu', 0):.2f}, "
                                f"QEMU {qemu if qemu is not None else '?'}): "
                                "its numbers may show the emulator's limit, not the kernel's")
        job.repetition(msg, rep)

    def _account(self, event: object) -> None:
        """QEMU's own CPU use over each repetition, as a fraction of its vCPUs (the host's view of saturation)."""
        try:
            fields = Path(f"/proc/{self.qemu.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return
        now, cpu = time.monotonic(), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        if event == "started":
            self._rep_start = (now, cpu)
        elif event == "finished" and getattr(self, "_rep_start", None):
            t0, c0 = self._rep_start
            self.qemu_cpu.append(round((cpu - c0) / max(now - t0, 1e-6) / self.cfg.cpus, 3))
            self._rep_start = None

    def _fail(self, what: str) -> RunError:
        return RunError(f"kernel {self.kernel.release}: {what}; last console lines: {console_tail(self._tmp / 'console.log')}",
                        f"full console in {self.kernel.dir / 'last-console.log'}")

    def _until(self, kinds: set[str], deadline: float, progress: Progress | None, late: str) -> dict[str, Any]:
        """Follow the guest's JSON lines until one of `kinds`, an error, its exit or the deadline."""
        assert self.qemu.stdout is not None
        fd = self.qemu.stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while True:
                while b"\n" in self._buf:
                    raw, self._buf = self._buf.split(b"\n", 1)
                    msg = jobs.parse(raw)
                    if msg is not None and self._handle(msg, progress) in kinds:
                        return msg
                left = deadline - time.monotonic()
                if left <= 0:
                    self.qemu.kill()
                    self._dead = True
                    raise self._fail(late)
                if not sel.select(timeout=min(left, 1.0)):
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    self._dead = True
                    self.qemu.wait()
                    err = (self._tmp / "qemu.err").read_text(errors="replace").strip().splitlines()
                    if self.qemu.returncode not in (0, None) and err:
                        raise RunError(f"qemu failed for kernel {self.kernel.release}: {err[-1]}")
                    raise self._fail("the guest stopped without a result")
                self._buf += chunk

    def _handle(self, msg: dict[str, Any], progress: Progress | None) -> str:
        kind = str(msg.get("type"))
        if kind == "ready":
            self.boot_s = time.monotonic() - self._t0
            self.uptime_at_ready = msg.get("uptime_s")
            self.ready_info = msg
        elif kind == "run_started":
            self._job.started(msg)
        elif kind == "output":
            if getattr(self, "_on_output", None) is not None:
                self._on_output(str(msg.get("stream")), str(msg.get("data", "")))
        elif kind == "repetition":
            self._account("finished")
            self._repetition(msg)
        elif kind == "progress":
            if msg.get("event") == "started":
                self._account("started")
            if progress is not None:
                jobs.forward_progress(progress, msg)
        elif kind == "error":
            raise jobs.guest_error(msg, f"in the guest (kernel {self.kernel.release})")
        return kind


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


_FELL_BACK: list[str] = []  # a fallback to TCG is said once per process, however many guests fall back

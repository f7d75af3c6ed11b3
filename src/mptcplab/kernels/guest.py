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

import base64
import ctypes
import fcntl
import json
import os
import pickle
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from .. import errors
from ..errors import EnvironmentProblem, RunError
from ..lab import Lab
from ..result import Repetition, RunResult
from ..runner import Progress, RunOptions
from ..scenario import Scenario
from . import initramfs
from .catalog import Kernel

QEMU = "qemu-system-x86_64"
VIRTIOFSD = ("/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd")
BOOT_TIMEOUT_S = 120.0  # TCG, a cold page cache and a loaded machine: generous
PER_REPETITION_SLACK_S = 30.0
CONSOLE_TAIL = 4
KVM_GET_API_VERSION, KVM_CREATE_VM = 0xAE00, 0xAE01


@dataclass
class GuestConfig:
    memory_mb: int = 1024
    cpus: int = 2
    accelerator: str | None = None  # None: kvm when usable, else tcg
    extra_cmdline: list[str] = field(default_factory=list)


@lru_cache(maxsize=1)
def kvm_usable() -> tuple[bool, str]:
    """Whether KVM really runs a guest here; (usable, why).

    /dev/kvm can exist, open and even create VMs while running a vCPU fails
    (as on this lab's build machine, where QEMU dies on an MSR assertion), so
    the last test boots a 64 KiB firmware that only writes to QEMU's
    isa-debug-exit port: exit status 1 means a vCPU really ran.
    """
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return False, f"/dev/kvm: {e.strerror}"
    try:
        if fcntl.ioctl(fd, KVM_GET_API_VERSION) != 12:
            return False, "/dev/kvm: unexpected KVM API version"
        os.close(fcntl.ioctl(fd, KVM_CREATE_VM, 0))
    except OSError as e:
        return False, f"/dev/kvm cannot create a VM ({e.strerror})"
    finally:
        os.close(fd)
    if shutil.which(QEMU) is None:
        return False, f"/dev/kvm works but {QEMU} is missing"
    firmware = bytearray(b"\xf4" * 65536)  # hlt everywhere
    firmware[0xFFF0:0xFFF4] = b"\xb0\x00\xe6\xf4"  # reset vector: mov al, 0; out 0xf4, al
    with tempfile.NamedTemporaryFile(prefix="mptcplab-kvm-", suffix=".bin") as f:
        f.write(firmware)
        f.flush()
        try:
            proc = subprocess.run([QEMU, "-accel", "kvm", "-cpu", "host", "-nodefaults", "-display", "none", "-no-reboot", "-bios", f.name,
                                   "-device", "isa-debug-exit,iobase=0xf4,iosize=1"], capture_output=True, text=True, timeout=20)
        except subprocess.TimeoutExpired:
            return False, "/dev/kvm exists but a KVM guest did not run (timeout)"
    if proc.returncode == 1:
        return True, "/dev/kvm runs guests"
    why = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
    return False, f"/dev/kvm exists but QEMU cannot run a KVM guest ({why[-120:]})"


def accelerator() -> str:
    return "kvm" if kvm_usable()[0] else "tcg"


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
    ]


def _guest_cmdline(job: Path, cfg: GuestConfig) -> str:
    import mptcplab

    pythonpath = str(Path(mptcplab.__file__).resolve().parents[1])
    python = sys.executable
    for value in (str(job), pythonpath, python):
        if any(c.isspace() for c in value):
            raise EnvironmentProblem(f"{value!r} contains whitespace, which the guest's kernel command line cannot carry",
                                     "install the lab in a path without spaces")
    return " ".join(["console=ttyS0", "panic=-1", "quiet", "loglevel=4", f"mptcplab.job={job}",
                     f"mptcplab.python={python}", f"mptcplab.pythonpath={pythonpath}", *cfg.extra_cmdline])


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


@dataclass
class GuestReport:
    """What one guest run gave back, with how long it took to get there."""

    result: RunResult
    boot_s: float
    wall_s: float


class GuestRun:
    """One boot of `kernel` running one job; use run()."""

    def __init__(self, kernel: Kernel, cfg: GuestConfig | None = None) -> None:
        self.kernel = kernel
        self.cfg = cfg or GuestConfig()
        self.accel = self.cfg.accelerator or accelerator()
        self.uptime_at_ready: float | None = None  # the guest's own clock when Python was up

    def run(self, scenario: Scenario, options: RunOptions, timeseries: bool = True) -> GuestReport:
        check_tools()
        initrd = initramfs.build(self.kernel)
        repeat = options.repeat or scenario.run.repeat
        # the validated model itself: the guest runs the same code, and units are already resolved
        job = {"scenario_pickle": base64.b64encode(pickle.dumps(scenario)).decode(), "repeat": repeat, "label": options.label,
               "link_backend": options.link_backend, "tags": options.tags, "timeseries": timeseries}
        deadline_run = repeat * (scenario.run.timeout + PER_REPETITION_SLACK_S)
        with Lab() as lab:
            tmp = Path(tempfile.mkdtemp(prefix=f"mptcplab-guest-{lab.run_id}-"))
            procs: list[subprocess.Popen] = []
            lab.on_close(lambda: self._teardown(procs, tmp))
            (tmp / "job.json").write_text(json.dumps(job))
            procs.append(self._start_virtiofsd(tmp))
            cmd = qemu_command(self.kernel, initrd, tmp, _guest_cmdline(tmp / "job.json", self.cfg), self.cfg, self.accel)
            t0 = time.monotonic()
            qemu = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=open(tmp / "qemu.err", "wb"),
                                    preexec_fn=_die_with_parent)
            procs.append(qemu)
            doc, boot_s = self._read(qemu, tmp, t0, deadline_run, options.progress)
            wall = time.monotonic() - t0
        result = RunResult.model_validate(doc)
        result.environment["guest"] = {
            "accelerator": self.accel, "cpus": self.cfg.cpus, "memory_mb": self.cfg.memory_mb, "boot_s": round(boot_s, 3),
            "wall_s": round(wall, 3), "kernel_version": self.kernel.version, "kernel_origin": self.kernel.origin,
            "qemu": _qemu_version(), "cmdline": cmd[cmd.index("-append") + 1], "uptime_at_ready_s": self.uptime_at_ready,
        }
        result.environment["host_kernel_release"] = os.uname().release
        return GuestReport(result, boot_s, wall)

    def _start_virtiofsd(self, tmp: Path) -> subprocess.Popen:
        sock = tmp / "fs.sock"
        proc = subprocess.Popen([virtiofsd_path() or "virtiofsd", f"--socket-path={sock}", "-o", "source=/", "-o", "cache=always",
                                 "-o", "sandbox=chroot", "-o", "log_level=err"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(tmp / "virtiofsd.err", "wb"),
                                preexec_fn=_die_with_parent)
        end = time.monotonic() + 10
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > end:
                err = (tmp / "virtiofsd.err").read_text(errors="replace").strip().splitlines()
                raise EnvironmentProblem(f"virtiofsd did not start: {err[-1] if err else 'no socket after 10 s'}")
            time.sleep(0.02)
        return proc

    @staticmethod
    def _teardown(procs: list[subprocess.Popen], tmp: Path) -> None:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.kill()  # the guest holds no state worth a clean shutdown
            proc.wait()
            if proc.stdout:
                proc.stdout.close()
        shutil.rmtree(tmp, ignore_errors=True)

    def _fail(self, what: str, tmp: Path) -> RunError:
        kept = self.kernel.dir / "last-console.log"  # the whole console of the last failed boot, for a human
        try:
            shutil.copyfile(tmp / "console.log", kept)
        except OSError:
            pass
        return RunError(f"kernel {self.kernel.release}: {what}; last console lines: {console_tail(tmp / 'console.log')}",
                        f"full console in {kept}")

    def _read(self, qemu: subprocess.Popen, tmp: Path, t0: float, run_timeout: float,
              progress: Progress | None) -> tuple[dict[str, Any], float]:
        """Follow the guest's JSON lines until its result, an error, its exit or a timeout."""
        assert qemu.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(qemu.stdout, selectors.EVENT_READ)
        buf = b""
        boot_s: float | None = None
        deadline = t0 + BOOT_TIMEOUT_S
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                phase = "did not boot" if boot_s is None else "did not finish the run"
                raise self._fail(f"{phase} within {BOOT_TIMEOUT_S if boot_s is None else run_timeout:.0f} s (guest killed)", tmp)
            if not sel.select(timeout=min(left, 1.0)):
                continue
            chunk = os.read(qemu.stdout.fileno(), 65536)
            if not chunk:
                qemu.wait()
                err = (tmp / "qemu.err").read_text(errors="replace").strip().splitlines()
                if qemu.returncode not in (0, None) and err:
                    raise RunError(f"qemu failed for kernel {self.kernel.release}: {err[-1]}")
                raise self._fail("the guest stopped without a result", tmp)
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                msg = _parse(raw)
                if msg is None:
                    continue
                kind = msg.get("type")
                if kind == "ready":
                    boot_s = time.monotonic() - t0
                    self.uptime_at_ready = msg.get("uptime_s")
                    deadline = time.monotonic() + run_timeout
                elif kind == "progress" and progress is not None:
                    _forward(progress, msg)
                elif kind == "error":
                    cls = getattr(errors, str(msg.get("kind")), RunError)
                    if not (isinstance(cls, type) and issubclass(cls, errors.LabError)):
                        cls = RunError
                    raise cls(f"in the guest (kernel {self.kernel.release}): {msg.get('message')}", msg.get("hint"))
                elif kind == "result":
                    return msg["result"], boot_s or 0.0


def _parse(raw: bytes) -> dict[str, Any] | None:
    line = raw.strip(b"\r\n\x00 ")
    if not line.startswith(b"{"):
        return None
    try:
        return json.loads(line)
    except ValueError:
        return None


def _forward(progress: Progress, msg: dict[str, Any]) -> None:
    event = msg.get("event")
    if event == "started":
        progress.repetition_started(msg["index"], msg["total"])
    elif event == "sample":
        progress.sample(msg["index"], msg["done"], msg["total"])
    elif event == "finished":
        progress.repetition_finished(Repetition.model_validate(msg["repetition"]))


@lru_cache(maxsize=1)
def _qemu_version() -> str:
    try:
        return subprocess.run([QEMU, "--version"], capture_output=True, text=True, timeout=10).stdout.splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return ""


def run_in_guest(kernel: Kernel, scenario: Scenario, options: RunOptions | None = None,
                 cfg: GuestConfig | None = None, timeseries: bool = True) -> RunResult:
    """`run_scenario`, but inside a guest booted with `kernel`."""
    return GuestRun(kernel, cfg).run(scenario, options or RunOptions(), timeseries).result

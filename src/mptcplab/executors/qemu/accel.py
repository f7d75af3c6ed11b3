"""Which accelerator a QEMU guest runs under: KVM only where it is proven, TCG otherwise.

`/dev/kvm` can exist, open, create VMs and run a firmware stub while a stock
kernel dies in its first milliseconds (a paravirtual KVM such as `kvm-pvm`:
"KVM internal error. Suberror: 1 ... emulation failure", and QEMU pauses the
VM forever). So the choice is made in three steps:

1. what was asked: `--accel auto|kvm|tcg` on the commands that boot guests,
   `MPTCPLAB_ACCEL` for every other (the option sets the variable, so a
   worker's or a bisect's guests hear it too); default `auto`;
2. what is known before booting: no usable `/dev/kvm`, a paravirtual KVM
   (the `kvm_pvm` module, or no `vmx`/`svm` flag in /proc/cpuinfo), or a
   failure remembered for this machine (`accel.json` in the kernel cache,
   keyed by the host's kernel release and QEMU's version) mean TCG at once;
3. the boot itself (executors' QEMU launcher, `prove_kvm`): a KVM guest that
   reports an internal error, exits, or prints no "Linux version" line on its
   console within `KVM_PROOF_S` is stopped, the failure is remembered, and the
   same kernel boots under TCG.

`MPTCPLAB_TEST_KVM_ARGS` (tests only) appends QEMU arguments to KVM tries and
makes `auto` try KVM whatever step 2 knows but a remembered failure, so the
fallback can be exercised for real on any machine (an argument QEMU refuses
makes the KVM try exit at once; on a paravirtual KVM any argument lets the
real failure happen); `MPTCPLAB_ACCEL_CACHE` moves the remembered verdicts
to another file, so such a test never teaches the machine a false failure.
"""
from __future__ import annotations

import fcntl
import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ...errors import EnvironmentProblem, UsageError
from ...kernels.catalog import cache_root

QEMU = "qemu-system-x86_64"
ACCELERATORS = ("auto", "kvm", "tcg")
ENV = "MPTCPLAB_ACCEL"
TEST_KVM_ARGS_ENV = "MPTCPLAB_TEST_KVM_ARGS"
#: where the remembered verdicts live (default: accel.json in the kernel cache); tests point it at their own file
CACHE_ENV = "MPTCPLAB_ACCEL_CACHE"
#: a stock kernel under a working KVM prints "Linux version" on the serial console within about a second;
#: five leave room for a loaded machine and bound what a failing try costs
KVM_PROOF_S = 5.0
KVM_GET_API_VERSION, KVM_CREATE_VM = 0xAE00, 0xAE01


@dataclass(frozen=True)
class Choice:
    """The accelerator to boot with (`kvm` or `tcg`), why, and whether KVM must still prove itself on the kernel.

    `fallback` is the reason KVM was not used although /dev/kvm is there (a paravirtual KVM, a remembered
    failure), empty otherwise: recorded with the run as a condition."""

    accel: str
    why: str
    prove: bool = False
    fallback: str = ""


def requested() -> str:
    """`MPTCPLAB_ACCEL` (set by `--accel`): auto, kvm or tcg. Raises UsageError for any other value."""
    value = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if value not in ACCELERATORS:
        raise UsageError(f"{ENV}={value!r} is not an accelerator", f"use one of {', '.join(ACCELERATORS)}")
    return value


def set_requested(value: str | None) -> None:
    """What `--accel` does: checks `value` and puts it in the environment, for this process and every child."""
    if value is None:
        return
    value = value.strip().lower()
    if value not in ACCELERATORS:
        raise UsageError(f"--accel {value!r} is not an accelerator", f"use one of {', '.join(ACCELERATORS)}")
    os.environ[ENV] = value


def test_kvm_args() -> list[str]:
    """The test-only QEMU arguments for KVM tries (`MPTCPLAB_TEST_KVM_ARGS`, shell words); [] normally."""
    return shlex.split(os.environ.get(TEST_KVM_ARGS_ENV, ""))


def paravirtual() -> str:
    """Why /dev/kvm is a paravirtual KVM that cannot run stock kernels ('' if it is not, or there is none)."""
    if not os.path.exists("/dev/kvm"):
        return ""
    if os.path.isdir("/sys/module/kvm_pvm"):
        return "/dev/kvm is paravirtual (kvm-pvm)"
    try:
        flags = next((line for line in open("/proc/cpuinfo") if line.startswith("flags")), "").split()
    except OSError:
        return ""
    if flags and "vmx" not in flags and "svm" not in flags:
        return "/dev/kvm is paravirtual (no vmx/svm CPU flag)"
    return ""


@lru_cache(maxsize=1)
def kvm_usable() -> tuple[bool, str]:
    """Whether KVM runs a firmware stub here; (usable, why). Necessary, not sufficient: see the module docstring.

    /dev/kvm can exist, open and even create VMs while running a vCPU fails
    (QEMU dying on an MSR assertion), so the last test boots a 64 KiB firmware
    that only writes to QEMU's isa-debug-exit port: exit status 1 means a vCPU ran.
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
    why = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1].rsplit(": ", 1)[-1]
    return False, f"/dev/kvm exists but QEMU cannot run a KVM guest ({why[-120:]})"


@lru_cache(maxsize=1)
def qemu_version() -> str:
    """QEMU's first `--version` line ('' when QEMU is missing)."""
    try:
        return subprocess.run([QEMU, "--version"], capture_output=True, text=True, timeout=10).stdout.splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return ""


def _cache_file() -> Path:
    return Path(os.environ.get(CACHE_ENV) or cache_root() / "accel.json")


def _machine_key() -> str:
    return f"{os.uname().release} | {qemu_version()}"


def remembered_failure() -> dict | None:
    """The KVM failure remembered for this host kernel and QEMU ({'why', 'kernel', 'at'}), or None."""
    try:
        doc = json.loads(_cache_file().read_text())
    except (OSError, ValueError):
        return None
    entry = doc.get(_machine_key()) if isinstance(doc, dict) else None
    return entry if isinstance(entry, dict) and entry.get("why") else None


def remember_failure(why: str, kernel_release: str) -> None:
    """Remember that KVM cannot run stock kernels on this host kernel + QEMU; best effort (a read-only cache is no error)."""
    path = _cache_file()
    try:
        doc = json.loads(path.read_text())
        doc = doc if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        doc = {}
    doc[_machine_key()] = {"why": why, "kernel": kernel_release, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(doc, indent=1) + "\n")
        tmp.replace(path)
    except OSError:
        pass


def choose() -> Choice:
    """The accelerator a new guest boots with, before any boot (see the module docstring).

    Raises UsageError for a bad MPTCPLAB_ACCEL and EnvironmentProblem (exit 3)
    when KVM is asked for and this machine cannot run stock kernels under it."""
    asked = requested()
    if asked == "tcg":
        return Choice("tcg", f"asked for ({ENV}=tcg or --accel tcg)")
    failed = remembered_failure()
    if asked == "auto" and failed:
        return Choice("tcg", f"KVM failed here before (kernel {failed.get('kernel')}: {failed['why']})", fallback=f"KVM failed: {failed['why']}")
    if asked == "auto" and test_kvm_args():
        return Choice("kvm", f"{TEST_KVM_ARGS_ENV} is set: KVM is tried whatever this machine is", prove=True)
    usable, why = kvm_usable()
    pv = paravirtual()
    if asked == "kvm":
        if not usable or pv:
            raise EnvironmentProblem(f"--accel kvm: KVM cannot run guests here ({pv or why})", "use --accel tcg or auto")
        return Choice("kvm", "asked for (--accel kvm)", prove=True)
    if not usable:
        return Choice("tcg", why)
    if pv:
        return Choice("tcg", f"{pv} and cannot run stock kernels", fallback=pv)
    return Choice("kvm", why, prove=True)


def kvm_failure(console: str, stderr: str, exited: bool, elapsed_s: float) -> str:
    """Why a KVM guest is not running the kernel ('' while it still may be): one of the module docstring's signs.

    `console` is the serial console so far, `stderr` QEMU's, `exited` whether QEMU has ended, `elapsed_s` the
    seconds since launch."""
    if "KVM internal error" in stderr:
        detail = next((line.strip() for line in stderr.splitlines() if line.strip() in ("emulation failure",)), "")
        return f"KVM internal error{': ' + detail if detail else ''}"
    if exited:
        last = (stderr.strip().splitlines() or ["no message"])[-1].strip()
        return f"QEMU exited under KVM: {last[-160:]}"
    if "Linux version" in console:
        return ""
    if elapsed_s >= KVM_PROOF_S:
        return f"no console output within {KVM_PROOF_S:g} s"
    return ""


def doctor_line() -> tuple[str, str]:
    """What `doctor` says of guests' accelerator: (detail, fix). Never raises (a bad MPTCPLAB_ACCEL is named)."""
    try:
        choice = choose()
    except (UsageError, EnvironmentProblem) as e:
        return f"unusable: {e.message}", e.hint or ""
    failed = remembered_failure()
    note = f" (remembered: KVM failed here on kernel {failed.get('kernel')}: {failed['why']})" if failed and failed["why"] not in choice.why else ""
    if choice.accel == "tcg":
        return f"tcg: {choice.why}; software emulation, slower guests{note}", ""
    return f"kvm ({choice.why}; proven on each boot, TCG if the kernel does not start){note}", ""

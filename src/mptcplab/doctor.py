"""Can the lab run here? One line per requirement, with how to fix it."""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from importlib import metadata

from . import capabilities


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def _version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=5)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return ""


def checks() -> list[Check]:
    out: list[Check] = []
    root = os.geteuid() == 0
    out.append(Check("root / CAP_NET_ADMIN", root, "running as root" if root else f"running as uid {os.geteuid()}", "run as root (sudo)"))
    enabled = capabilities.mptcp_enabled()
    out.append(Check("net.mptcp.enabled", enabled, "1" if enabled else "missing or 0",
                     "sysctl -w net.mptcp.enabled=1, or use a kernel with CONFIG_MPTCP=y"))
    scheds = capabilities.available_schedulers()
    out.append(Check("MPTCP schedulers", bool(scheds), ", ".join(scheds) or "none", "a kernel with MPTCP (>= 6.6 for net.mptcp.scheduler)"))
    pms = capabilities.available_path_managers()
    out.append(Check("MPTCP path managers", "kernel" in pms, ", ".join(pms) or "none", "a kernel with the in-kernel path manager"))
    if root:
        tbf = capabilities.tbf_available()
        out.append(Check("tbf qdisc", tbf, "usable" if tbf else "cannot add a tbf qdisc", "CONFIG_NET_SCH_TBF"))
        netem = capabilities.netem_available()
        out.append(Check("netem qdisc", netem, "usable (netem link backend)" if netem else "not available: the wire (userspace) link backend is used",
                         "CONFIG_NET_SCH_NETEM, or nothing: the wire backend emulates the same", required=False))
    bpf = capabilities.bpf_mptcp_struct_ops()
    out.append(Check("BPF MPTCP schedulers", bpf, "bpf_mptcp_sched_ops in kernel BTF" if bpf else "no bpf_mptcp_sched_ops (only built-in schedulers)",
                     "a kernel from the MPTCP development tree (mptcplab kernel add)", required=False))
    for pkg in ("pyroute2", "pydantic", "typer", "rich", "scipy"):
        try:
            out.append(Check(f"python: {pkg}", True, metadata.version(pkg)))
        except metadata.PackageNotFoundError:
            out.append(Check(f"python: {pkg}", False, "not installed", "make install"))
    for tool, cmd, required in (("ip (iproute2)", ["ip", "-V"], False), ("qemu-system-x86_64", ["qemu-system-x86_64", "--version"], False)):
        path = shutil.which(cmd[0])
        out.append(Check(tool, bool(path), _version(cmd) if path else "not found",
                         "apt-get install iproute2 qemu-system-x86" if not path else "", required=required))
    mptcpize = shutil.which("mptcpize")
    out.append(Check("mptcpize (command workload)", bool(mptcpize), mptcpize or "not found",
                     "apt-get install mptcpd" if not mptcpize else "", required=False))
    out += guest_checks()
    out += build_checks()
    return out


def build_checks() -> list[Check]:
    """What `kernel build` needs per flavour, and the UML kernels built here (deterministic time) with the one
    thing to know before choosing a link backend for them."""
    from .kernels.build import FLAVOURS, missing_packages
    from .kernels.catalog import cached

    out = []
    for flavour in FLAVOURS:
        missing = missing_packages(flavour)
        out.append(Check(f"kernel build --flavour {flavour}", not missing,
                         "build tools installed" if not missing else f"needs {', '.join(missing)}",
                         f"apt-get install {' '.join(missing)} (or make install)" if missing else "", required=False))
    umls = [k.release for k in cached() if k.flavour == "uml"]
    out.append(Check("UML kernels (time travel)", bool(umls),
                     (", ".join(umls) + "; the wire backend by default: netem there sends packets in exact step (no "
                      "processing delay), which changes retransmission timing (README, Deterministic time)") if umls
                     else "none built", "mptcplab kernel build 6.12.117 --flavour uml", required=False))
    return out


def guest_checks() -> list[Check]:
    """What `run --kernel` and `matrix` need: the accelerator QEMU will use, virtiofsd, busybox."""
    from .executors.qemu import accel, initramfs, session as guest

    detail, fix = accel.doctor_line()
    out = [Check("guest accelerator", not detail.startswith("unusable"), detail, fix, required=False)]
    fsd = guest.virtiofsd_path()
    out.append(Check("virtiofsd (guests)", bool(fsd), fsd or "not found", "apt-get install qemu-system-x86", required=False))
    bb = initramfs.busybox_available()
    out.append(Check("busybox (guests)", bb, str(initramfs.BUSYBOX) if bb else "not found", "apt-get install busybox-static", required=False))
    return out


def ready(results: list[Check]) -> bool:
    return all(c.ok for c in results if c.required)

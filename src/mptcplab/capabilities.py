"""What this kernel can do, found by trying in a scratch namespace, never guessed."""
from __future__ import annotations

import os
import secrets
from functools import lru_cache


from . import netns
from .lab import PREFIX, remove_netns


def _scratch_try(kind: str, **params: object) -> bool:
    name = f"{PREFIX}probe-{os.getpid()}-{secrets.token_hex(3)}"  # the pid: whose probe it is (tests, cleanup)
    netns.create(name)
    try:
        with netns.iproute(name) as ipr:
            ipr.link("add", ifname="d0", kind="veth", peer="d1")  # no dummy module on many kernels
            idx = ipr.link_lookup(ifname="d0")[0]
            ipr.tc("add", kind, index=idx, handle="1:", **params)
            return True
    except Exception:
        return False
    finally:
        remove_netns(name)


def available_congestion_controls() -> list[str]:
    """net.ipv4.tcp_available_congestion_control: what a namespace can set without loading a module."""
    try:
        return netns.sysctl_read(None, "net.ipv4.tcp_available_congestion_control").split()
    except OSError:
        return []


@lru_cache(maxsize=1)
def namespace_sysctls() -> frozenset[str]:
    """Every sysctl key (dotted) under net. that a fresh network namespace has: the per-namespace ones.

    A net.* sysctl that exists on the host but not in a fresh namespace is
    global (init_net only): setting it would change the whole machine.
    """
    name = f"{PREFIX}probe-{os.getpid()}-{secrets.token_hex(3)}"  # named like _scratch_try's probe
    netns.create(name)
    try:
        with netns.inside(name):
            keys = set()
            for dirpath, _dirs, files in os.walk("/proc/sys/net"):
                keys.update(os.path.join(dirpath, f).removeprefix("/proc/sys/").replace("/", ".") for f in files)
        return frozenset(keys)
    finally:
        remove_netns(name)


def sysctl_problem(key: str) -> str | None:
    """Why `key` cannot be set in the lab's namespaces, or None when it can."""
    if key in namespace_sysctls():
        return None
    if os.path.exists("/proc/sys/" + key.replace(".", "/")):
        return f"sysctl {key} is not per network namespace (it exists only in the host's): the lab will not change the whole machine"
    return f"sysctl {key} does not exist in this kernel"


@lru_cache(maxsize=1)
def netem_available() -> bool:
    """True when a netem qdisc can really be added (module built in or loadable)."""
    if os.geteuid() != 0:
        return False
    return _scratch_try("netem", delay=1000)


@lru_cache(maxsize=1)
def tbf_available() -> bool:
    if os.geteuid() != 0:
        return False
    return _scratch_try("tbf", rate="10mbit", burst=15000, latency="50ms")


def available_schedulers(ns: str | None = None) -> list[str]:
    try:
        return netns.sysctl_read(ns, "net.mptcp.available_schedulers").split()
    except FileNotFoundError:
        # before 6.6 there is no scheduler sysctl: the built-in one is the only one
        return ["default"] if os.path.exists("/proc/sys/net/mptcp/enabled") else []


def available_path_managers(ns: str | None = None) -> list[str]:
    try:
        return netns.sysctl_read(ns, "net.mptcp.available_path_managers").split()
    except FileNotFoundError:
        # before 6.15: pm_type 0 (kernel) and 1 (userspace) both exist
        return ["kernel", "userspace"] if os.path.exists("/proc/sys/net/mptcp/pm_type") else []


def mptcp_enabled() -> bool:
    try:
        return netns.sysctl_read(None, "net.mptcp.enabled") == "1"
    except FileNotFoundError:
        return False


def bpf_mptcp_struct_ops() -> bool:
    """Whether the kernel's BTF knows bpf_mptcp_sched_ops (BPF packet schedulers)."""
    try:
        with open("/sys/kernel/btf/vmlinux", "rb") as f:
            return b"bpf_mptcp_sched_ops" in f.read()
    except OSError:
        return False


def kernel_release() -> str:
    return os.uname().release

"""The conditions a run measured under, and which of them differ between two sides.

A verdict compares kernels (or patches) only when everything else is the
same: congestion control, TCP buffers, the sysctls a scenario set, the link
emulator, the guest accelerator and the machine. These are read from the
stored environment (`RunResult.environment`), so this module is pure data.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

CONGESTION_KEY = "net.ipv4.tcp_congestion_control"
PINNED_KEYS = (CONGESTION_KEY, "net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem")
UNRECORDED = "unrecorded"


def conditions(env: Mapping[str, Any], backend: str = "") -> dict[str, str]:
    """Condition name -> value of one run, from its environment document.

    Keys: 'congestion control', 'tcp_rmem', 'tcp_wmem', one per sysctl the
    scenario set ('net.x.y (router)'), 'link backend', 'executor' (host, qemu,
    uml), 'time mode' (UML only), 'guest accelerator',
    'accelerator fallback' (only where a guest fell back from KVM to TCG), 'machine' (CPU model and count; a fleet run's: every worker's), and for a
    fleet campaign's run 'worker machines' (the host names of the workers
    whose repetitions it holds). Runs stored before a condition was recorded
    say 'unrecorded'.
    """
    client = env.get("sysctls_client") or {}
    tcp = env.get("tcp") or {}
    out = {
        "congestion control": str(tcp.get("congestion_control") or client.get(CONGESTION_KEY) or UNRECORDED),
        "tcp_rmem": str(client.get("net.ipv4.tcp_rmem", UNRECORDED)),
        "tcp_wmem": str(client.get("net.ipv4.tcp_wmem", UNRECORDED)),
    }
    for role, keys in (env.get("sysctls_set") or {}).items():
        effective = env.get(f"sysctls_{role}") or {}
        for key, value in keys.items():
            if key not in PINNED_KEYS:
                out[f"{key} ({role})"] = str(effective.get(key, value))
    out["link backend"] = backend or str(env.get("link_backend") or UNRECORDED)
    guest = env.get("guest") or {}
    # where it ran (executors/): runs stored before executors were recorded ran in a QEMU guest when they have a guest
    out["executor"] = str(env.get("executor") or ("qemu" if guest else "host"))
    if env.get("time_mode"):  # a UML kernel's clock: simulated (time travel) or real
        out["time mode"] = str(env["time_mode"])
    out["guest accelerator"] = str(guest.get("accelerator") or "none (this host's kernel)")
    if guest.get("accelerator_fallback"):  # KVM was there but could not run the kernel: TCG instead (executors/qemu/accel.py)
        out["accelerator fallback"] = str(guest["accelerator_fallback"])
    out["machine"] = f"{env.get('cpu_model') or UNRECORDED} ({env.get('cpu_count') or '?'} CPUs)"
    workers = ((env.get("fleet") or {}).get("workers") or {}).values()
    if workers:  # a fleet campaign's run: its repetitions may come from several machines
        out["machine"] = " + ".join(sorted({f"{w.get('cpu_model') or UNRECORDED} ({w.get('cpu_count') or '?'} CPUs)" for w in workers}))
        out["worker machines"] = ", ".join(sorted({str(w.get("hostname") or UNRECORDED) for w in workers}))
        accels = {str(w["accelerator"]) for w in workers if w.get("accelerator")}
        if accels:
            out["guest accelerator"] = ", ".join(sorted(accels))
    return out


def differing(baseline: Iterable[Mapping[str, str]], candidate: Iterable[Mapping[str, str]]) -> list[tuple[str, list[str], list[str]]]:
    """(condition, baseline values, candidate values) for every condition whose values differ between the sides.

    Each side is the conditions() of its runs; a condition one side lacks (a
    sysctl only its scenario set) counts as 'not set'.
    """
    base, cand = list(baseline), list(candidate)
    names = list(dict.fromkeys(k for c in base + cand for k in c))
    out = []
    for name in names:
        b = sorted({c.get(name, "not set") for c in base})
        c = sorted({x.get(name, "not set") for x in cand})
        if b != c:
            out.append((name, b, c))
    return out


def differing_lines(baseline: Iterable[Mapping[str, str]], candidate: Iterable[Mapping[str, str]], what: str = "",
                    sides: tuple[str, str] = ("baseline", "candidate")) -> list[str]:
    """One line per differing condition, e.g. 'scenario x: congestion control differs (baseline cubic; candidate bbr)'."""
    return [difference_line(name, b, c, what, sides) for name, b, c in differing(baseline, candidate)]


def difference_line(name: str, baseline: list[str], candidate: list[str], what: str = "",
                    sides: tuple[str, str] = ("baseline", "candidate")) -> str:
    """One differing condition (a row of differing()) as a line: '[what: ]name differs (side values; side values)'."""
    prefix = f"{what}: " if what else ""
    return f"{prefix}{name} differs ({sides[0]} {', '.join(baseline)}; {sides[1]} {', '.join(candidate)})"

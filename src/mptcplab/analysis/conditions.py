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

#: the conditions that make runs separate series: a history (`history`, `history --by kernel`, `--suite`, the
#: report's rows) never judges a step between runs that differ in one of these (unless --mix): a host run on the
#: wire backend beside guests under netem and TCG measures the emulator, not the kernel. The one list of them.
SERIES_CONDITIONS = ("link backend", "guest accelerator", "executor", "time mode", "machine")
#: what a series condition is when a run does not record it (conditions() names 'time mode' only for UML runs)
SERIES_DEFAULTS = {"time mode": "real"}

#: conditions a kernel sizes itself when the scenario does not set them ([tcp] rmem/wmem): each kernel computes
#: tcp_rmem's maximum from its memory (6.1 and 6.12: 6291456, 6.16 on: about 7.25 MB for the same 1 GiB guest).
#: A difference in them alone is one quiet footnote, not a "conditions differ" mark (see `kernel_sized`).
KERNEL_SIZED = ("tcp_rmem", "tcp_wmem")
#: how conditions() marks a KERNEL_SIZED value the scenario did not set
SIZED_MARK = " (kernel's own)"


def conditions(env: Mapping[str, Any], backend: str = "") -> dict[str, str]:
    """Condition name -> value of one run, from its environment document.

    Keys: 'congestion control', 'tcp_rmem', 'tcp_wmem', one per sysctl the
    scenario set ('net.x.y (router)'), 'link backend', 'executor' (host, qemu,
    uml), 'time mode' (UML only; a fleet run's: every worker's), 'guest accelerator',
    'accelerator fallback' (only where a guest fell back from KVM to TCG), 'machine' (CPU model and count; a fleet run's: every worker's), and for a
    fleet campaign's run 'worker machines' (the host names of the workers
    whose repetitions it holds). Runs stored before a condition was recorded
    say 'unrecorded'.
    """
    client = env.get("sysctls_client") or {}
    tcp = env.get("tcp") or {}
    set_client = (env.get("sysctls_set") or {}).get("client") or {}
    out = {"congestion control": str(tcp.get("congestion_control") or client.get(CONGESTION_KEY) or UNRECORDED)}
    for name in KERNEL_SIZED:
        key = f"net.ipv4.{name}"
        value = str(client.get(key, UNRECORDED))
        out[name] = value + (SIZED_MARK if key not in set_client and value != UNRECORDED else "")
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
        modes = {str(w["time_mode"]) for w in workers if w.get("time_mode")}
        if modes:  # UML: every worker's clock, so a cell whose workers ran in different time modes says so
            out["time mode"] = ", ".join(sorted(modes))
    return out


def series_key(conds: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The SERIES_CONDITIONS of one run (its conditions()), as a hashable key: runs with the same key form a series."""
    return tuple((name, conds.get(name, SERIES_DEFAULTS.get(name, UNRECORDED))) for name in SERIES_CONDITIONS)


def series_label(key: tuple[tuple[str, str], ...], among: Iterable[tuple[tuple[str, str], ...]] = ()) -> str:
    """A series key as words ('link backend netem, guest accelerator tcg'): only the conditions in which the keys
    `among` differ (all of them when `among` is empty or they do not differ)."""
    others = list(among)
    varying = {name for name, value in key if any(dict(o).get(name) != value for o in others)}
    shown = [(n, v) for n, v in key if n in varying] or list(key)
    return ", ".join(f"{n} {v}" for n, v in shown)


def kernel_sized(name: str, values: Iterable[str]) -> bool:
    """Whether condition `name` with these values differs only by each kernel's own sizing: a KERNEL_SIZED buffer
    no run set (each value marked SIZED_MARK by conditions()) whose minimum and default agree, only the maximum
    (sized from the kernel's memory) differing."""
    vals = list(values)
    if name not in KERNEL_SIZED or not all(v.endswith(SIZED_MARK) for v in vals):
        return False
    return len({" ".join(v.split()[:2]) for v in vals}) == 1


def sizing_note(runs: Iterable[Mapping[str, str]]) -> str | None:
    """One footnote for the KERNEL_SIZED conditions that differ among `runs` (their conditions()) only by the
    kernel's sizing, e.g. 'tcp_rmem maximum 6291456 to 7298144: each kernel sizes it from its memory ...'; None
    when there is none. Such a difference is left out of differing() (no "conditions differ" mark)."""
    rows = list(runs)
    parts = []
    for name in KERNEL_SIZED:
        values = {r[name] for r in rows if name in r}
        if len(values) > 1 and kernel_sized(name, values):
            maxima = sorted({int(v.split()[2]) for v in values if len(v.split()) > 2 and v.split()[2].isdigit()})
            parts.append(f"{name} maximum {maxima[0]} to {maxima[-1]}" if maxima else name)
    if not parts:
        return None
    return (f"{' and '.join(parts)}: each kernel sizes it from its memory (the scenario did not set [tcp] "
            "rmem/wmem); minimum and default agree, so it is not marked as a differing condition")


def differing(baseline: Iterable[Mapping[str, str]], candidate: Iterable[Mapping[str, str]]) -> list[tuple[str, list[str], list[str]]]:
    """(condition, baseline values, candidate values) for every condition whose values differ between the sides.

    Each side is the conditions() of its runs; a condition one side lacks (a
    sysctl only its scenario set) counts as 'not set'. A buffer that differs
    only by each kernel's own sizing (kernel_sized) is left out: sizing_note
    says it once.
    """
    base, cand = list(baseline), list(candidate)
    names = list(dict.fromkeys(k for c in base + cand for k in c))
    out = []
    for name in names:
        b = sorted({c.get(name, "not set") for c in base})
        c = sorted({x.get(name, "not set") for x in cand})
        if b != c and not kernel_sized(name, b + c):  # a kernel's own buffer sizing: sizing_note's footnote
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

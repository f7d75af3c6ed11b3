"""Results for people: a rich table on stdout, a summary under it."""
from __future__ import annotations

import statistics

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .result import Estimate, Repetition, RunResult
from .units import plural


def estimate_text(est: Estimate, digits: int = 3, unit: str = "") -> str:
    """A median with its 95% interval, "1.463 [1.402, 1.530]"; for a small sample (Estimate.small_sample) the
    values themselves instead, "1.463 (3 values: 1.462, 1.463, 1.463; too few for a 95% interval)"."""
    u = f" {unit}" if unit else ""
    if est.small_sample and est.values:
        if len(est.values) == 1:
            return f"{est.median:.{digits}f}{u} (1 value; no interval)"
        vals = ", ".join(f"{v:.{digits}f}" for v in est.values)
        return f"{est.median:.{digits}f}{u} ({len(est.values)} values: {vals}; too few for a 95% interval)"
    return f"{est.median:.{digits}f}{u} [{est.ci95[0]:.{digits}f}, {est.ci95[1]:.{digits}f}]"


def pass_rate_text(rate: float, n: int, budget_s: float | None) -> str:
    """What pass_rate means for this run: with a [run] budget, the share of repetitions that completed within
    it; without one, the completion rate, and the text says so ("60% of 5 repetitions completed (no budget:
    the completion rate)")."""
    if budget_s:
        return f"{rate * 100:.0f}% of {plural(n, 'repetition')} completed within the budget of {budget_s:g}s"
    return f"{rate * 100:.0f}% of {plural(n, 'repetition')} completed (no budget: the completion rate)"


def _status_cell(rep: Repetition) -> str:
    """'' for a repetition that completed within its budget, else what happened and why."""
    if rep.completed:
        return "over budget" if rep.over_budget else ""
    return f"{rep.status}: {rep.error}" if rep.error else rep.status


def run_table(result: RunResult) -> Table:
    """One row per repetition; a `status` column (with the reason) when any did not complete or ran over budget."""
    paths = list(dict.fromkeys(s.path for r in result.repetitions for s in r.subflows))
    title = (f"{result.scenario} — kernel {result.kernel}, scheduler {result.scheduler}, "
             f"backend {result.backend}" + (f", label {result.label}" if result.label else ""))
    table = Table(title=escape(title), title_justify="left")  # a label or path name may hold [brackets]
    with_status = any(_status_cell(r) for r in result.repetitions)
    from .metrics import latency_columns, latency_label

    # a latency workload (rr, stream, flows) is shown by its latency, p50 / p99 / max, not goodput and completion
    latency = latency_columns(k for r in result.repetitions for k in r.metrics)
    table.add_column("rep", justify="right")
    if with_status:
        table.add_column("status", justify="left", style="red", overflow="fold")
    for heading in ([latency_label(m) for m in latency] if latency else ["completion s", "goodput mbit/s"]):
        table.add_column(heading, justify="right")
    for p in paths:
        table.add_column(escape(f"{p} share"), justify="right")
        table.add_column(escape(f"{p} retx"), justify="right")
        table.add_column(escape(f"{p} rtt ms"), justify="right")
    for rep in result.repetitions:
        row = [escape(result.repetition_label(rep))]
        if with_status:
            row.append(escape(_status_cell(rep)))
        if latency:
            row += [f"{rep.metrics[m]:.1f}" if m in rep.metrics else "-" for m in latency]
        else:
            row += [f"{rep.completion_s:.3f}", f"{rep.goodput_mbps:.2f}"]
        by_path = {sf.path: sf for sf in rep.subflows}
        for p in paths:
            sf = by_path.get(p)
            row += [f"{sf.share * 100:.1f}%", str(sf.retransmits), f"{sf.rtt_median_ms:.1f}"] if sf else ["", "", ""]
        table.add_row(*row)
    return table


def print_run(result: RunResult, console: Console | None = None, main: str | None = None) -> None:
    """The repetitions' table, then the main metric (`main`, default result_main_metric: what every verdict judges
    the scenario by unless --metric), goodput and completion, a latency workload's p99 and p50, the guest's CPU,
    mptcp_vs_best_path and pass_rate."""
    console = console or Console()
    console.print(run_table(result))
    from .metrics import latency_columns, metric as metric_def, result_main_metric

    main = main or result_main_metric(result)
    # the main metric first, then a latency workload's p50, p99 and max latency, any other's goodput and completion
    latency = latency_columns(result.summary)
    for metric in dict.fromkeys((main, *(latency or ("goodput_mbps", "completion_s")))):
        est = result.summary.get(metric)
        if est:
            unit = metric_def(metric).unit
            tail = " (the main metric: what compare, history, runs and the report judge it by)" if metric == main else ""
            if est.small_sample:
                console.print(f"{metric}: median {estimate_text(est, 3, unit)}{tail}")
            else:
                console.print(f"{metric}: median {est.median:.3f} {unit}, 95% CI [{est.ci95[0]:.3f}, {est.ci95[1]:.3f}] over {plural(est.n, 'repetition')}{tail}")
    cpu = result.environment.get("guest_cpu") or {}
    per_rep = cpu.get("per_repetition") or []
    if per_rep:  # a guest run: how busy the emulated CPUs and QEMU itself were, so an emulator limit is not read as the kernel's
        qemu = cpu.get("qemu_host_cpu") or []
        console.print(f"guest CPU: busy {statistics.median(c['busy'] for c in per_rep):.2f} (busiest vCPU "
                      f"{statistics.median(c['busiest_cpu'] for c in per_rep):.2f}), median per repetition"
                      + (f"; QEMU on the host {statistics.median(qemu):.2f} of a core" if qemu else "")
                      + ("; saturated in some repetitions: an emulator limit" if cpu.get("saturated") else ""))
    ratio = result.summary.get("mptcp_vs_best_path")
    if ratio:
        what = (result.environment.get("baseline") or {}).get("metric", "goodput_mbps")
        console.print(f"mptcp_vs_best_path ({what}, > 1: MPTCP better than the best path alone as plain TCP): "
                      + (estimate_text(ratio, 3) if ratio.small_sample else
                         f"{ratio.median:.3f}, 95% CI [{ratio.ci95[0]:.3f}, {ratio.ci95[1]:.3f}] over {plural(ratio.n, 'repetition')}"))
    rate = result.summary.get("pass_rate")
    budget = result.environment.get("budget_s")
    if rate and (rate.median < 1 or budget):
        console.print(f"pass_rate: {pass_rate_text(rate.median, rate.n, budget)}, "
                      f"95% CI [{rate.ci95[0] * 100:.0f}%, {rate.ci95[1] * 100:.0f}%] (Wilson)")
    errors, notes = result.failures()
    for note in notes:  # a best-path baseline timing out on a slow path: designed, fails nothing
        console.print(f"note: {escape(note)}")
    for err in errors:
        console.print(f"[red]error:[/red] {escape(err)}")


# ---- `mptcplab show`: the whole stored run, readable ------------------------------------------------


def _rate(bps: float) -> str:
    for unit, factor in (("gbit/s", 1e9), ("mbit/s", 1e6), ("kbit/s", 1e3)):
        if bps >= factor:
            return f"{bps / factor:.4g} {unit}"
    return f"{bps:.4g} bit/s"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.4g} ms"


def _bytes(n: float) -> str:
    for unit, factor in (("MB", 1e6), ("KB", 1e3)):
        if n >= factor:
            return f"{n / factor:.4g} {unit}"
    return f"{n:.0f} B"


def _loss(loss: Any) -> str:
    if isinstance(loss, dict):
        return ("Gilbert-Elliott " + ", ".join(f"{k} {float(v) * 100:.4g}%" for k, v in loss.items()))
    return f"{float(loss) * 100:.4g}%"


def _direction_settings(cfg: Any) -> str:
    """One path direction's settings as the backend recorded them, with units."""
    if not isinstance(cfg, dict):
        return str(cfg)
    if "delay_s" in cfg or "rate_bps" in cfg:  # wire
        parts = []
        if cfg.get("trace"):
            parts.append(f"trace {cfg['trace']}")
        elif cfg.get("rate_bps") is not None:
            parts.append(f"rate {_rate(float(cfg['rate_bps']))}")
        parts.append(f"delay {_ms(float(cfg.get('delay_s') or 0))}")
        jitter = float(cfg.get("jitter_s") or 0)
        parts.append(f"jitter {_ms(jitter)}" + (f" ({cfg.get('jitter_distribution', 'normal')}"
                                                 f"{', reordering' if cfg.get('reorder') else ', in order'})" if jitter else ""))
        parts.append(f"loss {_loss(cfg.get('loss') or 0.0)}")
        if cfg.get("limit_bytes") is not None:
            queue = f"queue {_bytes(float(cfg['limit_bytes']))}"
            if cfg.get("rate_bps"):
                queue += f" ({_ms(float(cfg['limit_bytes']) * 8 / float(cfg['rate_bps']))} at the rate)"
            parts.append(queue)
        return ", ".join(parts)
    if "netem" in cfg or "tbf" in cfg and isinstance(cfg.get("tbf"), str):  # netem: tc's own arguments
        return "; ".join(f"{k} {v}" for k, v in cfg.items() if v)
    if "rate" in cfg:  # tbf
        rate = str(cfg["rate"])
        bps = float(rate.removesuffix("bit")) if rate.endswith("bit") and rate[:-3].replace(".", "").isdigit() else None
        parts = [f"rate {_rate(bps) if bps is not None else rate}"]
        if "burst" in cfg:
            parts.append(f"burst {_bytes(float(cfg['burst']))}")
        if "limit" in cfg:
            parts.append(f"queue limit {_bytes(float(cfg['limit']))}")
        return ", ".join(parts) + " (tbf)"
    return ", ".join(f"{k} {v}" for k, v in cfg.items())


def link_lines(link: Any) -> list[str]:
    """environment.link as lines: the backend, then one line per path and direction with units."""
    if not isinstance(link, dict):
        return [] if link is None else [str(link)]
    extra = {k: v for k, v in link.items() if k not in ("backend", "paths")}
    head = f"backend {link.get('backend', '?')}" + (
        ": " + ", ".join(f"{k} {'yes' if v is True else 'no' if v is False else v}" for k, v in extra.items()) if extra else "")
    lines = [head]
    for path, directions in (link.get("paths") or {}).items():
        for direction, cfg in (directions or {}).items() if isinstance(directions, dict) else [("", directions)]:
            arrow = {"up": "up (client -> server)", "down": "down (server -> client)"}.get(direction, direction)
            lines.append(f"{path} {arrow}: {_direction_settings(cfg)}")
    return lines


def sysctl_lines(env: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(heading, ['key = value', ...]) for the sysctls the environment recorded.

    `sysctls_<namespace>` (what was read back) per namespace; namespaces whose lists are identical share
    one entry ("client, server"); empty ones are left out. `sysctls_set` (namespace -> what the scenario
    set) comes first, as "namespace: key = value" lines.
    """
    out: list[tuple[str, list[str]]] = []
    asked = env.get("sysctls_set")
    if isinstance(asked, dict):
        items = [f"{ns}: {k} = {v}" for ns, values in asked.items() if isinstance(values, dict) for k, v in sorted(values.items())]
        if items:
            out.append(("set by the scenario", items))
    groups: dict[tuple[str, ...], list[str]] = {}
    for key, values in env.items():
        if key.startswith("sysctls_") and key != "sysctls_set" and isinstance(values, dict) and values:
            items = tuple(f"{k} = {v}" for k, v in sorted(values.items()))
            groups.setdefault(items, []).append(key.removeprefix("sysctls_"))
    return out + [(", ".join(names), list(items)) for items, names in groups.items()]


def mib_table(result: RunResult) -> Table | None:
    """The MPTCP MIB counters that changed in any repetition, client and server, one column per repetition."""
    reps = result.repetitions
    rows: dict[tuple[str, str], list[int]] = {}
    for side, attr in (("client", "mib"), ("server", "mib_server")):
        names = sorted({k for r in reps for k, v in getattr(r, attr).items() if v})
        for name in names:
            rows[(name, side)] = [getattr(r, attr).get(name, 0) for r in reps]
    if not rows:
        return None
    table = Table(title="MPTCP MIB deltas (non-zero)", title_justify="left")
    table.add_column("counter")
    table.add_column("namespace")
    for r in reps:
        table.add_column(escape(result.repetition_label(r) if r.baseline_path else f"rep {r.index + 1}"), justify="right")
    for (name, side), values in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        table.add_row(name, side, *(f"{v:,}".replace(",", " ") for v in values))
    return table


def link_stats_table(result: RunResult) -> Table | None:
    """The emulator's own counters per repetition, path and direction: frames, drops by cause, frames still in
    flight when they were read (in = out + drops + in flight), lateness."""
    stats = result.link_stats()
    if not stats:
        return None
    table = Table(title="link emulator counters", title_justify="left")
    for col in ("rep", "path", "direction", "frames in", "frames out", "drops by cause", "in flight at end",
                "lateness p50 / p99 / max µs"):
        table.add_column(col, justify="right" if col.startswith(("frames", "lateness", "in flight")) else "left")
    for i, (rep, entry) in enumerate(stats):
        label = result.repetition_label(rep) if rep is not None else f"#{i + 1}"
        for path, directions in (entry.get("paths") or {}).items() if isinstance(entry, dict) else []:
            for direction, d in directions.items():
                drops = ", ".join(f"{cause} {n}" for cause, n in (d.get("drops") or {}).items() if n) or "none"
                late = d.get("lateness_us") or {}
                in_flight = d.get("in_flight", d.get("queued"))
                table.add_row(label, path, direction, str(d.get("frames_in", "")), str(d.get("frames_out", "")), drops,
                              "" if in_flight is None else str(in_flight),
                              " / ".join(f"{late[k]:.0f}" if k in late else "-" for k in ("p50", "p99", "max")))
    return table


def print_details(result: RunResult, console: Console, main: str | None = None) -> None:
    """What `mptcplab show` prints after the run's header: link settings, sysctls, repetitions (with why any
    failed), the run's errors, the MIB counters that changed and the emulator's counters."""
    plain = dict(highlight=False, markup=False, soft_wrap=True)
    env = result.environment
    lines = link_lines(env.get("link"))
    if lines:
        console.print("link settings:", **plain)
        for line in lines:
            console.print(f"  {line}", **plain)
    for namespace, items in sysctl_lines(env):
        console.print(f"sysctls ({namespace}):", **plain)
        for item in items:
            console.print(f"  {item}", **plain)
    tcp = env.get("tcp") if isinstance(env.get("tcp"), dict) else {}
    used = sorted({cc for r in result.repetitions for sf in r.subflows for cc in sf.congestion_control.split(",") if cc})
    if tcp.get("congestion_control"):
        console.print(f"congestion control: asked {tcp['congestion_control']}"
                      + (f"; the subflows used {', '.join(used)}" if used else "")
                      + (f" — warning: {tcp['not_applied']}" if tcp.get("not_applied") else ""), **plain)
    if result.repetitions:
        print_run(result, console, main)
        from .analysis.diagnosis import diagnose

        for line in diagnose(result).lines():  # the scheduler's evidence: why the numbers above are what they are
            console.print(line, **plain)
    else:
        console.print(f"no repetition finished (the run {result.status})", **plain)
        errors, notes = result.failures()
        for note in notes:
            console.print(f"note: {note}", **plain)
        for err in errors:
            console.print(f"error: {err}", **plain)
    for table in (mib_table(result), link_stats_table(result)):
        if table is not None:
            console.print(table)

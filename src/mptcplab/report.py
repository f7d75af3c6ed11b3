"""Results for people: a rich table on stdout, a summary under it."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from .result import RunResult


def _fmt_ci(est: object) -> str:
    return f"{est.median:.3f} [{est.ci95[0]:.3f}, {est.ci95[1]:.3f}]"  # type: ignore[attr-defined]


def run_table(result: RunResult) -> Table:
    paths = [s.path for s in result.repetitions[0].subflows] if result.repetitions else []
    title = (f"{result.scenario} — kernel {result.kernel}, scheduler {result.scheduler}, "
             f"backend {result.backend}" + (f", label {result.label}" if result.label else ""))
    table = Table(title=title, title_justify="left")
    table.add_column("rep", justify="right")
    table.add_column("completion s", justify="right")
    table.add_column("goodput mbit/s", justify="right")
    for p in paths:
        table.add_column(f"{p} share", justify="right")
        table.add_column(f"{p} retx", justify="right")
        table.add_column(f"{p} rtt ms", justify="right")
    for rep in result.repetitions:
        row = [str(rep.index + 1) + (" (warm-up)" if rep.warmup else ""), f"{rep.completion_s:.3f}", f"{rep.goodput_mbps:.2f}"]
        for sf in rep.subflows:
            row += [f"{sf.share * 100:.1f}%", str(sf.retransmits), f"{sf.rtt_median_ms:.1f}"]
        table.add_row(*row)
    return table


def print_run(result: RunResult, console: Console | None = None) -> None:
    console = console or Console()
    console.print(run_table(result))
    for metric, unit in (("goodput_mbps", "mbit/s"), ("completion_s", "s")):
        est = result.summary.get(metric)
        if est:
            console.print(f"{metric}: median {est.median:.3f} {unit}, 95% CI [{est.ci95[0]:.3f}, {est.ci95[1]:.3f}] over {est.n} repetitions")
    rate = result.summary.get("pass_rate")
    if rate and (rate.median < 1 or result.environment.get("budget_s")):
        console.print(f"pass_rate: {rate.median * 100:.0f}% of {rate.n} repetitions completed within budget, "
                      f"95% CI [{rate.ci95[0] * 100:.0f}%, {rate.ci95[1] * 100:.0f}%] (Wilson)")
    for err in result.errors:
        console.print(f"[red]error:[/red] {err}")

"""`mptcplab report OUT/`: the static HTML site of stored runs (registered on common.app).

Contract: flags and exit codes are what scripts and CI jobs call. Exit 0 when
the report was written, 2 on a usage error (unusable OUT, unknown metric,
reference column or compare selection).
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import UsageError
from .common import (AlphaOption, DbOption, ThresholdOption, app, err, handled, known_metrics, parse_threshold, run_filter,
                     store_at, working)


def parse_compare(text: str) -> tuple[str, str]:
    """`BASE..CAND` into its two selectors (each a run id, label, kernel release or tag key=value)."""
    base, sep, cand = text.partition("..")
    if not sep or not base.strip() or not cand.strip():
        raise UsageError(f"--compare {text!r}: write it as BASELINE..CANDIDATE, e.g. --compare v6.12..v6.18")
    return base.strip(), cand.strip()


@app.command()
@handled
def report(
    out: Annotated[Path, typer.Argument(metavar="OUT", help="directory for the site (created; an earlier report there is updated)")],
    metric: Annotated[Optional[str], typer.Option("--metric", help="the metric of the index page opened first (default: each scenario's main metric, as compare and history judge it; every stored metric gets its pages)")] = None,
    compare: Annotated[Optional[list[str]], typer.Option("--compare", help="BASELINE..CANDIDATE selectors: add a compare page (repeatable)")] = None,
    compare_metric: Annotated[Optional[list[str]], typer.Option("--compare-metric", help="metrics the compare pages judge (repeatable; default: --metric)")] = None,
    reference: Annotated[Optional[str], typer.Option("--reference", help="the index column (kernel or label) the others are compared with (default: the first)")] = None,
    scenario: Annotated[Optional[str], typer.Option("--scenario", help="only runs of this scenario")] = None,
    label: Annotated[Optional[str], typer.Option("--label", help="only runs with this label")] = None,
    kernel: Annotated[Optional[str], typer.Option("--kernel", help="only runs on this kernel release")] = None,
    since: Annotated[Optional[str], typer.Option("--since", help="only runs started since a date/time or an age (12h, 7d)")] = None,
    tag: Annotated[Optional[list[str]], typer.Option("--tag", help="only runs with this key=value tag (repeatable)")] = None,
    change_points: Annotated[bool, typer.Option("--change-points/--no-change-points", help="search each index row for change points and mark them (index and history pages)")] = True,
    mix: Annotated[bool, typer.Option("--mix", help="search each index row for change points, and judge history steps, across runs under different link backends, accelerators, executors, time modes or machines (default: each its own series)")] = False,
    threshold: ThresholdOption = "5%",
    alpha: AlphaOption = 0.01,
    db: DbOption = None,
) -> None:
    """Write a static HTML report (index grid, history, run and compare pages) that opens from disk."""
    from ..outputs import check_output_dir, writing
    from ..webreport import ReportOptions, build_report

    known_metrics([*([metric] if metric else []), *(compare_metric or [])])
    check_output_dir(out, "OUT")
    options = ReportOptions(metric=metric, compares=[parse_compare(c) for c in compare or []],
                            compare_metrics=list(compare_metric) if compare_metric else None,
                            threshold=parse_threshold(threshold), alpha=alpha, reference=reference,
                            detect_change_points=change_points, mix=mix)
    store = store_at(db)
    with writing(out, "OUT"), working(f"report: the site of the runs in {store.where}"):
        stats = build_report(store, out, run_filter(scenario, label, kernel, since, tag), options)
    err.print(f"report of {stats.runs} runs written to {stats.index}: {stats.written} pages written, "
              f"{stats.unchanged} unchanged, {stats.removed} removed in {stats.seconds:.1f} s",
              highlight=False, markup=False, soft_wrap=True)

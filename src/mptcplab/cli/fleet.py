"""`mptcplab submit`, `mptcplab worker`, `mptcplab campaign`: the fleet (registered on common.app; the logic is in fleet/).

Contract: `submit` prints the campaign id on stdout (one line) and exits 0,
also when the campaign was submitted before (nothing is added); `worker`
runs until SIGTERM / Ctrl-C (exit 143 / 130 after its job is finished or
released); `campaign ID` exits 0 while the campaign runs (saying how far
it got) and when it is complete with every repetition completed, 1 when it is
complete and a job or a repetition failed. A database that cannot be reached
is one line, exit 2, as every store error.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from ..errors import UsageError
from .common import (AccelOption, TimeOption, DbOption, SetOption, app, check_link_backend, err, handled, load_scenarios, out,
                     print_case_rows)


def _say(text: str) -> None:
    err.print(text, highlight=False, markup=False, soft_wrap=True)


@app.command()
@handled
def submit(
    scenario: Annotated[Optional[list[str]], typer.Argument(help="TOML files or built-in scenario names (or --suite)")] = None,
    suite: Annotated[bool, typer.Option("--suite", help="the built-in scheduler suite's cases (with --tag, only those carrying it)")] = False,
    tag: Annotated[Optional[str], typer.Option("--tag", help="with --suite: only cases with this tag, e.g. quick")] = None,
    kernels: Annotated[Optional[str], typer.Option("--kernels", help="comma-separated kernels, each run in a guest on the worker (QEMU; UML for a kernel built with --flavour uml), a Debian kernel fetched there when missing (default: each worker's own kernel)")] = None,
    repeat: Annotated[Optional[int], typer.Option("--repeat", "-n", min=1, help="repetitions per scenario and kernel (default: each scenario's [run] repeat)")] = None,
    overrides: SetOption = None,
    label: Annotated[Optional[str], typer.Option("--label", help="a free-form label stored with every run")] = None,
    link_backend: Annotated[Optional[str], typer.Option("--link-backend", help="auto, tbf, netem or wire (pin one to measure every machine with the same emulator)")] = None,
    db: DbOption = None,
) -> None:
    """Split scenarios x kernels x repetitions into jobs on the fleet's queue (PostgreSQL) and print the campaign id.

    Jobs are interleaved (repetition r of everything before r+1), so a
    campaign stopped half-way is still balanced. Submitting the same campaign
    again adds nothing but queues its failed jobs again. Workers (mptcplab worker) take the jobs.
    """
    from ..fleet.queue import built_kernel, database, plan, scenario_source, submit as do_submit

    dbase = database(db)  # a URL that is not PostgreSQL is refused before anything else
    check_link_backend(link_backend)
    if suite == bool(scenario):
        raise UsageError("give scenarios or --suite (one of the two)", "e.g. mptcplab submit --suite --tag quick --db URL")
    if tag is not None and not suite:
        raise UsageError("--tag selects suite cases: use it with --suite")
    tier = None
    if suite:
        from ..suite import TIERS, suite_cases

        cases = suite_cases(tag)
        refs: list[str] = [str(c.path) for c in cases]
        tiers = {c.tier for c in cases if c.tier in TIERS}
        tier = tiers.pop() if len(tiers) == 1 else "mixed"
    else:
        refs = list(scenario or [])
    scns = load_scenarios(refs, overrides or [])
    names = [k.strip() for k in kernels.split(",") if k.strip()] if kernels is not None else None
    if names is not None and not names:
        raise UsageError("--kernels needs at least one kernel, e.g. --kernels 6.1,6.12")
    if names and len(set(names)) < len(names):
        raise UsageError(f"--kernels {kernels}: names the same kernel twice")
    sources = [scenario_source(ref, s, list(overrides or [])) for ref, s in zip(refs, scns)]
    builds = {n: built_kernel(n) for n in names or []}  # a kernel from `kernel build`: its jobs say which build
    campaign = plan(sources, [repeat or s.run.repeat for s in scns], names, link_backend, label, suite=suite, tier=tier,
                    builds=builds)
    added, retried = do_submit(dbase, campaign)
    jobs = len(campaign.jobs)
    from ..units import plural

    if added:
        reps = sorted(set(campaign.repeats))
        _say(f"campaign {campaign.campaign_id}: {plural(added, 'job')} enqueued ({plural(len(scns), 'scenario')} x "
             f"{plural(len(campaign.kernels), 'kernel')} x {'/'.join(map(str, reps))} repetitions) in {dbase.shown}; "
             "start workers with: mptcplab worker --db URL")
    elif not retried:
        _say(f"campaign {campaign.campaign_id}: already submitted ({plural(jobs, 'job')}): nothing added; "
             f"see it with: mptcplab campaign {campaign.campaign_id}")
    if retried:
        _say(f"campaign {campaign.campaign_id}: {plural(retried, 'failed job')} queued again")
    out.print(campaign.campaign_id, highlight=False)


@app.command()
@handled
def worker(
    db: DbOption = None,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="jobs at once (keep 1: a lab measures best alone on its machine)")] = 1,
    name: Annotated[Optional[str], typer.Option("--name", help="this worker's name, recorded with every repetition (default: the host name)")] = None,
    stalled_after: Annotated[float, typer.Option("--stalled-after", min=1.0, metavar="SECONDS",
                                                 help="a worker silent this long has its job retried by another")] = 60.0,
    exit_when_empty: Annotated[bool, typer.Option("--exit-when-empty", help="stop when the queue is empty instead of waiting for more")] = False,
    accel: AccelOption = None,
    time_mode: TimeOption = None,
) -> None:
    """Take the fleet's jobs one at a time, run each with the lab and store its repetition (run one worker per machine).

    SIGTERM or Ctrl-C: the current job finishes, then the worker stops (exit
    143 / 130); a second one releases the job back to the queue at once.
    """
    from ..fleet.queue import database
    from ..fleet.worker import FleetWorker

    dbase = database(db)
    if os.geteuid() != 0:
        from ..errors import EnvironmentProblem

        raise EnvironmentProblem("a worker runs the lab, which needs root (CAP_NET_ADMIN) to build namespaces", "run it with sudo")
    w = FleetWorker(dbase, name or os.uname().nodename, concurrency=concurrency, stalled_after=stalled_after,
                    exit_when_empty=exit_when_empty, say=_say)
    stats = w.run()
    _say(f"worker {w.name}: {stats.stored} repetitions stored, {stats.failed} jobs failed, {stats.released} released"
         + (f", {stats.duplicates} already stored" if stats.duplicates else ""))
    if stats.stopped_by is not None:
        raise typer.Exit(128 + stats.stopped_by)


@app.command()
@handled
def campaign(
    campaign_id: Annotated[Optional[str], typer.Argument(metavar="ID", help="a campaign id as submit printed it (default: list every campaign)")] = None,
    metric: Annotated[Optional[str], typer.Option("--metric", help="the metric of the summary table (default: each case's main metric, as suite run, compare and history judge it)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON document: progress per worker (and the summary rows when complete)")] = False,
    db: DbOption = None,
) -> None:
    """A campaign's progress per worker (done / running / queued / failed) and, once complete, its summary table.

    Without ID: every campaign on the queue, newest first.
    """
    from ..fleet.queue import campaign_jobs, campaigns, database, per_worker

    dbase = database(db)
    if campaign_id is None:
        rows = campaigns(dbase)
        if as_json:
            sys.stdout.write(json.dumps(rows) + "\n")
            return
        if not rows:
            out.print(f"no campaigns submitted yet (in {dbase.shown})", highlight=False)
            return
        table = Table(title="campaigns, newest first", title_justify="left")
        for col in ("campaign", "jobs", "done", "running", "queued", "failed"):
            table.add_column(col, justify="left" if col == "campaign" else "right")
        for r in rows:
            table.add_row(r["campaign"], *(str(r[k]) for k in ("jobs", "done", "running", "queued", "failed")))
        out.print(table)
        return
    jobs = campaign_jobs(dbase, campaign_id)
    if not jobs:
        raise UsageError(f"no campaign {campaign_id} in {dbase.shown}", "mptcplab campaign (without an id) lists them")
    progress = per_worker(jobs)
    done = sum(1 for j in jobs if j.status == "succeeded")
    failed = [j for j in jobs if j.status in ("failed", "cancelled", "aborted")]
    complete = all(j.status not in ("todo", "doing") for j in jobs)
    doc: dict[str, Any] = {"campaign": campaign_id, "jobs": len(jobs), "done": done, "failed": len(failed), "complete": complete,
                           "workers": progress, "errors": [f"job {j.job_id}: {j.error}" for j in failed if j.error]}
    results = _cell_results(db, jobs) if complete else []
    if complete:
        from ..suite import summary_rows

        from ..metrics import result_main_metric

        doc["rows"] = summary_rows(results, metric or {r.scenario: result_main_metric(r) for r in results})
    if as_json:
        sys.stdout.write(json.dumps(doc, default=str) + "\n")
    else:
        table = Table(title=f"campaign {campaign_id}: {done}/{len(jobs)} jobs done" + (" (complete)" if complete else ""),
                      title_justify="left")
        for col in ("worker", "done", "running", "queued", "failed"):
            table.add_column(col, justify="left" if col == "worker" else "right")
        for name, row in progress.items():
            table.add_row(name, *(str(row[k]) for k in ("done", "running", "queued", "failed")))
        out.print(table)
        for line in doc["errors"]:
            out.print(line, highlight=False, markup=False, soft_wrap=True)
        if complete:
            print_case_rows(campaign_id, doc["rows"], metric or (doc["rows"][0]["metric"] if doc["rows"] else "goodput_mbps"), what=f"campaign {campaign_id} (runs tagged campaign={campaign_id})")
            for res in results:
                errors, notes = res.failures()  # a best-path baseline timing out as designed is a note
                for e in errors + [f"note: {n}" for n in notes]:
                    out.print(f"{res.scenario} @ {res.kernel}: {e}", highlight=False, markup=False, soft_wrap=True)
    incomplete_reps = any(not r.completed for res in results for r in res.repetitions)
    if complete and (failed or incomplete_reps):
        raise typer.Exit(1)


def _cell_results(db: str | None, jobs: list[Any]) -> list[Any]:
    """The stored runs of a campaign's cells, scenario-major and kernel-minor as submitted (suite.summary_rows' order)."""
    from ..errors import LabError
    from ..store import open_store

    store = open_store(db, create=False)
    order: dict[str, tuple[int, int]] = {}
    kernels: list[Any] = []
    for j in jobs:
        si = int(j.args["key"].split("/")[1])
        if j.args["kernel"] not in kernels:
            kernels.append(j.args["kernel"])
        order.setdefault(j.args["cell"], (si, kernels.index(j.args["kernel"])))
    results = []
    for cell in sorted(order, key=order.__getitem__):
        try:
            results.append(store.load_result(cell))
        except LabError:
            continue  # a cell none of whose jobs stored anything (every one failed)
    return results

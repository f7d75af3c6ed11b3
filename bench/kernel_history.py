"""Proof on real kernels: the scheduler suite over many Debian kernels, its history by kernel and the change points.

Runs `mptcplab suite run` for the chosen cases on every kernel, a few kernels
at a time (one QEMU guest each, their repetitions interleaved), each chunk
holding /tmp/mptcplab-heavy.lock only while it measures, so other work on the
shared machine runs between chunks. Every chunk is stored in one results
database under one label; a chunk whose runs are already stored is skipped,
so the benchmark resumes where it stopped (Ctrl-C, a dead guest, the end of a
session). `--again K` runs kernel K a second time, as separate runs, for the
false-alarm check (`history --by run` over two runs of one kernel must find
no change point).

At the end (or with --analyse-only) it prints, per case and metric, the
series by kernel version and every change point with its evidence, as
Markdown ready for docs/findings.md, and the wall time of the measurement.

With `--flavour uml` the kernels are Debian source releases (6.1.176, 6.12.117,
7.3.4, ...): each missing one is built as a User-Mode Linux kernel through
`mptcplab kernel build VERSION --flavour uml` (under the heavy lock; the build
time is printed), and the suite runs on VERSION-uml in simulated time (time
travel): wire backend, 10 seeded repetitions, every kernel of a chunk at once
(one UML per core; results do not depend on load), repetition i of every
kernel booted with the same seed. The analysis then adds, for each pair of
adjacent kernels, the paired comparison of their per-repetition values
(Wilcoxon signed-rank over repetition-by-repetition differences).

Usage:
  python bench/kernel_history.py --db /var/cache/mptcplab/kernel-history.db \
      [--kernels 6.1.176,6.12.43,...] [--case simult-balanced ...] [--repeat 5] [--batch 1] [--again 6.18.15]
      [--order shuffled|version] [--seed N]
  python bench/kernel_history.py --db ... --analyse-only > findings-part.md
  python bench/kernel_history.py --flavour uml --db /var/cache/mptcplab/kernel-history-uml.db \
      --kernels 6.1.176,6.12.117,7.3.4 --case rtt-ratio-20 ...
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from heavy import HEAVY_LOCK, heavy_lock  # bench/heavy.py: the shared heavy-work lock

from mptcplab.analysis.kernel_history import history_by_kernel
from mptcplab.errors import UsageError
from mptcplab.store import RunFilter, open_store
from mptcplab.metrics import baseline_metric, main_metric
from mptcplab.suite import suite_cases

#: 12 runnable kernels from 6.1 to 7.3: two consecutive 6.12.x Debian releases (6.12.85 -> 6.12.86),
#: the 6.12 series' ends, and 6.16 -> 6.17 -> 6.18 -> 7.2 -> 7.3 from trixie-backports and sid
DEFAULT_KERNELS = ["6.1.176", "6.12.43", "6.12.85", "6.12.86", "6.12.117", "6.16.12", "6.17.13", "6.18.5", "6.18.15",
                   "7.2.6", "7.2.13", "7.3.4"]
#: the Debian source releases the archive serves (kernel list --sources), 6.1 -> 7.3, for --flavour uml
DEFAULT_SOURCES = ["6.1.170", "6.1.176", "6.12.95", "6.12.107", "6.12.117", "7.2.6", "7.2.9", "7.2.11", "7.2.12",
                   "7.2.13", "7.3.4"]
MPTCPLAB = [str(Path(sys.executable).parent / "mptcplab")]  # the venv's console script
#: flavour -> (default link backend, default repetitions, default kernels at once, default kernel list)
FLAVOURS = {"qemu": ("netem", 5, 1, DEFAULT_KERNELS), "uml": ("wire", 10, 0, DEFAULT_SOURCES)}


def metrics_for(case: str) -> list[str]:
    """The metrics the benchmark reads for suite case `case`: its kind's main and baseline metrics
    (metrics.METRICS_BY_KIND: rr p99 and p50, so a p99 step shows whether it is the tail alone), completion time
    for bulk (the simult_flows selftests' own measure), backup_share when a path has a backup endpoint."""
    from mptcplab.scenario import load_scenario
    scenario = load_scenario(case)  # a built-in scenario, by name
    kind = scenario.workload.kind
    names = list(dict.fromkeys([main_metric(kind), baseline_metric(kind)]))
    if kind == "bulk":
        names.append("completion_s")
    if scenario.has_backup_endpoint():
        names.append("backup_share")
    return names


def stored_runs(db: str, label: str) -> dict[tuple[str, str], int]:
    """(case, kernel release) -> completed non-warm-up repetitions already stored under `label`."""
    store = open_store(db)
    have: dict[tuple[str, str], int] = {}
    for r in store.list_runs(RunFilter(label=label)):
        have[(r.scenario, r.kernel)] = have.get((r.scenario, r.kernel), 0) + r.repetitions
    return have


def release_of(version: str) -> str:
    """The cached kernel's release for a version name (6.12.85 -> 6.12.85+deb12-cloud-amd64; 6.1.176-uml itself)."""
    from mptcplab.kernels.catalog import resolve
    return resolve(version).release


def build_uml(versions: list[str]) -> list[str]:
    """Build every Debian source release in `versions` that has no VERSION-uml kernel in the cache yet
    (`mptcplab kernel build VERSION --flavour uml` under the heavy lock), print each build's time on stderr,
    and return the kernels' names (VERSION-uml). A failed build ends the benchmark (exit 3)."""
    from mptcplab.kernels.catalog import cached
    have = {k.release: k for k in cached()}
    names = []
    for v in versions:
        name = f"{v}-uml"
        names.append(name)
        if name not in have:
            print(f"# building {name} (waits for {HEAVY_LOCK})", file=sys.stderr, flush=True)
            t0 = time.monotonic()
            rc = subprocess.run(["flock", HEAVY_LOCK, *MPTCPLAB, "kernel", "build", v, "--flavour", "uml"]).returncode
            if rc != 0:
                print(f"error: building {name} failed (exit {rc}) — see its build log under "
                      f"/var/cache/mptcplab/builds, fix it and rerun", file=sys.stderr)
                raise SystemExit(3)
            print(f"# built {name} in {(time.monotonic() - t0) / 60:.1f} min wall including the lock wait",
                  file=sys.stderr)
        from mptcplab.kernels.catalog import resolve
        info = resolve(name).build  # its build.json
        if info and Path(info).is_file():
            b = json.loads(Path(info).read_text())
            print(f"# {name}: {b.get('source')}, make {b.get('make_s')} s ({b.get('jobs')} jobs, "
                  f"compiled {b.get('compiled')}) at {b.get('built_at')}", file=sys.stderr)
    return names


def measure(args: argparse.Namespace, kernels: list[str], label: str) -> float:
    """Run every missing (case, kernel) chunk; returns the wall time spent measuring (s)."""
    releases = {k: release_of(k) for k in kernels}
    spent = 0.0
    have = stored_runs(args.db, label)
    missing = {k: tuple(c for c in args.case if have.get((c, releases[k]), 0) < args.repeat) for k in kernels}
    done = [k for k in kernels if not missing[k]]
    if done:
        print(f"# {label}: {', '.join(done)}: every case stored, skipped", file=sys.stderr)
    # kernels missing the same cases measure together, so a kernel already measured is never measured twice
    groups: dict[tuple[str, ...], list[str]] = {}
    for k in kernels:
        if missing[k]:
            groups.setdefault(missing[k], []).append(k)
    work = []
    for cases_missing, group in groups.items():
        step = args.batch or len(group)  # 0: every kernel at once
        work += [(group[i:i + step], list(cases_missing)) for i in range(0, len(group), step)]
    for batch, cases in work:
        per_chunk = args.cases_per_chunk or len(cases)  # 0: every case in one chunk
        for j in range(0, len(cases), per_chunk):
            chunk = cases[j:j + per_chunk]
            cmd = [*MPTCPLAB, "suite", "run", "--kernels", ",".join(batch), "--repeat", str(args.repeat),
                   "--link-backend", args.link_backend, "--label", label, "--db", args.db]
            for c in chunk:
                cmd += ["--case", c]
            print(f"# {label}: {', '.join(batch)} x {', '.join(chunk)}", file=sys.stderr, flush=True)
            with heavy_lock():  # the time spent measuring, not waiting for the lock
                t0 = time.monotonic()
                rc = subprocess.run(cmd).returncode  # exit 1 = a regression or a failed repetition: data, go on
                spent += time.monotonic() - t0
            if rc not in (0, 1):
                print(f"# chunk exited {rc}: its stored repetitions are kept; rerun to resume", file=sys.stderr)
    return spent


def analyse(db: str, cases: list[str], label: str) -> str:
    """Markdown: per case and metric the series by kernel version and its change points."""
    out = [f"Store `{db}`, label `{label}`.", ""]
    found = []
    for case, metric, hist in histories(open_store(db), cases, lambda case: RunFilter(label=label)):
        if isinstance(hist, str):  # a case with no stored run yet: say so
            out.append(f"- {case} / {metric}: {hist}")
            continue
        series = ", ".join(f"{p.version}: {p.median:.4g}" for p in hist.points)
        out.append(f"- **{case}** / {metric} ({len(hist.points)} kernels, n={min((p.n for p in hist.points), default=0)}"
                   f"..{max((p.n for p in hist.points), default=0)}): {series}")
        for cp in hist.change_points:
            found.append((case, metric, cp))
            out.append(f"  - change point {cp.before_version} -> {cp.after_version}: {cp.verdict} {cp.change:+.1%}")
        for note in hist.notes:
            out.append(f"  - note: {note}")
    out += ["", f"Change points found: {len(found)}.", ""]
    if found:
        out += ["| kernel pair | case | metric | median before -> after | change [95% CI] | p | verdict | reproduce |",
                "|---|---|---|---|---|---|---|---|"]
        for case, metric, cp in found:
            out.append(f"| {cp.before_version} -> {cp.after_version} | {case} | {metric} | {cp.median_before:.4g} -> "
                       f"{cp.median_after:.4g} (n {cp.n_before}, {cp.n_after}) | {cp.change:+.1%} [{cp.ci95[0]:+.1%}, "
                       f"{cp.ci95[1]:+.1%}] | {cp.p_value:.2g} | {cp.verdict} | `mptcplab suite run --case {case} "
                       f"--kernels {cp.before_version},{cp.after_version} --repeat 5 --link-backend netem` |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", required=True, help="results database (SQLite path or URL); resumable")
    ap.add_argument("--flavour", choices=tuple(FLAVOURS), default="qemu",
                    help="qemu (default): Debian's packaged kernels in QEMU guests; uml: Debian source releases built "
                         "as User-Mode Linux kernels, run in simulated time (wire backend, 10 repetitions, every "
                         "kernel of a chunk at once, paired by repetition)")
    ap.add_argument("--kernels", help="comma-separated kernel versions (default: 12 Debian kernels; with --flavour "
                                      "uml: the Debian source releases from 6.1 to 7.3)")
    ap.add_argument("--case", action="append", help="suite case (repeatable; default: every quick case)")
    ap.add_argument("--repeat", type=int, help="repetitions per case and kernel (default 5; uml: 10)")
    ap.add_argument("--batch", type=int,
                    help="kernels booted at once, their repetitions interleaved, 0 for all (uml default 0: results do "
                         "not depend on load; qemu default 1, the condition the --again "
                         "false-alarm runs are measured in: on 2 cores a batch of 2 took as long as two kernels one "
                         "after the other, and raised a guest's rr p99 latency by up to a third)")
    ap.add_argument("--order", choices=("shuffled", "version"), default="shuffled",
                    help="the order kernels are measured in: shuffled (default), so that drift over time and the batch "
                         "partner are not confounded with the version order the change points are looked for in")
    ap.add_argument("--seed", type=int, default=1, help="the shuffle's seed (the same seed gives the same order)")
    ap.add_argument("--cases-per-chunk", type=int, default=3,
                    help="cases per locked chunk (each chunk boots its guests; 0: all in one chunk)")
    ap.add_argument("--link-backend", help="one emulator for every kernel (default netem: cheapest under TCG; "
                                           "uml: wire, as netem keeps packets in exact step with infinitely fast CPUs)")
    ap.add_argument("--label", default="kernel-history")
    ap.add_argument("--again", help="a kernel to run a second time, as separate runs, for the false-alarm check")
    ap.add_argument("--analyse-only", action="store_true")
    ap.add_argument("--beside", type=Path, help="an exported TCG history (docs/data/kernel-history-*.json.gz): print "
                                                "each case's medians by version from both, side by side")
    ap.add_argument("--nice", type=int, default=-15,
                    help="raise the measurement's CPU priority (QEMU's vCPU threads inherit it): under TCG a guest's "
                         "packets wait whenever another process takes its core, so other work on a shared machine "
                         "would otherwise show up as a kernel's slowness (root only; 0 to leave it)")
    args = ap.parse_args()
    backend, repeat, batch, default_kernels = FLAVOURS[args.flavour]
    args.link_backend = args.link_backend or backend
    args.repeat = args.repeat or repeat
    args.batch = batch if args.batch is None else args.batch
    if args.nice:
        os.nice(args.nice)
    args.case = args.case or [c.name for c in suite_cases("quick")]
    kernels = [k for k in (args.kernels or ",".join(default_kernels)).split(",") if k]
    if args.flavour == "uml" and not args.analyse_only:  # build what is missing, then name them as built
        kernels = build_uml(kernels)
        args.again = build_uml([args.again])[0] if args.again else None
    elif args.flavour == "uml":
        kernels = [f"{k}-uml" for k in kernels]
        args.again = f"{args.again}-uml" if args.again else None
    if args.order == "shuffled":  # neither time nor the batch partner lines up with the version order
        random.Random(args.seed).shuffle(kernels)
    t0 = time.monotonic()
    spent = 0.0
    if not args.analyse_only:
        if args.again:  # the false-alarm pair brackets the series in time: one run first, one last
            spent += measure(args, [args.again], f"{args.label}-again-a")
        spent += measure(args, kernels, args.label)
        if args.again:
            spent += measure(args, [args.again], f"{args.label}-again-b")
    print(analyse(args.db, args.case, args.label))
    if args.flavour == "uml":
        print(analyse_paired(args.db, args.case, args.label))
    if args.again:
        print(analyse_again(args.db, args.case, f"{args.label}-again"))
    if args.beside:
        print(analyse_beside(args.db, args.case, args.label, args.beside))
    if args.flavour == "uml":
        where = "UML kernels in simulated time (time travel, inf-cpu)"
    else:
        from mptcplab.executors.qemu.accel import choose
        where = f"guests under {choose().accel.upper()}"
    print(f"\nMeasuring took {spent / 60:.1f} min of {(time.monotonic() - t0) / 60:.1f} min wall "
          f"({os.cpu_count()} cores, {where}).")
    return 0


@functools.lru_cache(maxsize=2)
def exported_runs(export: Path) -> list[dict[str, Any]]:
    """The runs of an exported history (`mptcplab export --format json`, gzipped or not), read once per file."""
    import gzip

    opener = gzip.open if export.suffix == ".gz" else open
    with opener(export, "rt") as f:
        return json.load(f)


def tcg_medians(export: Path, case: str, metric: str, label: str = "kernel-history") -> dict[str, tuple[float, int]]:
    """upstream version -> (median, n) of `metric` over the completed repetitions of `case` in an exported history
    (`mptcplab export --format json`, gzipped or not), runs labelled `label` only."""
    import statistics

    from mptcplab.analysis.kernel_history import run_version

    values: dict[str, list[float]] = {}
    for r in exported_runs(export):
        if r["scenario"] != case or r.get("label") != label:
            continue
        version = run_version(r["kernel"], r.get("environment") or {})
        for rep in r["repetitions"]:  # a metric is a repetition's field or in its `metrics` mapping
            value = rep.get(metric, (rep.get("metrics") or {}).get(metric))
            if rep.get("status") == "completed" and value is not None:
                values.setdefault(version, []).append(value)
    return {v: (statistics.median(x), len(x)) for v, x in values.items() if x}


def analyse_beside(db: str, cases: list[str], label: str, export: Path) -> str:
    """Markdown: per case, its main metric by upstream version in the UML history (`db`, `label`) and in an
    exported TCG history, each also relative to its side's first (oldest) version, and UML / TCG."""
    from mptcplab.analysis.changepoints import version_key

    store = open_store(db)
    out = ["", "## Beside the TCG history", "",
           "| case | metric | version | TCG median (n) | TCG vs its first | UML median (n) | UML vs its first | UML / TCG |",
           "|---|---|---|---|---|---|---|---|"]
    for case in cases:
        metric = metrics_for(case)[0]
        tcg = tcg_medians(export, case, metric)
        try:
            uml = {p.version: (p.median, p.n) for p in history_by_kernel(store, case, metric, RunFilter(label=label)).points}
        except UsageError:
            uml = {}
        versions = sorted(set(tcg) | set(uml), key=version_key)
        t0 = next((tcg[v][0] for v in versions if v in tcg), None)
        u0 = next((uml[v][0] for v in versions if v in uml), None)
        for v in versions:
            t, u = tcg.get(v), uml.get(v)
            cells = [f"{t[0]:.4g} ({t[1]})" if t else "", f"{t[0] / t0 - 1:+.1%}" if t and t0 else "",
                     f"{u[0]:.4g} ({u[1]})" if u else "", f"{u[0] / u0 - 1:+.1%}" if u and u0 else "",
                     f"{u[0] / t[0]:.3f}" if t and u else ""]
            out.append(f"| {case} | {metric} | {v} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def analyse_again(db: str, cases: list[str], prefix: str) -> str:
    """The false-alarm check: the two separate runs of one kernel (labels PREFIX-a and PREFIX-b) as a series by run."""
    store = open_store(db)

    def both_runs(case: str) -> RunFilter | str:
        runs = [r.uid for tag in ("a", "b") for r in store.list_runs(RunFilter(scenario=case, label=f"{prefix}-{tag}"))]
        return RunFilter(run_ids=runs) if len(runs) >= 2 else f"{len(runs)} run(s) stored, need 2"

    out = ["", "## False-alarm check: one kernel, two separate runs", ""]
    for case, metric, hist in histories(store, cases, both_runs, by="run"):
        if isinstance(hist, str):
            out.append(f"- {case} / {metric}: {hist}")
            continue
        pts = ", ".join(f"{p.median:.4g} (n={p.n})" for p in hist.points)
        same = len(hist.points) == 2 and hist.points[0].values == hist.points[1].values
        out.append(f"- {case} / {metric}: {pts}: {len(hist.change_points)} change point(s)"
                   + ("; every repetition identical to the last digit stored" if same else ""))
    return "\n".join(out)


def paired_rows(store: Any, case: str, metric: str, label: str) -> list[str] | str:
    """Markdown rows comparing the kernels of `case` pairwise by repetition (seeded runs: repetition i of every kernel
    saw the same random draws): each adjacent pair in version order, and the first kernel against each later one.

    Per pair: the medians, the median of the per-repetition relative differences (after / before - 1) with a
    percentile-bootstrap 95% interval over the pairs (10 000 resamples, seed 0), how many repetitions differ, and
    the two-sided Wilcoxon signed-rank p on the differences (scipy.stats.wilcoxon; exact for n <= 50 without
    ties). Runs whose repetitions did not all complete cannot be paired by index: a sentence says so instead.
    """
    import numpy as np
    from scipy.stats import wilcoxon

    hist = history_by_kernel(store, case, metric, RunFilter(label=label))
    pts = hist.points
    pairs = [(pts[i], pts[i + 1]) for i in range(len(pts) - 1)] + [(pts[0], p) for p in pts[2:]]
    rows = []
    for before, after in pairs:
        x, y = np.array(before.values), np.array(after.values)
        if len(before.runs) != 1 or len(after.runs) != 1 or len(x) != len(y):
            rows.append(f"| {before.version} -> {after.version} | {case} | {metric} | cannot pair: runs {len(before.runs)}"
                        f", {len(after.runs)}, repetitions {len(x)}, {len(y)} |  |  |  |")
            continue
        rel = y / x - 1
        boot = np.random.default_rng(0).choice(rel, size=(10000, len(rel)))
        lo, hi = np.percentile(np.median(boot, axis=1), [2.5, 97.5])
        differ = int(np.sum(y != x))
        p = f"{wilcoxon(y - x).pvalue:.2g}" if differ else "identical"
        rows.append(f"| {before.version} -> {after.version} | {case} | {metric} | {np.median(x):.4g} -> {np.median(y):.4g}"
                    f" | {np.median(rel):+.2%} [{lo:+.2%}, {hi:+.2%}] | {differ}/{len(x)} | {p} |")
    return rows


def analyse_paired(db: str, cases: list[str], label: str) -> str:
    """Markdown: the paired comparisons (paired_rows) of every case and metric."""
    store = open_store(db)
    out = ["", "## Paired by repetition (same seed, same repetition index)", "",
           "| kernels | case | metric | median before -> after | paired change [95% CI] | repetitions that differ "
           "| Wilcoxon p |", "|---|---|---|---|---|---|---|"]
    for case in cases:
        for metric in metrics_for(case):
            try:
                out.extend(paired_rows(store, case, metric, label))
            except UsageError as e:
                out.append(f"| | {case} | {metric} | {getattr(e, 'message', e)} | | | |")
    return "\n".join(out)


def histories(store: Any, cases: list[str], runs_of: Callable[[str], RunFilter | str],
              by: str = "kernel") -> Iterator[tuple[str, Any, Any]]:
    """(case, metric, its history by `by`, or why there is none) for every case and each of its metrics_for().

    `runs_of(case)` gives the runs to read, or a sentence saying why there are none to read.
    """
    for case in cases:
        runs = runs_of(case)
        for metric in metrics_for(case):
            if isinstance(runs, str):
                yield case, metric, runs
                continue
            try:
                yield case, metric, history_by_kernel(store, case, metric, runs, by=by)
            except UsageError as e:  # no stored run for it yet
                yield case, metric, str(getattr(e, "message", e))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    raise SystemExit(main())

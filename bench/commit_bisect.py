"""Bisect to the commit, timed: the synthetic 16-commit series of Debian 6.12.117 (bench/commit_series.py), each
probe built incrementally in the lab's worktree and run in UML with deterministic time.

Prints, against the issue's targets: the cold setup of the series repository (git init + add + 16 commits),
each step's build (the first build in a new worktree is cold; the others are incremental, target <= 90 s),
each probe's run, and the whole bisect (target <= 15 min), plus whether the bisect named the culprit.

By default the series' kernels are removed from the kernel cache first (the worktree and its build directory
stay), so every step is built again, incrementally from whatever commit the build directory last held: the
honest cost of a bisect on a warm tree. `--keep-builds` measures a rerun that reuses them. Each run uses a new
results database (nothing resumed). Holds /tmp/mptcplab-heavy.lock while it builds and measures.

Usage: python bench/commit_bisect.py [--scenario rtt-ratio-5] [--repeat 8] [--keep-builds] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from commit_series import CACHE, make_series
from heavy import heavy_lock

STEP_TARGET_S = 90.0
TOTAL_TARGET_S = 15 * 60.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="rtt-ratio-5")
    ap.add_argument("--repeat", type=int, default=8)  # paired: 1/2^n must be under alpha 0.01, so 7 or more
    ap.add_argument("--keep-builds", action="store_true", help="reuse the series' kernels already in the cache")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    a = ap.parse_args()
    cli = Path(sys.executable).with_name("mptcplab")
    with heavy_lock():
        t0 = time.monotonic()
        series = make_series()
        setup_wall = time.monotonic() - t0
        reused_series = setup_wall < 5
        if not a.keep_builds:
            for c in series["commits"]:
                for d in (CACHE / "kernels").glob(f"*-{c['hash'][:12]}-uml"):
                    shutil.rmtree(d)
        with tempfile.TemporaryDirectory(prefix="mptcplab-bench-bisect-") as tmp:
            db = Path(tmp) / "bisect.db"
            t1 = time.monotonic()
            proc = subprocess.run([str(cli), "bisect", a.scenario, "--tree", series["repository"], "--good", "series-good",
                                   "--bad", "series-bad", "--repeat", str(a.repeat), "--db", str(db), "--json"],
                                  stdout=subprocess.PIPE, text=True)  # progress goes to stderr as it happens
            total = time.monotonic() - t1
    if proc.returncode not in (0, 1):
        print(f"error: the bisect exited {proc.returncode} (see its messages above)", file=sys.stderr)
        return 1
    doc = json.loads(proc.stdout)
    if a.json:  # first, so that the numbers survive whatever follows
        a.json.write_text(json.dumps({"series": series, "total_s": total, "report": doc}, indent=2) + "\n")
    steps = doc["steps"]
    builds = [(s["upstream"], s["build_s"]) for s in steps if s["build_s"] is not None]
    cold = builds[0] if builds and steps and builds[0][0] == steps[0]["upstream"] else None
    incremental = [b for b in builds if b is not cold]
    runs = [(s["upstream"], s["run_s"]) for s in steps if s["run_s"] is not None]
    found = doc.get("first_bad_commit") == series["culprit"]
    lines = [
        f"commit bisect of the synthetic series ({len(series['commits'])} commits, culprit #{11} {series['culprit'][:12]}),"
        f" {a.scenario}, {a.repeat} repetitions per probe, {os.cpu_count()} CPUs",
        f"  series setup (git init + add + 16 commits): {series['setup_s']:.0f} s" + (" (made earlier, reused now)" if reused_series else ""),
    ]
    order = {s["upstream"]: i for i, s in enumerate(sorted(steps, key=lambda s: doc["commits"].index(s["commit"])))}
    if cold:
        lines.append(f"  first build in the lab's worktree (worktree add + full build): {cold[1]:.0f} s")
    for name, b in incremental:
        lines.append(f"  incremental build of {name}: {b:.0f} s = {b / STEP_TARGET_S:.2f} x the 90 s target")
    if incremental:
        worst = max(b for _, b in incremental)
        lines.append(f"  incremental step, worst: {worst:.0f} s = {worst / STEP_TARGET_S:.2f} x target; "
                     f"mean {sum(b for _, b in incremental) / len(incremental):.0f} s")
    for name, r in runs:
        lines.append(f"  run of {name} ({a.repeat} repetitions in UML): {r:.1f} s")
    lines.append(f"  whole bisect: {total:.0f} s = {total / TOTAL_TARGET_S:.2f} x the 15 min target ({len(steps)} kernels tested)")
    lines.append(f"  first bad commit: {doc.get('first_bad_commit')} {doc.get('first_bad_subject')} -> "
                 + ("the culprit, as planted" if found else "NOT the planted culprit"))
    for s in sorted(steps, key=lambda s: order[s["upstream"]]):
        vg = s.get("vs_good") or {}
        median = "-" if s["median"] is None else f"{s['median']:.3f}"
        lines.append(f"    {s['upstream']} {s['role']:9s} median {median} "
                     + (f"vs good {vg['change'] * 100:+.1f}% p {vg['p_value']:.4f} " if vg else "")
                     + f"{s['classified']:12s} {(s.get('subject') or '')[:50]}")
    print("\n".join(lines))
    return 0 if found else 1


if __name__ == "__main__":
    sys.exit(main())

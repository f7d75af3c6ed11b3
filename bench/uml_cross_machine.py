"""Deterministic time across machines: two exported UML histories of the same kernels, cases and seeds, measured
on two machines (each with kernels built there), compared repetition by repetition against the first (the
reference). Reads files only; runs nothing.

    python bench/uml_cross_machine.py docs/data/kernel-history-uml-2026-12-06.json.gz \
        docs/data/kernel-history-uml-2026-12-06-machine2.json.gz

Prints, per case: the repetitions both hold (same scenario, kernel and repetition index, so the same seed and
start phase), how many give the same completion time to the µs, how many lie within 2 µs and 100 µs, the
median and largest difference (µs), the largest relative difference, and the largest difference between the two
machines' per-kernel medians of the case's main metric over those repetitions (%). No thresholds: it prints.
"""
from __future__ import annotations

import argparse
import gzip
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

#: the main metric of a case whose workload is not bulk (bulk cases: goodput_mbps)
MAIN = {"rr-asymmetric-rtt": "latency_p99_ms"}


def completed(export: Path) -> dict[tuple[str, str, int], dict[str, Any]]:
    """(scenario, kernel, repetition index) -> the repetition, for every completed repetition of an export
    (`mptcplab export --format json`, gzipped or not)."""
    opener = gzip.open if export.suffix == ".gz" else open
    with opener(export, "rt") as f:
        runs = json.load(f)
    return {(r["scenario"], r["kernel"], rep["index"]): rep for r in runs for rep in r["repetitions"]
            if rep.get("status", "completed") == "completed"}


def main_value(rep: dict[str, Any], case: str) -> float:
    """The case's main metric in one repetition: a field of the repetition or of its `metrics` mapping."""
    name = MAIN.get(case, "goodput_mbps")
    value = rep.get(name, (rep.get("metrics") or {}).get(name))
    if value is None:
        raise SystemExit(f"error: a repetition of {case} has no {name}")
    return float(value)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("reference", type=Path, help="the first machine's export")
    ap.add_argument("other", type=Path, help="the second machine's export")
    args = ap.parse_args()
    ref, other = completed(args.reference), completed(args.other)
    both = sorted(set(ref) & set(other))
    print(f"repetitions: reference {len(ref)}, other {len(other)}, in both {len(both)}")
    print("| case | in both | same to the µs | within 2 µs | within 100 µs | median diff (µs) | max diff (µs) "
          "| max diff (%) | max per-kernel median diff (%) |")
    print("|---|---|---|---|---|---|---|---|---|")
    by_case: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for case, kernel, index in both:
        by_case[case].append((kernel, index))
    for case, keys in sorted(by_case.items()):
        diffs = [abs(other[(case, k, i)]["completion_s"] - ref[(case, k, i)]["completion_s"]) * 1e6 for k, i in keys]
        rel = [abs(other[(case, k, i)]["completion_s"] / ref[(case, k, i)]["completion_s"] - 1) * 100 for k, i in keys]
        medians = []
        for kernel in sorted({k for k, _ in keys}):
            idx = [i for k, i in keys if k == kernel]
            a = statistics.median(main_value(ref[(case, kernel, i)], case) for i in idx)
            b = statistics.median(main_value(other[(case, kernel, i)], case) for i in idx)
            medians.append(abs(b / a - 1) * 100)
        print(f"| {case} | {len(diffs)} | {sum(d == 0 for d in diffs)} | {sum(d <= 2 for d in diffs)} "
              f"| {sum(d <= 100 for d in diffs)} | {statistics.median(diffs):.1f} | {max(diffs):.0f} | {max(rel):.2f} "
              f"| {max(medians):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

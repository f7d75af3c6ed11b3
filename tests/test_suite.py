"""The scheduler suite, history by kernel with change points, and bisect.

Suite runs move real traffic (run under the heavy-work lock); the history and
bisect tests read stored results: RunResults saved through Store.save_result
with realistic values (a 2 x 20 mbit case near 36 mbit/s, 3% spread), so the
analysis and the search run on exactly what the store gives them and no
guest is booted.
"""
from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

import numpy as np
import pytest

from mptcplab.result import Repetition, RunResult, SubflowResult
from mptcplab.scenario import load_scenario
from mptcplab.store import open_store

from .conftest import cli, cli_in_process, leftovers, requires_root, light

# (release, `uname -v` as the store keeps it): Debian's 6.1 release string hides its upstream 6.1.176
KERNELS = [
    ("6.1.0-50-cloud-amd64", "#1 SMP PREEMPT_DYNAMIC Debian 6.1.176-1 (2026-10-02)"),
    ("6.12.117+deb13-cloud-amd64", "#1 SMP PREEMPT_DYNAMIC Debian 6.12.117-1 (2026-11-01)"),
    ("6.18.15+deb13-cloud-amd64", "#1 SMP PREEMPT_DYNAMIC Debian 6.18.15-1 (2026-11-10)"),
]


def synthetic(scenario: str, kernel: str, uname_v: str, goodputs: list[float], tags: dict[str, str] | None = None,
              started: float | None = None, size: int = 16 << 20) -> RunResult:
    """A finished run as the matrix stores it: one completed repetition per goodput (mbit/s) of a `size`-byte upload."""
    scn = load_scenario(scenario)
    reps = []
    t0 = started or time.time()
    for i, g in enumerate(goodputs):
        completion = size * 8 / (g * 1e6)
        reps.append(Repetition(index=i, completion_s=round(completion, 6), goodput_mbps=round(g, 4), bytes=size, mptcp=True,
                               subflows=[SubflowResult(path=p.name, bytes_sent=size // 2, bytes_acked=size // 2, share=0.5,
                                                       rtt_ms=12.0, rtt_median_ms=12.0, subflows_opened=1) for p in scn.paths],
                               mib={"MPTcpExtMPJoinSynAckRx": 1}, started_at=t0 + i * 5, status="completed"))
    env = {"kernel_release": kernel, "kernel_version": uname_v, "hostname": "lab", "cpu_model": "test cpu", "cpu_count": 2,
           "link_backend": "netem", "tags": dict(tags or {}), "guest": {"accelerator": "tcg"},
           "tcp": {"congestion_control": "cubic"}, "sysctls_client": {"net.ipv4.tcp_congestion_control": "cubic"}}
    return RunResult(run_id=secrets.token_hex(5), scenario=scn.name, scenario_hash=scn.content_hash, kernel=kernel,
                     scheduler="default", backend="netem", repetitions=reps, environment=env, status="completed",
                     started_at=t0, ended_at=t0 + 30)


def noisy(median: float, n: int = 5, cv: float = 0.03, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    return [float(median * (1 + cv * x)) for x in rng.standard_normal(n)]


def store_runs(db: Path, runs: list[RunResult]) -> None:
    store = open_store(str(db))
    for r in runs:
        store.save_result(r, load_scenario(r.scenario).normalized())


# -- suite list / run -----------------------------------------------------------------------------------------
@light
def test_suite_list_names_every_case_with_its_tier_tags_and_check():
    proc = cli("suite", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    cases = json.loads(proc.stdout)
    assert len(cases) >= 24
    for c in cases:
        assert c["tier"] in ("quick", "full") and c["tier"] in c["tags"]
        assert len(c["tags"]) >= 2, f"{c['name']} says only its tier, not what it exercises"
        assert c["description"], c["name"]
    names = {c["name"] for c in cases}
    assert {"simult-balanced", "rtt-ratio-20", "slow-extra-path", "lossy-extra-path", "failover-short", "cellular",
            "three-paths", "four-paths", "upload", "download"} <= names
    quick = json.loads(cli_in_process("suite", "list", "--tag", "quick", "--json").stdout)
    assert quick and all(c["tier"] == "quick" for c in quick) and len(quick) < len(cases)
    table = cli_in_process("suite", "list", "--tag", "rtt")
    assert table.returncode == 0 and "rtt-ratio-5" in table.stdout and "loss-1pct" not in table.stdout
    bad = cli_in_process("suite", "list", "--tag", "no-such-tag")
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and len(bad.stderr.strip().splitlines()) == 1


@light
def test_quick_cases_are_short():
    """Every quick case moves at most ~10 s of traffic (size at the sum of its rates, or its duration)."""
    from mptcplab.suite import load_cases, suite_cases

    for s in load_cases(suite_cases("quick")):
        if s.workload.duration is not None:
            seconds = s.workload.duration
        else:
            rates = sum((p.rate or 2e6) for p in s.paths)
            seconds = s.workload.size * 8 / rates
        assert seconds <= 11, f"{s.name}: about {seconds:.1f} s of traffic"


@requires_root
def test_suite_run_of_two_quick_cases_stores_and_summarises(tmp_path):
    db = tmp_path / "suite.db"
    before = set(leftovers())
    proc = cli("suite", "run", "--case", "three-paths", "--case", "rate-ratio-5", "--repeat", "2",
               "--set", "workload.size=2MiB", "--db", str(db), "--json", timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    assert [r["case"] for r in doc["rows"]] == ["rate-ratio-5", "three-paths"]
    for row in doc["rows"]:
        assert row["n"] == 2 and row["failed"] == 0 and row["median"] > 0
        assert row["ci95"][0] <= row["median"] <= row["ci95"][1]
        assert row["verdict"] is None  # one kernel: nothing to judge against
    # interleaved: the two cases' repetitions alternate in time
    starts = sorted((rep["started_at"], run["scenario"]) for run in doc["runs"] for rep in run["repetitions"])
    order = [name for _, name in starts]
    assert order[0] != order[1] and order[1] != order[2]
    runs = cli("runs", "--db", str(db), "--tag", f"suite={doc['suite']}")
    assert runs.returncode == 0 and "three-paths" in runs.stdout and "rate-ratio-5" in runs.stdout
    table = cli("suite", "run", "--case", "three-paths", "--repeat", "1", "--set", "workload.size=1MiB", "--no-store")
    assert table.returncode == 0, table.stderr[-1000:]
    assert "three-paths" in table.stdout and "median" in table.stdout
    assert set(leftovers()) <= before


@light
def test_suite_run_refuses_bad_input_in_one_line(tmp_path):
    for args in (["--tag", "nope"], ["--case", "nope"], ["--set", "path.nosuch.delay=1ms", "--case", "three-paths"],
                 ["--metric", "nope"], ["--kernels", "9.99.99", "--case", "three-paths"]):
        proc = (cli if args[0] == "--tag" else cli_in_process)("suite", "run", *args, "--no-store")
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


# -- history by kernel -----------------------------------------------------------------------------------------
@light
def test_history_by_kernel_finds_the_injected_step_and_only_it(tmp_path):
    db = tmp_path / "h.db"
    now = time.time()
    # stored newest kernel first, so time order is not version order
    store_runs(db, [synthetic("two-paths", *KERNELS[2], noisy(36.0 * 0.9, seed=3), started=now - 300),
                    synthetic("two-paths", *KERNELS[0], noisy(36.0, seed=1), started=now - 200),
                    synthetic("two-paths", *KERNELS[1], noisy(36.0, seed=2), started=now - 100),
                    synthetic("two-paths", *KERNELS[1], noisy(36.0, seed=4), started=now - 50)])
    proc = cli("history", "two-paths", "--by", "kernel", "--db", str(db), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert [p["name"] for p in doc["points"]] == [k for k, _ in KERNELS]
    assert [p["version"] for p in doc["points"]] == ["6.1.176", "6.12.117", "6.18.15"]
    assert [p["n"] for p in doc["points"]] == [5, 10, 5]  # a kernel's runs pooled
    cps = doc["change_points"]
    assert len(cps) == 1, cps
    cp = cps[0]
    assert (cp["before"], cp["after"]) == (KERNELS[1][0], KERNELS[2][0])
    assert cp["verdict"] == "regressed" and cp["p_value"] < 0.01
    assert cp["ci95"][0] <= cp["change"] <= cp["ci95"][1] and -0.15 < cp["change"] < -0.05
    table = cli_in_process("history", "two-paths", "--by", "kernel", "--db", str(db))
    assert table.returncode == 0 and "regressed" in table.stdout and "6.12.117" in table.stdout
    # the pairwise history by time is still the default
    pairwise = json.loads(cli_in_process("history", "two-paths", "--db", str(db), "--format", "json").stdout)
    assert len(pairwise["points"]) == 4 and "change_points" not in pairwise


@light
def test_history_by_kernel_flat_series_has_no_change_point(tmp_path):
    db = tmp_path / "flat.db"
    store_runs(db, [synthetic("two-paths", k, v, noisy(36.0, seed=10 + i)) for i, (k, v) in enumerate(KERNELS)])
    doc = json.loads(cli("history", "two-paths", "--by", "kernel", "--db", str(db), "--format", "json").stdout)
    assert len(doc["points"]) == 3 and doc["change_points"] == []


@light
def test_two_runs_of_the_same_kernel_give_no_change_point(tmp_path):
    """The false-alarm check: the same kernel measured twice, in two separate runs, one point per run."""
    db = tmp_path / "same.db"
    k, v = KERNELS[1]
    store_runs(db, [synthetic("two-paths", k, v, noisy(36.0, seed=21), started=time.time() - 100),
                    synthetic("two-paths", k, v, noisy(36.0, seed=22))])
    doc = json.loads(cli("history", "two-paths", "--by", "run", "--db", str(db), "--format", "json").stdout)
    assert len(doc["points"]) == 2 and doc["change_points"] == []
    by_kernel = json.loads(cli_in_process("history", "two-paths", "--by", "kernel", "--db", str(db), "--format", "json").stdout)
    assert len(by_kernel["points"]) == 1 and by_kernel["change_points"] == []


@light
def test_history_suite_prints_only_the_change_points(tmp_path):
    db = tmp_path / "suite-h.db"
    runs = []
    for i, (k, v) in enumerate(KERNELS):
        runs.append(synthetic("two-paths", k, v, noisy(18.0 * (0.85 if i == 2 else 1.0), seed=30 + i)))
        runs.append(synthetic("rtt-ratio-5", k, v, noisy(36.0, seed=40 + i)))
    store_runs(db, runs)
    proc = cli("history", "--suite", "--db", str(db))
    assert proc.returncode == 0, proc.stderr
    assert "two-paths" in proc.stdout and "rtt-ratio-5" not in proc.stdout.split("note:")[0]
    doc = json.loads(cli_in_process("history", "--suite", "--db", str(db), "--format", "json").stdout)
    found = {h["scenario"]: len(h["change_points"]) for h in doc}
    assert found == {"two-paths": 1, "rtt-ratio-5": 0}
    bad = cli_in_process("history", "--by", "kernel", "--db", str(db))
    assert bad.returncode == 2 and bad.stderr.startswith("error: ")


@light
def test_a_kernel_history_travels_as_an_export(tmp_path):
    """export --format json (gzipped) of one store, imported into another, gives the same series and change
    point (a benchmark's findings can be read again on any machine); importing twice adds nothing; a file that
    is not runs is one line."""
    import gzip

    src = tmp_path / "src.db"
    store_runs(src, [synthetic("two-paths", k, v, noisy(18.0 * (0.85 if i == 2 else 1.0), seed=80 + i), tags={"x": "1"})
                     for i, (k, v) in enumerate(KERNELS)])
    exported = tmp_path / "history.json"
    assert cli_in_process("export", "--format", "json", "--db", str(src), "-o", str(exported)).returncode == 0
    packed = tmp_path / "history.json.gz"
    packed.write_bytes(gzip.compress(exported.read_bytes()))
    dst = tmp_path / "dst.db"
    first = cli_in_process("import", str(packed), "--db", str(dst))
    assert first.returncode == 0 and first.stdout == f"imported 3 runs from 1 file: 15 new repetitions into {dst}\n", first.stdout
    again = cli_in_process("import", str(packed), "--db", str(dst), "--verbose")  # one line per run, then the summary
    assert again.returncode == 0 and again.stdout.count(": 0 new of 5 repetitions") == 3, again.stdout
    assert again.stdout.splitlines()[-1] == f"imported 3 runs from 1 file: 0 new repetitions (3 of the runs were stored " \
        f"in full already) into {dst}", again.stdout
    a, b = (json.loads(cli_in_process("history", "two-paths", "--by", "kernel", "--db", str(d), "--format", "json").stdout)
            for d in (src, dst))
    assert [(p["version"], p["values"]) for p in a["points"]] == [(p["version"], p["values"]) for p in b["points"]]
    assert len(b["change_points"]) == 1 and b["change_points"] == a["change_points"]
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    bad = cli_in_process("import", str(empty), "--db", str(dst))
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "no run" in bad.stderr, bad.stderr


@light
def test_history_suite_judges_each_case_by_its_main_metric(tmp_path):
    """An rr case is judged by its p99 latency, as suite run judges it: a latency step with flat goodput is a
    change point; --metric still sets one metric for every case."""
    db = tmp_path / "suite-rr.db"
    runs = []
    for i, (k, v) in enumerate(KERNELS):
        run = synthetic("rr-asymmetric-rtt", k, v, noisy(1.4, seed=50 + i))
        for rep, lat in zip(run.repetitions, noisy(17.0 * (1.3 if i == 2 else 1.0), seed=60 + i)):
            rep.metrics["latency_p99_ms"] = lat
        run.environment["guest_cpu"] = {"per_repetition": [{"busy": 0.2, "busiest_cpu": 0.25}] * 5,
                                        "qemu_host_cpu": [0.3] * 5, "saturated": False}
        runs += [run, synthetic("two-paths", k, v, noisy(18.0, seed=70 + i))]
    store_runs(db, runs)
    doc = json.loads(cli_in_process("history", "--suite", "--db", str(db), "--format", "json").stdout)
    found = {h["scenario"]: (h["metric"], len(h["change_points"])) for h in doc}
    assert found == {"rr-asymmetric-rtt": ("latency_p99_ms", 1), "two-paths": ("goodput_mbps", 0)}, found
    assert doc[0]["change_points"][0]["verdict"] == "regressed"
    # show says what an rr run is judged by, and how busy its guest was, without --json
    shown = cli_in_process("show", runs[-2].run_id, "--db", str(db))
    assert shown.returncode == 0 and "latency_p99_ms: median" in shown.stdout, shown.stdout
    assert "guest CPU: busy 0.20 (busiest vCPU 0.25)" in shown.stdout and "QEMU on the host 0.30" in shown.stdout
    one = json.loads(cli_in_process("history", "--suite", "--metric", "goodput_mbps", "--db", str(db), "--format", "json").stdout)
    assert {h["scenario"]: (h["metric"], len(h["change_points"])) for h in one} == \
        {"rr-asymmetric-rtt": ("goodput_mbps", 0), "two-paths": ("goodput_mbps", 0)}
    # a metric a case does not measure: one line for one scenario, a note naming the cases left out for --suite
    missing = cli_in_process("history", "two-paths", "--by", "kernel", "--metric", "latency_p99_ms", "--db", str(db))
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1, missing.stderr
    assert "has the metric latency_p99_ms" in missing.stderr and "goodput_mbps" in missing.stderr
    some = cli_in_process("history", "--suite", "--metric", "latency_p99_ms", "--db", str(db))
    assert some.returncode == 0 and "do not measure latency_p99_ms, left out: two-paths" in some.stdout, some.stdout


# -- bisect ------------------------------------------------------------------------------------------------------
def fake_cache(root: Path, releases: list[tuple[str, str]]) -> None:
    """A kernel cache listing these (release, package version) entries; no image: booting one would fail loudly."""
    from mptcplab.kernels.catalog import Kernel

    for release, version in releases:
        d = root / "kernels" / release
        d.mkdir(parents=True)
        (d / "kernel.json").write_text(Kernel(release=release, version=version, origin="test", image=str(d / "vmlinuz")).model_dump_json())


BISECT_KERNELS = [("6.1.0-50-cloud-amd64", "6.1.176-1"), ("6.12.43+deb12-cloud-amd64", "6.12.43-1~bpo12+1"),
                  ("6.12.117+deb13-cloud-amd64", "6.12.117-1"), ("6.18.15+deb13-cloud-amd64", "6.18.15-1~bpo13+1"),
                  ("7.2.12+deb13-cloud-amd64", "7.2.12-1")]


@light
def test_bisect_finds_the_first_bad_release_from_stored_points(tmp_path):
    from mptcplab.bisect import bisect_id

    cache = tmp_path / "cache"
    fake_cache(cache, BISECT_KERNELS)
    db = tmp_path / "b.db"
    scn = load_scenario("two-paths")
    bid = bisect_id(scn, BISECT_KERNELS[0][0], BISECT_KERNELS[-1][0], "goodput_mbps")
    runs = []
    for i, (release, version) in enumerate(BISECT_KERNELS):
        median = 18.0 * (0.9 if i >= 3 else 1.0)  # 6.18.15 is the first bad release
        runs.append(synthetic("two-paths", release, f"#1 SMP Debian {version}", noisy(median, seed=50 + i), tags={"bisect": bid}))
    store_runs(db, runs)
    env = {**os.environ, "MPTCPLAB_CACHE": str(cache)}
    proc = cli("bisect", "two-paths", "--good", "6.1", "--bad", "7.2", "--cached", "--db", str(db), "--json", env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    assert doc["bisect"] == bid and doc["outcome"] == "found"
    assert doc["first_bad"] == "6.18.15+deb13-cloud-amd64" and doc["last_good"] == "6.12.117+deb13-cloud-amd64"
    tested = {s["release"]: s for s in doc["steps"]}
    assert set(tested) == {BISECT_KERNELS[i][0] for i in (0, 2, 3, 4)}  # 6.12.43 was not needed
    assert all(s["measured"] == 0 and s["reused"] == 5 for s in tested.values())  # nothing re-run: every point came from the store
    assert tested["6.18.15+deb13-cloud-amd64"]["vs_good"]["verdict"] == "regressed"
    assert tested["6.12.117+deb13-cloud-amd64"]["vs_bad"]["verdict"] == "regressed"
    table = cli_in_process("bisect", "two-paths", "--good", "6.1", "--bad", "7.2", "--cached", "--db", str(db), env=env)
    assert table.returncode == 0 and "first bad release: 6.18.15+deb13-cloud-amd64" in table.stdout


@light
def test_bisect_says_when_bad_is_not_worse_and_refuses_bad_ranges(tmp_path):
    from mptcplab.bisect import bisect_id

    cache = tmp_path / "cache"
    fake_cache(cache, BISECT_KERNELS)
    db = tmp_path / "b.db"
    scn = load_scenario("two-paths")
    bid = bisect_id(scn, BISECT_KERNELS[0][0], BISECT_KERNELS[-1][0], "goodput_mbps")
    store_runs(db, [synthetic("two-paths", BISECT_KERNELS[i][0], "", noisy(18.0, seed=60 + i), tags={"bisect": bid}) for i in (0, 4)])
    env = {**os.environ, "MPTCPLAB_CACHE": str(cache)}
    proc = cli("bisect", "two-paths", "--good", "6.1", "--bad", "7.2", "--cached", "--db", str(db), "--json", env=env)
    assert proc.returncode == 1, proc.stderr
    assert json.loads(proc.stdout)["outcome"] == "no-regression"
    for good, bad in (("7.2", "6.1"), ("6.1", "9.9")):
        p = cli_in_process("bisect", "two-paths", "--good", good, "--bad", bad, "--cached", "--db", str(db), env=env)
        assert p.returncode == 2 and p.stderr.startswith("error: ") and len(p.stderr.strip().splitlines()) == 1, p.stderr


@requires_root
def test_real_bisect_resumes_after_sigterm_without_rerunning_stored_points(tmp_path):
    """Two real cached kernels in guests: SIGTERM after the good end is stored; the rerun reuses it and runs only the rest."""
    import signal
    import subprocess

    from mptcplab.bisect import bisect_id, releases_between
    from mptcplab.kernels.fetch import fetch
    from mptcplab.store import RunFilter

    from .conftest import CLI, wait_for, write_scenario

    good, _ = fetch("6.12.43")
    bad, _ = fetch("6.12.117")
    path = write_scenario(tmp_path, """
        name = "bisect-resume"
        [[path]]
        name = "a"
        rate = "10mbit"
        delay = "2ms"
        [[path]]
        name = "b"
        rate = "10mbit"
        delay = "2ms"
        [workload]
        size = "1MiB"
        [run]
        timeout = "30s"
    """)
    db = tmp_path / "bisect.db"
    rels = releases_between(good.release, bad.release, cached_only=True)
    bid = bisect_id(load_scenario(path), rels[0].release, rels[-1].release, "goodput_mbps")
    args = [CLI, "bisect", str(path), "--good", good.release, "--bad", bad.release, "--cached", "--repeat", "2",
            "--db", str(db), "--json"]

    def stored(release: str) -> tuple[int, int]:
        """(runs, repetitions) of this bisect on `release`."""
        if not db.exists():
            return 0, 0
        store = open_store(str(db))
        runs = [r.uid for r in store.list_runs(RunFilter(kernel=release, tags={"bisect": bid}))]
        reps = sum(len(s.values) for s in store.samples(runs, "pass_rate", per_run=True).values()) if runs else 0
        return len(runs), reps

    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: stored(good.release)[1] >= 2, timeout=240, interval=1.0), "the good end was not stored"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err[-2000:]
    assert stored(good.release) == (1, 2)
    again = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert again.returncode in (0, 1), again.stderr[-2000:]  # 2 repetitions a side cannot call it regressed: either is fine
    doc = json.loads(again.stdout)
    steps = {s["release"]: s for s in doc["steps"]}
    assert steps[good.release]["reused"] == 2 and steps[good.release]["measured"] == 0
    assert steps[bad.release]["reused"] + steps[bad.release]["measured"] == 2
    assert stored(good.release) == (1, 2), "the good end was run again"
    assert stored(bad.release)[1] == 2


@light
def test_bisect_over_own_builds_by_name_order(tmp_path):
    """--kernels-from: real kernel images (Debian's, standing in for your builds) registered in name order; stored points."""
    from mptcplab.bisect import bisect_id
    from mptcplab.kernels.catalog import cached

    sources = {k.release: k for k in cached()}
    wanted = ["6.12.43+deb12-cloud-amd64", "6.12.117+deb13-cloud-amd64", "6.18.15+deb13-cloud-amd64"]
    if not all(r in sources for r in wanted):
        pytest.skip("needs the 6.12.43, 6.12.117 and 6.18.15 Debian kernels cached (mptcplab kernel fetch)")
    builds = tmp_path / "builds"
    for i, release in enumerate(wanted):
        d = builds / f"{i:02d}-build"
        d.mkdir(parents=True)
        (d / "bzImage").symlink_to(sources[release].image)
        (d / ".config").symlink_to(sources[release].config)
    env = {**os.environ, "MPTCPLAB_CACHE": str(tmp_path / "cache")}
    db = tmp_path / "own.db"
    scn = load_scenario("two-paths")
    bid = bisect_id(scn, wanted[0], wanted[-1], "goodput_mbps")
    store_runs(db, [synthetic("two-paths", r, "", noisy(18.0 * (0.88 if i == 2 else 1.0), seed=70 + i), tags={"bisect": bid})
                    for i, r in enumerate(wanted)])
    proc = cli("bisect", "two-paths", "--kernels-from", str(builds), "--good", "00-build", "--bad", "02-build",
               "--db", str(db), "--json", env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    assert doc["releases"] == wanted and doc["first_bad"] == wanted[2] and doc["last_good"] == wanted[1]
    assert [s["upstream"] for s in doc["steps"]] == ["00-build", "01-build", "02-build"]
    added = json.loads((tmp_path / "cache/kernels" / wanted[1] / "kernel.json").read_text())
    assert added["version"] == "custom" and added["origin"].startswith("added from")
    bad = cli_in_process("bisect", "two-paths", "--kernels-from", str(builds), "--good", "02-build", "--bad", "00-build", "--db", str(db), env=env)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr


@light
def test_the_report_cases_name_their_upstream_issue_and_metric():
    """The upstream reports expressed as suite cases: tagged `report`, the issue's number and link in the description,
    the best-path baseline on, each judged by its main metric (554's stall by latency_max_ms, its `[run] metric`)."""
    from mptcplab.suite import load_cases, suite_cases

    cases = {c.name: c for c in suite_cases("report")}
    issues = {"report-381-slow-extra-path-download": 381, "report-381-slow-extra-path-download-1mib": 381,
              "report-554-rr-failover-signal": 554, "report-554-rr-failover-signal-carrier": 554}
    assert set(issues) <= set(cases)
    for name, number in issues.items():
        assert f"https://github.com/multipath-tcp/mptcp_net-next/issues/{number}" in cases[name].description
        assert f"report {number}" in cases[name].description
    scns = {s.name: s for s in load_cases([cases[n] for n in issues])}
    assert all(s.run.baseline == "best-path" for s in scns.values())
    assert {cases[n].metric for n in issues} == {"goodput_mbps", "latency_max_ms"}
    rr = scns["report-554-rr-failover-signal"]
    assert rr.paths[1].signal and rr.workload.rate == 10 and rr.workload.arrivals == "fixed"
    assert (rr.workload.request, rr.workload.response, rr.workload.duration) == (200, 200, 20)
    assert [e.action for e in rr.events] == ["down"]
    assert [e.action for e in scns["report-554-rr-failover-signal-carrier"].events] == ["carrier_down"]
    listed = cli_in_process("suite", "list", "--tag", "report", "--json")
    assert {c["name"]: c["metric"] for c in json.loads(listed.stdout)}["report-554-rr-failover-signal"] == "latency_max_ms"


@light
def test_run_metric_names_a_known_metric_and_is_not_content(tmp_path):
    from mptcplab.errors import ScenarioError
    from mptcplab.scenario import parse_scenario

    base = {"name": "m", "path": [{"name": "a", "rate": "10mbit"}], "workload": {"kind": "rr", "duration": "2s"}}
    judged = parse_scenario({**base, "run": {"metric": "latency_max_ms"}})
    assert judged.content_hash == parse_scenario(base).content_hash  # what the suite judges changes no measurement
    assert "metric" not in parse_scenario(base).normalized()["run"]  # stored content of older scenarios unchanged
    with pytest.raises(ScenarioError, match=r"run\.metric 'latency_max' is not a metric of a repetition; known: "):
        parse_scenario({**base, "run": {"metric": "latency_max"}})


def test_kernel_history_pairs_kernels_by_repetition(tmp_path):
    """bench/kernel_history.py --flavour uml compares kernels repetition by repetition: a 5% step in every
    repetition is +5.00% paired with 5/5 repetitions differing, and a kernel identical to its predecessor in every
    repetition says so instead of a p-value."""
    import sys
    sys.path.insert(0, str(Path(__file__).parent.parent / "bench"))
    from kernel_history import paired_rows

    base = [18.0, 18.3, 17.9, 18.6, 18.1]
    runs = [synthetic("two-paths", k, v, g) for (k, v), g in
            zip(KERNELS, [base, [round(x * 1.05, 4) for x in base], [round(x * 1.05, 4) for x in base]])]
    for r in runs:
        r.label = "kh"
    store_runs(tmp_path / "kh.db", runs)
    rows = paired_rows(open_store(str(tmp_path / "kh.db")), "two-paths", "goodput_mbps", "kh")
    assert len(rows) == 3, rows  # 6.1 -> 6.12, 6.12 -> 6.18, 6.1 -> 6.18
    step, same, first_last = rows
    assert "6.1.176 -> 6.12.117" in step and "+5.00%" in step and "| 5/5 |" in step, step
    assert "6.12.117 -> 6.18.15" in same and "| 0/5 | identical |" in same and "+0.00%" in same, same
    assert "6.1.176 -> 6.18.15" in first_last and "+5.00%" in first_last, first_last


@light
def test_a_scenarios_run_metric_is_its_main_metric_for_every_verdict(tmp_path):
    """`[run] metric` (report 554's stall judged by latency_max_ms) is what the store's commands judge by too, not
    only `suite run`: Store.main_metrics and a result's own main metric both name it."""
    from mptcplab.metrics import result_main_metric
    from mptcplab.scenario import load_scenario
    from mptcplab.store import open_store

    from .synthetic import run as synthetic_run

    store = open_store(str(tmp_path / "m.db"))
    scn = load_scenario("report-554-rr-failover-signal")
    store.save_result(synthetic_run([1.0, 1.0, 1.0], scenario=scn.name), scn.normalized())
    store.save_result(synthetic_run([1.0], scenario="rr-asymmetric-rtt"), load_scenario("rr-asymmetric-rtt").normalized())
    assert store.main_metrics(None) == {scn.name: "latency_max_ms", "rr-asymmetric-rtt": "latency_p99_ms"}
    result = synthetic_run([1.0], scenario=scn.name)
    result.environment.update(workload="rr", main_metric=scn.run.metric)
    assert result_main_metric(result) == "latency_max_ms"


@light
def test_the_suite_table_of_cases_judged_by_different_metrics_prints(capsys):
    """A suite whose cases have different main metrics (bulk and rr) prints one table with a metric column: the
    document's metric is then "per-case", which is no metric of the table (it failed with exit 2 after measuring)."""
    from mptcplab.cli.common import print_case_rows

    row = {"kernel": "6.12.117-uml", "n": 3, "failed": 0, "median": 1.0, "ci95": (1.0, 1.0), "pass_rate": None,
           "passed": 3, "pass_ci95": (0.0, 1.0), "change": None, "verdict": None}
    rows = [{**row, "case": "simult-balanced", "metric": "goodput_mbps"}, {**row, "case": "rr-asymmetric-rtt", "metric": "latency_p99_ms"}]
    print_case_rows("s1", rows, "per-case")
    text = capsys.readouterr().out
    assert "each case's metric" in text and "latency_p99_ms (ms)" in text and "goodput_mbps (mbit/s)" in text

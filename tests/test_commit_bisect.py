"""`bisect --tree`: the commit walk over a git kernel tree.

The light tests make a tiny git repository with a kernel tree's top files (Makefile, Kconfig) and a few
commits: the walk's order, names and subjects, the refusals, and resuming from stored points (every point
stored, each commit's build registered in a test kernel cache, so nothing is built and nothing boots). The
heavy test runs the real bisect on the synthetic 16-commit series of Debian's 6.12.117 source
(bench/commit_series.py), building each probe incrementally and running it in UML.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mptcplab.scenario import load_scenario

from .conftest import cli, cli_in_process, heavy, light
from .test_suite import noisy, store_runs, synthetic

_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env={**os.environ, **_ENV}).stdout.strip()


def tiny_tree(root: Path, n: int = 6) -> tuple[Path, list[str]]:
    """A git repo holding a kernel tree's top (Makefile 6.12.117, Kconfig) and `n` commits after the first; hashes oldest first."""
    repo = root / "linux"
    repo.mkdir()
    (repo / "Makefile").write_text("# SPDX\nVERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = 117\nEXTRAVERSION =\n")
    (repo / "Kconfig").write_text("mainmenu \"test\"\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "import")
    hashes = [git(repo, "rev-parse", "HEAD")]
    for i in range(1, n + 1):
        (repo / "notes.txt").write_text(f"change {i}\n")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", f"change number {i}")
        hashes.append(git(repo, "rev-parse", "HEAD"))
    return repo, hashes


def register_builds(cache: Path, names_commits: list[tuple[str, str]], flavour: str = "uml") -> None:
    """Kernel-cache entries as `kernel build --ref` leaves them (kernel.json, build.json with the commit), no image."""
    from mptcplab.kernels.catalog import Kernel

    for name, commit in names_commits:
        d = cache / "kernels" / name
        d.mkdir(parents=True)
        (d / "kernel.json").write_text(Kernel(release=name, version="6.12.117", origin="built from test", flavour=flavour,
                                              image=str(d / "linux"), build=str(d / "build.json")).model_dump_json())
        (d / "build.json").write_text(json.dumps({"name": name, "flavour": flavour, "commit": commit, "wall_s": 1.0}))


@light
def test_commit_walk_is_good_then_first_parent_history_with_subjects(tmp_path, monkeypatch):
    from mptcplab.bisect import commit_kernel_name, commits_between

    monkeypatch.setenv("MPTCPLAB_CACHE", str(tmp_path / "cache"))
    repo, hashes = tiny_tree(tmp_path, 5)
    git(repo, "tag", "v-good", hashes[1])
    probes = commits_between(repo, "v-good", "main")
    assert [p.commit for p in probes] == hashes[1:]
    assert [p.subject for p in probes] == [f"change number {i}" for i in range(1, 6)]
    assert probes[0].release == commit_kernel_name("6.12.117", hashes[1], "uml") == f"6.12.117-{hashes[1][:12]}-uml"
    assert not any(p.cached for p in probes)
    register_builds(tmp_path / "cache", [(probes[2].release, hashes[3])])
    assert [p.cached for p in commits_between(repo, hashes[1], hashes[5])] == [False, False, True, False, False]
    # a build of another commit under that name (or another flavour) is not this probe's build
    assert not any(p.cached for p in commits_between(repo, hashes[1], hashes[5], "qemu"))


@light
def test_commit_bisect_refuses_bad_input_in_one_line(tmp_path):
    repo, hashes = tiny_tree(tmp_path, 3)
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "Makefile").write_text("VERSION = 6\n")
    (plain / "Kconfig").write_text("")
    db = str(tmp_path / "b.db")
    cases = [
        (["--tree", str(tmp_path / "nowhere"), "--good", "HEAD~1", "--bad", "HEAD"], "no such directory"),
        (["--tree", str(plain), "--good", "HEAD~1", "--bad", "HEAD"], "not a git repository"),
        (["--tree", str(tmp_path), "--good", "HEAD~1", "--bad", "HEAD"], "not a kernel tree"),
        (["--tree", str(repo), "--good", "nosuchref", "--bad", "HEAD"], "--good nosuchref: no such commit"),
        (["--tree", str(repo), "--good", "6.12.117", "--bad", "6.12.118"], "not kernel releases"),
        (["--tree", str(repo), "--good", hashes[3], "--bad", hashes[0]], "is not an ancestor"),
        (["--tree", str(repo), "--good", "HEAD", "--bad", "main"], "the same commit"),
        (["--tree", str(repo), "--good", hashes[0], "--bad", "HEAD", "--cached"], "--tree cannot go with --cached"),
        (["--tree", str(repo), "--good", hashes[0], "--bad", "HEAD", "--kernels-from", str(tmp_path)], "--kernels-from"),
        (["--tree", str(repo), "--good", hashes[0], "--bad", "HEAD", "--flavour", "arm"], "--flavour 'arm'"),
        (["--good", "6.1", "--bad", "7.2", "--flavour", "uml"], "--flavour applies to --tree only"),
    ]
    for args, says in cases:
        p = cli_in_process("bisect", "two-paths", *args, "--db", db)
        assert p.returncode == 2, (args, p.returncode, p.stderr)
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], (args, p.stderr)


@light
def test_commit_bisect_names_the_first_bad_commit_from_stored_points_without_building(tmp_path):
    from mptcplab.bisect import bisect_id, commits_between

    cache = tmp_path / "cache"
    env = {**os.environ, "MPTCPLAB_CACHE": str(cache)}
    repo, hashes = tiny_tree(tmp_path, 8)  # 9 commits: index 6 is the first bad one
    os.environ["MPTCPLAB_CACHE"] = str(cache)
    try:
        probes = commits_between(repo, hashes[0], hashes[-1])
    finally:
        del os.environ["MPTCPLAB_CACHE"]
    register_builds(cache, [(p.release, p.commit) for p in probes])
    scn = load_scenario("two-paths")
    bid = bisect_id(scn, probes[0].release, probes[-1].release, "goodput_mbps")
    db = tmp_path / "b.db"
    store_runs(db, [synthetic("two-paths", p.release, "", noisy(18.0 * (0.85 if i >= 6 else 1.0), seed=80 + i), tags={"bisect": bid})
                    for i, p in enumerate(probes)])
    proc = cli("bisect", "two-paths", "--tree", str(repo), "--good", hashes[0], "--bad", "main", "--db", str(db), "--json", env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    assert doc["source"] == "commits" and doc["bisect"] == bid and doc["outcome"] == "found"
    assert doc["first_bad_commit"] == hashes[6] and doc["first_bad_subject"] == "change number 6"
    assert doc["first_bad"] == probes[6].release and doc["last_good"] == probes[5].release
    assert doc["commits"] == hashes and doc["tree"] == str(repo)
    steps = {s["commit"]: s for s in doc["steps"]}
    assert [s["commit"] for s in doc["steps"]] == [h for h in hashes if h in steps]  # history order
    assert steps[hashes[0]]["role"] == "good end" and steps[hashes[-1]]["role"] == "bad end"
    assert len(steps) == 2 + 3  # binary search over 7 middle commits: 3 probes
    assert all(s["measured"] == 0 and s["reused"] == 5 and s["build_s"] is None for s in steps.values())
    assert steps[hashes[6]]["classified"] == "bad" and steps[hashes[6]]["vs_good"]["verdict"] == "regressed"
    table = cli_in_process("bisect", "two-paths", "--tree", str(repo), "--good", hashes[0], "--bad", "main", "--db", str(db), env=env)
    assert table.returncode == 0, table.stderr
    assert f"first bad commit: {hashes[6]} change number 6" in table.stdout


@light
def test_resume_runs_only_the_missing_repetitions_and_continues_the_seeds(tmp_path):
    """A probe with 2 of 5 repetitions stored gets 3 more, starting at repetition 2 (seed base + 2); a stored one none."""
    from mptcplab.bisect import Bisector, Release
    from mptcplab.store import open_store

    scn = load_scenario("two-paths")
    rels = [Release(f"6.12.117-{c * 12}-uml", c * 12, True, c * 40, f"subject {c}") for c in "abc"]
    db = tmp_path / "b.db"
    store_runs(db, [synthetic("two-paths", rels[0].release, "", noisy(18.0, n=2, seed=1), tags={"bisect": "x"}),
                    synthetic("two-paths", rels[2].release, "", noisy(15.0, seed=2), tags={"bisect": "x"})])
    store = open_store(str(db))
    calls = []

    def measure(rel: Release, n: int, bid: str, start: int) -> dict:
        calls.append((rel.release, n, bid, start))
        store.save_result(synthetic("two-paths", rel.release, "", noisy(18.0, n=n, seed=3), tags={"bisect": bid}),
                          scn.normalized())
        return {"build_s": 12.5}

    report = Bisector(scn, rels, repeat=5, store=store, measure=measure, bid="x").run()
    assert calls == [(rels[0].release, 3, "x", 2), (rels[1].release, 5, "x", 0)]
    steps = {s.release: s for s in report.steps}
    assert (steps[rels[0].release].reused, steps[rels[0].release].measured, steps[rels[0].release].n) == (2, 3, 5)
    assert steps[rels[0].release].build_s == 12.5 and steps[rels[2].release].build_s is None
    assert report.source == "commits" and report.first_bad_commit == "c" * 40 and report.first_bad_subject == "subject c"


@heavy
def test_commit_bisect_names_the_scheduler_commit_of_the_synthetic_series(tmp_path):
    """The real thing: the 16-commit series of Debian 6.12.117 (made once, cached), each probe built incrementally
    in the lab's worktree and run in UML on rtt-ratio-5; the bisect must name the 11th commit. 8 repetitions: the
    paired rule's smallest p is 1/2^n, and 5 pairs (1/32) could never pass alpha 0.01."""
    if os.environ.get("MPTCPLAB_BISECT_SERIES") != "1":
        # about 6 min to make the series and 5-17 min for its first (cold) build on two cores: more than CI's budget
        # allows beside the rest; run it on purpose (or bench/commit_bisect.py, which measures the same)
        pytest.skip("the synthetic series bisect builds six kernels: set MPTCPLAB_BISECT_SERIES=1 to run it")
    if not (Path(os.environ.get("MPTCPLAB_CACHE", "/var/cache/mptcplab")) / "sources/6.12.117/tree/Makefile").is_file():
        pytest.skip("needs the unpacked Debian 6.12.117 source: mptcplab kernel build 6.12.117 --flavour uml")
    sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
    from commit_series import make_series

    series = make_series()
    db = tmp_path / "bisect.db"
    proc = cli("bisect", "rtt-ratio-5", "--tree", series["repository"], "--good", "series-good", "--bad", "series-bad",
               "--repeat", "8", "--db", str(db), "--json", timeout=3600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    assert doc["outcome"] == "found" and doc["first_bad_commit"] == series["culprit"], doc
    assert doc["first_bad_subject"] == series["culprit_subject"]
    steps = {s["commit"]: s for s in doc["steps"]}
    assert steps[series["bad"]]["vs_good"]["verdict"] == "regressed"
    # again: everything comes from the store, no build, no run
    again = cli("bisect", "rtt-ratio-5", "--tree", series["repository"], "--good", "series-good", "--bad", "series-bad",
                "--repeat", "8", "--db", str(db), "--json", timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    redo = json.loads(again.stdout)
    assert redo["first_bad_commit"] == series["culprit"]
    assert all(s["measured"] == 0 and s["build_s"] is None for s in redo["steps"])

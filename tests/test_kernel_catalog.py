"""Kernel names: one rule from a name to a kernel, the Debian catalog it reads, and stored runs by kernel.

The rule and the catalog parser are pure, so they are judged on a recorded
package index (tests/data/debian-kernels: the real Packages data of all six
suites on 2026-11-30, trimmed to the kernel packages). The CLI is then run
against the real archive (refusals, `kernel list`, one real fetch of a
split-layout kernel into /var/cache/mptcplab) and against a temporary SQLite
store holding synthetic runs on four kernels.
"""
from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path

import pytest
from rich.console import Console

from mptcplab.errors import UsageError
from mptcplab.kernel_names import prefix_matches, stored_kernel_matches, upstream_of, version_key
from mptcplab.kernels.catalog import Kernel, KernelError, UnknownKernel, kernels_dir, parse_packages, resolve_name
from mptcplab.kernels.fetch import SUITES, ConsoleWaits, kernel_stanzas
from mptcplab.result import Repetition, RunResult, SubflowResult
from mptcplab.store import RunFilter, open_store

from .conftest import cli, heavy, light, requires_root
from .pg import create_database, postgres_server  # noqa: F401  (a fixture)

pytestmark = light  # recorded archive indexes, a synthetic cache and store; PostgreSQL is heavy

INDEX = Path(__file__).parent / "data" / "debian-kernels"


@pytest.fixture(scope="module")
def offered():
    return parse_packages({suite: (INDEX / f"{suite}.Packages").read_text() for suite in SUITES})


def cached_kernel(release: str, version: str, suite: str = "trixie") -> Kernel:
    return Kernel(release=release, version=version, origin=f"debian {suite} linux-image-{release}",
                  image=f"/nonexistent/{release}/vmlinuz")


# -- the recorded catalog ---------------------------------------------------------

def test_the_recorded_index_gives_every_suite_and_which_kernels_can_run(offered):
    by_suite: dict[str, list] = {}
    for c in offered:
        by_suite.setdefault(c.suite, []).append(c)
    assert set(by_suite) == set(SUITES)
    assert [c.upstream for c in by_suite["bookworm"]] == ["6.1.170", "6.1.176"]
    assert [c.upstream for c in by_suite["trixie"]] == ["6.12.107", "6.12.117"]
    assert [c.upstream for c in by_suite["sid"]] == ["7.2.13"]
    assert [c.upstream for c in by_suite["experimental"]] == ["7.3~rc7"]
    assert len(by_suite["bookworm-backports"]) == 12  # 6.12.43 ... 6.12.95, 6.12.90 twice (+deb12 and +deb12.1)
    tb = by_suite["trixie-backports"]
    assert len(tb) == 29
    runnable = [c.upstream for c in tb if c.runnable]
    assert runnable == ["6.16.3", "6.16.12", "6.17.8", "6.17.13", "6.18.5", "6.18.9", "6.18.12", "6.18.15",
                        "7.2.6", "7.2.9", "7.2.11", "7.2.12", "7.3.4"]
    dead = [c for c in tb if not c.runnable]
    assert {".".join(c.upstream.split(".")[:2]) for c in dead} == {"6.19", "7.0", "7.1"} and len(dead) == 16
    for c in dead:
        assert c.layout == "split" and "linux-modules" in c.reason and "only linux-binary" in c.reason
        assert c.size < 20e6  # what is served is only the bare image
    # the old layout (6.16-6.18) depends on a linux-base package the archive lacks, and needs none: runnable
    old = next(c for c in tb if c.upstream == "6.18.15")
    assert old.layout == "image" and old.parts == () and any(d.startswith("linux-base-6.18.15") for d in old.depends)
    split = next(c for c in tb if c.upstream == "7.3.4")
    assert split.layout == "split" and {p.split("-")[1] for p in split.parts} == {"binary", "modules", "base"}
    assert split.size > 30e6  # image + binary + modules + base
    assert [version_key(c.version) for c in offered] == sorted(version_key(c.version) for c in offered)


def test_kernel_stanzas_keeps_only_the_kernel_packages():
    recorded = (INDEX / "sid.Packages").read_text()
    noise = ("Package: linux-image-cloud-amd64\nVersion: 7.2.13-1\nDepends: linux-image-7.2.13+deb14-cloud-amd64\n\n"
             "Package: linux-headers-7.2.13+deb14-cloud-amd64\nVersion: 7.2.13-1\n\n"
             "Package: zsh\nVersion: 5.9-8\n\n")
    whole = (noise + recorded.strip() + "\n\n" + noise).encode()
    assert parse_packages({"sid": kernel_stanzas(whole)}) == parse_packages({"sid": recorded})
    assert "zsh" not in kernel_stanzas(whole) and "linux-headers" not in kernel_stanzas(whole)


# -- the rule -----------------------------------------------------------------------

@pytest.mark.parametrize(("name", "release"), [
    ("6.12", "6.12.117+deb13-cloud-amd64"),        # the newest 6.12.x offered, whatever suite
    ("6.1", "6.1.0-50-cloud-amd64"),               # a prefix on components: not 6.12
    ("6.1.170", "6.1.0-47-cloud-amd64"),
    ("6.12.95", "6.12.95+deb12-cloud-amd64"),      # a point release
    ("6.12.90", "6.12.90+deb12.1-cloud-amd64"),    # two builds of 6.12.90: the newer Debian revision
    ("7", "7.3.4+deb13-cloud-amd64"),              # 7.3.4 is newer than experimental's 7.3~rc7
    ("7.2", "7.2.13+deb14-cloud-amd64"),
    ("6.12.95-1~bpo12+1", "6.12.95+deb12-cloud-amd64"),  # a Debian package version
    ("6.12.117+deb13-cloud-amd64", "6.12.117+deb13-cloud-amd64"),  # a release
    ("linux-image-6.16.3+deb13-cloud-amd64", "6.16.3+deb13-cloud-amd64"),  # a package
    ("bookworm", "6.1.0-50-cloud-amd64"),
    ("bookworm-backports", "6.12.95+deb12-cloud-amd64"),
    ("trixie", "6.12.117+deb13-cloud-amd64"),
    ("trixie-backports", "7.3.4+deb13-cloud-amd64"),
    ("sid", "7.2.13+deb14-cloud-amd64"),
    ("experimental", "7.3-cloud-amd64"),
])
def test_a_name_resolves_to_one_kernel(offered, name, release):
    res = resolve_name(name, [], offered)
    assert res.release == release and res.candidate is not None and not res.cached
    assert res.describe().startswith(f"kernel {name} → {release} ({res.candidate.suite}, to fetch, ")


def test_a_cached_older_release_does_not_satisfy_a_prefix(offered):
    """The bug: `kernel fetch 6.12` and `matrix --kernels 6.12` took the cached 6.12.43."""
    old = cached_kernel("6.12.43+deb12-cloud-amd64", "6.12.43-1~bpo12+1", "bookworm-backports")
    res = resolve_name("6.12", [old], offered)
    assert res.release == "6.12.117+deb13-cloud-amd64" and not res.cached
    new = cached_kernel("6.12.117+deb13-cloud-amd64", "6.12.117-1")
    res = resolve_name("6.12", [old, new], offered)
    assert res.kernel is new
    assert res.describe() == "kernel 6.12 → 6.12.117+deb13-cloud-amd64 (trixie, cached)"
    assert resolve_name("6.12.43", [old, new], offered).kernel is old  # named exactly, it is used


def test_a_prefix_skips_releases_that_cannot_run_and_says_so(offered):
    res = resolve_name("6", [], offered)
    assert res.release == "6.18.15+deb13-cloud-amd64"
    assert "6.19.14 is not runnable" in res.describe()


@pytest.mark.parametrize("name", ["7.1", "7.0.4", "6.19", "6.19.6+deb13-cloud-amd64", "7.1.13-1~bpo13+1"])
def test_a_kernel_without_modules_is_refused_with_the_reason(offered, name):
    with pytest.raises(KernelError) as exc:
        resolve_name(name, [], offered)
    assert exc.value.exit_code == 3
    assert "not runnable" in exc.value.message and "linux-modules" in exc.value.message


def test_an_unknown_name_is_a_usage_error_listing_what_is_offered(offered):
    with pytest.raises(UnknownKernel) as exc:
        resolve_name("9.99", [], offered)
    assert exc.value.exit_code == 2 and isinstance(exc.value, UsageError)
    assert "9.99" in exc.value.message and "6.1, 6.12, 6.16" in exc.value.message and "7.1" in exc.value.message


def test_an_unknown_built_name_names_the_built_kernels_and_how_to_build_it(offered):
    uml = Kernel(release="6.12.117-uml", version="6.12.117", origin="built from x", image="/y", flavour="uml",
                 build="/y/build.json")
    with pytest.raises(UnknownKernel) as exc:
        resolve_name("6.12.999-uml", [uml], offered)
    assert "kernels built from source: 6.12.117-uml" in exc.value.hint, exc.value.hint
    assert "mptcplab kernel build 6.12.999 --flavour uml" in exc.value.hint, exc.value.hint


def test_a_release_bisect_never_probes_or_resolves_to_a_built_kernel(tmp_path, monkeypatch):
    from mptcplab.bisect import releases_between

    monkeypatch.setenv("MPTCPLAB_CACHE", str(tmp_path))
    for k in (cached_kernel("6.12.43+deb12-cloud-amd64", "6.12.43-1~bpo12+1", "bookworm-backports"),
              cached_kernel("7.3.4+deb13-cloud-amd64", "7.3.4-1", "trixie"),
              Kernel(release="6.12.117-uml", version="6.12.117", origin="built from x", image="/y", flavour="uml",
                     build="/y/build.json")):
        k.save()
    assert [r.release for r in releases_between("6.12", "7.3", cached_only=True)] == \
        ["6.12.43+deb12-cloud-amd64", "7.3.4+deb13-cloud-amd64"]
    with pytest.raises(UsageError, match="6.12.117-uml is a kernel built from source"):
        releases_between("6.12.117-uml", "7.3", cached_only=True)


def test_without_the_archive_the_newest_cached_match_is_used_and_said(offered):
    k43 = cached_kernel("6.12.43+deb12-cloud-amd64", "6.12.43-1~bpo12+1", "bookworm-backports")
    k95 = cached_kernel("6.12.95+deb12-cloud-amd64", "6.12.95-1~bpo12+1", "bookworm-backports")
    res = resolve_name("6.12", [k95, k43], None, unreachable="apt-get update failed: Temporary failure resolving")
    assert res.kernel is k95
    assert "could not be read" in res.describe() and "Temporary failure" in res.describe()
    with pytest.raises(KernelError) as exc:
        resolve_name("7.2", [k43], None, unreachable="no network")
    assert exc.value.exit_code == 3 and "not cached" in exc.value.message


def test_your_own_build_is_found_by_release_and_by_prefix(offered):
    mine = Kernel(release="7.4.0-rc1-mptcp-next", version="custom", origin="added from /src/bzImage", image="/x")
    assert resolve_name("7.4.0-rc1-mptcp-next", [mine], offered).kernel is mine
    res = resolve_name("7.4", [mine], offered)  # the archive has no 7.4: the cached build answers
    assert res.kernel is mine and "not offered by the archive" in res.describe() and "your build" in res.describe()
    with pytest.raises(UnknownKernel):
        resolve_name("custom", [mine], offered)


# -- stored runs ------------------------------------------------------------------------

@pytest.mark.parametrize(("query", "release", "build", "hit"), [
    ("6.1", "6.1.0-50-cloud-amd64", "#1 SMP PREEMPT_DYNAMIC Debian 6.1.176-1 (2026-10-02)", True),
    ("6.1.176", "6.1.0-50-cloud-amd64", "#1 SMP PREEMPT_DYNAMIC Debian 6.1.176-1 (2026-10-02)", True),
    ("6.1.0-50", "6.1.0-50-cloud-amd64", "", True),
    ("6.1", "6.12.117+deb13-cloud-amd64", "#1 SMP PREEMPT_DYNAMIC Debian 6.12.117-1 (2026-11-01)", False),
    ("6.12.1", "6.12.117+deb13-cloud-amd64", "", False),
    ("6.12.95-1~bpo12+1", "6.12.95+deb12-cloud-amd64", "#1 SMP PREEMPT_DYNAMIC Debian 6.12.95-1~bpo12+1 (2026-09-12)", True),
    ("7.3", "7.3-cloud-amd64", "#1 SMP PREEMPT_DYNAMIC Debian 7.3~rc7-1~exp1 (2026-11-20)", True),
    ("6.18", "6.18.0", "#1 SMP PREEMPT_DYNAMIC @0", True),
    ("6.1", "6.18.0", "#1 SMP PREEMPT_DYNAMIC @0", False),
])
def test_stored_kernel_matching(query, release, build, hit):
    assert stored_kernel_matches(query, release, build) is hit


def test_names_helpers():
    assert upstream_of("6.1.0-50-cloud-amd64", "#1 SMP PREEMPT_DYNAMIC Debian 6.1.176-1 (2026-10-02)") == "6.1.176"
    assert upstream_of("6.12.117+deb13-cloud-amd64") == "6.12.117"
    assert prefix_matches("7.3", "7.3~rc7") and not prefix_matches("7.3", "7.30.1") and not prefix_matches("", "6.1")
    assert sorted(["7.3.4", "6.12.95", "7.3~rc7", "6.1.176"], key=version_key) == ["6.1.176", "6.12.95", "7.3~rc7", "7.3.4"]


KERNELS = {  # release: (build string, goodput of its repetitions)
    "6.1.0-50-cloud-amd64": ("#1 SMP PREEMPT_DYNAMIC Debian 6.1.176-1 (2026-10-02)", [10.0, 10.1, 10.2, 10.3]),
    "6.12.95+deb12-cloud-amd64": ("#1 SMP PREEMPT_DYNAMIC Debian 6.12.95-1~bpo12+1 (2026-09-12)", [20.0, 20.1, 20.2, 20.3]),
    "6.12.117+deb13-cloud-amd64": ("#1 SMP PREEMPT_DYNAMIC Debian 6.12.117-1 (2026-11-01)", [21.0, 21.1, 21.2, 21.3]),
    "7.2.12+deb13-cloud-amd64": ("#1 SMP PREEMPT_DYNAMIC Debian 7.2.12-1~bpo13+1 (2026-11-10)", [30.0, 30.1, 30.2, 30.3]),
}


def fill_store(db: str) -> dict[str, str]:
    """One synthetic run per kernel (what a guest run stores: release + Debian build string); release -> run id."""
    store = open_store(db)
    ids = {}
    for i, (release, (build, values)) in enumerate(KERNELS.items()):
        reps = [Repetition(index=r, completion_s=8 / v, goodput_mbps=v, bytes=10_000_000, mptcp=True, mib={},
                           subflows=[SubflowResult(path="a", share=1.0, rtt_median_ms=20.0)], started_at=1e9 + i * 100 + r)
                for r, v in enumerate(values)]
        result = RunResult(run_id=f"k{i}{'0' * 10}{i}", scenario="kname", scenario_hash="abc", kernel=release,
                           scheduler="default", backend="wire", repetitions=reps, started_at=1e9 + i * 100,
                           ended_at=1e9 + i * 100 + 50,
                           environment={"kernel_release": release, "kernel_version": build, "hostname": "guest"})
        store.save_result(result, {"name": "kname"})
        ids[release] = result.run_id
    return ids


@pytest.fixture(scope="module")
def store_db(tmp_path_factory) -> tuple[str, dict[str, str]]:
    db = str(tmp_path_factory.mktemp("kstore") / "results.db")
    return db, fill_store(db)


RUNS_BY_KERNEL = [
    ("6.1", ["6.1.0-50-cloud-amd64"]),
    ("6.1.176", ["6.1.0-50-cloud-amd64"]),
    ("6.12", ["6.12.95+deb12-cloud-amd64", "6.12.117+deb13-cloud-amd64"]),
    ("6.12.117", ["6.12.117+deb13-cloud-amd64"]),
    ("6.12.95-1~bpo12+1", ["6.12.95+deb12-cloud-amd64"]),
    ("7", ["7.2.12+deb13-cloud-amd64"]),
    ("6.1.0-50-cloud-amd64", ["6.1.0-50-cloud-amd64"]),
    ("5", []),
]


@heavy
@requires_root
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_store_selects_by_kernel_on_both_databases(backend, tmp_path, request):
    if backend == "sqlite":
        db = str(tmp_path / "results.db")
    else:
        db = create_database(request.getfixturevalue("postgres_server"))
    ids = fill_store(db)
    store = open_store(db)
    for query, expected in RUNS_BY_KERNEL:
        assert {r.kernel for r in store.list_runs(RunFilter(kernel=query))} == set(expected), query
        assert set(store.select_runs(f"kernel:{query}")) == {ids[k] for k in expected}, query
    assert store.select_runs("6.12") == [ids["6.12.95+deb12-cloud-amd64"], ids["6.12.117+deb13-cloud-amd64"]]  # bare word


@pytest.mark.parametrize(("query", "expected"), RUNS_BY_KERNEL)
def test_runs_by_kernel(store_db, query, expected):
    db, ids = store_db
    proc = cli("runs", "--db", db, "--kernel", query)
    assert proc.returncode == 0, proc.stderr
    shown = {release for release, uid in ids.items() if uid in proc.stdout}
    assert shown == set(expected), proc.stdout
    if not expected:
        assert "match" in proc.stdout


def test_history_and_compare_select_by_kernel_prefix(store_db):
    db, ids = store_db
    proc = cli("history", "kname", "--db", db, "--kernel", "6.12", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    points = json.loads(proc.stdout)["points"]
    assert [p["kernel"] for p in points] == ["6.12.95+deb12-cloud-amd64", "6.12.117+deb13-cloud-amd64"]
    for baseline, candidate in (("kernel:6.1", "kernel:6.12"), ("6.1", "6.12")):  # the selector, and the bare word
        proc = cli("compare", "--db", db, "--baseline", baseline, "--candidate", candidate, "--format", "json")
        assert proc.returncode in (0, 1), proc.stderr
        (comparison,) = json.loads(proc.stdout)["comparisons"]
        assert sorted(comparison["baseline_values"]) == KERNELS["6.1.0-50-cloud-amd64"][1]
        assert sorted(comparison["candidate_values"]) == sorted(KERNELS["6.12.95+deb12-cloud-amd64"][1]
                                                                + KERNELS["6.12.117+deb13-cloud-amd64"][1])
    proc = cli("compare", "--db", db, "--baseline", "kernel:6.1", "--candidate", "kernel:5.10", "--format", "json")
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and len(proc.stderr.strip().splitlines()) == 1


# -- waits say what they wait for --------------------------------------------------------

def test_a_wait_longer_than_a_second_is_announced_and_a_short_one_is_not():
    buf = io.StringIO()
    waits = ConsoleWaits(Console(file=buf, force_terminal=False), after_s=0.5)
    with waits.waiting("downloading something (12 MB)"):
        time.sleep(0.05)
    assert buf.getvalue() == ""
    with waits.waiting("downloading something (12 MB)"):
        time.sleep(1.0)
    assert buf.getvalue() == "downloading something (12 MB) …\n"


# -- the CLI against the real archive ------------------------------------------------------

def error_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def listing() -> list[dict]:
    proc = cli("kernel", "list", "--json", timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_kernel_list_in_version_order_with_cached_suite_and_runnable(listing):
    assert [version_key(r["version"]) for r in listing if r["version"] != "custom"] == \
        sorted(version_key(r["version"]) for r in listing if r["version"] != "custom")
    assert {r["suite"] for r in listing} >= set(SUITES)
    for r in listing:
        assert r["runnable"] is (r["reason"] == "")
        assert r["cached"] is (kernels_dir() / r["release"] / "kernel.json").exists()


def test_fetch_refuses_a_name_it_does_not_know_in_one_line_and_says_what_it_waited_for():
    proc = cli("kernel", "fetch", "--refresh", "9.99", timeout=600)  # --refresh: the apt update really happens
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = error_lines(proc.stderr)
    assert "9.99" in line and proc.stderr.strip().splitlines()[-1] == line
    # the update of six suites' lists takes seconds: it is announced before the error
    assert "apt update of the private package lists" in proc.stderr


def test_fetch_refuses_a_kernel_without_modules_in_one_line(listing):
    dead = [r for r in listing if not r["runnable"]]
    if not dead:
        pytest.skip("the archive now serves modules for every kernel it lists")
    proc = cli("kernel", "fetch", dead[0]["upstream"])
    assert proc.returncode == 3 and proc.stdout == ""
    (line,) = error_lines(proc.stderr)
    assert "not runnable" in line and dead[0]["release"] in line


@requires_root
def test_real_fetch_of_a_split_layout_kernel(listing):
    """`kernel fetch 7.3`: the newest runnable 7.3.x, in the split layout (linux-binary/modules/base), unpacked and indexed."""
    want = [r for r in listing if r["runnable"] and prefix_matches("7.3", r["upstream"])]
    assert want, "the archive offers no runnable 7.3"
    release = max(want, key=lambda r: version_key(r["version"]))["release"]
    proc = cli("kernel", "fetch", "7.3", timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert re.match(rf"(fetched|already cached): {re.escape(release)} \(", proc.stdout), proc.stdout
    assert f"kernel 7.3 → {release} (" in proc.stderr
    if proc.stdout.startswith("fetched"):
        assert "downloading linux-image-" in proc.stderr and "MB" in proc.stderr  # the download said its size
    meta = json.loads((kernels_dir() / release / "kernel.json").read_text())
    image = Path(meta["image"]).read_bytes()
    assert image[0x202:0x206] == b"HdrS"  # an x86 bzImage
    assert "CONFIG_MPTCP=y" in Path(meta["config"]).read_text()
    dep = (Path(meta["modules"]) / "modules.dep").read_text()
    assert re.search(r"/veth\.ko(\.[xz]z|\.zst)?:", dep) and re.search(r"/sch_netem\.ko", dep)
    again = cli("kernel", "fetch", "7.3")
    assert again.returncode == 0 and again.stdout.startswith(f"already cached: {release}")
    assert re.search(rf"kernel 7\.3 → {re.escape(release)} \([\w-]+, cached\)", again.stderr), again.stderr


@requires_root
def test_a_cached_older_point_release_does_not_answer_a_prefix(listing):
    """The reported bug, end to end: with 6.12.43 cached, `kernel fetch 6.12` is the newest 6.12.x offered."""
    newest = max((r for r in listing if r["runnable"] and prefix_matches("6.12", r["upstream"])), key=lambda r: version_key(r["version"]))
    old = cli("kernel", "fetch", "6.12.43", timeout=900)
    assert old.returncode == 0 and "6.12.43+deb12-cloud-amd64" in old.stdout, old.stderr
    proc = cli("kernel", "fetch", "6.12", timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert re.match(rf"(fetched|already cached): {re.escape(newest['release'])} \(", proc.stdout), proc.stdout
    assert f"kernel 6.12 → {newest['release']} ({newest['suite']}, " in proc.stderr


@requires_root
def test_an_unreachable_archive_falls_back_to_the_newest_cached_match(tmp_path):
    """Real apt against a mirror that refuses connections (a closed loopback port): the cache answers, and says so."""
    from mptcplab.kernels.catalog import cached
    from mptcplab.kernels.fetch import PrivateApt, lookup

    debian = [k for k in cached() if k.origin.startswith("debian ")]
    if not debian:
        pytest.skip("no Debian kernel cached yet")
    series = ".".join(debian[-1].upstream.split(".")[:2])
    newest = max((k for k in debian if prefix_matches(series, k.upstream)), key=lambda k: version_key(k.version))
    buf = io.StringIO()
    apt = PrivateApt(root=tmp_path / "apt", mirror="http://127.0.0.1:9/debian",
                     waits=ConsoleWaits(Console(file=buf, force_terminal=False, width=400)))
    res = lookup(series, apt=apt)
    assert res.kernel == newest
    assert "the archive could not be read" in res.describe() and "127.0.0.1:9" in res.describe()
    assert "apt update of the private package lists" in buf.getvalue()  # the failing update took seconds: announced
    with pytest.raises(KernelError) as exc:
        lookup("9.99", apt=apt)
    assert exc.value.exit_code == 3 and "cannot be read" in exc.value.message

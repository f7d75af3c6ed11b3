"""The paired rule of `compare` (common random numbers) on synthetic stored runs of a deterministic executor.

UML with time travel runs repetition i with seed `base + i` on every kernel, so two kernels' repetitions with
the same index saw the same random draws: the sides are judged pair by pair (exact one-sided Wilcoxon
signed-rank test on the per-repetition differences). Each case is built so that pairing decides the outcome:
a shift smaller than the spread between repetitions, which only the pairs can see.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from mptcplab.analysis.compare import Draw, compare_samples, compare_stored, min_p_value_paired
from mptcplab.analysis.history import history_stored
from mptcplab.analysis.kernel_history import history_by_kernel
from mptcplab.store import open_store

from .conftest import cli_in_process
from .synthetic import run

pytestmark = pytest.mark.light  # synthetic samples and a SQLite store

#: 10 repetitions spread by 5% between repetitions (a fixed draw, so the test never changes)
SPREAD = [float(v) for v in 20.0 * (1 + 0.05 * np.random.default_rng(7).standard_normal(10))]
SHIFTED = [v * 0.99 for v in SPREAD]  # every repetition 1% slower than its partner


def uml(values, *, seed: int | None = 1, time_mode: str = "travel", executor: str = "uml", **kw):
    """A synthetic run as the UML executor records it: executor, time mode and seed base in its environment."""
    r = run(values, **kw)
    r.environment.update(executor=executor, time_mode=time_mode, seed=seed)
    return r


def draws(n: int, seed: int | None = 1, executor: str = "uml", time_mode: str = "travel") -> list[Draw]:
    return [Draw(index=i, seed=seed, executor=executor, time_mode=time_mode) for i in range(n)]


def test_a_one_percent_shift_under_five_percent_spread_is_seen_only_paired() -> None:
    paired = compare_samples(SPREAD, SHIFTED, threshold=0.005, alpha=0.01, baseline_draws=draws(10), candidate_draws=draws(10))
    assert paired.test == "wilcoxon-paired" and paired.n_pairs == 10
    assert paired.change == pytest.approx(-0.01) and paired.p_value == pytest.approx(1 / 1024) == min_p_value_paired(10)
    assert paired.verdict == "regressed"
    assert paired.ci95[0] == pytest.approx(-0.01) and paired.ci95[1] == pytest.approx(-0.01)  # every pair moved alike
    unpaired = compare_samples(SPREAD, SHIFTED, threshold=0.005, alpha=0.01)
    assert unpaired.test == "mann-whitney" and unpaired.p_value > 0.05 and unpaired.verdict == "unchanged"


def test_identical_deterministic_sides_are_unchanged_with_p_one() -> None:
    c = compare_samples(SPREAD, list(SPREAD), threshold=0.005, baseline_draws=draws(10), candidate_draws=draws(10))
    assert c.test == "wilcoxon-paired" and c.p_value == 1.0 and c.change == 0.0 and c.verdict == "unchanged"
    assert any("10 zero difference(s) dropped" in n for n in c.notes), c.notes


def test_some_zero_differences_are_dropped_and_the_rest_decide() -> None:
    cand = [v * 0.98 if i < 8 else v for i, v in enumerate(SPREAD)]  # 8 pairs moved 2%, 2 identical
    c = compare_samples(SPREAD, cand, threshold=0.005, baseline_draws=draws(10), candidate_draws=draws(10))
    assert c.p_value == pytest.approx(1 / 2 ** 8) and c.verdict == "regressed"
    assert any("2 zero difference(s) dropped" in n for n in c.notes), c.notes


@pytest.mark.parametrize("candidate, why", [
    (draws(10, seed=None, executor="qemu", time_mode=""), "the candidate ran on qemu (not deterministic)"),
    (draws(10, seed=7), "different seed bases (baseline 1; candidate 7)"),
    (draws(10, seed=None), "the candidate ran with seed = random"),
    (draws(10, seed=None, time_mode="real"), "the candidate ran on uml in real time"),
])
def test_sides_that_cannot_be_paired_fall_back_to_mann_whitney_with_a_note(candidate, why) -> None:
    c = compare_samples(SPREAD, SHIFTED, threshold=0.005, baseline_draws=draws(10), candidate_draws=candidate)
    assert c.test == "mann-whitney" and c.n_pairs is None and c.verdict == "unchanged"
    assert any(n.startswith("unpaired test") and why in n for n in c.notes), c.notes


def test_two_host_sides_are_unpaired_without_a_note() -> None:
    host = draws(10, seed=None, executor="host", time_mode="")
    c = compare_samples(SPREAD, SHIFTED, threshold=0.005, baseline_draws=host, candidate_draws=host)
    assert c.test == "mann-whitney" and c.notes == []


def test_pairs_without_a_partner_are_dropped_with_a_note() -> None:
    base_draws, cand_draws = draws(10)[:9], draws(10)[2:]  # the baseline lacks index 9, the candidate 0 and 1
    c = compare_samples(SPREAD[:9], SHIFTED[2:], threshold=0.005, baseline_draws=base_draws, candidate_draws=cand_draws)
    assert c.test == "wilcoxon-paired" and c.n_pairs == 7 and c.p_value == pytest.approx(1 / 128)
    assert any("3 repetition(s) without a partner" in n and "2 of the baseline's, 1 of the candidate's" in n for n in c.notes), c.notes
    c6 = compare_samples(SPREAD[:6], SHIFTED[:6], baseline_draws=draws(6), candidate_draws=draws(6))
    assert c6.verdict == "unchanged" and any("6 repetition pairs can never reach p < 0.01" in n for n in c6.notes), c6.notes


@pytest.fixture
def store(tmp_path):
    """A real SQLite store: two UML kernels with seed base 1 (the candidate 1% slower on every repetition),
    one more UML run with seed base 7 and one QEMU run of the same values, each with a warm-up repetition."""
    s = open_store(str(tmp_path / "paired.db"))
    runs = [uml(SPREAD, label="base", kernel="6.12.117-uml", started_at=1_700_000_000.0, warmup=5.0),
            uml(SHIFTED, label="cand", kernel="6.12.118-uml", started_at=1_700_001_000.0, warmup=5.0),
            uml(SHIFTED, label="seed7", kernel="6.12.118-uml", started_at=1_700_002_000.0, seed=7, warmup=5.0),
            uml(SHIFTED, label="qemu", kernel="6.12.118-cloud-amd64", started_at=1_700_003_000.0, seed=None,
                time_mode="", executor="qemu", warmup=5.0)]
    for r in runs:
        s.save_result(r, {"name": "syn"})
    return s


def test_stored_uml_runs_are_compared_paired(store) -> None:
    report = compare_stored(store, "label:base", "label:cand", ["goodput_mbps"], threshold=0.005)
    (c,) = report.comparisons
    assert c.test == "wilcoxon-paired" and c.n_pairs == 10 and c.verdict == "regressed"
    assert c.p_value == pytest.approx(1 / 1024)
    for other, why in (("label:seed7", "different seed bases"), ("label:qemu", "ran on qemu")):
        (u,) = compare_stored(store, "label:base", other, ["goodput_mbps"], threshold=0.005).comparisons
        assert u.test == "mann-whitney" and u.verdict == "unchanged" and any(why in n for n in u.notes), u.notes


def test_history_judges_adjacent_paired_runs_paired(store) -> None:
    from mptcplab.store import RunFilter

    hist = history_stored(store, "syn", threshold=0.005, flt=RunFilter(label="base"))
    assert len(hist.points) == 1
    both = history_stored(store, "syn", threshold=0.005)
    base, cand, seed7, qemu = both.points
    assert cand.test == "wilcoxon-paired" and cand.verdict == "regressed" and cand.p_value == pytest.approx(1 / 1024)
    assert seed7.test == "mann-whitney"  # another seed base: judged unpaired
    assert qemu.verdict is None and "executor qemu" in qemu.series  # never joined with UML runs into one series


def test_change_points_by_kernel_are_judged_paired(tmp_path) -> None:
    s = open_store(str(tmp_path / "series.db"))
    for k, (kernel, values) in enumerate([("6.12.115-uml", SPREAD), ("6.12.116-uml", SPREAD),
                                          ("6.12.117-uml", SHIFTED), ("6.12.118-uml", SHIFTED)]):
        s.save_result(uml(values, kernel=kernel, started_at=1_700_000_000.0 + k), {"name": "syn"})
    hist = history_by_kernel(s, "syn", threshold=0.005)
    # PELT proposes over medians standardised by a 5% spread: a 1% step is no candidate, so judge the split directly
    from mptcplab.analysis.changepoints import change_points

    (cp,) = change_points(hist.points, threshold=0.005, candidates=[2])
    assert cp.before == "6.12.116-uml" and cp.after == "6.12.117-uml" and cp.verdict == "regressed"
    assert cp.p_value == pytest.approx(1 / 1024) and cp.test == "wilcoxon-paired"


def test_compare_command_names_the_test(store, results_store) -> None:
    db = str(store.url.database)
    out = cli_in_process("compare", "--db", db, "--baseline", "label:base", "--candidate", "label:cand",
                         "--threshold", "0.5", "--format", "json")
    assert out.returncode == 1, out.stderr  # a regression
    doc = json.loads(out.stdout)
    (c,) = doc["comparisons"]
    assert c["test"] == "wilcoxon-paired" and c["n_pairs"] == 10 and c["verdict"] == "regressed"
    text = cli_in_process("compare", "--db", db, "--baseline", "label:base", "--candidate", "label:qemu", "--threshold", "0.5")
    assert text.returncode == 0 and "unpaired test" in " ".join(text.stdout.split()), text.stdout


def test_bisect_judges_probes_paired(tmp_path) -> None:
    """Stored deterministic runs on five releases, goodput 1% lower from the third on: only pairs can find the step."""
    from mptcplab.bisect import Bisector, Release, bisect_id
    from mptcplab.scenario import parse_scenario

    scenario = parse_scenario({"name": "syn", "path": [{"name": "a", "rate": "20mbit"}], "workload": {"size": "8MiB"}})
    releases = [Release(release=f"6.12.{115 + i}-uml", upstream=f"6.12.{115 + i}", cached=True) for i in range(5)]
    bid = bisect_id(scenario, releases[0].release, releases[-1].release, "goodput_mbps")
    s = open_store(str(tmp_path / "bisect.db"))
    for i, rel in enumerate(releases):
        s.save_result(uml(SPREAD if i < 2 else SHIFTED, kernel=rel.release, tags={"bisect": bid},
                          started_at=1_700_000_000.0 + i), {"name": "syn"})

    def measure(release: Release, n: int, tag: str) -> None:
        raise AssertionError(f"every repetition is stored: {release.release} should not be measured")

    report = Bisector(scenario, releases, repeat=10, store=s, measure=measure, threshold=0.005).run()
    assert report.outcome == "found" and report.first_bad == "6.12.117-uml" and report.last_good == "6.12.116-uml"
    probes = [step for step in report.steps if step.role == "probe"]
    assert probes and all(step.vs_good["test"] == "wilcoxon-paired" for step in probes)


def test_the_report_judges_paired_cells_paired(tmp_path) -> None:
    """The report's index verdicts and change points go through the same paired rule as compare."""
    from mptcplab.store import RunFilter
    from mptcplab.webreport import ReportOptions, build_report

    s = open_store(str(tmp_path / "report.db"))
    for k, (kernel, values) in enumerate([("6.12.115-uml", SPREAD), ("6.12.116-uml", SHIFTED)]):
        s.save_result(uml(values, kernel=kernel, started_at=1_700_000_000.0 + k), {"name": "syn"})
    build_report(s, tmp_path / "r", RunFilter(), ReportOptions(threshold=0.005))
    verdicts = json.loads((tmp_path / "r" / "manifest.json").read_text())["verdicts"].values()
    paired = [v for v in verdicts if v.get("test") == "wilcoxon-paired"]
    # goodput and completion time moved 1% on every pair (regressed, p = 1/1024); the subflow shares did not (p = 1)
    assert sum(v["verdict"] == "regressed" and v["p"] == pytest.approx(1 / 1024) for v in paired) >= 2, list(verdicts)
    assert all(v["verdict"] == "unchanged" and v["p"] == 1.0 for v in paired if v["verdict"] != "regressed")
    assert not [v for v in verdicts if v.get("test") == "mann-whitney"], list(verdicts)

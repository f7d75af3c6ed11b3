"""The verdict rule of `compare` on data where it matters (no network: synthetic samples and a real SQLite store).

regressed/improved iff |change| >= threshold AND one-sided exact Mann-Whitney p < alpha. Each case is
chosen so that one half of the rule decides, and the same data is shown to flip when that half changes.
"""
from __future__ import annotations

import pytest

from mptcplab.analysis.compare import compare_samples, compare_stored
from mptcplab.errors import UsageError
from mptcplab.store import open_store

from .synthetic import run

pytestmark = pytest.mark.light  # synthetic samples and a SQLite store

TIGHT = [100.0, 100.2, 99.8, 100.1, 99.9, 100.3, 99.7, 100.05]


def test_a_significant_3_percent_shift_is_unchanged_at_5_percent() -> None:
    candidate = [v * 0.97 for v in TIGHT]  # every candidate below every baseline value
    c = compare_samples(TIGHT, candidate, threshold=0.05, alpha=0.01)
    assert c.p_value < 0.01 and c.change == pytest.approx(-0.03)
    assert c.verdict == "unchanged"  # the threshold, not the p-value, decided
    assert compare_samples(TIGHT, candidate, threshold=0.02, alpha=0.01).verdict == "regressed"


def test_a_10_percent_shift_within_the_noise_is_unchanged() -> None:
    baseline = [80.0, 90.0, 100.0, 110.0, 120.0]
    candidate = [v * 0.9 for v in baseline]  # overlapping samples
    c = compare_samples(baseline, candidate, threshold=0.05, alpha=0.01)
    assert c.change == pytest.approx(-0.10) and c.p_value > 0.01
    assert c.verdict == "unchanged"  # the p-value, not the size, decided
    assert compare_samples(baseline, candidate, threshold=0.05, alpha=0.5).verdict == "regressed"


def test_rising_completion_time_is_a_regression() -> None:
    baseline = [10.0, 10.1, 10.2, 10.3, 10.4]
    candidate = [12.0, 12.1, 12.2, 12.3, 12.4]
    c = compare_samples(baseline, candidate, metric="completion_s", better="lower")
    assert c.change > 0.05 and c.p_value < 0.01 and c.verdict == "regressed"
    assert compare_samples(baseline, candidate, metric="goodput_mbps", better="higher").verdict == "improved"


@pytest.fixture
def store(tmp_path):
    """A real SQLite store with two labelled, tagged runs on two kernels, both with a warm-up repetition."""
    s = open_store(str(tmp_path / "verdict.db"))
    base = run([20.0, 20.1, 20.2, 20.3, 20.4], label="base", kernel="6.12.43+deb13-cloud-amd64",
               tags={"series": "v1"}, warmup=2.0, started_at=1_700_000_000.0, run_id="aaaa000001")
    cand = run([18.0, 18.1, 18.2, 18.3, 18.4], label="cand", kernel="6.18.0-test",
               tags={"series": "v2"}, warmup=40.0, started_at=1_700_001_000.0, run_id="bbbb000002")
    for r in (base, cand):
        assert s.save_result(r, {"name": "syn"}) == 6
    return s


def test_stored_runs_judged_with_warm_up_left_out(store) -> None:
    report = compare_stored(store, "label:base", "label:cand", ["goodput_mbps", "completion_s"])
    good, completion = report.comparisons
    assert good.baseline_values == [20.0, 20.1, 20.2, 20.3, 20.4]  # not the 2.0 mbit/s warm-up
    assert good.candidate_values == [18.0, 18.1, 18.2, 18.3, 18.4]  # not the 40.0 mbit/s warm-up
    assert good.n_baseline == good.n_candidate == 5
    assert good.verdict == "regressed" and good.change == pytest.approx(-0.1, abs=1e-3)
    assert completion.metric == "completion_s" and completion.change > 0.05 and completion.verdict == "regressed"
    assert report.regressed
    back = compare_stored(store, "label:cand", "label:base", ["completion_s"])
    assert back.comparisons[0].verdict == "improved" and not back.regressed


@pytest.mark.parametrize("selector", [
    "label:base", "kernel:6.12.43+deb13-cloud-amd64", "tag:series=v1", "series=v1",
    "run:aaaa000001", "aaaa000001", "aaaa00", "base", "6.12.43+deb13-cloud-amd64",
])
def test_every_selector_form_resolves(store, selector: str) -> None:
    assert store.select_runs(selector) == ["aaaa000001"]
    report = compare_stored(store, selector, "label:cand")
    assert report.comparisons[0].baseline_values == [20.0, 20.1, 20.2, 20.3, 20.4]


@pytest.mark.parametrize("selector", ["label:nobody", "kernel:5.4.0", "tag:series=v9", "series=v9", "run:aaaa", "nothing"])
def test_a_selector_that_matches_nothing_is_a_usage_error(store, selector: str) -> None:
    assert store.select_runs(selector) == []
    with pytest.raises(UsageError) as e:
        compare_stored(store, selector, "label:cand")
    assert e.value.exit_code == 2 and selector in e.value.message

"""One verdict from every command: the metric table built from the workload specs, each case judged by its main
metric by compare, history, runs and the report index alike (a synthetic store: the values decide the verdicts)."""
from __future__ import annotations

import pytest

from mptcplab.errors import UsageError
from mptcplab.metrics import METRIC_TABLE, METRICS_BY_KIND, UnknownMetric, main_metric, metric
from mptcplab.workload_specs import SPECS

pytestmark = pytest.mark.light  # synthetic results in a SQLite store, no traffic


def test_an_unknown_metric_or_kind_is_refused_not_guessed() -> None:
    with pytest.raises(UnknownMetric) as e:
        metric("latency_p95_ms")
    assert isinstance(e.value, UsageError) and "unknown metric 'latency_p95_ms'" in e.value.message
    assert "latency_p99_ms" in (e.value.hint or "")  # the choices are named
    with pytest.raises(UnknownMetric, match="workload kind 'torrent' declares no metrics"):
        main_metric("torrent")  # no silent goodput for a kind nobody declared
    assert metric("wifi.idle_queued_share").better == "lower"  # a path's subflow metric is known by its base name


def test_the_metric_table_is_built_from_what_each_spec_declares() -> None:
    for spec in SPECS:
        kind = spec.model_fields["kind"].default
        measures = spec.MEASURES
        assert METRICS_BY_KIND[kind] is measures
        for row in measures.metrics:
            assert METRIC_TABLE[row.name] is row
        assert measures.main in METRIC_TABLE and measures.baseline in METRIC_TABLE
    assert main_metric("rr") == "latency_p99_ms" and metric("latency_p99_ms").better == "lower"


# -- one synthetic store, every command ---------------------------------------------------------------------------

BASE, CAND = "6.1.0-50-cloud-amd64", "6.12.43+deb12-cloud-amd64"
BULK, RR = "syn-bulk", "syn-rr"


def _rr_run(goodputs, p99s, **kw):
    """An rr run: goodput counts transactions' bytes, the verdict is the p99 latency (the values decide)."""
    from .synthetic import run

    r = run(goodputs, scenario=RR, **kw)
    for rep, p99 in zip(r.repetitions, p99s):
        rep.metrics.update(latency_p99_ms=p99, latency_p50_ms=p99 / 3)
    return r


def _guest(r, accelerator="tcg"):
    """Make a synthetic run one measured in a guest under netem (as the suite's runs are)."""
    r.backend = "netem"
    r.environment["guest"] = {"accelerator": accelerator}
    return r


@pytest.fixture
def two_kernels(tmp_path):
    """A bulk case whose goodput fell 20% and an rr case whose goodput fell 12% while its p99 latency held:
    by its main metric (p99) the rr case is unchanged, by goodput it would be regressed."""
    from mptcplab.store import open_store

    from .synthetic import run

    store = open_store(str(tmp_path / "one.db"))
    t = 1_700_000_000.0
    runs = [
        (run([100.0, 100.4, 99.8, 100.2, 99.6], scenario=BULK, kernel=BASE, started_at=t), {"workload": {"kind": "bulk"}}),
        (run([80.0, 80.3, 79.8, 80.1, 79.9], scenario=BULK, kernel=CAND, started_at=t + 100), {"workload": {"kind": "bulk"}}),
        # imported without their scenario: the kind is inferred from the latency metrics they stored
        (_rr_run([2.0, 2.01, 1.99, 2.02, 1.98], [30.0, 30.1, 29.9, 30.2, 29.8], kernel=BASE, started_at=t + 10), None),
        (_rr_run([1.76, 1.77, 1.75, 1.78, 1.74], [30.05, 29.95, 30.1, 29.9, 30.0], kernel=CAND, started_at=t + 110), None),
    ]
    for r, content in runs:
        store.save_result(_guest(r), content)
    return store


def _index_verdicts(html: str) -> dict[str, list[str]]:
    """Scenario -> the first class of each cell of its index row (verdict-..., not-measured, reference, ...)."""
    import re

    out = {}
    for row in re.findall(r"<tr>\s*<th><a [^>]*>([^<]+)</a>(.*?)</tr>", html, re.S):
        out[row[0]] = [c.split()[0] for c in re.findall(r'<td class="cell ([^"]*)"', row[1])]
    return out


def test_compare_history_runs_and_the_report_index_give_the_same_verdicts(two_kernels, tmp_path) -> None:
    from mptcplab.analysis.compare import compare_stored
    from mptcplab.analysis.history import history_stored
    from mptcplab.analysis.kernel_history import histories_by_kernel
    from mptcplab.store import RunFilter
    from mptcplab.webreport import build_report

    store = two_kernels
    assert store.main_metrics() == {BULK: "goodput_mbps", RR: "latency_p99_ms"}
    expected = {BULK: ("goodput_mbps", "regressed"), RR: ("latency_p99_ms", "unchanged")}

    report = compare_stored(store, f"kernel:{BASE}", f"kernel:{CAND}")
    assert {c.scenario: (c.metric, c.verdict) for c in report.comparisons} == expected
    for name, (metric, verdict) in expected.items():
        hist = history_stored(store, name)
        assert (hist.metric, hist.points[-1].verdict) == (metric, verdict)
        series = histories_by_kernel(store, name)
        assert len(series) == 1 and series[0].metric == metric
        assert [c.verdict for c in series[0].change_points] == ([verdict] if verdict != "unchanged" else [])
    listed = {(r.scenario, r.kernel): (r.metric, r.median) for r in store.list_runs(RunFilter(), with_medians=True)}
    assert listed[(RR, CAND)] == ("latency_p99_ms", 30.0) and listed[(BULK, CAND)] == ("goodput_mbps", 80.0)

    build_report(store, tmp_path / "site")
    index = _index_verdicts((tmp_path / "site" / "index.html").read_text())
    assert index[BULK] == ["reference", "verdict-regressed"] and index[RR] == ["reference", "verdict-unchanged"]
    # a metric a workload does not measure is n/a, not a red failed cell
    latency = _index_verdicts((tmp_path / "site" / "index-latency_p99_ms.html").read_text())
    assert latency[BULK] == ["not-measured", "not-measured"] and latency[RR] == ["reference", "verdict-unchanged"]

    # --metric overrides everywhere alike: by goodput the rr case regressed too
    forced = compare_stored(store, f"kernel:{BASE}", f"kernel:{CAND}", ["goodput_mbps"])
    assert {c.scenario: c.verdict for c in forced.comparisons} == {BULK: "regressed", RR: "regressed"}
    assert history_stored(store, RR, "goodput_mbps").points[-1].verdict == "regressed"
    goodput = _index_verdicts((tmp_path / "site" / "index-goodput_mbps.html").read_text())
    assert goodput[RR] == ["reference", "verdict-regressed"]


def test_a_selection_compared_with_itself_is_refused(two_kernels) -> None:
    from mptcplab.analysis.compare import compare_stored

    with pytest.raises(UsageError, match="select the same 2 runs"):
        compare_stored(two_kernels, f"kernel:{BASE}", BASE)


def test_history_keeps_runs_under_other_conditions_in_their_own_series(tmp_path) -> None:
    from mptcplab.analysis.history import history_stored
    from mptcplab.analysis.kernel_history import histories_by_kernel
    from mptcplab.store import open_store

    store = open_store(str(tmp_path / "mixed.db"))
    t = 1_700_000_000.0
    for i, kernel in enumerate((BASE, CAND, "6.16.12+deb13-cloud-amd64")):  # three guest kernels, p99 steady
        store.save_result(_guest(_rr_run([2.0] * 5, [30.0, 30.1, 29.9, 30.2, 29.8], kernel=kernel, started_at=t + i)), None)
    # one run on this host's kernel, on the wire backend: 60% slower, because it is another machine and emulator
    host = _rr_run([2.0] * 5, [48.0, 48.1, 47.9, 48.2, 47.8], kernel="6.18.44-host", started_at=t + 10)
    host.environment.update(cpu_model="Other CPU", cpu_count=8)
    store.save_result(host, None)

    apart = histories_by_kernel(store, RR)
    assert [len(h.points) for h in apart] == [3, 1] and not any(h.change_points for h in apart)
    assert "link backend netem" in apart[0].series and "executor qemu" in apart[0].series
    mixed = histories_by_kernel(store, RR, mix=True)
    assert len(mixed) == 1 and [c.verdict for c in mixed[0].change_points] == ["regressed"]  # what --mix would claim
    assert any(n.startswith("--mix:") for n in mixed[0].notes)
    pairwise = history_stored(store, RR)
    assert pairwise.points[-1].verdict is None and pairwise.points[-1].series  # first of its own series: not judged
    assert history_stored(store, RR, mix=True).points[-1].verdict == "regressed"


def test_no_change_point_on_a_side_with_fewer_repetitions_than_the_rule_needs(tmp_path) -> None:
    from mptcplab.analysis.kernel_history import histories_by_kernel
    from mptcplab.store import open_store

    from .synthetic import run

    store = open_store(str(tmp_path / "few.db"))
    t = 1_700_000_000.0
    for i, kernel in enumerate((BASE, CAND)):
        store.save_result(_guest(run([100.0, 100.4, 99.8, 100.2, 99.6], scenario=BULK, kernel=kernel, started_at=t + i)), None)
    # 3 repetitions 30% slower: 10 against 3 could reach p < 0.01 (1/286), but 3 say little about that kernel
    store.save_result(_guest(run([70.0, 70.2, 69.9], scenario=BULK, kernel="6.16.12+deb13-cloud-amd64", started_at=t + 5)), None)
    hist, = histories_by_kernel(store, BULK)
    assert hist.change_points == []
    assert any("a side has 3 repetitions, fewer than the 5 the rule needs at alpha 0.01" in n for n in hist.notes)


# -- the "why" where people look -----------------------------------------------------------------------------------

def _best_path_run():
    """slow-extra-path as stored: 2 MPTCP repetitions interleaved with TCP on each path, the slow one timing out
    as designed; the emulator's counters in the order the repetitions ran (before entries named their repetition)."""
    from mptcplab.result import SubflowResult

    from .synthetic import run

    r = run([14.0, 14.2], scenario="slow-extra-path")
    mptcp = r.repetitions
    for rep in mptcp:
        rep.subflows = [SubflowResult(path="fast", share=0.8, bytes_sent=800, metrics={
                            "capacity_share": 0.9, "idle_queued_share": 0.56, "sndbuf_limited_ms": 574.0,
                            "rwnd_limited_ms": 0.0, "cwnd_median": 40.0, "cwnd_max": 61.0}),
                        SubflowResult(path="slow", share=0.2, bytes_sent=200, metrics={"capacity_share": 0.1})]
        rep.metrics.update(reinjections=12.0, duplicate_data=3.0, ofo_queue=33_700.0, rcv_pruned=0.0)
    fast0, slow0, fast1, slow1 = (mptcp[0].model_copy(update={"index": 2 + i, "baseline_path": p, "started_at": t,
                                                               "status": "timeout" if p == "slow" else "completed"})
                                  for i, (p, t) in enumerate([("fast", 1.0), ("slow", 2.0), ("fast", 4.0), ("slow", 5.0)]))
    mptcp[0].started_at, mptcp[1].started_at = 0.0, 3.0
    r.repetitions = [*mptcp, fast0, slow0, fast1, slow1]  # index order, as the store gives them back
    ran = [mptcp[0], fast0, slow0, mptcp[1], fast1, slow1]
    r.environment["link_stats"] = [{"paths": {p: {"up": {"frames_in": 100 * (i + 1)}} for p in ("fast", "slow")}}
                                   for i, _ in enumerate(ran)]
    r.errors = ["baseline on slow (round 1): timeout: stopped after 2.0 s, 2 times as long as the path fast took alone"]
    return r, ran


def test_show_and_the_run_page_say_why(tmp_path) -> None:
    import io

    from rich.console import Console

    from mptcplab.analysis.diagnosis import diagnose
    from mptcplab.report import print_details
    from mptcplab.store import open_store
    from mptcplab.webreport import build_report

    r, _ = _best_path_run()
    lines = diagnose(r).lines()
    assert lines[0] == "why (median of 2 MPTCP repetitions):"
    assert lines[1] == ("  path fast: 80% of the bytes for 90% of the capacity; idle 56% of the time data waited; "
                        "send-buffer limited 574 ms; receive-window limited 0 ms; cwnd 40 (max 61) segments")
    assert lines[-1] == "  connection: reinjections 12, duplicate data 3, OFO queue 33.7k, receive queue pruned 0"
    out = io.StringIO()
    print_details(r, Console(file=out, width=200))
    text = out.getvalue()
    assert "idle 56% of the time data waited" in text and "OFO queue 33.7k" in text
    assert "error:" not in text and "note: TCP on slow (round 1) timed out as expected" in text  # designed, not a failure
    assert "TCP on fast (round 2)" in text  # baseline repetitions are named by what they are

    store = open_store(str(tmp_path / "why.db"))
    store.save_result(r, None)
    build_report(store, tmp_path / "site")
    page = (tmp_path / "site" / "runs" / f"{r.run_id}.html").read_text()
    assert 'id="diagnosis"' in page and "574" in page and "33 700" in page
    assert 'id="failures"' not in page and "timed out as expected" in page  # a note, no red "What failed" box
    assert "Stored without time series" in page


def test_the_emulators_counters_belong_to_the_repetition_that_ran_them() -> None:
    r, ran = _best_path_run()
    pairs = r.link_stats()
    assert [rep.index for rep, _ in pairs] == [rep.index for rep in ran]  # by start time, not by index order
    assert [r.repetition_label(rep) for rep, _ in pairs] == [
        "1", "TCP on fast (round 1)", "TCP on slow (round 1)", "2", "TCP on fast (round 2)", "TCP on slow (round 2)"]
    # entries that name their repetition (what the runner records now) are paired by that name
    r.environment["link_stats"] = [dict(e, repetition=rep.index) for e, rep in zip(r.environment["link_stats"], ran)]
    r.repetitions.reverse()
    assert [rep.index for rep, _ in r.link_stats()] == [rep.index for rep in ran]


# -- history charts ----------------------------------------------------------------------------------------------------

def test_history_charts_colour_steps_by_verdict_and_keep_labels_apart(two_kernels, tmp_path) -> None:
    from matplotlib.colors import to_hex

    from mptcplab.analysis.history import Point
    from mptcplab.analysis.kernel_history import histories_by_kernel
    from mptcplab.plots import kernel_history_figure, plot_kernel_history
    from mptcplab.webreport.figures import history_figure

    hist, = histories_by_kernel(two_kernels, BULK)
    fig = kernel_history_figure([hist])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["6.1.0", "6.12.43"]  # versions, not releases
    lines = [to_hex(line.get_color()) for line in ax.get_lines() if list(line.get_xdata()) == [0.5, 0.5]]
    assert lines == ["#c0392b"]  # the regression's change point, in red
    assert plot_kernel_history([hist], tmp_path / "k.png").stat().st_size > 10_000

    points = [Point(run_id=f"r{i}", started_at=i, kernel="k", label=None, scenario_hash="h", status="completed", n=5,
                    median=10.0, ci95=(9.0, 11.0), values=[10.0] * 5, conditions_changed=["machine"] if i else [])
              for i in range(6)]
    doc = history_figure(points, "goodput_mbps", "mbit/s", [""] * 6, [f"v{i}" for i in range(6)], [2], {2: "improved"})
    step = next(s for s in doc["layout"]["shapes"] if s["line"]["dash"] == "solid")
    assert step["line"]["color"] == "#1e8449"  # an improvement is green
    labels = [(a["x"], a["y"]) for a in doc["layout"]["annotations"]]
    assert len(labels) == 6 and len(set(labels)) == 6  # five "conditions changed" and the step: none on another
    assert all(0 < y <= 1 for _, y in labels)  # inside the plot, clear of the legend above it


def test_the_cli_gives_the_same_verdicts_and_refuses_a_selection_against_itself(two_kernels, tmp_path) -> None:
    import json

    from .conftest import cli, cli_in_process

    db = two_kernels.url.database
    cmp = cli("compare", "--db", db, "--baseline", f"kernel:{BASE}", "--candidate", f"kernel:{CAND}", "--format", "json")
    assert cmp.returncode == 1, cmp.stderr  # the bulk case regressed; the rr case did not flip the gate on goodput
    assert {(c["scenario"], c["metric"], c["verdict"]) for c in json.loads(cmp.stdout)["comparisons"]} == {
        (BULK, "goodput_mbps", "regressed"), (RR, "latency_p99_ms", "unchanged")}
    hist = cli_in_process("history", RR, "--db", db, "--format", "json")
    assert hist.returncode == 0 and json.loads(hist.stdout)["metric"] == "latency_p99_ms"
    assert json.loads(hist.stdout)["points"][-1]["verdict"] == "unchanged"
    by_kernel = cli_in_process("history", BULK, "--by", "kernel", "--db", db, "--plot", str(tmp_path / "k.png"))
    assert by_kernel.returncode == 0 and "regressed" in by_kernel.stdout and (tmp_path / "k.png").stat().st_size > 10_000
    listed = cli_in_process("runs", "--db", db)
    assert listed.returncode == 0 and "latency_p99_ms" in listed.stdout and "goodput_mbps" in listed.stdout
    forced = cli_in_process("compare", "--db", db, "--baseline", f"kernel:{BASE}", "--candidate", f"kernel:{CAND}",
                            "--metric", "goodput_mbps", "--format", "json")
    assert {c["verdict"] for c in json.loads(forced.stdout)["comparisons"]} == {"regressed"}
    same = cli_in_process("compare", "--db", db, "--baseline", f"kernel:{BASE}", "--candidate", f"kernel:{BASE}")
    assert same.returncode == 2 and same.stdout == ""
    assert same.stderr.count("\n") == 1 and same.stderr.startswith("error: --baseline") and "itself" in same.stderr
    unknown = cli_in_process("runs", "--db", db, "--metric", "latency_p95_ms")
    assert unknown.returncode == 2 and unknown.stderr.startswith("error: --metric 'latency_p95_ms': choose one of")

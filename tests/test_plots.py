"""Plots a person can read, and `show` saying everything: judged on real runs, read back from the figures and PNGs.

The figure checks use the matplotlib objects the plotting functions return (what a
reader sees: legend position, shared scales, shaded event windows, gaps), the PNG
checks read the written file back.
"""
from __future__ import annotations

import json
import math
import re

import matplotlib.colors
import matplotlib.image
import matplotlib.pyplot
import pytest

from mptcplab.runner import RunOptions, run_scenarios
from mptcplab.scenario import load_scenario
from mptcplab.store import RunFilter, open_store
from mptcplab.store.recorder import StoreRecorder

from .conftest import cli, cli_in_process, requires_root, write_scenario

pytestmark = requires_root

# a lossy path (a), and a clean one (b) blackholed from 1.5 s to 2.5 s of a 4 s download
LOSSY = """
name = "pl-lossy"
[[path]]
name = "a"
rate = "20mbit"
delay = "10ms"
loss = "1%"
[[path]]
name = "b"
rate = "10mbit"
delay = "20ms"
[tcp]
congestion_control = "bbr"  # keeps the lossy path near its rate, where repaired losses bunch cumulative ACKs
[workload]
direction = "download"
duration = "4s"
[[event]]
at = "1500ms"
path = "b"
action = "down"
[[event]]
at = "2500ms"
path = "b"
action = "up"
[run]
link_backend = "wire"
"""
RATES = {"a": 20.0, "b": 10.0}
DOWN = (1.5, 2.5)

# the only path loses every frame: the client never connects, so the repetition fails before any sample
NEVER_CONNECTS = """
name = "pl-never"
[[path]]
name = "a"
rate = "10mbit"
loss = "100%"
[workload]
size = "1MiB"
[run]
repeat = 1
timeout = "2s"
link_backend = "wire"
"""


@pytest.fixture(scope="module")
def lossy(tmp_path_factory):
    """Two real repetitions of LOSSY, stored: (db, scenario, result as stored)."""
    tmp = tmp_path_factory.mktemp("plots")
    scenario = load_scenario(write_scenario(tmp, LOSSY))
    db = str(tmp / "plots.db")
    result = run_scenarios([scenario], RunOptions(repeat=2, sinks=[StoreRecorder(db)]))[0]
    return db, scenario, open_store(db).load_result(result.run_id)


@pytest.fixture(scope="module")
def failed(tmp_path_factory):
    """A real run whose repetition failed before its first sample: (db, run id, the CLI's output)."""
    tmp = tmp_path_factory.mktemp("failed")
    db = str(tmp / "failed.db")
    proc = cli("run", str(write_scenario(tmp, NEVER_CONNECTS)), "--db", db, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (run,) = open_store(db).list_runs(RunFilter(scenario="pl-never"))
    return db, run.uid, proc


def _grid(fig, columns):
    """The figure's 2 x columns data axes, row-major as plt.subplots made them."""
    axes = fig.axes[:2 * columns]
    return axes[:columns], axes[columns:]


def _path_lines(ax, path_index):
    """The data lines of one path (the Cn colour cycle), not the configured-rate or event lines."""
    colour = matplotlib.colors.to_rgba(f"C{path_index}")
    return [ln for ln in ax.get_lines() if matplotlib.colors.to_rgba(ln.get_color()) == colour and ln.get_linestyle() == "-"]


def test_run_figure_is_readable(lossy):
    from mptcplab.plots import run_figure

    _, scenario, result = lossy
    fig = run_figure(result, scenario=scenario.normalized())
    top, bottom = _grid(fig, 2)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    # shared scales: both repetitions on one y scale per row
    assert top[0].get_ylim() == top[1].get_ylim() and bottom[0].get_ylim() == bottom[1].get_ylim()
    # the legend covers no data: it lies outside every axes
    (legend,) = fig.legends
    box = legend.get_window_extent(renderer)
    for ax in fig.axes[:4]:
        assert not box.overlaps(ax.get_window_extent(renderer)), "the legend covers a plot"
    labels = [t.get_text() for t in legend.get_texts()]
    assert "b down 1.5–2.5 s" in labels and "a configured rate" in labels, labels
    # the event window is shaded in every panel, exactly where the scenario put it
    for ax in top + bottom:
        spans = [p for p in ax.patches if hasattr(p, "get_x") and math.isclose(p.get_x(), DOWN[0])
                 and math.isclose(p.get_x() + p.get_width(), DOWN[1])]
        assert spans, "no shaded down/up window"
    # the figure says how its rate was computed
    caption = fig._supxlabel.get_text().replace("\n", " ")
    assert "delivered (ACKed or SACKed)" in caption and "median RTT" in caption, caption
    # nothing is cut at the figure's edges
    for text in [fig._suptitle, fig._supxlabel] + [ax.title for ax in top]:
        ext = text.get_window_extent(renderer)
        assert ext.x0 >= 0 and ext.x1 <= fig.bbox.x1, text.get_text()
    for col in range(2):
        (b_rtt,) = _path_lines(bottom[col], 1)
        t, rtt = b_rtt.get_xdata(), b_rtt.get_ydata()
        blackholed = [v for x, v in zip(t, rtt) if DOWN[0] + 0.1 <= x <= DOWN[1]]
        assert blackholed and all(math.isnan(v) for v in blackholed), "the blackholed path's RTT is drawn, not a gap"
        assert any(not math.isnan(v) for x, v in zip(t, rtt) if x < DOWN[0]), "b's RTT before the failure is missing"
    matplotlib.pyplot.close(fig)


def test_plotted_rates_are_ones_the_paths_could_carry(lossy):
    from mptcplab.plots import run_figure

    _, scenario, result = lossy
    fig = run_figure(result, scenario=scenario.normalized())
    top, _ = _grid(fig, 2)
    for col, rep in enumerate(result.repetitions):
        for i, (path, rate) in enumerate(RATES.items()):
            (line,) = _path_lines(top[col], i)
            plotted = [v for v in line.get_ydata() if not math.isnan(v)]
            assert max(plotted) <= rate * 1.05, f"rep {col + 1} {path}: {max(plotted):.2f} mbit/s on a {rate:g} mbit path"
            assert max(plotted) > rate * 0.3, f"rep {col + 1} {path}: the path carried almost nothing"
            # the stored delivered series holds the same bytes as the cumulative ACKs, only not bunched
            ts = rep.timeseries
            delivered = sum(r * ts.interval_s for r in ts.delivered_mbps[path])
            acked = sum(r * ts.interval_s for r in ts.throughput_mbps[path])
            assert delivered == pytest.approx(acked, rel=0.1)
    matplotlib.pyplot.close(fig)


def test_run_png_reads_back(lossy, tmp_path):
    db, _, result = lossy
    png = tmp_path / "run.png"
    proc = cli("plot", result.run_id, "-o", str(png), "--db", db)
    assert proc.returncode == 0, proc.stderr
    img = matplotlib.image.imread(png)
    assert img.shape[1] >= 1000 and img.shape[0] >= 600 and img.std() > 0.05  # two columns, not a blank canvas
    one = tmp_path / "rep2.png"
    assert cli_in_process("plot", result.run_id, "-o", str(one), "--rep", "2", "--db", db).returncode == 0
    assert matplotlib.image.imread(one).shape[1] < 0.75 * img.shape[1]  # one column


def test_plot_says_what_is_really_wrong(lossy, failed, tmp_path):
    db, _, result = lossy
    png = tmp_path / "x.png"
    nine = cli("plot", result.run_id, "-o", str(png), "--rep", "9", "--db", db)
    assert nine.returncode == 2 and nine.stderr == "error: no repetition 9: the run has 2 (--rep 1 to 2)\n", nine.stderr
    assert not png.exists()
    fdb, fid, _ = failed
    stored = open_store(fdb).load_result(fid)
    reason = ([r.error for r in stored.repetitions if r.error] + list(stored.errors))[0]
    proc = cli_in_process("plot", fid, "-o", str(png), "--db", fdb)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert reason in proc.stderr and "no-timeseries" not in proc.stderr, proc.stderr
    # and where the time series really are missing, that is what it says
    saved = tmp_path / "no-ts.json"
    saved.write_text(json.dumps(result.to_json(timeseries=False)))
    proc = cli_in_process("plot", str(saved), "-o", str(png))
    assert proc.returncode == 2 and "--no-timeseries" in proc.stderr, proc.stderr


def test_show_prints_everything_readably(lossy):
    db, _, result = lossy
    proc = cli("show", result.run_id, "--db", db)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    # link settings: one line per path and direction, with units
    assert "a down (server -> client): rate 20 mbit/s, delay 10 ms, jitter 0 ms, loss 1%" in text, text
    assert "b up (client -> server): rate 10 mbit/s, delay 20 ms" in text
    assert "{" not in text  # no raw JSON
    # sysctls as key = value
    assert re.search(r"^  net\.mptcp\.enabled = 1$", text, re.M), text
    # the MIB counters that changed, client and server, and none that did not
    counters = {attr: {k for r in result.repetitions for k, v in getattr(r, attr).items() if v} for attr in ("mib", "mib_server")}
    for attr, side in (("mib", "client"), ("mib_server", "server")):
        assert counters[attr]
        for k in counters[attr]:
            assert re.search(rf"│ {k}\s+│ {side}\s+│", text), (k, side)
    unchanged = set(result.repetitions[0].mib) - counters["mib"] - counters["mib_server"]
    assert unchanged and not any(re.search(rf"\b{k}\b", text) for k in unchanged)
    # the forwarder's drops by cause: random loss on a, the blackhole on b
    rows = [ln for ln in text.splitlines() if re.match(r"^│ 1\s+│ (a|b)\s+│ down", ln)]
    assert any("│ a " in r and re.search(r"loss \d+", r) for r in rows), rows
    assert any("│ b " in r and re.search(r"down \d+", r) for r in rows), rows


def test_show_and_run_give_the_failure_reason(failed):
    db, run_id, run_proc = failed
    stored = open_store(db).load_result(run_id)
    reasons = list(stored.errors) + [r.error for r in stored.repetitions if r.error]
    assert reasons, "the failed run recorded no reason"
    said = reasons[0].split(" (")[0]  # the store keeps the hint in brackets, the one-line error after a dash
    assert said in run_proc.stdout + run_proc.stderr
    for rep in stored.repetitions:  # repetitions that did not complete are marked in `run`'s table, with why
        if not rep.completed:
            assert rep.status in run_proc.stdout and (rep.error or "")[:40] in run_proc.stdout.replace("\n", " ")
    proc = cli("show", run_id, "--db", db)
    assert proc.returncode == 0, proc.stderr
    rep_status = stored.repetitions[0].status if stored.repetitions else "-"
    assert all(f"error: {r}" in proc.stdout or f"{rep_status}: {r}" in proc.stdout for r in reasons), proc.stdout


def test_run_table_marks_what_did_not_complete(lossy):
    """A repetition that timed out shows its status and reason in the table `run` and `show` print."""
    from rich.console import Console

    from mptcplab.report import print_run

    _, _, result = lossy
    timed_out = result.model_copy(deep=True)
    timed_out.repetitions[1].status = "timeout"
    timed_out.repetitions[1].error = "the transfer did not finish within the timeout of 4s"
    console = Console(record=True, width=250)
    print_run(timed_out, console)
    table = console.export_text()
    (row,) = [ln for ln in table.splitlines() if ln.startswith("│   2")]
    assert "timeout: the transfer did not finish within the timeout of 4s" in row, table
    (first,) = [ln for ln in table.splitlines() if ln.startswith("│   1")]
    assert "timeout" not in first
    console = Console(record=True, width=250)
    print_run(result, console)
    assert "status" not in console.export_text()  # no column when everything completed

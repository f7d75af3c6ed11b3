"""`mptcplab report` in a real browser: headless Chromium driven by Selenium, over file://, from real runs.

The store is filled with real MPTCP runs: a 2-path scenario at 2 × 10 mbit
(the baseline), the same with one path at 5 mbit (the candidate: a new
scenario version and less capacity), and a run whose only repetition times out
because both paths are blackholed. Every page kind is opened; the console must
stay free of errors, every chart must hold the data the store holds, links
must lead to pages that exist, and with JavaScript off the tables must still
be there. Screenshots go to tests/artifacts/report/ (ignored by git).
"""
from __future__ import annotations

import json
import shutil
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from mptcplab.store import open_store

from .conftest import cli, cli_in_process, requires_root, write_scenario, light
from .pg import create_database, postgres_server  # noqa: F401  (a fixture)

pytestmark = requires_root

ARTIFACTS = Path(__file__).parent / "artifacts" / "report"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
needs_browser = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                   reason="needs Debian's chromium and chromium-driver (make install)")

SCENARIO = """
name = "rp-two-paths"
[[path]]
name = "a"
rate = "10mbit"
[[path]]
name = "b"
rate = "{rate_b}"
[workload]
size = "1MiB"
[run]
repeat = 5
"""

BLACKHOLE = """
name = "rp-blackhole"
[[path]]
name = "a"
rate = "10mbit"
[[path]]
name = "b"
rate = "10mbit"
[workload]
size = "4MiB"
[[event]]
at = "0.5s"
path = "a"
action = "down"
[[event]]
at = "0.5s"
path = "b"
action = "down"
[run]
repeat = 1
timeout = "3s"
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A store with two real runs and one failed repetition, and the report built from it."""
    tmp = tmp_path_factory.mktemp("report")
    db = str(tmp / "results.db")
    for label, rate_b in (("base", "10mbit"), ("cand", "5mbit")):
        path = write_scenario(tmp, SCENARIO.format(rate_b=rate_b), f"{label}.toml")
        done = cli("run", str(path), "--label", label, "--db", db)
        assert done.returncode == 0, done.stderr
    failing = cli("run", str(write_scenario(tmp, BLACKHOLE, "blackhole.toml")), "--label", "broken", "--db", db)
    assert failing.returncode == 1, failing.stderr
    out = tmp / "site"
    built = cli("report", str(out), "--db", db, "--compare", "base..cand", "--compare-metric", "goodput_mbps",
                "--compare-metric", "completion_s")
    assert built.returncode == 0, built.stderr
    store = open_store(db, create=False)
    runs = {r.label: r.uid for r in store.list_runs(_all())}
    return {"out": out, "db": db, "store": store, "runs": runs, "built": built}


def _all():
    from mptcplab.store import RunFilter

    return RunFilter()


def _chrome(javascript: bool = True):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1000"):
        opts.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="mptcplab-chromium-")
    opts.add_argument(f"--user-data-dir={profile}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    if not javascript:
        opts.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    return driver, profile


@pytest.fixture(scope="module")
def browser():
    driver, profile = _chrome()
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser_nojs():
    driver, profile = _chrome(javascript=False)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _open(driver, path: Path, shot: str) -> list[dict]:
    """Load a page, wait for every chart to be drawn, save a screenshot; the charts' data as plotly holds it."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(path.as_uri())
    WebDriverWait(driver, 30).until(lambda d: d.execute_script(
        "return document.readyState === 'complete' && Array.from(document.querySelectorAll('[data-figure]'))"
        ".every(e => e.classList.contains('js-plotly-plot') && e.data)"))
    charts = driver.execute_script(
        "return Array.from(document.querySelectorAll('.js-plotly-plot')).map(e => ({"
        "id: e.getAttribute('data-figure'), traces: e.data.map(t => ({name: t.name, x: (t.x || []).length,"
        " y: (t.y || []).filter(v => v !== null).length, ymax: (t.y || []).filter(v => v !== null).reduce((a, b) => Math.max(a, b), 0)})),"
        " drawn: e.querySelectorAll('.scatterlayer .trace').length}))")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return document.body.scrollHeight")
    driver.set_window_size(1400, min(max(height + 40, 600), 8000))
    driver.save_screenshot(str(ARTIFACTS / f"{shot}.png"))
    driver.set_window_size(1400, 1000)
    return charts


def _errors(driver) -> list[dict]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def _local_links(driver) -> list[Path]:
    hrefs = driver.execute_script("return Array.from(document.querySelectorAll('a[href]')).map(a => a.href)")
    return [Path(unquote(urlparse(h).path)) for h in hrefs if h.startswith("file://")]


def _run_page(site, label: str) -> Path:
    return site["out"] / "runs" / f"{site['runs'][label]}.html"


@needs_browser
def test_run_page_draws_every_repetition_of_the_stored_run(site, browser):
    result = site["store"].load_result(site["runs"]["base"])
    charts = _open(browser, _run_page(site, "base"), "run")
    assert _errors(browser) == []
    assert len(charts) == len([r for r in result.repetitions if r.timeseries])  # bulk: no workload chart
    for chart, rep in zip(charts, result.repetitions):
        by_name = {t["name"]: t for t in chart["traces"]}
        for path in ("a", "b"):
            assert by_name[f"{path} throughput"]["x"] == len(rep.timeseries.t) > 0
            assert by_name[f"{path} throughput"]["y"] == len(rep.timeseries.throughput_mbps[path])
            # the sender's cwnd as stored: a point per sample with a subflow on the path (0, none: a gap)
            cwnd = rep.timeseries.cwnd[path]
            assert by_name[f"{path} cwnd"]["x"] == len(cwnd) == len(rep.timeseries.t)
            assert by_name[f"{path} cwnd"]["y"] == sum(1 for v in cwnd if v) > 0
        assert chart["drawn"] == len(chart["traces"])  # every trace has its SVG group
    used = {sf.congestion_control for rep in result.repetitions for sf in rep.subflows} - {""}
    conditions = browser.find_element("id", "conditions").text
    assert used and f"subflows used {', '.join(sorted(used))}" in conditions
    assert result.environment["kernel_release"] in conditions and result.backend in conditions
    assert "name = \"rp-two-paths\"" in browser.find_element("id", "scenario").text
    for link in _local_links(browser):
        assert link.exists(), link


@needs_browser
def test_failed_repetition_is_shown_with_its_status_and_error(site, browser):
    result = site["store"].load_result(site["runs"]["broken"])
    rep = result.repetitions[0]
    assert rep.status in ("timeout", "failed") and rep.error
    _open(browser, _run_page(site, "broken"), "run-failed")
    assert _errors(browser) == []
    failures = browser.find_element("id", "failures").text
    assert f"repetition 1: {rep.status}" in failures and rep.error in failures


@needs_browser
def test_index_grid_links_to_history_and_runs(site, browser):
    _open(browser, site["out"] / "index.html", "index")
    assert _errors(browser) == []
    grid = browser.find_element("id", "grid")
    headers = [th.text.split("\n")[0] for th in grid.find_elements("css selector", "thead th")]
    assert headers[1:] == ["base", "cand", "broken"]  # one kernel: scenario × label, in order of first use
    # each row header: the scenario, then the metric it is judged by on a line of its own
    rows = {tr.find_element("tag name", "th").text.split("\n")[0]: tr for tr in grid.find_elements("css selector", "tbody tr")}
    assert set(rows) == {"rp-two-paths", "rp-blackhole"}
    broken = rows["rp-blackhole"].find_element("css selector", "td.unmeasured a")  # measured nothing: links to the run
    assert broken.get_attribute("href").endswith(f"runs/{site['runs']['broken']}.html") and broken.text == "failed"
    links = _local_links(browser)
    assert links and all(p.exists() for p in links)
    # follow: scenario -> its history -> a point's run page
    rows["rp-two-paths"].find_element("tag name", "a").click()
    assert browser.find_element("tag name", "h1").text.startswith("rp-two-paths · goodput_mbps")
    browser.find_element("css selector", "#history tbody a").click()
    assert "run " in browser.find_element("tag name", "h1").text


@needs_browser
def test_history_chart_holds_every_repetition_and_marks_the_new_scenario_version(site, browser):
    page = site["out"] / "history" / "rp-two-paths" / "goodput_mbps.html"
    charts = _open(browser, page, "history")
    assert _errors(browser) == []
    store = site["store"]
    samples = store.samples([site["runs"]["base"], site["runs"]["cand"]], "goodput_mbps", per_run=True)
    (chart,) = charts
    by_name = {t["name"]: t for t in chart["traces"]}
    assert by_name["repetitions"]["y"] == sum(len(s.values) for s in samples.values()) == 10
    assert by_name["median, 95% CI"]["y"] == 2
    assert "scenario changed" in browser.find_element("id", "history").text
    shapes = browser.execute_script("return document.querySelector('.js-plotly-plot').layout.shapes.length")
    assert shapes >= 1  # the version change drawn as a line
    for link in _local_links(browser):
        assert link.exists(), link


@needs_browser
def test_compare_page_has_the_verdicts_and_every_repetition(site, browser):
    page = next((site["out"] / "compare").glob("*.html"))
    charts = _open(browser, page, "compare")
    assert _errors(browser) == []
    from mptcplab.analysis.compare import compare_stored

    report = compare_stored(site["store"], "base", "cand", ["goodput_mbps", "completion_s"])
    assert len(charts) == len(report.comparisons) == 2
    for chart, c in zip(charts, report.comparisons):
        points = [t["y"] for t in chart["traces"] if "median" not in t["name"]]
        assert points == [c.n_baseline, c.n_candidate]
    table = browser.find_element("id", "verdicts").text
    for c in report.comparisons:
        assert f"{c.scenario} {c.metric}" in table and c.verdict in table
    assert report.comparisons[0].verdict == "regressed"  # half the capacity on one of two paths
    for link in _local_links(browser):
        assert link.exists(), link


@needs_browser
def test_tables_are_there_without_javascript(site, browser_nojs):
    out = site["out"]
    pages = {"index": (out / "index.html", "grid"), "run": (_run_page(site, "base"), "repetitions"),
             "history": (out / "history" / "rp-two-paths" / "goodput_mbps.html", "history"),
             "compare": (next((out / "compare").glob("*.html")), "verdicts")}
    for name, (page, table) in pages.items():
        browser_nojs.get(page.as_uri())
        rows = browser_nojs.find_elements("css selector", f"#{table} tbody tr")
        assert rows, f"{name}: no rows in #{table}"
        assert browser_nojs.execute_script("return document.querySelectorAll('.js-plotly-plot').length") == 0
        browser_nojs.save_screenshot(str(ARTIFACTS / f"{name}-nojs.png"))


def test_every_asset_is_inside_the_report(site):
    out = site["out"]
    html = [p.read_text() for p in out.rglob("*.html")]
    assert not any("http://" in h.split("<footer")[0] or "https://" in h.split("<footer")[0] for h in html)
    assert len(list((out / "assets").glob("plotly-*.min.js"))) == 1


def test_rebuild_rewrites_only_what_changed(site, tmp_path):
    out, db = site["out"], site["db"]
    again = cli("report", str(out), "--db", db, "--compare", "base..cand", "--compare-metric", "goodput_mbps",
                "--compare-metric", "completion_s")
    assert again.returncode == 0 and " 0 pages written" in again.stderr, again.stderr
    # one more run: a copy of the baseline under another id (its real repetitions)
    doc = json.loads(cli_in_process("show", site["runs"]["base"], "--json", "--db", db).stdout)
    doc["run_id"], doc["label"] = "feedc0ffee01", "base"
    (tmp_path / "copy.json").write_text(json.dumps(doc))
    assert cli_in_process("import", str(tmp_path / "copy.json"), "--db", db).returncode == 0
    before = {p.relative_to(out).as_posix(): p.stat().st_mtime_ns for p in out.rglob("*.html")}
    third = cli_in_process("report", str(out), "--db", db, "--compare", "base..cand", "--compare-metric", "goodput_mbps",
                "--compare-metric", "completion_s")
    assert third.returncode == 0, third.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert "feedc0ffee01" in manifest["runs"]
    after = {p.relative_to(out).as_posix(): p.stat().st_mtime_ns for p in out.rglob("*.html")}
    changed = {rel for rel, t in after.items() if before.get(rel) != t}
    # the new run's page, its scenario's history pages, the pages that list every run, the compare page it joins
    expected = {"runs/feedc0ffee01.html", "runs.html", *(p for p in after if p.startswith("history/rp-two-paths/")),
                *(p for p in after if p.startswith("index")), *(p for p in after if p.startswith("compare/"))}
    assert changed == expected
    assert f"{len(changed)} pages written" in third.stderr
    assert any(p.startswith("history/rp-blackhole/") for p in after) and not any(
        p.startswith(("history/rp-blackhole/", "runs/" + site["runs"]["cand"])) for p in changed)


def test_compare_junit_and_markdown_for_ci(site, tmp_path):
    junit = tmp_path / "compare.xml"
    done = cli("compare", "--db", site["db"], "--baseline", "label:base", "--candidate", "label:cand",
               "--metric", "goodput_mbps", "--metric", "completion_s", "--format", "junit", "-o", str(junit),
               "--report-url", "https://ci.example/report/compare/base..cand.html")
    assert done.returncode == 1  # regressed
    suite = ET.parse(junit).getroot()
    cases = suite.findall("testcase")
    assert [(c.get("classname"), c.get("name")) for c in cases] == [
        ("mptcplab.rp-two-paths", "goodput_mbps"), ("mptcplab.rp-two-paths", "completion_s")]
    assert cases[0].find("failure") is not None and suite.get("failures") == str(
        sum(c.find("failure") is not None for c in cases))
    md = cli_in_process("compare", "--db", site["db"], "--baseline", "label:base", "--candidate", "label:cand", "--format", "markdown",
             "--report-url", "https://ci.example/r/index.html")
    assert "[the report](https://ci.example/r/index.html)" in md.stdout


@pytest.fixture(scope="module")
def imported_db(tmp_path_factory) -> str:
    """A store holding one real run (bench/data/two-paths-run.json, label 'shape'), imported: no lab needed."""
    db = str(tmp_path_factory.mktemp("imported") / "results.db")
    done = cli("import", str(Path(__file__).parents[1] / "bench" / "data" / "two-paths-run.json"), "--db", db)
    assert done.returncode == 0, done.stderr
    return db


@light
@pytest.mark.parametrize("args, message", [
    (["--compare", "shape"], "write it as BASELINE..CANDIDATE"),
    (["--compare", "shape..nosuchlabel"], "matches no run"),
    (["--metric", "nope"], "--metric 'nope'"),
    (["--reference", "nosuchlabel"], "is not a column"),
])
def test_report_usage_errors_are_one_line_and_exit_2(imported_db, tmp_path, args, message):
    done = cli("report", str(tmp_path / "r"), "--db", imported_db, *args)
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "r").exists()


@light
def test_report_refuses_a_foreign_directory(imported_db, tmp_path):
    (tmp_path / "mine.txt").write_text("not a report")
    done = cli("report", str(tmp_path), "--db", imported_db)
    assert done.returncode == 2 and "holds no mptcplab report" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


@light
def test_the_reports_verdicts_are_those_of_compare():
    """The report memoizes the Mann-Whitney p-value on the ranks; verdict, change, p, CI and notes must equal
    compare_samples' for samples with and without ties, of equal and unequal sizes, either direction."""
    import math
    import random

    from mptcplab.analysis.compare import compare_samples
    from mptcplab.metrics import metric as metric_def
    from mptcplab.webreport.build import _judge

    rng = random.Random(20261130)
    for _ in range(120):
        n1, n2 = rng.choice([(5, 5), (3, 3), (5, 8), (6, 5)])
        kind = rng.choice(["float", "int", "binary"])
        draw = {"float": lambda mu: rng.gauss(mu, 0.5), "int": lambda mu: float(rng.randint(0, 4) + round(mu - 17.5)),
                "binary": lambda mu: float(rng.random() < (0.8 if mu > 17.7 else 0.5))}[kind]
        base, cand = [draw(18.0) for _ in range(n1)], [draw(17.5) for _ in range(n2)]
        metrics = {"float": ("goodput_mbps", "completion_s"), "int": ("retransmits", "bytes_retrans"),
                   "binary": ("pass_rate",)}[kind]
        for metric in metrics:
            c = compare_samples(base, cand, metric=metric, better=metric_def(metric).better)
            j = _judge(base, cand, metric, 0.05, 0.01, with_ci=True)
            finite = [None if not math.isfinite(x) else x for x in (c.change, *c.ci95)]
            assert (c.verdict, c.p_value, c.notes, finite) == (j["verdict"], j["p"], j["notes"], [j["change"], *j["ci95"]])


@light
def test_the_report_never_loads_the_engine():
    import subprocess
    import sys

    code = ("import sys, mptcplab.webreport.build; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'pyroute2' or m in "
            "('mptcplab.runner', 'mptcplab.lab', 'mptcplab.topology')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_change_point_hook_marks_the_history(site, tmp_path):
    """Change-point detection is not built in yet; a detector plugged into ReportOptions is drawn and listed."""
    from mptcplab.store import RunFilter
    from mptcplab.webreport import ReportOptions, build_report

    seen = []

    def detector(hist):
        seen.append((hist.scenario, hist.metric, len(hist.points)))
        return [len(hist.points) - 1] if len(hist.points) > 1 else []

    runs = site["store"].list_runs(RunFilter(scenario="rp-two-paths"))  # 2, or 3 after the rebuild test's import
    build_report(site["store"], tmp_path / "r", RunFilter(scenario="rp-two-paths"), ReportOptions(change_points=detector))
    assert ("rp-two-paths", "goodput_mbps", len(runs)) in seen
    page = (tmp_path / "r" / "history" / "rp-two-paths" / "goodput_mbps.html").read_text()
    assert 'id="change-points"' in page and 'class="change-point"' in page and "change point" in page


@light
def test_figures_of_a_change_from_zero_are_valid_json():
    """retransmits 0 in one run and 12 in the next: the change has no finite value; the charts must still be JSON."""
    from mptcplab.analysis.compare import compare_samples
    from mptcplab.analysis.history import Point
    from mptcplab.webreport import figures
    from mptcplab.webreport.build import _judge, _tojson

    base, cand = [0.0] * 5, [12.0, 9.0, 14.0, 11.0, 10.0]
    v = _judge(base, cand, "retransmits", 0.05, 0.01, with_ci=True)
    assert v["change"] is None and v["verdict"] == compare_samples(base, cand, metric="retransmits", better="lower").verdict == "regressed"
    points = [Point(run_id=f"r{i}", started_at=float(i), kernel="k", label=None, scenario_hash="h", status="completed",
                    n=5, median=float(sum(vals) / 5), ci95=(min(vals), max(vals)), values=vals)
              for i, vals in enumerate((base, cand))]
    points[1].change, points[1].verdict, points[1].p_value = v["change"], v["verdict"], v["p"]
    fig = figures.history_figure(points, "retransmits", "segments", ["a.html", "b.html"], ["k", "k"], [])
    doc = json.loads(str(_tojson(fig)))
    assert "from 0" in doc["data"][1]["text"][1] and len(doc["data"][0]["y"]) == 10
    c = compare_samples(base, cand, scenario="s", metric="retransmits", better="lower")
    assert json.loads(str(_tojson(figures.comparison_figure(c, "segments", 0.05))))["layout"]["title"]["text"].endswith("(from 0)")


def test_report_from_a_postgresql_store(site, postgres_server, tmp_path):  # noqa: F811
    """A team's store is PostgreSQL: the same runs, imported there, give the same pages."""
    url = create_database(postgres_server)
    for label in ("base", "cand", "broken"):
        doc = cli("show", site["runs"][label], "--json", "--db", site["db"]).stdout
        (tmp_path / f"{label}.json").write_text(doc)
        assert cli("import", str(tmp_path / f"{label}.json"), "--db", url).returncode == 0
    out = tmp_path / "site"
    done = cli("report", str(out), "--db", url, "--compare", "base..cand")
    assert done.returncode == 0, done.stderr
    for label in ("base", "cand", "broken"):
        assert (out / "runs" / f"{site['runs'][label]}.html").exists()
    mine, theirs = (json.loads((d / "manifest.json").read_text())["runs"] for d in (out, site["out"]))
    assert {u: mine[u] for u in mine} == {u: theirs[u] for u in mine}  # same content hashes, whatever the database


RR = """
name = "rp-rr"
[[path]]
name = "a"
rate = "10mbit"
delay = "2ms"
[[path]]
name = "b"
rate = "10mbit"
delay = "2ms"
[workload]
kind = "rr"
request = "200B"
response = "2KiB"
count = 150
[run]
repeat = 2
"""


@pytest.fixture(scope="module")
def rr_site(tmp_path_factory):
    """A real request/response run (150 transactions, twice), stored, and the report of its store."""
    tmp = tmp_path_factory.mktemp("rr")
    db = str(tmp / "rr.db")
    done = cli("run", str(write_scenario(tmp, RR, "rr.toml")), "--db", db, "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    out = tmp / "site"
    built = cli("report", str(out), "--db", db)
    assert built.returncode == 0, built.stderr
    return {"db": db, "doc": doc, "out": out}


def test_workload_series_are_stored_and_read_back(rr_site):
    doc = rr_site["doc"]
    shown = json.loads(cli("show", doc["run_id"], "--json", "--db", rr_site["db"]).stdout)
    assert [r["series"] for r in shown["repetitions"]] == [r["series"] for r in doc["repetitions"]]
    for rep in shown["repetitions"]:  # every transaction's latency, at its time
        assert len(rep["series"]["latency_ms"]) == len(rep["series"]["t"]) == 150
        assert min(rep["series"]["latency_ms"]) > 0
        assert set(rep["timeseries"]["cwnd"]) == {"a", "b"}


@needs_browser
def test_run_page_draws_the_workload_series(rr_site, browser):
    doc = rr_site["doc"]
    charts = _open(browser, rr_site["out"] / "runs" / f"{doc['run_id']}.html", "run-rr")
    assert _errors(browser) == []
    (chart,) = [c for c in charts if c["id"] == "fig-workload-latency_ms"]
    by_name = {t["name"]: t for t in chart["traces"]}
    for rep in doc["repetitions"]:
        latency = rep["series"]["latency_ms"]
        over_time, cdf = by_name[f"rep {rep['index'] + 1}"], by_name[f"rep {rep['index'] + 1} CDF"]
        assert over_time["x"] == over_time["y"] == len(latency) == 150  # every transaction drawn
        assert over_time["ymax"] == max(latency) and cdf["y"] == len(latency) + 1  # from 0 at the smallest value
    assert chart["drawn"] == len(chart["traces"])


def _cells(html: str) -> dict[str, list[str]]:
    """The index grid's rows: scenario -> the class attribute of each cell, in column order."""
    from html.parser import HTMLParser

    rows: dict[str, list[str]] = {}

    class Grid(HTMLParser):
        row: list[str] | None = None
        in_th = False

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if tag == "tr":
                self.row = []
            elif tag == "th" and self.row is not None:
                self.in_th = True
            elif tag == "td" and self.row is not None:
                self.row.append(a.get("class") or "")

        def handle_endtag(self, tag):
            if tag == "th":
                self.in_th = False

        def handle_data(self, data):
            if self.in_th and self.row is not None and data.strip():
                rows[data.strip()] = self.row

    Grid().feed(html.split('id="grid"', 1)[1].split("</table>", 1)[0])
    return rows


def test_change_points_are_marked_on_the_index_and_the_history(tmp_path):
    """Synthetic runs with a known step: goodput falls by 20% from the third kernel on; a control scenario stays flat."""
    import random
    import re
    import time

    from mptcplab.store import RunFilter
    from mptcplab.webreport import ReportOptions, build_report

    from .synthetic import run

    store = open_store(str(tmp_path / "syn.db"))
    rng, t0 = random.Random(7), time.time() - 10_000
    kernels = ["6.1.0-syn", "6.6.0-syn", "6.12.0-syn", "6.18.0-syn"]
    for i, kernel in enumerate(kernels):
        for j in range(2):
            step = 20.0 if i < 2 else 16.0
            for scenario, level in (("syn-step", step), ("syn-flat", 20.0)):
                store.save_result(run([rng.gauss(level, 0.2) for _ in range(5)], scenario=scenario, kernel=kernel,
                                      started_at=t0 + 100 * (2 * i + j) + (scenario == "syn-flat")), None)
    build_report(store, tmp_path / "r", RunFilter(), ReportOptions())
    index = (tmp_path / "r" / "index.html").read_text()
    cells = _cells(index)
    assert ["change-point" in c for c in cells["syn-step"]] == [False, False, True, False]
    assert not any("change-point" in c for c in cells["syn-flat"])
    (change,) = re.findall(r"▶ step (-\d+\.\d)%", index)
    assert -22 < float(change) < -18  # 20 -> 16 mbit/s, noise 1%
    step_page = (tmp_path / "r" / "history" / "syn-step" / "goodput_mbps.html").read_text()
    assert "6.6.0-syn → 6.12.0-syn</strong>: regressed" in step_page
    rows = step_page.split('id="history"', 1)[1].split("<tbody>", 1)[1].split("<tr")[1:]
    marked = [i for i, row in enumerate(rows) if 'class="change-point"' in row]
    assert marked == [4] and "6.12.0-syn" in rows[4]  # before the first run on the kernel where it starts
    assert 'id="change-points"' not in (tmp_path / "r" / "history" / "syn-flat" / "goodput_mbps.html").read_text()
    build_report(store, tmp_path / "off", RunFilter(), ReportOptions(detect_change_points=False))
    assert "change-point" not in (tmp_path / "off" / "index.html").read_text()


def test_a_result_from_before_cwnd_imports_and_renders(imported_db, tmp_path):
    """bench/data/two-paths-run.json is format 2 (no cwnd key): it imports, reads back and its run page draws rate and RTT."""
    store = open_store(imported_db, create=False)
    (uid,) = store.select_runs("label:shape")
    result = store.load_result(uid)
    assert all(rep.timeseries.t and rep.timeseries.cwnd == {} and rep.series == {} for rep in result.repetitions)
    done = cli("report", str(tmp_path / "r"), "--db", imported_db)
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "r" / "runs" / f"{uid}.html").read_text()
    assert "a throughput" in page and "a cwnd" not in page and "Per-subflow throughput, RTT</h2>" in page

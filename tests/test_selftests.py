"""The kernel's own MPTCP selftests: simult_flows.sh's output, cases and budget."""
from __future__ import annotations

from pathlib import Path

import pytest

from mptcplab.selftests.simult_flows import CASES, parse_output, selftest_budget_ms

DATA = Path(__file__).parent / "data"
MIB16 = 16 * 1024 * 1024


@pytest.mark.light
def test_parse_output_reads_every_case_of_a_run_including_case_10_and_an_ignored_failure():
    """simult_flows-6.12.txt holds the lines of a 6.12 run (stdout and stderr merged) with case 5 too slow and
    ignored as flaky: its failure spans lines and is followed by the script's diagnostics and the TAP summary."""
    lines = parse_output((DATA / "simult_flows-6.12.txt").read_text())
    assert [r.number for r in lines] == list(range(1, 11))
    # case 10's title is longer than its column: the measured time runs into it
    last = lines[9]
    assert (last.case, last.direction, last.measured_ms, last.max_ms, last.verdict, last.scenario) == (
        "unbalanced bwidth with opposed, unbalanced delay", "upload", 11467, 11921, "ok", "simult-opposed-delay")
    assert last.title.endswith(" - reverse direction")
    ignored = lines[4]
    assert (ignored.case, ignored.direction, ignored.measured_ms, ignored.max_ms, ignored.verdict) == (
        "unbalanced bwidth", "download", 11948, 11921, "ignored")
    assert [r.direction for r in lines] == ["download", "upload"] * 5
    assert [r.scenario for r in lines[::2]] == [c.scenario for c in CASES]
    assert lines[1].measured_ms == 7404 and lines[1].max_ms == 7906


@pytest.mark.light
def test_parse_output_skips_nstats_warnings_inside_a_result_line():
    """simult_flows-7.3.4-uml.txt: 7.3.4's script in a UML kernel (kernel exec, seed 1), where nstat's "history is
    aged out" warnings land between case 1's title and its time ("7419nstat: ..."); all ten are read."""
    lines = parse_output((DATA / "simult_flows-7.3.4-uml.txt").read_text())
    assert [r.number for r in lines] == list(range(1, 11))
    assert (lines[0].title, lines[0].measured_ms, lines[0].max_ms, lines[0].verdict) == ("balanced bwidth", 7419, 7906, "ok")
    assert [r.measured_ms for r in lines[1:]] == [7370, 7477, 7441, 11291, 11224, 11403, 11295, 11875, 11530]


@pytest.mark.light
def test_parse_output_reads_colours_a_failure_without_a_time_and_scripts_before_the_counter():
    text = ("\x1b[32m03 balanced bwidth with unbalanced delay                       7467 max 7906       [ OK ]\x1b[0m\r\n"
            "04 balanced bwidth with unbalanced delay - reverse direction   \n"
            "[FAIL] client exit code 1, server 0\n")
    a, b = parse_output(text)
    assert (a.number, a.measured_ms, a.verdict) == (3, 7467, "ok")
    assert (b.number, b.direction, b.measured_ms, b.max_ms, b.verdict) == (4, "upload", None, None, "fail")
    old = parse_output("balanced bwidth                                              max 7906  [ OK ]\n"
                       "balanced bwidth - reverse direction                          max 7906  [ fail ]\n")
    assert [(r.number, r.case, r.direction, r.measured_ms, r.max_ms, r.verdict) for r in old] == [
        (1, "balanced bwidth", "download", None, 7906, "ok"), (2, "balanced bwidth", "upload", None, 7906, "fail")]
    # a case the script never finished (killed mid-transfer) is not a result
    assert parse_output("01 balanced bwidth                      \n") == []


@pytest.mark.light
def test_selftest_budget_is_the_scripts_integer_formula_and_the_strict_form_drops_the_pause():
    assert selftest_budget_ms(MIB16, (10_000_000, 10_000_000)) == 7906
    assert selftest_budget_ms(MIB16, (10_000_000, 3_000_000)) == 11921
    assert selftest_budget_ms(MIB16, (10_000_000, 3_000_000), strict=True) == 11721
    assert selftest_budget_ms(MIB16, [10_000_000, 10_000_000], strict=True) == 7706
    with pytest.raises(ValueError):
        selftest_budget_ms(MIB16, (0, 0))


@pytest.mark.light
def test_simult_cases_take_the_selftest_budget_to_the_ms_and_the_strict_form_by_set(tmp_path):
    from mptcplab.errors import ScenarioError
    from mptcplab.scenario import builtin_scenarios, load_scenario

    files = builtin_scenarios()
    budgets = {c.scenario: load_scenario(files[c.scenario]).run.budget for c in CASES}
    assert budgets == {"simult-balanced": 7.906, "simult-balanced-delay": 7.906, "simult-unbalanced": 11.921,
                       "simult-unbalanced-delay": 11.921, "simult-opposed-delay": 11.921}
    strict = load_scenario(files["simult-opposed-delay"], ["run.budget_rule=selftest-strict"])
    assert strict.run.budget == 11.721 and strict.run.budget_rule == "selftest-strict"
    # a written budget that disagrees with the rule is refused, one that agrees is kept
    with pytest.raises(ScenarioError, match="disagrees with run.budget_rule"):
        load_scenario(files["simult-balanced"], ["run.budget=7.91s"])
    assert load_scenario(files["simult-balanced"], ["run.budget=7906ms"]).run.budget == 7.906
    # no size to compute from: refused with what to do
    f = tmp_path / "timed.toml"
    f.write_text('name = "timed"\n[[path]]\nname = "a"\nrate = "10mbit"\n[workload]\nkind = "bulk"\n'
                 'duration = "5s"\n[run]\nbudget_rule = "selftest"\n')
    with pytest.raises(ScenarioError, match="give \\[workload\\] size"):
        load_scenario(f)


@pytest.mark.light
def test_suite_list_says_which_budget_form_each_case_uses():
    import json

    from tests.conftest import cli

    r = cli("suite", "list", "--tag", "simult", "--json")
    assert r.returncode == 0, r.stderr
    cases = {c["name"]: c for c in json.loads(r.stdout)}
    assert {c["budget_rule"] for c in cases.values()} == {"selftest"}
    assert cases["simult-balanced"]["budget_s"] == 7.906
    text = cli("suite", "list", "--tag", "simult").stdout
    assert "budget 7.906 s: simult_flows.sh's formula, its 200 ms join pause included" in " ".join(text.split())


SOURCE_612 = Path("/var/cache/mptcplab/sources/6.12.117/linux-source-6.12.tar.xz")
needs_source = pytest.mark.skipif(not SOURCE_612.is_file(), reason="needs linux-source-6.12 6.12.117 cached "
                                  "(mptcplab selftest build --kernel 6.12.117)")


@needs_source
def test_only_the_selftests_and_what_make_headers_reads_are_unpacked_and_the_programs_compile(tmp_path, monkeypatch):
    """The release path: the selftests and the header members alone, unpacked from the real tarball, are enough for
    make headers and gcc; the programs run; a user's tree is rebuilt only when its selftests change."""
    import subprocess

    from mptcplab.kernels.source import extract
    from mptcplab.selftests.build import HEADER_MEMBERS, SELFTEST_MEMBERS, build_for_tree, compile_tree

    monkeypatch.setenv("MPTCPLAB_CACHE", str(tmp_path / "cache"))
    tree = extract(SOURCE_612, dest=tmp_path / "tree", members=SELFTEST_MEMBERS + HEADER_MEMBERS + ["tools/testing/selftests/net/net_helper.sh"])
    assert not (tree / "net").exists() and not (tree / "drivers").exists()  # not the whole tree
    built = compile_tree(tree, tmp_path / "out", "linux-source-6.12 6.12.117-1")
    assert built.version == "6.12.117" and built.script("simult_flows.sh").is_file()
    assert (built.dir.parent / "lib.sh").is_file() and (built.dir.parent / "net_helper.sh").is_file()
    usage = subprocess.run([str(built.dir / "mptcp_connect"), "-h"], capture_output=True, text=True)
    assert "Usage: mptcp_connect" in usage.stderr + usage.stdout
    pm = subprocess.run([str(built.dir / "pm_nl_ctl"), "bogus"], capture_output=True, text=True)
    assert "unknown sub-command: bogus" in pm.stderr + pm.stdout and "limits" in pm.stderr + pm.stdout
    assert not list(tmp_path.glob(".staging-*"))  # nothing half-built left
    with pytest.raises(Exception, match="no MPTCP selftest nope.sh"):
        built.script("nope.sh")

    # --tree: cached by path, rebuilt when a selftest file changed
    first = build_for_tree(tree)
    stamp = (first.dir.parent.parent / "build.json").stat().st_mtime_ns
    assert build_for_tree(tree).dir == first.dir
    assert (first.dir.parent.parent / "build.json").stat().st_mtime_ns == stamp
    (tree / "tools/testing/selftests/net/mptcp/simult_flows.sh").touch()
    build_for_tree(tree)
    assert (first.dir.parent.parent / "build.json").stat().st_mtime_ns != stamp


@pytest.mark.light
def test_selftest_build_refuses_what_is_no_kernel_tree(tmp_path):
    from tests.conftest import cli

    r = cli("selftest", "build", "--tree", str(tmp_path))
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "no tools/testing/selftests/net/mptcp" in r.stderr
    r = cli("selftest", "build")
    assert r.returncode == 2 and "--kernel K or --tree DIR" in r.stderr


def _stored_selftests(tmp_path, kernels: dict[str, float]) -> Path:
    """A SQLite store holding the 6.12 sample output as the selftest runs of each kernel (3 script runs each), every
    measured time scaled by that kernel's factor."""
    import dataclasses

    from mptcplab.selftests.results import selftest_runs
    from mptcplab.store.store import open_store

    db = tmp_path / "st.db"
    store = open_store(str(db))
    lines = parse_output((DATA / "simult_flows-6.12.txt").read_text())
    for kernel, factor in kernels.items():
        runs = [[dataclasses.replace(x, measured_ms=int(x.measured_ms * factor) + i if x.measured_ms else None)
                 for x in lines] for i in range(5)]
        for result, content in selftest_runs(runs, kernel, "linux-source-6.12 6.12.117-1",
                                             {"kernel_release": kernel, "executor": "qemu"}):
            store.save_result(result, content)
    return db


@pytest.mark.light
def test_each_selftest_case_and_direction_is_a_run_with_the_scripts_numbers(tmp_path):
    from mptcplab.selftests.results import selftest_runs

    lines = parse_output((DATA / "simult_flows-6.12.txt").read_text())
    runs = {r.scenario: (r, c) for r, c in selftest_runs([lines, lines], "6.12.117+deb13-cloud-amd64", "linux-source-6.12 6.12.117-1")}
    assert len(runs) == 10 and "selftest-simult-opposed-delay-upload" in runs
    run, content = runs["selftest-simult-opposed-delay-upload"]
    assert [r.completion_s for r in run.repetitions] == [11.467, 11.467] and run.status == "completed"
    assert run.repetitions[0].metrics["selftest_max_ms"] == 11921 and run.repetitions[0].over_budget is False
    assert content["selftest"] == {"script": "simult_flows.sh", "case": "unbalanced bwidth with opposed, unbalanced delay",
                                   "direction": "upload", "source": "linux-source-6.12 6.12.117-1",
                                   "scenario": "simult-opposed-delay", "set": []}
    assert content["workload"]["kind"] == "selftest" and [p["delay"] for p in content["path"]] == [0.025, 0.001]
    # the ignored case: the transfer completed, over the script's max, and says what the script said
    slow = runs["selftest-simult-unbalanced-download"][0].repetitions[0]
    assert (slow.status, slow.over_budget, slow.completion_s) == ("completed", True, 11.948)
    assert slow.error == "simult_flows.sh said IGNORED: 11948 ms, max 11921 ms"
    assert runs["selftest-simult-balanced-download"][1]["selftest"]["set"] == ["workload.direction=download"]
    assert runs["selftest-simult-unbalanced-download"][0].summary["pass_rate"].median == 0.0


@pytest.mark.light
def test_stored_selftest_runs_are_read_by_history_by_kernel_and_compare(tmp_path):
    import json

    from tests.conftest import cli

    db = _stored_selftests(tmp_path, {"6.1.0-50-cloud-amd64": 1.0, "6.12.117+deb13-cloud-amd64": 1.10})
    r = cli("history", "selftest-simult-balanced-upload", "--by", "kernel", "--metric", "completion_s", "--db", str(db))
    assert r.returncode == 0, r.stderr
    assert "6.1.0-50-cloud-amd64" in r.stdout and "6.12.117+deb13-cloud-amd64" in r.stdout
    r = cli("compare", "--baseline", "6.1.0-50-cloud-amd64", "--candidate", "6.12.117+deb13-cloud-amd64",
            "--metric", "completion_s", "--format", "json", "--db", str(db))
    assert r.returncode == 1, r.stderr  # 10% slower on every case: a regression
    doc = json.loads(r.stdout)
    rows = doc["rows"] if isinstance(doc, dict) and "rows" in doc else doc
    text = json.dumps(rows)
    assert "selftest-simult-balanced-upload" in text and "regressed" in text
    r = cli("report", str(tmp_path / "site"), "--db", str(db))
    assert r.returncode == 0, r.stderr
    page = tmp_path / "site/history/selftest-simult-balanced-upload/completion_s.html"
    assert page.is_file() and "6.12.117+deb13-cloud-amd64" in page.read_text()


@pytest.mark.light
def test_a_join_reset_before_carrying_a_byte_is_not_a_subflow_that_came_up():
    """The sampler's count: the initial subflow carries data, a join is listed during its handshake and gone
    (reset) without a byte; an empty subflow still listed at the end counts unless a reset in the MIB explains
    it (the join 6.18 keeps listed until it resets it at the end, seen with tests/data/both_ends.py)."""
    import socket

    from mptcplab.mptcp import SubflowSample
    from mptcplab.probes import SubflowSampler

    def sf(port: int, sent: int) -> SubflowSample:
        return SubflowSample(id=port, local=("10.0.0.1", port), remote=("10.0.100.2", 5201), bytes_sent=sent,
                             bytes_acked=sent, bytes_received=0, bytes_retrans=0, total_retrans=0, rtt_us=0,
                             min_rtt_us=0, snd_cwnd=10, state=1)

    with socket.socket() as sock:
        s = SubflowSampler(sock=sock, t0=0.0)
        s.note((sf(1000, 100), sf(2000, 0)))      # the join, listed while it is set up
        s.note((sf(1000, 5000),))                 # reset: gone without carrying anything
        s.note((sf(1000, 9000),))
        assert (s.max_subflows, s.subflows_up(), s.subflows_reset_empty()) == (2, 1, 1)
        idle = SubflowSampler(sock=sock, t0=0.0)
        idle.note((sf(1000, 100), sf(3000, 0)))
        idle.note((sf(1000, 9000), sf(3000, 0)))  # listed empty to the end: an idle backup subflow, or a join ...
        assert (idle.subflows_up(), idle.subflows_reset_empty()) == (2, 0)
        # ... whose third ACK was never acknowledged, reset by MPTCP at the end: the MIB's one reset explains it
        assert (idle.subflows_up(resets=1), idle.subflows_reset_empty(resets=1)) == (1, 1)


@pytest.mark.light
def test_join_failures_counts_joins_without_their_third_ack_per_namespace():
    from mptcplab.probes import join_failures

    client = {"MPTcpExtMPJoinSynAckRx": 1, "MPTcpExtMPRstTx": 1}
    server = {"MPTcpExtMPJoinSynRx": 1, "MPTcpExtMPJoinAckRx": 0}
    assert join_failures([client, {"TcpExtRcvPruned": 0}, server]) == 1
    assert join_failures([{"MPTcpExtMPJoinSynRx": 2, "MPTcpExtMPJoinAckRx": 2}, {"MPTcpExtMPJoinAckHMacFailure": 1}]) == 1


BOTH_ENDS = """
name = "t-both-ends"
[[path]]
name = "a"
rate = "10mbit"
delay = "1ms"
[[path]]
name = "b"
rate = "10mbit"
delay = "25ms"
[workload]
kind = "command"
mptcp = "native"
direction = "upload"
server = "python3 {prog} server 0 {{port}} 81920 4194304"
client = "python3 {prog} client {{server}} {{port}} 4194304 81920"
[run]
repeat = 4
timeout = "30s"
link_backend = "wire"
"""


def test_a_reset_join_fails_the_repetition_and_its_resets_are_metrics(tmp_path):
    """Both ends write the moment the connection is up (mptcp_connect without its -j sleep) over paths of 1 and
    25 ms: on 6.12 the join on the 25 ms path is reset (client MPRstTx) in every transfer. Whatever this kernel
    does, a repetition is completed exactly when both paths carried data, and every one records its MP_RST and
    join failure counts; a reset join is named in the error."""
    from mptcplab.runner import run_scenario
    from mptcplab.scenario import load_scenario

    f = tmp_path / "both.toml"
    f.write_text(BOTH_ENDS.format(prog=DATA / "both_ends.py"))
    result = run_scenario(load_scenario(f))
    for rep in result.repetitions:
        assert {"mp_rst_tx", "mp_rst_rx", "join_failures", "subflows_reset_empty"} <= set(rep.metrics), rep.metrics
        carried = {s.path: s.bytes_sent for s in rep.subflows}  # the client sends: what its subflows sent
        both = carried.get("a", 0) > 0 and carried.get("b", 0) > 0
        assert rep.completed == both, (rep.status, rep.error, carried, rep.metrics)
        if rep.metrics["subflows_reset_empty"]:
            assert not rep.completed and "refused or reset before carrying a byte" in (rep.error or ""), rep.error
            assert rep.metrics["mp_rst_tx"] + rep.metrics["mp_rst_rx"] + rep.metrics["join_failures"] >= 1, rep.metrics
    print({r.index: (r.status, r.metrics["subflows_reset_empty"], r.metrics["mp_rst_tx"], r.metrics["join_failures"])
           for r in result.repetitions})


@pytest.mark.light
def test_a_command_job_streams_its_output_and_answers_with_its_exit_code(capsys):
    """The guest's side of `kernel exec`, run here: the command's /tmp is a fresh scratch tmpfs of its own (the
    host's /tmp is not touched), its two streams come as `output` lines, then one `exec_result`."""
    import json

    from mptcplab.executors.guest_main import run_exec
    from mptcplab.executors.job import encode_exec

    run_exec(encode_exec(["sh", "-c", "echo out; echo err >&2; touch mark; ls -A /tmp; echo $NO_COLOR; exit 3"], 30))
    msgs = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    text = {s: "".join(m["data"] for m in msgs if m["type"] == "output" and m["stream"] == s) for s in ("stdout", "stderr")}
    assert text == {"stdout": "out\nmark\n1\n", "stderr": "err\n"}
    assert msgs[-1]["type"] == "exec_result" and msgs[-1]["exit_code"] == 3 and msgs[-1]["timed_out"] is False
    assert not Path("/tmp/mark").exists()

    run_exec(encode_exec(["sh", "-c", "echo started; sleep 30"], 1))
    msgs = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert msgs[-1]["timed_out"] is True and msgs[-1]["exit_code"] < 0 and msgs[-1]["wall_s"] < 10
    assert any(m.get("data") == "started\n" for m in msgs)


GUEST_OUTPUT = DATA / "simult_flows-6.12.117-guest.txt"


@pytest.mark.light
@pytest.mark.skipif(not GUEST_OUTPUT.is_file(), reason="recorded by running the script in a 6.12.117 guest")
def test_parse_output_reads_a_real_run_recorded_in_a_guest():
    """What 6.12.117's simult_flows.sh printed in a TCG guest (mptcplab kernel exec, stdout and stderr merged):
    ten transfers, case 10's time glued to its title, every max the script's formula."""
    lines = parse_output(GUEST_OUTPUT.read_text())
    assert [r.number for r in lines] == list(range(1, 11))
    assert [r.max_ms for r in lines] == [7906] * 4 + [11921] * 6
    assert all(r.measured_ms and r.scenario for r in lines if r.verdict == "ok")
    assert "direction" + str(lines[9].measured_ms) in GUEST_OUTPUT.read_text() or lines[9].verdict != "ok"

"""Scenario files: units, validation and one-line errors naming file and key."""
from __future__ import annotations

import pytest

from mptcplab.errors import ScenarioError
from mptcplab.scenario import GilbertElliott, builtin_scenarios, load_scenario, parse_scenario
from mptcplab.units import parse_percent, parse_rate, parse_size, parse_time

from .conftest import SHARED, write_scenario

GOOD = {
    "name": "x",
    "path": [{"name": "a", "rate": "10mbit"}, {"name": "b", "rate": "3mbit", "delay": "25ms"}],
    "workload": {"size": "16MiB"},
}


def test_units_follow_tc_and_iperf():
    assert parse_rate("10mbit") == 10e6
    assert parse_rate("500kbit") == 500e3
    assert parse_rate("1gbit") == 1e9
    assert parse_rate("1mbps") == 8e6  # tc: mbps is megabytes per second
    assert parse_time("25ms") == pytest.approx(0.025)
    assert parse_time("2s") == 2.0
    assert parse_time("500us") == pytest.approx(0.0005)
    assert parse_size("16MiB") == 16 * 1024**2
    assert parse_size("1MB") == 10**6
    assert parse_percent("1%") == pytest.approx(0.01)
    with pytest.raises(ValueError, match="no unit"):
        parse_time("25")
    with pytest.raises(ValueError, match="out of range"):
        parse_percent("150%")


def test_good_scenario_resolves_directions():
    scn = parse_scenario({**GOOD, "path": [{"name": "a", "rate": "10mbit", "up": {"rate": "2mbit"}}]})
    assert scn.paths[0].link("up").rate_bps == 2e6
    assert scn.paths[0].link("down").rate_bps == 10e6
    assert scn.run.repeat == 3 and scn.mptcp.scheduler == "default"


def test_content_hash_changes_with_content():
    a = parse_scenario(GOOD)
    b = parse_scenario({**GOOD, "workload": {"size": "8MiB"}})
    assert a.content_hash == parse_scenario(GOOD).content_hash
    assert a.content_hash != b.content_hash


@pytest.mark.parametrize(
    "patch, key, words",
    [
        ({"path": []}, "path", "at least 1"),
        ({"path": [{"name": "a", "rate": "10mbit", "delay": "-5ms"}]}, "path[0].delay", ""),
        ({"path": [{"name": "a", "rate": "10mbit", "loss": "150%"}]}, "path[0].loss", "out of range"),
        ({"path": [{"name": "a", "rate": "10mbit", "colour": "red"}]}, "path[0].colour", "unknown key"),
        ({"path": [{"name": "a", "rate": "fast"}]}, "path[0].rate", "not a rate"),
        ({"path": [{"name": "a"}]}, "path[0]", "give the path a rate"),
        ({"workload": {}}, "workload", "exactly one of size"),
        ({"workload": {"size": "1MiB", "direction": "sideways"}}, "workload.direction", "upload"),
        ({"mptcp": {"path_manager": "magic"}}, "mptcp.path_manager", "kernel"),
        ({"path": [{"name": "a", "rate": "1mbit"}, {"name": "a", "rate": "1mbit"}]}, "(top level)", "unique"),
        ({"event": [{"at": "2s", "path": "nope", "action": "down"}]}, "", "does not exist"),
        ({"event": [{"at": "90s", "path": "a", "action": "down"}]}, "", "after the run ends"),
    ],
)
def test_bad_scenarios_name_file_and_key(patch, key, words):
    data = {**GOOD, **patch}
    with pytest.raises(ScenarioError) as exc:
        parse_scenario(data, "bad.toml")
    msg = str(exc.value)
    assert msg.startswith("bad.toml: ")
    assert key in msg
    assert words in msg
    assert "\n" not in msg


def test_missing_name_and_workload(tmp_path):
    path = write_scenario(tmp_path, '[[path]]\nname = "a"\nrate = "1mbit"\n')
    with pytest.raises(ScenarioError, match=r"s\.toml: name: required key is missing"):
        load_scenario(path)


def test_invalid_toml(tmp_path):
    path = write_scenario(tmp_path, "name = \n")
    with pytest.raises(ScenarioError, match="not valid TOML"):
        load_scenario(path)


def test_traces_are_validated(tmp_path):
    bad = tmp_path / "bad.trace"
    bad.write_text("1\n2\nabc\n")
    for trace, words in ((str(tmp_path / "missing.up"), "does not exist"), (str(bad), "line 3")):
        data = {**GOOD, "path": [{"name": "a", "rate": "1mbit", "trace_up": trace, "trace_down": trace}]}
        with pytest.raises(ScenarioError, match=words):
            parse_scenario(data, "t.toml")
    real = SHARED / "traces" / "cellular" / "Verizon-LTE-short.up"
    if real.exists():
        data = {**GOOD, "path": [{"name": "a", "trace_up": str(real), "trace_down": str(real)}]}
        scn = parse_scenario(data, "t.toml")
        assert scn.paths[0].link("up").trace == str(real)
        assert scn.paths[0].link("up").rate_bps is None


def test_gilbert_elliott_loss():
    data = {**GOOD, "path": [{"name": "a", "rate": "1mbit", "loss": {"model": "gilbert-elliott", "p": "1%", "r": "20%"}}]}
    loss = parse_scenario(data).paths[0].link("up").loss
    assert isinstance(loss, GilbertElliott)
    assert loss.mean_loss == pytest.approx(0.01 / 0.21)


def test_every_builtin_scenario_loads():
    names = builtin_scenarios()
    assert "demo" in names
    for path in names.values():
        assert load_scenario(path).description

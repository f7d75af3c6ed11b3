"""Scenario files: units, validation and one-line errors naming file and key."""
from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from mptcplab.errors import ScenarioError
from mptcplab.scenario import (
    DirectionOverride,
    Event,
    GilbertElliott,
    Queue,
    RunSettings,
    Scenario,
    Tcp,
    builtin_scenarios,
    load_scenario,
    parse_scenario,
)
from mptcplab.units import parse_percent, parse_rate, parse_size, parse_time

from .conftest import SHARED, cli, cli_in_process, leftovers, requires_root, write_scenario, light

pytestmark = light  # models, units and refusals before anything is built

GOOD = {
    "name": "x",
    "path": [{"name": "a", "rate": "10mbit"}, {"name": "b", "rate": "3mbit", "delay": "25ms"}],
    "workload": {"size": "4MiB"},  # within the default 60 s timeout at the 1 mbit some tests give path a
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
        ({"path": [{"name": "a", "rate": "1mbit"}, {"name": "a", "rate": "1mbit"}]}, "bad.toml: path names", "unique"),
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


# -- the documented format: docs/scenario.md names every key and every choice -------------------
DOC = Path(__file__).resolve().parents[1] / "docs" / "scenario.md"


def _models_and_literals(annotation, seen):
    """Every pydantic model and Literal choice reachable from a type annotation."""
    origin = typing.get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation not in seen:
            seen[annotation] = None
            for field in annotation.model_fields.values():
                _models_and_literals(field.annotation, seen)
                for meta in field.metadata:  # Annotated[...] inside Optional keeps its metadata here
                    _models_and_literals(meta, seen)
        return
    if origin is typing.Literal:
        for choice in typing.get_args(annotation):
            seen[("literal", choice)] = None
        return
    for arg in typing.get_args(annotation):
        _models_and_literals(arg, seen)


def test_every_scenario_key_and_choice_is_in_docs_scenario_md():
    text = DOC.read_text()
    seen: dict = {}
    _models_and_literals(Scenario, seen)
    models = [m for m in seen if isinstance(m, type)]
    assert {GilbertElliott, Queue, DirectionOverride, Event, Tcp, RunSettings} <= set(models)  # the walk reaches them
    missing = []
    for model in models:
        for name, field in model.model_fields.items():
            key = field.alias or name
            if not any(form in text for form in (f"`{key}`", f"`{key} ", f"`[{key}]`", f"`[[{key}]]`")):
                missing.append(f"{model.__name__}.{key}")
    missing += _undocumented_choices(models, text)
    assert not missing, f"docs/scenario.md does not document: {', '.join(missing)}"


def _field_choices(annotation) -> list:
    """The Literal choices of one field's own type (not those inside a nested model)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return []
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    return [c for arg in typing.get_args(annotation) for c in _field_choices(arg)]


def _undocumented_choices(models, text: str) -> list[str]:
    """Each field's choices, judged per field: some table row of that key must list every one of them.

    A choice counted once for the whole document (the first form of this test) let `direction = "both"` of
    bulk pass unlisted in the `[workload]` table, because `[[event]]`'s `direction` row says `"both"`.
    """
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        m = re.match(r"\|\s*`([A-Za-z0-9_]+)`\s*\|", line)
        if m:
            rows.setdefault(m.group(1), []).append(line)
    missing = []
    for model in models:
        for name, field in model.model_fields.items():
            key = field.alias or name
            choices = _field_choices(field.annotation)
            if len(choices) < 2:  # a kind's own tag (kind = "bulk"): the `kind` row lists them all
                continue
            if not any(all(f'`"{c}"`' in row for c in choices) for row in rows.get(key, [])):
                missing.append(f"{model.__name__}.{key} choices {', '.join(map(repr, choices))} in one `{key}` row")
    return missing


def test_errors_and_readme_point_to_docs_scenario_md():
    with pytest.raises(ScenarioError, match=r"docs/scenario\.md"):
        parse_scenario({**GOOD, "colour": "red"})
    readme = (DOC.parents[1] / "README.md").read_text()
    assert "docs/scenario.md" in readme


# -- absurd values: refused, or accepted with a note that says what they mean --------------------
def _one_path(**path):
    return {**GOOD, "path": [{"name": "a", **path}]}


@pytest.mark.parametrize("rate", [10, "10", 2.5])
def test_a_rate_without_a_unit_is_refused(rate):
    with pytest.raises(ScenarioError, match=r"path\[0\]\.rate: .*has no unit .*10 bit/s|2\.5 bit/s.*write e\.g\. '"):
        parse_scenario(_one_path(rate=rate), "r.toml")
    with pytest.raises(ScenarioError, match=r"event\[0\]\.rate: .*has no unit"):
        parse_scenario({**GOOD, "workload": {"duration": "5s"}, "event": [{"at": "1s", "path": "a", "action": "set", "rate": rate}]})


def test_a_queue_string_without_a_unit_is_refused():
    with pytest.raises(ScenarioError, match=r"path\[0\]\.queue: '100' has no unit; write 100 or '100p'"):
        parse_scenario(_one_path(rate="1mbit", queue="100"))
    assert parse_scenario(_one_path(rate="1mbit", queue=100)).paths[0].queue.packets == 100


@pytest.mark.parametrize("duration, timeout", [("90s", None), ("10s", "10s"), ("2min", "60s")])
def test_a_duration_not_shorter_than_the_timeout_is_refused(duration, timeout):
    data = {**GOOD, "workload": {"duration": duration}}
    if timeout:
        data["run"] = {"timeout": timeout}
    with pytest.raises(ScenarioError, match=r"workload\.duration .* is not shorter than run\.timeout .*raise \[run\] timeout"):
        parse_scenario(data, "d.toml")
    assert parse_scenario({**GOOD, "workload": {"duration": "59s"}}).workload.duration == 59


def test_bytes_per_second_rates_keep_tcs_meaning_with_a_note():
    scn = parse_scenario({**GOOD, "path": [{"name": "a", "rate": "100Mbps", "up": {"rate": "1mbps"}}, {"name": "b", "rate": "100Mbps"}]},
                         "m.toml")
    assert scn.paths[0].rate == 800e6 and scn.paths[0].link("up").rate_bps == 8e6
    assert scn.notes == (
        "m.toml: rate: 100Mbps is 100 megabytes/s = 800 mbit/s, as in tc; write 100mbit for megabits",  # once, not per path
        "m.toml: rate: 1mbps is 1 megabyte/s = 8 mbit/s, as in tc; write 1mbit for megabits",
    )
    assert parse_scenario(GOOD).notes == ()
    assert scn.content_hash == parse_scenario({**GOOD, "path": [{"name": "a", "rate": "800mbit", "up": {"rate": "8mbit"}},
                                                                 {"name": "b", "rate": "800mbit"}]}).content_hash


def test_jitter_larger_than_the_delay_says_what_it_does():
    scn = parse_scenario(_one_path(rate="10mbit", delay="5ms", jitter="20ms"), "j.toml")
    (note,) = scn.notes
    assert note.startswith("j.toml: path 'a': jitter 20ms is larger than the delay 5ms: ")
    assert "normal around 5ms with standard deviation 20ms" in note and "clipped to 0" in note and "stay in order" in note
    both = parse_scenario(_one_path(rate="10mbit", delay="5ms", jitter="2ms", reorder=True, jitter_distribution="uniform",
                                    up={"jitter": "8ms"}), "j.toml")
    (note,) = both.notes  # only the up direction's jitter exceeds its delay
    assert "path 'a' (up)" in note and "uniform in 5ms ± 8ms" in note and "overtake" in note
    assert parse_scenario(_one_path(rate="10mbit", delay="5ms", jitter="5ms")).notes == ()


# -- rate ceilings of the link backends --------------------------------------------------------
def test_rates_above_a_backends_ceiling_are_refused_naming_it():
    from mptcplab.links.netem import NetemLink
    from mptcplab.links.tbf import TbfLink
    from mptcplab.links.wire import WireLink

    fast = parse_scenario(_one_path(rate="1gbit"))
    reason = WireLink.unsupported(fast)
    assert reason and "1gbit, above the wire backend's ceiling of 500mbit per path" in reason
    assert "--link-backend tbf (up to 2gbit per path)" in reason
    assert TbfLink.unsupported(fast) is None
    # the sum over paths, in the workload's direction only
    two = {**GOOD, "path": [{"name": "a", "rate": "400mbit", "down": {"rate": "1mbit"}}, {"name": "b", "rate": "300mbit", "down": {"rate": "1mbit"}}]}
    assert "700mbit in all (upload), above the wire backend's ceiling of 600mbit" in WireLink.unsupported(parse_scenario(two))
    assert WireLink.unsupported(parse_scenario({**two, "workload": {"size": "1MiB", "direction": "download"}})) is None
    # an event's rate counts; with a delay, tbf is no alternative
    def evented(rate):
        return parse_scenario({**_one_path(rate="10mbit", delay="5ms"), "workload": {"duration": "5s"},
                               "event": [{"at": "1s", "path": "a", "action": "set", "direction": "down", "rate": rate}]})

    reason = WireLink.unsupported(evented("1gbit"))
    assert reason.startswith("path 'a' (down) asks for 1gbit") and reason.endswith(
        "lower the rate, or use --link-backend netem (a kernel with sch_netem, up to 2gbit per path)")
    assert NetemLink.unsupported(evented("1gbit")) is None
    assert WireLink.unsupported(evented("3gbit")).endswith("lower the rate: no other link backend can run this scenario")
    assert "ceiling of 2gbit" in NetemLink.unsupported(evented("3gbit"))
    assert "lower the rate: no other link backend can run this scenario" in TbfLink.unsupported(parse_scenario(_one_path(rate="100gbit")))


# -- the same through the CLI: one line each, the right exit code, nothing built ---------------
def _stderr_lines(proc):
    return [line for line in proc.stderr.splitlines() if line.strip()]


def test_scenarios_show_prints_the_builtin_toml_as_shipped():
    builtins = builtin_scenarios()
    for i, (name, path) in enumerate(builtins.items()):
        proc = (cli if i == 0 else cli_in_process)("scenarios", "--show", name)  # the first as a user runs it
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == path.read_text()
    proc = cli("scenarios", "--show", "no-such")
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = _stderr_lines(proc)
    assert line.startswith("error: --show no-such: no built-in scenario of that name") and all(n in line for n in builtin_scenarios())


@pytest.mark.parametrize("body, code, words", [
    ('rate = 10\n', 2, "path[0].rate: 10 has no unit"),
    ('rate = "10mbit"\n[workload]\nduration = "90s"\n', 2, "workload.duration 90s is not shorter than run.timeout 60s"),
    pytest.param('rate = "1gbit"\n', 3, "above the wire backend's ceiling of 500mbit per path", marks=requires_root),
])
def test_absurd_values_are_refused_in_one_line_before_anything_is_built(tmp_path, body, code, words):
    text = 'name = "x"\n[run]\nlink_backend = "wire"\n[[path]]\nname = "a"\n' + body
    if "[workload]" not in body:
        text += '[workload]\nsize = "1MiB"\n'
    before = set(leftovers())
    proc = cli("run", str(write_scenario(tmp_path, text)), "--no-store")
    assert proc.returncode == code, proc.stderr
    (line,) = _stderr_lines(proc)
    assert line.startswith("error: ") and words in line, line
    assert proc.stdout == "" and set(leftovers()) <= before


@requires_root  # the backend's refusal comes after the root check
def test_a_bytes_per_second_rate_is_noted_once_on_stderr(tmp_path):
    """100Mbps is 800 mbit/s: the note comes first, then the wire backend's ceiling refuses it (nothing runs)."""
    path = write_scenario(tmp_path, 'name = "x"\n[run]\nlink_backend = "wire"\n[[path]]\nname = "a"\nrate = "100Mbps"\n'
                                    '[[path]]\nname = "b"\nrate = "100Mbps"\n[workload]\nsize = "1MiB"\n')
    proc = cli("run", str(path), "--no-store")
    assert proc.returncode == 3, proc.stderr
    note, error = _stderr_lines(proc)
    assert note == f"note: {path}: rate: 100Mbps is 100 megabytes/s = 800 mbit/s, as in tc; write 100mbit for megabits"
    assert error.startswith("error: path 'a' (up) asks for 800mbit, above the wire backend's ceiling")


def test_the_default_queue_is_capped_in_time_and_a_deep_one_gets_a_note():
    from mptcplab.links.base import queue_limit_bytes
    from mptcplab.scenario import LinkSpec, default_queue_bytes

    frame = 1514
    assert default_queue_bytes(100e6) == int(100e6 / 8 * 0.1)  # 100 ms at the rate
    assert default_queue_bytes(2e6) == 20 * frame  # 20 frames: 121 ms, under the 200 ms cap
    assert default_queue_bytes(1e6) == int(1e6 / 8 * 0.2)  # 20 frames would be 242 ms: capped at 200 ms
    assert default_queue_bytes(150e3) == 4 * frame  # was 20 frames, 1.6 s; now the 4-frame floor, 323 ms
    assert queue_limit_bytes(LinkSpec(rate_bps=150e3), 150e3) == 4 * frame  # what every backend configures
    for rate in ("1mbit", "300kbit"):
        assert not parse_scenario({**_one_path(rate=rate), "workload": {"duration": "5s"}}).notes  # a size 300kbit cannot carry in time is refused
    scn = parse_scenario({**_one_path(rate="10mbit", up={"rate": "150kbit"}), "workload": {"duration": "5s"},
                          "event": [{"at": "1s", "path": "a", "action": "set", "rate": "64kbit", "direction": "down"}]},
                         "q.toml")
    assert len(scn.notes) == 2, scn.notes
    assert scn.notes[0].startswith("q.toml: path 'a' (up): the default queue (4 frames, 6056 B) holds 323 ms at 150kbit,")
    assert "event[0] (path 'a' at 1s)" in scn.notes[1] and "757 ms at 64kbit" in scn.notes[1]
    assert not parse_scenario({**_one_path(rate="150kbit", queue="100ms"), "workload": {"duration": "5s"}}).notes  # the user chose it


@pytest.mark.parametrize(("value", "seed"), [(0, 0), (7, 7), ("12", 12), (" random ", "random"), ("RANDOM", "random"),
                                             (2**63 - 1, 2**63 - 1)])
def test_a_seed_is_an_integer_or_random(value, seed):
    from mptcplab.scenario import seed_of

    assert seed_of(value) == seed


@pytest.mark.parametrize("value", ["-1", "abc", "1.5", str(2**63), "\"²\"", "true"])
def test_a_bad_seed_is_one_line_in_the_labs_words(value):
    """--set run.seed= and --seed: one message for every bad value, no pydantic union internals; a Unicode digit
    ('²', which str.isdigit accepts) is refused, not a traceback."""
    proc = cli_in_process("check", "demo", "--set", f"run.seed={value}")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "run.seed: a seed is an integer from 0 to 2^63-1 or \"random\"" in proc.stderr, proc.stderr
    assert "constrained" not in proc.stderr and "more problem" not in proc.stderr, proc.stderr
    if value in ("\"²\"", "-1"):
        proc = cli_in_process("kernel", "exec", "--kernel", "6.12.117-uml", "--seed", value.strip('"'), "--", "true")
        assert proc.returncode == 2 and "is not a seed" in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr

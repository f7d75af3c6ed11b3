"""Path-manager topologies: endpoint flags, several subflows per path, limits, and endpoint/carrier events.

The pure tests check what is refused (one line naming the file and the key)
and what the lab plans; the others run real kernel MPTCP through the wire
backend, a few seconds each at 10 mbit, and judge only what their own run
measured: per-path delivered bytes from the time series, the subflows'
endpoints and the kernels' MIB counters.
"""
from __future__ import annotations

import pytest

from mptcplab.errors import ScenarioError
from mptcplab.links.netem import NetemLink
from mptcplab.links.tbf import TbfLink
from mptcplab.links.wire import WireLink
from mptcplab.scenario import parse_scenario
from mptcplab.topology import path_ports, plan_endpoints

from .conftest import cli, requires_root, run_once, write_scenario

BASE = {
    "name": "x",
    "path": [{"name": "a", "rate": "10mbit"}, {"name": "b", "rate": "3mbit", "delay": "25ms"}],
    "workload": {"size": "16MiB"},
}


def _with(path_b: dict | None = None, **top) -> dict:
    data = {**BASE, **top}
    if path_b is not None:
        data["path"] = [BASE["path"][0], {**BASE["path"][1], **path_b}]
    return data


# -- pure: what is refused, what is planned ------------------------------------------------------
@pytest.mark.parametrize("data, key, words", [
    (_with({"endpoint": "bogus"}), "path[1].endpoint", "endpoint flags are subflow, signal, backup, fullmesh"),
    (_with({"endpoint": ""}), "path[1].endpoint", "endpoint flags are"),
    (_with({"endpoint": 3}), "path[1].endpoint", "is not an endpoint"),
    (_with({"endpoint": "signal fullmesh"}), "path[1].endpoint", "mustn't have both signal and fullmesh"),
    (_with({"endpoint": "signal,subflow"}), "path[1].endpoint", "not both"),
    (_with({"subflows": 0}), "path[1].subflows", "subflows must be at least 1 (got 0)"),
    (_with({"subflows": 9}), "path[1].subflows", "subflows must be at most 8 (got 9)"),
    (_with({"subflows": "two"}), "path[1].subflows", "subflows must be a whole number"),
    ({**BASE, "path": [{"name": "a", "rate": "1mbit", "endpoint": "signal"}]}, "path[0].endpoint", "initial subflow"),
    ({**BASE, "path": [{"name": "a", "rate": "1mbit", "subflows": 5}, {"name": "b", "rate": "1mbit", "subflows": 5}]},
     "bad.toml: the paths ask for", "allows 8 endpoints per host"),
    (_with(mptcp={"limits": {"subflows": 9}}), "mptcp.limits.subflows", "must be at most 8"),
    (_with(mptcp={"limits": {"add_addr_accepted": -1}}), "mptcp.limits.add_addr_accepted", "must be at least 0"),
    (_with(mptcp={"limits": {"joins": 1}}), "mptcp.limits.joins", "unknown key"),
    (_with({"endpoint": "backup"}, mptcp={"path_manager": "userspace"}), "path[1].endpoint", "in-kernel path manager"),
    (_with(mptcp={"path_manager": "userspace", "limits": {"subflows": 1}}), "mptcp.limits", "in-kernel path manager"),
    (_with(event=[{"at": "1s", "path": "b", "action": "endpoint_add"}]), "event[0] endpoint_add", "starting with endpoint_remove"),
    (_with(event=[{"at": "1s", "path": "b", "action": "endpoint_remove"}, {"at": "2s", "path": "b", "action": "endpoint_remove"}]),
     "event[1] endpoint_remove", "already removed"),
    (_with(event=[{"at": "1s", "path": "b", "action": "carrier_up"}]), "event[0] carrier_up", "starting with carrier_down"),
    (_with(event=[{"at": "1s", "path": "b", "action": "carrier_down", "direction": "up"}]), "event[0]", "whole path"),
    (_with(event=[{"at": "1s", "path": "b", "action": "carrier_down", "rate": "1mbit"}]), "event[0]", "use action = 'set'"),
    (_with(event=[{"at": "1s", "path": "b", "action": "set"}]), "event[0]", "rate, delay, jitter, loss or queue"),
    (_with(event=[{"at": "1s", "path": "b", "action": "set", "queue": "12"}]), "event[0].queue", "has no unit"),
    (_with(event=[{"at": "1s", "path": "b", "action": "set", "jitter": "fast"}]), "event[0].jitter", ""),
    (_with(event=[{"at": "1s", "path": "b", "action": "unplug"}]), "event[0].action", "carrier_down"),
    (_with(event=[{"at": "1s", "path": "b", "action": "reachable"}]), "event[0] reachable", "starting with unreachable"),
    (_with(event=[{"at": "1s", "path": "b", "action": "unreachable"}, {"at": "2s", "path": "b", "action": "unreachable"}]),
     "event[1] unreachable", "already unreachable"),
    (_with(event=[{"at": "1s", "path": "b", "action": "reachable", "direction": "up"}]), "event[0]", "whole path"),
    (_with(event=[{"at": "1s", "path": "b", "action": "unreachable", "delay": "1ms"}]), "event[0]", "use action = 'set'"),
    (_with(event=[{"at": "1s", "path": "b", "action": "endpoint_remove"}], mptcp={"path_manager": "userspace"}),
     "event[0]", "in-kernel path manager"),
])
def test_bad_values_of_every_new_key_are_one_line(data, key, words):
    with pytest.raises(ScenarioError) as exc:
        parse_scenario(data, "bad.toml")
    msg = str(exc.value)
    assert msg.startswith("bad.toml: ") and key in msg and words in msg and "\n" not in msg, msg


def test_a_bad_endpoint_is_one_line_and_exit_2_from_the_cli(tmp_path):
    path = write_scenario(tmp_path, 'name = "x"\n[[path]]\nname = "a"\nrate = "1mbit"\n[[path]]\nname = "b"\n'
                                    'rate = "1mbit"\nendpoint = "signal fullmesh"\n[workload]\nsize = "1MiB"\n')
    proc = cli("run", str(path), "--no-store")
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: {path}: path[1].endpoint: ") and "signal and fullmesh" in line


def test_scenarios_without_the_new_keys_keep_their_content_hash():
    """Stored scenario versions stay theirs: defaults written out or left out hash as before the keys existed."""
    data = {**BASE, "event": [{"at": "1s", "path": "b", "action": "set", "rate": "1mbit"}]}
    before = "8a115aea7099dac5"  # this scenario's hash before endpoint, subflows, limits, jitter/queue events existed
    assert parse_scenario(data).content_hash == before
    explicit = {**data, "mptcp": {"scheduler": "default"},
                "path": [{**p, "endpoint": "subflow", "subflows": 1} for p in BASE["path"]]}
    assert parse_scenario(explicit).content_hash == before
    content = parse_scenario(explicit).normalized()
    assert all("endpoint" not in p and "subflows" not in p for p in content["path"])
    assert "limits" not in content["mptcp"] and all("jitter" not in e for e in content["event"])
    changed = parse_scenario(_with({"endpoint": "backup"}))
    assert changed.content_hash != parse_scenario(BASE).content_hash
    assert changed.normalized()["path"][1]["endpoint"] == "subflow backup"
    assert parse_scenario(_with({"endpoint": ["backup"]})).content_hash == changed.content_hash  # one canonical form


def test_endpoints_addresses_and_limits_are_planned_per_path():
    scn = parse_scenario({**BASE, "path": [
        {"name": "a", "rate": "1mbit", "endpoint": "backup", "subflows": 2},
        {"name": "b", "rate": "1mbit"},
        {"name": "c", "rate": "1mbit", "endpoint": "signal backup", "subflows": 2},
    ]})
    ports = [path_ports(i, p.name, False, p.subflows, p.signal) for i, p in enumerate(scn.paths)]
    assert ports[0].client_addrs == ("10.0.1.1", "10.0.1.11") and ports[2].client_addrs == ("10.0.3.1",)
    assert ports[2].announced_addrs == ("10.0.100.30", "10.0.100.31")
    planned = [(e.path, e.side, e.id, e.addr, e.flags, e.kernel) for e in plan_endpoints(ports, scn)]
    assert planned == [
        ("a", "client", 1, "10.0.1.1", "subflow backup", True),  # the initial subflow's address: backup needs an endpoint
        ("a", "client", 2, "10.0.1.11", "subflow backup", True),
        ("b", "client", 3, "10.0.2.1", "subflow", True),
        ("c", "server", 1, "10.0.100.30", "signal backup", True),
        ("c", "server", 2, "10.0.100.31", "signal backup", True),
    ]
    assert scn.pm_limits() == (4, 2) and scn.expected_subflows() == 5
    default = parse_scenario(BASE)
    assert default.pm_limits() == (1, 1) and default.expected_subflows() == 2  # what the lab always set
    plain = plan_endpoints([path_ports(i, p.name, False) for i, p in enumerate(default.paths)], default)
    assert [(e.id, e.flags, e.kernel) for e in plain] == [(0, "", False), (1, "subflow", True)]
    limited = parse_scenario({**BASE, "mptcp": {"limits": {"subflows": 0}}})
    assert limited.pm_limits() == (0, 1) and limited.expected_subflows() == 1
    mesh = parse_scenario({**BASE, "path": [{"name": "a", "rate": "1mbit", "endpoint": "fullmesh"},
                                            {"name": "b", "rate": "1mbit", "endpoint": "fullmesh"},
                                            {"name": "c", "rate": "1mbit", "endpoint": "signal"}]})
    assert mesh.needed_subflows() == 4 and mesh.pm_limits() == (3, 2)  # 2 fullmesh addresses x 2 server addresses


def test_a_path_has_client_and_server_endpoints_and_several_server_addresses():
    """server_endpoint beside a client endpoint on one path, server_addresses announced over it (pure plan)."""
    scn = parse_scenario({**BASE, "path": [
        {"name": "a", "rate": "1mbit", "endpoint": "fullmesh"},
        {"name": "b", "rate": "1mbit", "server_endpoint": "signal backup", "server_addresses": 2},
        {"name": "c", "rate": "1mbit", "endpoint": "signal"},
    ]})
    ports = [path_ports(i, p.name, False, p.subflows, p.signal, p.announced) for i, p in enumerate(scn.paths)]
    assert ports[1].client_addrs == ("10.0.2.1",) and ports[1].announced_addrs == ("10.0.100.20", "10.0.100.21")
    planned = [(e.path, e.side, e.id, e.addr, e.flags) for e in plan_endpoints(ports, scn)]
    assert planned == [
        ("a", "client", 1, "10.0.1.1", "subflow fullmesh"),
        ("b", "client", 2, "10.0.2.1", "subflow"),
        ("b", "server", 1, "10.0.100.20", "signal backup"),
        ("b", "server", 2, "10.0.100.21", "signal backup"),
        ("c", "server", 3, "10.0.100.30", "signal"),
    ]
    # the fullmesh address joins the server's own and the 3 announced addresses; b's endpoint opens one subflow;
    # announced addresses are joined from fullmesh addresses only
    assert scn.needed_subflows() == 5 and scn.pm_limits() == (4, 3) and scn.has_backup_endpoint()
    plain = parse_scenario(_with({"server_endpoint": "signal"}))  # no fullmesh: each announced address joined once
    assert plain.needed_subflows() == 3 and plain.pm_limits() == (2, 1) and not plain.has_backup_endpoint()
    assert [p.get("server_endpoint") for p in plain.normalized()["path"]] == [None, "signal"]
    for bad, words in (({"server_endpoint": "subflow"}, "write \"signal\" or \"signal backup\""),
                       ({"server_endpoint": "signal fullmesh"}, "mustn't have both signal and fullmesh"),
                       ({"endpoint": "signal", "server_endpoint": "signal"}, "already makes this path the server's"),
                       ({"server_addresses": 2}, "need server_endpoint"),
                       ({"server_endpoint": "signal", "server_addresses": 9}, "at most 8")):
        with pytest.raises(ScenarioError, match=words):
            parse_scenario(_with(bad), "bad.toml")
    with pytest.raises(ScenarioError, match=r"path\[1\]\.server_endpoint: .*in-kernel path manager"):
        parse_scenario(_with({"server_endpoint": "signal"}, mptcp={"path_manager": "userspace"}), "bad.toml")


def test_link_backends_refuse_set_events_they_cannot_emulate():
    def scn(**event) -> object:
        return parse_scenario({**BASE, "path": [{"name": "a", "rate": "10mbit"}, {"name": "b", "rate": "3mbit"}],
                               "event": [{"at": "1s", "path": "b", "action": "set", **event}]})

    assert "jitter" in (TbfLink.cannot_emulate(scn(jitter="5ms")) or "")
    assert TbfLink.cannot_emulate(scn(queue="20p")) is None
    assert "reorder" in (NetemLink.cannot_emulate(scn(jitter="5ms")) or "")
    assert WireLink.cannot_emulate(scn(jitter="5ms", queue="50ms")) is None


# -- real MPTCP ------------------------------------------------------------------------------------
def _delivered(rep, path: str, start: float, end: float) -> float:
    """Bytes that reached the receiver over `path` between `start` and `end` s (from the 20 Hz time series)."""
    ts = rep.timeseries
    total, prev = 0.0, 0.0
    for t, mbps in zip(ts.t, ts.delivered_mbps[path]):
        if start <= t <= end:
            total += mbps * 1e6 / 8 * (t - prev)
        prev = t
    return total


TCP_RTO_MIN_S = 0.2  # Linux's floor on the retransmission timeout: RTO = max(200 ms, srtt + 4 rttvar) ~ 200 ms + RTT


@requires_root
def test_backup_path_idles_until_the_primary_blackholes_then_carries_the_traffic(tmp_path):
    result, rep = run_once(tmp_path, """
        name = "t-backup"
        [[path]]
        name = "primary"
        rate = "10mbit"
        delay = "10ms"
        [[path]]
        name = "backup"
        rate = "10mbit"
        delay = "10ms"
        endpoint = "backup"
        [workload]
        direction = "download"
        duration = "4s"
        [[event]]
        at = "1.5s"
        path = "primary"
        action = "down"
        [run]
        link_backend = "wire"
        """, backend="wire")
    assert rep.completed, rep.error
    primary, backup = rep.subflows
    assert backup.endpoint == "subflow backup"
    assert [(e.id, e.side, e.flags) for e in backup.endpoints] == [(1, "client", "subflow backup")]
    assert [(e.id, e.flags) for e in primary.endpoints] == [(0, "")]
    assert rep.mib_server.get("MPTcpExtMPJoinSynBackupRx", 0) >= 1  # the server saw MP_JOIN's backup bit
    # while the primary works, the backup carries under 1% of the bytes
    before = {p: _delivered(rep, p, 0.0, 1.5) for p in ("primary", "backup")}
    assert before["primary"] > 0 and before["backup"] < 0.01 * (before["primary"] + before["backup"]), before
    # within a few RTOs of the blackhole the backup carries the traffic, near its rate
    rto = TCP_RTO_MIN_S + 2 * 0.010
    start, end = 1.5 + 6 * rto, rep.timeseries.t[-1]
    after = _delivered(rep, "backup", start, end)
    assert after >= 0.7 * 10e6 / 8 * (end - start), (after, start, end)
    assert 0 < rep.metrics["backup_share"] < 1
    env = result.environment["mptcp_pm"]
    assert env["client"]["endpoints"] == [{"id": 1, "addr": "10.0.2.1", "flags": "subflow backup"}]


@requires_root
def test_carrier_down_moves_the_traffic_to_the_other_path(tmp_path):
    """The initial subflow's interface goes down mid-upload: the transfer completes over the other path."""
    _, rep = run_once(tmp_path, """
        name = "t-carrier"
        [[path]]
        name = "a"
        rate = "10mbit"
        delay = "5ms"
        [[path]]
        name = "b"
        rate = "10mbit"
        delay = "5ms"
        [workload]
        size = "4MiB"
        [[event]]
        at = "0.8s"
        path = "a"
        action = "carrier_down"
        [[event]]
        at = "1.6s"
        path = "a"
        action = "carrier_up"
        [[event]]
        at = "0.4s"
        path = "b"
        action = "set"
        jitter = "1ms"
        queue = "100p"
        [run]
        link_backend = "wire"
        """, backend="wire")
    assert rep.completed, rep.error  # every event applied (an event that fails fails the repetition)
    assert rep.bytes == 4 * 2**20
    assert _delivered(rep, "a", 0.0, 0.8) > 0
    assert _delivered(rep, "a", 0.9, 1.6) == 0  # nothing leaves a down interface
    moved = _delivered(rep, "b", 0.9, rep.timeseries.t[-1])
    assert moved > 0.5 * 10e6 / 8 * 0.7, moved  # b kept carrying at least half its rate after the event


def _icmp_unreachable_counts(tmp_path, action: str) -> tuple[dict[str, int], object]:
    """Run an upload and a download at once for 4 s over two paths, path b `action`ed from 1 s to 2.5 s (so both
    ends send over it then); the ICMP destination unreachable messages (/proc/net/snmp IcmpInDestUnreachs) the
    client and the server received meanwhile."""
    import threading

    from mptcplab import RunOptions, load_scenario, run_scenario
    from mptcplab import netns

    def read(ns: str) -> int:
        with netns.inside(ns), open("/proc/thread-self/net/snmp") as f:
            lines = [line.split() for line in f if line.startswith("Icmp:")]
        return int(lines[1][lines[0].index("InDestUnreachs")])

    seen: dict[str, list[int]] = {"client": [], "server": []}
    stop = threading.Event()

    def poll(topo) -> None:
        def loop() -> None:
            while not stop.is_set():
                try:
                    for role, ns in (("client", topo.client), ("server", topo.server)):
                        seen[role].append(read(ns))
                except OSError:
                    return  # the lab is gone
                stop.wait(0.1)
        threading.Thread(target=loop, daemon=True).start()

    reverse = "reachable" if action == "unreachable" else "up"
    scn = load_scenario(write_scenario(tmp_path, f"""
        name = "t-{action}"
        [[path]]
        name = "a"
        rate = "10mbit"
        delay = "5ms"
        [[path]]
        name = "b"
        rate = "10mbit"
        delay = "5ms"
        [workload]
        direction = "both"
        duration = "4s"
        [[event]]
        at = "1s"
        path = "b"
        action = "{action}"
        [[event]]
        at = "2.5s"
        path = "b"
        action = "{reverse}"
        [run]
        link_backend = "wire"
        """, f"{action}.toml"))
    try:
        result = run_scenario(scn, RunOptions(repeat=1, setup=poll))
    finally:
        stop.set()
    return {role: v[-1] - v[0] for role, v in seen.items()}, result.repetitions[0]


@requires_root
def test_unreachable_answers_with_icmp_where_down_is_silent(tmp_path):
    """`unreachable`: the path's router answers the client's and the server's packets with ICMP host unreachable
    (both kernels count them); `down` drops them silently (nothing counted). Both runs complete (every event
    applied: one that fails fails the repetition)."""
    icmp, rep = _icmp_unreachable_counts(tmp_path, "unreachable")
    assert rep.completed, rep.error
    assert icmp["client"] > 0 and icmp["server"] > 0, icmp
    silent, rep_down = _icmp_unreachable_counts(tmp_path, "down")
    assert rep_down.completed, rep_down.error
    assert silent == {"client": 0, "server": 0}, silent


@requires_root
def test_endpoint_remove_moves_the_traffic_and_endpoint_add_opens_the_path_again(tmp_path):
    _, rep = run_once(tmp_path, """
        name = "t-endpoint"
        [[path]]
        name = "a"
        rate = "10mbit"
        delay = "5ms"
        [[path]]
        name = "b"
        rate = "10mbit"
        delay = "5ms"
        [workload]
        direction = "download"
        size = "6MiB"
        [[event]]
        at = "0.8s"
        path = "b"
        action = "endpoint_remove"
        [[event]]
        at = "1.6s"
        path = "b"
        action = "endpoint_add"
        [run]
        link_backend = "wire"
        """, backend="wire")
    assert rep.completed, rep.error
    a, b = rep.subflows
    assert _delivered(rep, "b", 0.0, 0.8) > 0
    assert _delivered(rep, "b", 0.9, 1.6) == 0 and _delivered(rep, "a", 0.9, 1.6) > 0  # a carries it all meanwhile
    assert rep.mib.get("MPTcpExtRmAddrTx", 0) >= 1 and rep.mib_server.get("MPTcpExtRmAddr", 0) >= 1
    # endpoint_add: the same endpoint (id 1) opens a new subflow on b, which carries data
    assert b.subflows_opened == 2 and [(e.id, e.flags) for e in b.endpoints] == [(1, "subflow"), (1, "subflow")]
    assert all(e.bytes_sent > 0 for e in b.endpoints)
    assert _delivered(rep, "b", 1.7, rep.timeseries.t[-1]) > 0


@requires_root
def test_two_subflows_on_one_path_and_a_subflow_from_the_servers_signal_endpoint(tmp_path):
    result, rep = run_once(tmp_path, """
        name = "t-subflows"
        [[path]]
        name = "a"
        rate = "10mbit"
        [[path]]
        name = "b"
        rate = "10mbit"
        subflows = 2
        [[path]]
        name = "c"
        rate = "10mbit"
        endpoint = "signal"
        [workload]
        size = "3MiB"
        [run]
        link_backend = "wire"
        """, backend="wire")
    assert rep.completed, rep.error  # all 4 subflows came up (else: "only N of 4 subflows came up")
    a, b, c = rep.subflows
    assert b.subflows_opened == 2
    assert sorted((e.id, e.client.split(":")[0]) for e in b.endpoints) == [(1, "10.0.2.1"), (2, "10.0.2.11")]
    assert all(e.bytes_sent > 0 for e in b.endpoints)  # both subflows of the one path carried data
    (joined,) = c.endpoints
    assert (joined.side, joined.flags, joined.server.split(":")[0]) == ("server", "signal", "10.0.100.30")
    assert joined.client.startswith("10.0.3.1:") and joined.bytes_sent > 0  # joined through path c
    assert rep.mib.get("MPTcpExtAddAddr", 0) >= 1  # the client received the ADD_ADDR
    pm = result.environment["mptcp_pm"]
    assert pm["server"]["endpoints"] == [{"id": 1, "addr": "10.0.100.30", "flags": "signal"}]
    assert pm["client"]["limits"] == {"subflows": 3, "add_addr_accepted": 2}


@requires_root
@pytest.mark.parametrize("client_a, client_b, expected", [
    # b's client endpoint opens b->S; the two addresses the server announces over b are joined from b (routing)
    ("subflow", "subflow", {("a", "10.0.1.1", "10.0.100.2"), ("b", "10.0.2.1", "10.0.100.2"),
                            ("b", "10.0.2.1", "10.0.100.20"), ("b", "10.0.2.1", "10.0.100.21")}),
    # fullmesh: every client address joins every server address: a cross join a->S_b crosses path a
    ("fullmesh", "fullmesh", {("a", "10.0.1.1", "10.0.100.2"), ("b", "10.0.2.1", "10.0.100.2"),
                              ("a", "10.0.1.1", "10.0.100.20"), ("b", "10.0.2.1", "10.0.100.20"),
                              ("a", "10.0.1.1", "10.0.100.21"), ("b", "10.0.2.1", "10.0.100.21")}),
])
def test_client_and_server_endpoints_on_one_path_join_every_announced_address(tmp_path, client_a, client_b, expected):
    """A path with a client endpoint and a server signal backup endpoint announcing two addresses: the kernels
    open every subflow the plan expects (else the repetition fails: "only N of M subflows came up")."""
    result, rep = run_once(tmp_path, f"""
        name = "t-cross"
        [[path]]
        name = "a"
        rate = "10mbit"
        endpoint = "{client_a}"
        [[path]]
        name = "b"
        rate = "10mbit"
        endpoint = "{client_b}"
        server_endpoint = "signal backup"
        server_addresses = 2
        [workload]
        size = "2MiB"
        [run]
        link_backend = "wire"
        """, backend="wire")
    assert rep.completed, rep.error
    seen = {(sf.path, e.client.split(":")[0], e.server.split(":")[0]) for sf in rep.subflows for e in sf.endpoints}
    assert seen == expected
    joined = [e for sf in rep.subflows for e in sf.endpoints if e.server.split(":")[0] != "10.0.100.2"]
    assert all((e.side, e.flags) == ("server", "signal backup") for e in joined if "fullmesh" not in client_b)
    assert rep.mib_server.get("MPTcpExtAddAddrTx", rep.mib.get("MPTcpExtAddAddr", 0)) >= 2  # both announced
    pm = result.environment["mptcp_pm"]
    assert [e["addr"] for e in pm["server"]["endpoints"]] == ["10.0.100.20", "10.0.100.21"]
    assert all(e["flags"] == "signal backup" for e in pm["server"]["endpoints"])


def test_the_store_keeps_which_endpoint_each_subflow_came_from(tmp_path):
    """A stored run reads back as the document it was, endpoints included (and backup_share as a metric)."""
    from mptcplab.result import SubflowEndpoint
    from mptcplab.store import open_store

    from .synthetic import run

    result = run([10.0, 11.0])
    for rep in result.repetitions:
        a, b = rep.subflows
        a.endpoint, b.endpoint = "subflow", "subflow backup"
        a.endpoints = [SubflowEndpoint(id=0, client="10.0.1.1:40000", server="10.0.100.2:5201", bytes_sent=a.bytes_sent)]
        b.endpoints = [SubflowEndpoint(id=1, flags="subflow backup", client="10.0.2.1:40001", server="10.0.100.2:5201",
                                       bytes_sent=b.bytes_sent)]
        rep.metrics["backup_share"] = 0.4
    store = open_store(str(tmp_path / "r.db"))
    assert store.save_result(result, parse_scenario(_with({"endpoint": "backup"})).normalized()) == 2
    back = store.load_result(result.run_id)
    assert back.to_json()["repetitions"] == result.to_json()["repetitions"]
    assert back.summary["backup_share"].median == 0.4


def test_run_figures_shade_carrier_and_endpoint_outages():
    from mptcplab.plots import ScenarioMarks

    scn = parse_scenario(_with(event=[
        {"at": "1s", "path": "a", "action": "carrier_down"}, {"at": "3s", "path": "a", "action": "carrier_up"},
        {"at": "4s", "path": "b", "action": "endpoint_remove"},
        {"at": "2s", "path": "b", "action": "set", "jitter": "5ms", "queue": "10p"}]))
    marks = ScenarioMarks.from_content(scn.normalized())
    assert marks.outages(10.0) == [("a", 1.0, 3.0, "a carrier_down 1–3 s"), ("b", 4.0, 10.0, "b endpoint_remove from 4 s")]
    assert "b: jitter 5 ms, queue" in [e.text for e in marks.events]

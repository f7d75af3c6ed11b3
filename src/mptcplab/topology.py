"""The simult_flows layout of the kernel selftests, built over netlink.

    client ──path 0── router ── server
           ──path 1──
           ...

The client has one interface per path (10.0.<i+1>.1/24, router side .2),
the router reaches the server on 10.0.100.0/24. With ``emulator=True`` every
path is cut in two and a fourth namespace sits in the middle, holding two
address-less interfaces per path between which a userspace link emulator
forwards frames; client and router still share one subnet per path.

Client source routing (one table per path) makes each subflow leave through
its own path whatever the path manager decides.

MPTCP endpoints (in-kernel path manager): by default one client `subflow`
endpoint per path but the first, whose address carries the initial subflow.
A path with `subflows = N` gets N-1 more client addresses on the same
interface (10.0.<i+1>.11, .12, ...), each an endpoint with the path's flags;
a `signal` path gets N addresses on the server (10.0.100.<10(i+1)+k>), each a
server signal endpoint, which the client reaches through that path (a host
route), so the subflow that joins an announced address takes that path.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import ExitStack
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any

from pyroute2.iproute.linux import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.generic.mptcp import MPTCP

from . import netns
from .errors import RunError
from .lab import RUN_DIR, Lab
from .scenario import Event, Scenario

SERVER_SUBNET = "10.0.100"
#: MPTCP_PM_ADDR_FLAG_* (include/uapi/linux/mptcp.h)
MPTCP_PM_ADDR_FLAG_SIGNAL = 0x1
MPTCP_PM_ADDR_FLAG_SUBFLOW = 0x2
MPTCP_PM_ADDR_FLAG_BACKUP = 0x4
MPTCP_PM_ADDR_FLAG_FULLMESH = 0x8
PM_FLAG_BITS = {"signal": MPTCP_PM_ADDR_FLAG_SIGNAL, "subflow": MPTCP_PM_ADDR_FLAG_SUBFLOW,
                "backup": MPTCP_PM_ADDR_FLAG_BACKUP, "fullmesh": MPTCP_PM_ADDR_FLAG_FULLMESH}
SERVER_PORT = 5201
TABLE_BASE = 100
NUD_PERMANENT = 0x80


@dataclass(frozen=True)
class PathPorts:
    """Where one path lives: interface names in each namespace and addresses."""

    index: int
    name: str
    client_if: str
    router_if: str
    client_addr: str
    router_addr: str
    emu_client_if: str | None = None  # in the emulator namespace, facing the client
    emu_router_if: str | None = None  # in the emulator namespace, facing the router
    #: more client addresses on the same interface, one per extra subflow (`subflows = N`)
    extra_client_addrs: tuple[str, ...] = ()
    #: server addresses announced (ADD_ADDR) for a signal path, reached through this path
    announced_addrs: tuple[str, ...] = ()

    @property
    def client_addrs(self) -> tuple[str, ...]:
        return (self.client_addr, *self.extra_client_addrs)


@dataclass(frozen=True)
class Endpoint:
    """One MPTCP endpoint of the lab: which path, whose (client or server), its address, id and flags."""

    path: str
    side: str  # "client" (subflow endpoints) or "server" (signal endpoints)
    #: the endpoint's id in its host's path manager; 0 for the initial subflow's address when it has no endpoint
    id: int
    addr: str
    #: as the scenario writes them ("subflow backup"); "" for the initial subflow's address without an endpoint
    flags: str
    #: whether the lab creates it in the kernel (False: the initial subflow's address, or the userspace PM's)
    kernel: bool = True

    @property
    def nl_flags(self) -> int:
        """MPTCP_PM_ADDR_FLAG_* bits."""
        return sum(PM_FLAG_BITS[f] for f in self.flags.split())


@dataclass
class Topology:
    client: str
    router: str
    server: str
    emulator: str | None
    paths: list[PathPorts] = field(default_factory=list)
    server_addr: str = f"{SERVER_SUBNET}.2"
    server_port: int = SERVER_PORT
    #: roles whose namespace default congestion control the kernel refused to change (see _configure_sysctls)
    congestion_default_refused: list[str] = field(default_factory=list)
    #: every MPTCP endpoint, client's and server's (see plan_endpoints)
    endpoints: list[Endpoint] = field(default_factory=list)

    def path_of_client_addr(self, addr: str) -> PathPorts | None:
        return next((p for p in self.paths if addr in p.client_addrs), None)

    def endpoint_of(self, client_addr: str, server_addr: str) -> Endpoint | None:
        """The endpoint a subflow between these addresses came from.

        A client endpoint opened it (subflow, or fullmesh joining an announced
        address), or else the server's signal endpoint announced the address it joined.
        """
        client = next((e for e in self.endpoints if e.side == "client" and e.addr == client_addr), None)
        server = next((e for e in self.endpoints if e.side == "server" and e.addr == server_addr), None)
        if server is not None and (client is None or "fullmesh" not in client.flags.split()):
            return server
        return client

    def path_endpoints(self, path: str) -> list[Endpoint]:
        return [e for e in self.endpoints if e.path == path]


def path_ports(index: int, name: str, emulator: bool, subflows: int = 1, signal: bool = False) -> PathPorts:
    """Interfaces and addresses of path `index`; `subflows` and `signal` as the scenario's path says."""
    subnet = f"10.0.{index + 1}"
    return PathPorts(
        index=index,
        name=name,
        client_if=f"p{index}",
        router_if=f"p{index}",
        client_addr=f"{subnet}.1",
        router_addr=f"{subnet}.2",
        emu_client_if=f"c{index}" if emulator else None,
        emu_router_if=f"r{index}" if emulator else None,
        extra_client_addrs=() if signal else tuple(f"{subnet}.{10 + k}" for k in range(1, subflows)),
        announced_addrs=tuple(f"{SERVER_SUBNET}.{10 * (index + 1) + k}" for k in range(subflows)) if signal else (),
    )


def plan_endpoints(paths: list[PathPorts], scenario: Scenario) -> list[Endpoint]:
    """Every endpoint of the scenario, ids given in path order from 1 in each host (pure).

    The initial subflow's address (path 0's first) gets a kernel endpoint only
    when its flags say more than `subflow` (backup, fullmesh): the kernel then
    applies them to the initial subflow. With the userspace path manager no
    kernel endpoint exists; the ids listed are those the lab's SUBFLOW_CREATE uses.
    """
    out: list[Endpoint] = []
    if scenario.mptcp.path_manager == "userspace":
        return [Endpoint(p.name, "client", p.index + 1 if p.index else 0, p.client_addr, "subflow" if p.index else "", kernel=False)
                for p in paths]  # the ids open_subflows gives SUBFLOW_CREATE
    next_id = {"client": 1, "server": 1}
    for ports, path in zip(paths, scenario.paths):
        side = "server" if path.signal else "client"
        for addr in ports.announced_addrs if path.signal else ports.client_addrs:
            if addr == paths[0].client_addr and path.endpoint == "subflow":
                out.append(Endpoint(path.name, side, 0, addr, "", kernel=False))
                continue
            out.append(Endpoint(path.name, side, next_id[side], addr, path.endpoint))
            next_id[side] += 1
    return out


def _veth(ipr: IPRoute, ifname: str, peer: str, peer_ns: str) -> None:
    ipr.link("add", ifname=ifname, kind="veth", peer={"ifname": peer, "net_ns_fd": peer_ns})


Links = dict[str, tuple[int, str]]  # interface name -> (index, MAC address)


def _links(ipr: IPRoute) -> Links:
    """Every interface's index and MAC, in one dump instead of a lookup per interface."""
    return {link.get_attr("IFLA_IFNAME"): (link["index"], link.get_attr("IFLA_ADDRESS")) for link in ipr.get_links()}


def _bring_up(ipr: IPRoute, addrs: dict[str, str | None], prefixlen: int = 24) -> Links:
    links = _links(ipr)
    for ifname, addr in addrs.items():
        if addr:
            ipr.addr("add", index=links[ifname][0], address=addr, prefixlen=prefixlen)
        ipr.link("set", index=links[ifname][0], state="up")
    return links


def build(lab: Lab, scenario: Scenario, emulator: bool = False) -> Topology:
    """Create namespaces, links, addresses, routes, MPTCP endpoints and limits."""
    topo = Topology(
        client=lab.netns("cli"),
        router=lab.netns("rtr"),
        server=lab.netns("srv"),
        emulator=lab.netns("emu") if emulator else None,
    )
    topo.paths = [path_ports(i, p.name, emulator, p.subflows, p.signal) for i, p in enumerate(scenario.paths)]
    topo.endpoints = plan_endpoints(topo.paths, scenario)
    with ExitStack() as stack:
        cli, rtr, srv = (stack.enter_context(netns.iproute(ns)) for ns in (topo.client, topo.router, topo.server))
        emu = stack.enter_context(netns.iproute(topo.emulator)) if topo.emulator else None
        cli_links, rtr_links, srv_links = _build_links(topo, cli, rtr, srv, emu)
        _pin_neighbours(topo, (cli, cli_links), (rtr, rtr_links), (srv, srv_links))
        _route(topo, cli, srv, cli_links)
    _disable_offloads(topo)
    _configure_mptcp(topo, scenario)
    _configure_sysctls(topo, scenario)
    return topo


def roles(topo: Topology) -> dict[str, str]:
    """Role name -> namespace, for the roles a scenario's sysctls can name."""
    return {"client": topo.client, "server": topo.server, "router": topo.router}


CONGESTION_KEY = "net.ipv4.tcp_congestion_control"
ALLOWED_CONGESTION_KEY = "net.ipv4.tcp_allowed_congestion_control"
#: serialises the brief change of the host's allowed list between labs (not a run lock: cleanup.py removes *.lock)
ALLOWED_CONGESTION_LOCK = os.path.join(RUN_DIR, "congestion-allowed.flock")


def set_congestion_default(ns: str, algorithm: str) -> bool:
    """Make `algorithm` the default congestion control of namespace `ns`; False when the kernel refuses it.

    Outside the host's own namespace the kernel lets a namespace default be only one of
    net.ipv4.tcp_allowed_congestion_control (EPERM otherwise; tcp_set_default_congestion_control). The
    check is made only when the default is set: so `algorithm` is added to the host's allowed list, the
    namespace default set, and the host's list restored at once (under a lock shared by every lab of this
    machine, so two labs never restore each other's change). Every socket then created in `ns` (a program's
    own, the subflows the kernel opens for it) starts with `algorithm`; the host's sockets are not touched.
    """
    try:
        netns.sysctl_write(ns, CONGESTION_KEY, algorithm)
        return True
    except PermissionError:
        pass
    os.makedirs(RUN_DIR, exist_ok=True)
    with open(ALLOWED_CONGESTION_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            allowed = netns.sysctl_read(None, ALLOWED_CONGESTION_KEY)
        except OSError:
            return False
        if algorithm in allowed.split():
            return False  # allowed already, and still refused: nothing more to try
        try:
            netns.sysctl_write(None, ALLOWED_CONGESTION_KEY, f"{allowed} {algorithm}".strip())
        except OSError:
            return False  # not the host's own network namespace, or /proc/sys is read-only (a container)
        try:
            netns.sysctl_write(ns, CONGESTION_KEY, algorithm)
            return True
        except PermissionError:
            return False
        finally:
            netns.sysctl_write(None, ALLOWED_CONGESTION_KEY, allowed)


def _configure_sysctls(topo: Topology, scenario: Scenario) -> None:
    """The [tcp] conditions and [sysctl] keys, in every role's namespace (preflight checked they exist).

    A tcp_rmem/tcp_wmem of one size sets only the maximum, keeping the kernel's minimum and default.
    The [tcp] congestion control becomes each namespace's default (set_congestion_default, so programs of
    the command workload get it too); the lab's own workloads also set it on every socket they open
    (TCP_CONGESTION). A namespace whose default the kernel still refuses is recorded
    (`congestion_default_refused`), not fatal.
    """
    topo.congestion_default_refused = []
    for role, ns in roles(topo).items():
        for key, value in scenario.sysctls_for(role).items():
            if key == CONGESTION_KEY:
                if not set_congestion_default(ns, value):
                    topo.congestion_default_refused.append(role)
                continue
            if key in ("net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem") and len(value.split()) == 1:
                high = int(value)
                kernel_low, kernel_default, _ = (int(v) for v in netns.sysctl_read(ns, key).split())
                default = min(kernel_default, high)
                low = min(kernel_low, default)
                value = f"{low} {default} {high}"
            netns.sysctl_write(ns, key, value)


def effective_sysctls(topo: Topology, scenario: Scenario) -> dict[str, dict[str, str]]:
    """What each namespace really has, read back after setting: `sysctls_client`, `sysctls_server`, `sysctls_router`.

    Client and server: every net.mptcp.* key, the congestion control, tcp_rmem,
    tcp_wmem and every key the scenario set; the router: the keys the scenario set.
    """
    out: dict[str, dict[str, str]] = {}
    for role, ns in roles(topo).items():
        values = netns.sysctls(ns, "net.mptcp") if role != "router" else {}
        keys = list(scenario.sysctls_for(role))
        if role != "router":
            keys += ["net.ipv4.tcp_congestion_control", "net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"]
        for key in keys:
            values[key] = " ".join(netns.sysctl_read(ns, key).split())
        out[f"sysctls_{role}"] = values
    return out


def _build_links(topo: Topology, cli: IPRoute, rtr: IPRoute, srv: IPRoute, emu: IPRoute | None) -> tuple[Links, Links, Links]:
    """The veth pairs, addresses and links up; returns the client's, router's and server's interfaces."""
    for p in topo.paths:
        if emu is None:
            _veth(cli, p.client_if, p.router_if, topo.router)
        else:
            assert p.emu_client_if and p.emu_router_if and topo.emulator
            _veth(cli, p.client_if, p.emu_client_if, topo.emulator)
            _veth(rtr, p.router_if, p.emu_router_if, topo.emulator)
    _veth(rtr, "srv", "eth0", topo.server)
    cli_links = _bring_up(cli, {"lo": None, **{p.client_if: p.client_addr for p in topo.paths}})
    rtr_links = _bring_up(rtr, {"lo": None, "srv": f"{SERVER_SUBNET}.1", **{p.router_if: p.router_addr for p in topo.paths}})
    srv_links = _bring_up(srv, {"lo": None, "eth0": topo.server_addr})
    for p in topo.paths:  # more subflows on one path: more addresses on its interface; announced ones on the server
        for addr in p.extra_client_addrs:
            cli.addr("add", index=cli_links[p.client_if][0], address=addr, prefixlen=24)
        for addr in p.announced_addrs:
            srv.addr("add", index=srv_links["eth0"][0], address=addr, prefixlen=32)
    if emu is not None:
        _bring_up(emu, {"lo": None, **{i: None for p in topo.paths for i in (p.emu_client_if, p.emu_router_if) if i}})
    return cli_links, rtr_links, srv_links


def _pin_neighbours(topo: Topology, cli: tuple[IPRoute, Links], rtr: tuple[IPRoute, Links], srv: tuple[IPRoute, Links]) -> None:
    """Permanent ARP entries at both ends of every link.

    Otherwise ARP would cross the emulated path like data: lost with the path's
    loss (then the kernel waits a second to ask again while frames pile up or
    are dropped in its neighbour queue), delayed, and, when the answer comes,
    the queued frames can be overtaken by a newer one. None of that is in the
    scenario; a path models the network beyond the first hop, which has no ARP.
    """
    (c, cli_links), (r, rtr_links), (s, srv_links) = cli, rtr, srv
    pairs = [(c, cli_links[p.client_if], p.client_addr, r, rtr_links[p.router_if], p.router_addr) for p in topo.paths]
    pairs.append((r, rtr_links["srv"], f"{SERVER_SUBNET}.1", s, srv_links["eth0"], topo.server_addr))
    for a, (a_idx, a_mac), a_addr, b, (b_idx, b_mac), b_addr in pairs:
        a.neigh("add", dst=b_addr, lladdr=b_mac, ifindex=a_idx, state=NUD_PERMANENT)
        b.neigh("add", dst=a_addr, lladdr=a_mac, ifindex=b_idx, state=NUD_PERMANENT)
    srv_idx, srv_mac = srv_links["eth0"]
    for p in topo.paths:  # the router reaches extra client addresses and announced server addresses without ARP too
        idx, mac = cli_links[p.client_if]
        for addr in p.extra_client_addrs:
            r.neigh("add", dst=addr, lladdr=mac, ifindex=rtr_links[p.router_if][0], state=NUD_PERMANENT)
        for addr in p.announced_addrs:
            r.neigh("add", dst=addr, lladdr=srv_mac, ifindex=rtr_links["srv"][0], state=NUD_PERMANENT)


def _route(topo: Topology, cli: IPRoute, srv: IPRoute, cli_links: Links) -> None:
    netns.sysctl_write(topo.router, "net.ipv4.ip_forward", 1)
    if topo.emulator:
        # the emulator namespace must never answer or route anything itself
        netns.sysctl_write(topo.emulator, "net.ipv4.ip_forward", 0)
        netns.sysctl_write(topo.emulator, "net.ipv6.conf.all.disable_ipv6", 1)
        # and on any interface made later in it, which would otherwise send router solicitations across a path
        netns.sysctl_write(topo.emulator, "net.ipv6.conf.default.disable_ipv6", 1)
    for ns in (topo.client, topo.router, topo.server):
        netns.sysctl_write(ns, "net.ipv6.conf.all.disable_ipv6", 1)
    for p in topo.paths:
        client_routes(cli, p, cli_links[p.client_if][0])
        for addr in p.client_addrs:
            cli.rule("add", src=addr, src_len=32, table=TABLE_BASE + p.index, priority=1000 + p.index)
    srv.route("add", dst="0.0.0.0/0", gateway=f"{SERVER_SUBNET}.1")


def client_routes(cli: IPRoute, p: PathPorts, idx: int, cmd: str = "add") -> None:
    """The client's routes through path `p` (interface index `idx`); the kernel drops them when the interface goes down.

    Main table: a default route per path, path 0 first and the others as
    fallbacks (as simult_flows does), and a host route to each address the
    server announces for this path; the path's own table: its default route.
    """
    cli.route(cmd, dst="0.0.0.0/0", gateway=p.router_addr, oif=idx, priority=100 + p.index)
    cli.route(cmd, dst="0.0.0.0/0", gateway=p.router_addr, oif=idx, table=TABLE_BASE + p.index)
    for addr in p.announced_addrs:
        cli.route(cmd, dst=f"{addr}/32", gateway=p.router_addr, oif=idx)


def _disable_offloads(topo: Topology) -> None:
    from .links import offloads

    offloads.disable(topo.client, [p.client_if for p in topo.paths])
    offloads.disable(topo.router, [p.router_if for p in topo.paths])
    if topo.emulator:
        offloads.disable(topo.emulator, [i for p in topo.paths for i in (p.emu_client_if, p.emu_router_if) if i])


def _configure_mptcp(topo: Topology, scenario: Scenario) -> None:
    """Limits in client and server (Scenario.pm_limits), then every kernel endpoint (Topology.endpoints)."""
    subflows, accepted = scenario.pm_limits()
    pm = scenario.mptcp.path_manager
    for ns, side in ((topo.client, "client"), (topo.server, "server")):
        netns.sysctl_write(ns, "net.mptcp.enabled", 1)
        _set_scheduler(ns, scenario.mptcp.scheduler)
        _set_path_manager(ns, pm)
        with netns.inside(ns):
            pm_sock = MPTCP()
            try:
                pm_sock.limits("set", subflows=subflows, rcv_add_addrs=accepted)
                for e in topo.endpoints:
                    if e.side == side and e.kernel:
                        add_endpoint(pm_sock, e)
            finally:
                pm_sock.close()


def add_endpoint(pm_sock: MPTCP, e: Endpoint) -> None:
    """Create endpoint `e` with its own id (so events and results can name it)."""
    pm_sock.endpoint("add", addr=e.addr, id=e.id, flags=e.nl_flags)


def pm_state(topo: Topology) -> dict[str, Any]:
    """The path managers' endpoints and limits as the kernel reports them, per host: the environment's `mptcp_pm`.

    {"client": {"limits": {"subflows": n, "add_addr_accepted": n}, "endpoints": [{"id", "addr", "flags"}]}, "server": ...}
    """
    out: dict[str, Any] = {}
    names = {bit: name for name, bit in PM_FLAG_BITS.items()}
    for ns, side in ((topo.client, "client"), (topo.server, "server")):
        with netns.inside(ns):
            pm_sock = MPTCP()
            try:
                limits = pm_sock.limits("show")
                endpoints = pm_sock.endpoint("show")
            finally:
                pm_sock.close()
        lim = limits[0] if limits else None
        rows = []
        for msg in endpoints:
            addr = msg.get_attr("MPTCP_PM_ATTR_ADDR")
            flags = addr.get_attr("MPTCP_PM_ADDR_ATTR_FLAGS") or 0
            rows.append({"id": addr.get_attr("MPTCP_PM_ADDR_ATTR_ID"), "addr": addr.get_attr("MPTCP_PM_ADDR_ATTR_ADDR4"),
                         "flags": " ".join(n for bit, n in sorted(names.items()) if flags & bit)})
        out[side] = {"limits": {"subflows": lim.get_attr("MPTCP_PM_ATTR_SUBFLOWS") if lim else None,
                                "add_addr_accepted": lim.get_attr("MPTCP_PM_ATTR_RCV_ADD_ADDRS") if lim else None},
                     "endpoints": rows}
    return out


def _set_scheduler(ns: str, scheduler: str) -> None:
    try:
        netns.sysctl_write(ns, "net.mptcp.scheduler", scheduler)
    except FileNotFoundError:  # before 6.6: no sysctl, only the built-in scheduler (preflight checked)
        if scheduler != "default":
            raise


def _set_path_manager(ns: str, pm: str) -> None:
    try:
        netns.sysctl_write(ns, "net.mptcp.path_manager", pm)
    except FileNotFoundError:  # kernels before 6.15 only have pm_type
        netns.sysctl_write(ns, "net.mptcp.pm_type", 0 if pm == "kernel" else 1)


def client_addresses(topo: Topology) -> list[IPv4Address]:
    return [IPv4Address(p.client_addr) for p in topo.paths]


def apply_host_event(topo: Topology, event: Event) -> None:
    """Apply an event on the hosts (Event.action in HOST_ACTIONS) now.

    carrier_down / carrier_up: the client's interface of the path goes down /
    up (`ip link set dev pN down`); the kernel drops the routes through it and
    its neighbour entries when it goes down, so going up puts them back.
    endpoint_remove / endpoint_add: the path's endpoints are deleted /
    created again with the same ids and flags (a signal path's on the server:
    RM_ADDR / ADD_ADDR); deleting the initial subflow's address without an
    endpoint is the kernel's `endpoint delete id 0 ADDR`.
    Raises RunError with the kernel's answer when it refuses.
    """
    ports = next(p for p in topo.paths if p.name == event.path)
    try:
        if event.action in ("carrier_down", "carrier_up"):
            _set_carrier(topo, ports, up=event.action == "carrier_up")
        elif event.action in ("endpoint_remove", "endpoint_add"):
            _set_endpoints(topo, topo.path_endpoints(event.path), present=event.action == "endpoint_add")
        else:
            raise ValueError(f"{event.action!r} is not a host event")
    except NetlinkError as e:
        raise RunError(f"{event.action} on path {event.path!r}: the kernel refused: {e}") from None


def _set_carrier(topo: Topology, p: PathPorts, up: bool) -> None:
    with netns.iproute(topo.client) as cli:
        idx = cli.link_lookup(ifname=p.client_if)[0]
        cli.link("set", index=idx, state="up" if up else "down")
        if not up:
            return
        with netns.iproute(topo.router) as rtr:
            mac = rtr.get_links(rtr.link_lookup(ifname=p.router_if)[0])[0].get_attr("IFLA_ADDRESS")
        cli.neigh("replace", dst=p.router_addr, lladdr=mac, ifindex=idx, state=NUD_PERMANENT)
        client_routes(cli, p, idx, "replace")  # whatever the kernel kept


def _set_endpoints(topo: Topology, endpoints: list[Endpoint], present: bool) -> None:
    for side, ns in (("client", topo.client), ("server", topo.server)):
        mine = [e for e in endpoints if e.side == side]
        if not mine:
            continue
        with netns.inside(ns):
            pm_sock = MPTCP()
            try:
                for e in mine:
                    if present and not e.kernel:
                        # the initial subflow's address comes back as an endpoint of its own, with a fresh id
                        used = [x.id for x in topo.endpoints if x.side == side]
                        again = Endpoint(e.path, e.side, max(used) + 1, e.addr, "subflow")
                        topo.endpoints[topo.endpoints.index(e)] = again
                        add_endpoint(pm_sock, again)
                    elif present:
                        add_endpoint(pm_sock, e)
                    else:
                        pm_sock.endpoint("del", id=e.id, addr=e.addr)
            finally:
                pm_sock.close()

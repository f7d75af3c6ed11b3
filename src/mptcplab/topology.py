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
"""
from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from pyroute2.iproute.linux import IPRoute
from pyroute2.netlink.generic.mptcp import MPTCP

from . import netns
from .lab import Lab
from .scenario import Scenario

SERVER_SUBNET = "10.0.100"
MPTCP_PM_ADDR_FLAG_SUBFLOW = 0x2
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

    def path_of_client_addr(self, addr: str) -> PathPorts | None:
        return next((p for p in self.paths if p.client_addr == addr), None)


def path_ports(index: int, name: str, emulator: bool) -> PathPorts:
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
    )


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
    topo.paths = [path_ports(i, p.name, emulator) for i, p in enumerate(scenario.paths)]
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


def _configure_sysctls(topo: Topology, scenario: Scenario) -> None:
    """The [tcp] conditions and [sysctl] keys, in every role's namespace (preflight checked they exist).

    A tcp_rmem/tcp_wmem of one size sets only the maximum, keeping the kernel's minimum and default.
    Outside the host's own namespace the kernel lets a namespace's default
    congestion control be only one of net.ipv4.tcp_allowed_congestion_control
    (EPERM otherwise); the workload also sets it on every socket it opens
    (TCP_CONGESTION, which root may set to any available one), so such a
    refusal leaves the namespace default alone and is recorded, not fatal.
    """
    topo.congestion_default_refused = []
    for role, ns in roles(topo).items():
        for key, value in scenario.sysctls_for(role).items():
            if key == CONGESTION_KEY:
                try:
                    netns.sysctl_write(ns, key, value)
                except PermissionError:
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
        idx = cli_links[p.client_if][0]
        table = TABLE_BASE + p.index
        # main table: path 0 first, the others as fallbacks (as simult_flows does)
        cli.route("add", dst="0.0.0.0/0", gateway=p.router_addr, oif=idx, priority=100 + p.index)
        cli.route("add", dst="0.0.0.0/0", gateway=p.router_addr, oif=idx, table=table)
        cli.rule("add", src=p.client_addr, src_len=32, table=table, priority=1000 + p.index)
    srv.route("add", dst="0.0.0.0/0", gateway=f"{SERVER_SUBNET}.1")


def _disable_offloads(topo: Topology) -> None:
    from .links import offloads

    offloads.disable(topo.client, [p.client_if for p in topo.paths])
    offloads.disable(topo.router, [p.router_if for p in topo.paths])
    if topo.emulator:
        offloads.disable(topo.emulator, [i for p in topo.paths for i in (p.emu_client_if, p.emu_router_if) if i])


def _configure_mptcp(topo: Topology, scenario: Scenario) -> None:
    extra = len(topo.paths) - 1
    pm = scenario.mptcp.path_manager
    for ns in (topo.client, topo.server):
        netns.sysctl_write(ns, "net.mptcp.enabled", 1)
        _set_scheduler(ns, scenario.mptcp.scheduler)
        _set_path_manager(ns, pm)
        with netns.inside(ns):
            pm_sock = MPTCP()
            try:
                pm_sock.limits("set", subflows=max(extra, 0), rcv_add_addrs=max(extra, 0))
                if ns == topo.client and pm == "kernel":
                    for p in topo.paths[1:]:
                        pm_sock.endpoint("add", addr=p.client_addr, flags=MPTCP_PM_ADDR_FLAG_SUBFLOW)
            finally:
                pm_sock.close()


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

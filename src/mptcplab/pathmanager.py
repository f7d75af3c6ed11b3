"""The userspace path manager's side of the lab: open one subflow per extra path.

With ``path_manager = "userspace"`` the kernel opens no subflows by itself; a
daemon (mptcpd, or here the lab) asks for each one over the ``mptcp_pm``
generic netlink family (MPTCP_PM_CMD_SUBFLOW_CREATE), naming the connection
by its token. pyroute2's MPTCP class knows only the endpoint and limit
commands, so the message class below adds the attributes these commands use
(include/uapi/linux/mptcp_pm.h).
"""
from __future__ import annotations

import errno
import socket
import time
from socket import AF_INET

from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST, genlmsg, nla
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.generic import GenericNetlinkSocket

from . import netns
from .errors import RunError
from .mptcp import MPTCP_INFO, SOL_MPTCP, MptcpInfo, _getsockopt
from .topology import Topology

MPTCP_PM_CMD_SUBFLOW_CREATE = 10


class pm_msg(genlmsg):
    prefix = "MPTCP_PM_ATTR_"
    nla_map = (
        ("MPTCP_PM_ATTR_UNSPEC", "none"),
        ("MPTCP_PM_ATTR_ADDR", "pm_addr"),
        ("MPTCP_PM_ATTR_RCV_ADD_ADDRS", "uint32"),
        ("MPTCP_PM_ATTR_SUBFLOWS", "uint32"),
        ("MPTCP_PM_ATTR_TOKEN", "uint32"),
        ("MPTCP_PM_ATTR_LOC_ID", "uint8"),
        ("MPTCP_PM_ATTR_ADDR_REMOTE", "pm_addr"),
    )

    class pm_addr(nla):
        prefix = "MPTCP_PM_ADDR_ATTR_"
        nla_map = (
            ("MPTCP_PM_ADDR_ATTR_UNSPEC", "none"),
            ("MPTCP_PM_ADDR_ATTR_FAMILY", "uint16"),
            ("MPTCP_PM_ADDR_ATTR_ID", "uint8"),
            ("MPTCP_PM_ADDR_ATTR_ADDR4", "ipaddr"),
            ("MPTCP_PM_ADDR_ATTR_ADDR6", "ipaddr"),
            ("MPTCP_PM_ADDR_ATTR_PORT", "uint16"),  # host order: the kernel applies htons()
            ("MPTCP_PM_ADDR_ATTR_FLAGS", "uint32"),
            ("MPTCP_PM_ADDR_ATTR_IF_IDX", "int32"),
        )


EVENTS_GROUP = "mptcp_pm_events"


class EventListener:
    """A userspace path manager's presence, as the kernel sees it.

    With the userspace PM the kernel accepts an incoming MP_JOIN only while
    some socket in that namespace listens to the ``mptcp_pm_events`` group
    (mptcp_userspace_pm_active()); this is that socket, one per namespace.
    """

    def __init__(self, namespaces: list[str]) -> None:
        self._socks: list[GenericNetlinkSocket] = []
        for ns in namespaces:
            with netns.inside(ns):
                genl = GenericNetlinkSocket()
            self._socks.append(genl)
            genl.bind("mptcp_pm", pm_msg)
            genl.add_membership(EVENTS_GROUP)

    def close(self) -> None:
        for genl in self._socks:
            genl.close()


def token(sock: socket.socket) -> int:
    info = MptcpInfo()
    _getsockopt(sock.fileno(), SOL_MPTCP, MPTCP_INFO, info)
    return info.token


def _request(genl: GenericNetlinkSocket, msg: pm_msg, path: str, patience_s: float = 5.0) -> None:
    """Send one SUBFLOW_CREATE; ENOTCONN until the connection is fully established, so retry."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            genl.nlm_request(msg, msg_type=genl.prid, msg_flags=NLM_F_REQUEST | NLM_F_ACK)
            return
        except NetlinkError as e:
            if e.code == errno.ENOTCONN and time.monotonic() < deadline:
                time.sleep(0.01)
                continue
            raise RunError(f"the userspace path manager could not open a subflow on path {path!r}: {e}") from None


def open_subflows(topo: Topology, sock: socket.socket) -> None:
    """Ask the client's kernel for one subflow per extra path of `sock`'s connection."""
    tok = token(sock)
    with netns.inside(topo.client):
        genl = GenericNetlinkSocket()
    try:
        genl.bind("mptcp_pm", pm_msg)
        for path in topo.paths[1:]:
            msg = pm_msg()
            msg["cmd"] = MPTCP_PM_CMD_SUBFLOW_CREATE
            msg["version"] = 1
            msg["attrs"] = [
                ("MPTCP_PM_ATTR_TOKEN", tok),
                ("MPTCP_PM_ATTR_ADDR", {"attrs": [
                    ("MPTCP_PM_ADDR_ATTR_FAMILY", AF_INET),
                    ("MPTCP_PM_ADDR_ATTR_ID", path.index + 1),
                    ("MPTCP_PM_ADDR_ATTR_ADDR4", path.client_addr),
                ]}, 0x8000),
                ("MPTCP_PM_ATTR_ADDR_REMOTE", {"attrs": [
                    ("MPTCP_PM_ADDR_ATTR_FAMILY", AF_INET),
                    ("MPTCP_PM_ADDR_ATTR_ADDR4", topo.server_addr),
                    ("MPTCP_PM_ADDR_ATTR_PORT", topo.server_port),
                ]}, 0x8000),
            ]
            _request(genl, msg, path.name)
    finally:
        genl.close()

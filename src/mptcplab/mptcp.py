"""MPTCP socket options and the kernel structures behind them.

Layouts follow include/uapi/linux/mptcp.h and linux/tcp.h. MPTCP_FULL_INFO
takes user pointers, so it needs getsockopt(2) through ctypes: Python's
socket.getsockopt cannot pass input. Structures are read up to the size the
kernel reports, so older kernels with shorter structures work too.
"""
from __future__ import annotations

import ctypes
import errno
import os
import socket
from dataclasses import dataclass

IPPROTO_MPTCP = 262
SOL_MPTCP = 284
MPTCP_INFO = 1
MPTCP_TCPINFO = 2
MPTCP_SUBFLOW_ADDRS = 3
MPTCP_FULL_INFO = 4
MAX_SUBFLOWS = 16

u8, u16, u32, u64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64


class MptcpInfo(ctypes.Structure):
    _fields_ = [
        ("subflows", u8), ("add_addr_signal", u8), ("add_addr_accepted", u8), ("subflows_max", u8),
        ("add_addr_signal_max", u8), ("add_addr_accepted_max", u8), ("flags", u32), ("token", u32),
        ("write_seq", u64), ("snd_una", u64), ("rcv_nxt", u64),
        ("local_addr_used", u8), ("local_addr_max", u8), ("csum_enabled", u8), ("retransmits", u32),
        ("bytes_retrans", u64), ("bytes_sent", u64), ("bytes_received", u64), ("bytes_acked", u64),
        ("subflows_total", u8), ("endp_laminar_max", u8), ("reserved", u8 * 2),
        ("last_data_sent", u32), ("last_data_recv", u32), ("last_ack_recv", u32),
    ]


class TcpInfo(ctypes.Structure):
    _fields_ = [
        ("state", u8), ("ca_state", u8), ("retransmits", u8), ("probes", u8), ("backoff", u8),
        ("options", u8), ("wscale", u8), ("flags8", u8),
        ("rto", u32), ("ato", u32), ("snd_mss", u32), ("rcv_mss", u32),
        ("unacked", u32), ("sacked", u32), ("lost", u32), ("retrans", u32), ("fackets", u32),
        ("last_data_sent", u32), ("last_ack_sent", u32), ("last_data_recv", u32), ("last_ack_recv", u32),
        ("pmtu", u32), ("rcv_ssthresh", u32), ("rtt", u32), ("rttvar", u32), ("snd_ssthresh", u32),
        ("snd_cwnd", u32), ("advmss", u32), ("reordering", u32), ("rcv_rtt", u32), ("rcv_space", u32),
        ("total_retrans", u32), ("pacing_rate", u64), ("max_pacing_rate", u64), ("bytes_acked", u64),
        ("bytes_received", u64), ("segs_out", u32), ("segs_in", u32), ("notsent_bytes", u32),
        ("min_rtt", u32), ("data_segs_in", u32), ("data_segs_out", u32), ("delivery_rate", u64),
        ("busy_time", u64), ("rwnd_limited", u64), ("sndbuf_limited", u64), ("delivered", u32),
        ("delivered_ce", u32), ("bytes_sent", u64), ("bytes_retrans", u64), ("dsack_dups", u32),
        ("reord_seen", u32), ("rcv_ooopack", u32), ("snd_wnd", u32), ("rcv_wnd", u32), ("rehash", u32),
        ("total_rto", u16), ("total_rto_recoveries", u16), ("total_rto_time", u32),
        ("_spare", u8 * 32),
    ]


class SockaddrStorage(ctypes.Structure):
    _fields_ = [("family", u16), ("data", u8 * 126)]


class SubflowAddrs(ctypes.Structure):
    _fields_ = [("local", SockaddrStorage), ("remote", SockaddrStorage)]


class SubflowInfo(ctypes.Structure):
    _fields_ = [("id", u32), ("_pad", u32), ("addrs", SubflowAddrs)]


class FullInfo(ctypes.Structure):
    _fields_ = [
        ("size_tcpinfo_kernel", u32), ("size_tcpinfo_user", u32), ("size_sfinfo_kernel", u32),
        ("size_sfinfo_user", u32), ("num_subflows", u32), ("size_arrays_user", u32),
        ("subflow_info", u64), ("tcp_info", u64), ("mptcp_info", MptcpInfo),
    ]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.getsockopt.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32)]


def _getsockopt(fd: int, level: int, opt: int, buf: ctypes.Structure | ctypes.Array, size: int | None = None) -> int:
    length = ctypes.c_uint32(size if size is not None else ctypes.sizeof(buf))
    if _libc.getsockopt(fd, level, opt, ctypes.byref(buf), ctypes.byref(length)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return length.value


def _addr(sa: SockaddrStorage) -> tuple[str, int]:
    raw = bytes(sa.data)
    if sa.family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[2:6]), int.from_bytes(raw[0:2], "big")
    if sa.family == socket.AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, raw[6:22]), int.from_bytes(raw[0:2], "big")
    return "", 0


@dataclass(frozen=True)
class SubflowSample:
    id: int
    local: tuple[str, int]
    remote: tuple[str, int]
    bytes_sent: int
    bytes_acked: int
    bytes_received: int
    bytes_retrans: int
    total_retrans: int
    rtt_us: int
    min_rtt_us: int
    snd_cwnd: int
    state: int
    #: segments the receiver has SACKed beyond the cumulative ACK (tcpi_sacked)
    sacked: int = 0
    #: the sender's current MSS in bytes (tcpi_snd_mss)
    snd_mss: int = 0
    #: the subflow's pacing rate in bytes/s (tcpi_pacing_rate; ~0 unsigned when unset)
    pacing_rate: int = 0
    #: cumulative µs the subflow was busy sending / limited by the receive window / by the send buffer
    #: (tcpi_busy_time, tcpi_rwnd_limited, tcpi_sndbuf_limited; 0 on kernels without them)
    busy_time_us: int = 0
    rwnd_limited_us: int = 0
    sndbuf_limited_us: int = 0
    #: segments sent and not yet acknowledged (tcpi_unacked)
    unacked: int = 0
    #: bytes written to the subflow not yet sent (tcpi_notsent_bytes)
    notsent_bytes: int = 0


@dataclass(frozen=True)
class ConnectionSample:
    subflows_total: int  # including the initial one
    mptcp_bytes_sent: int
    mptcp_bytes_acked: int
    mptcp_bytes_received: int
    mptcp_retransmits: int
    mptcp_bytes_retrans: int
    subflows: tuple[SubflowSample, ...]
    #: bytes the application wrote that the connection has not sent yet (MPTCP: write_seq - snd_nxt at the data
    #: level, from mptcpi_write_seq/snd_una/bytes_acked/bytes_sent; kernels before 6.7 lack the byte counters:
    #: write_seq - snd_una, in-flight data included. Plain TCP: tcpi_notsent_bytes); > 0: data was waiting
    queued_bytes: int = 0


def is_mptcp(sock: socket.socket) -> bool:
    """False when the connection fell back to plain TCP (MPTCP_INFO with length 0)."""
    try:
        _getsockopt(sock.fileno(), SOL_MPTCP, MPTCP_INFO, MptcpInfo(), 0)
        return True
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.ENOPROTOOPT):
            return False
        raise


class SubflowData(ctypes.Structure):
    """The header of MPTCP_TCPINFO / MPTCP_SUBFLOW_ADDRS (5.16+), followed by an array."""

    _fields_ = [("size_subflow_data", u32), ("num_subflows", u32), ("size_kernel", u32), ("size_user", u32)]


def _repack(raw: bytes, n: int, stride: int, elem: type[ctypes.Structure]) -> ctypes.Array:
    """Kernel arrays are strided by min(our element size, the kernel's): copy into an array of ours."""
    size = ctypes.sizeof(elem)
    items = (elem * MAX_SUBFLOWS)()
    for i in range(min(n, MAX_SUBFLOWS)):
        ctypes.memmove(ctypes.addressof(items[i]), raw[i * stride:i * stride + min(stride, size)], min(stride, size))
    return items


def _subflow_array(fd: int, opt: int, elem: type[ctypes.Structure]) -> tuple[int, ctypes.Array]:
    size = ctypes.sizeof(elem)
    buf = ctypes.create_string_buffer(ctypes.sizeof(SubflowData) + size * MAX_SUBFLOWS)
    hdr = SubflowData.from_buffer(buf)
    hdr.size_subflow_data = ctypes.sizeof(SubflowData)
    hdr.size_user = size
    _getsockopt(fd, SOL_MPTCP, opt, buf)
    return hdr.num_subflows, _repack(buf.raw[hdr.size_subflow_data:], hdr.num_subflows, hdr.size_user, elem)


def _separate_info(sock: socket.socket) -> tuple[int, ctypes.Array, ctypes.Array, MptcpInfo]:
    """Kernels before 6.5 have no MPTCP_FULL_INFO: the same data from three getsockopts (not atomic)."""
    fd = sock.fileno()
    n_ti, ti = _subflow_array(fd, MPTCP_TCPINFO, TcpInfo)
    n_sf, addrs = _subflow_array(fd, MPTCP_SUBFLOW_ADDRS, SubflowAddrs)
    sf = (SubflowInfo * MAX_SUBFLOWS)()
    for i in range(min(n_sf, MAX_SUBFLOWS)):
        sf[i].id = i + 1
        sf[i].addrs = addrs[i]
    mi = MptcpInfo()
    _getsockopt(fd, SOL_MPTCP, MPTCP_INFO, mi)
    return min(n_ti, n_sf), sf, ti, mi


def full_info(sock: socket.socket) -> ConnectionSample:
    """MPTCP_FULL_INFO: the connection and every subflow's tcp_info and addresses, atomically."""
    try:
        return _full_info(sock)
    except OSError as e:
        if e.errno not in (errno.EOPNOTSUPP, errno.ENOPROTOOPT, errno.EINVAL):
            raise
    return _sample(*_separate_info(sock))


def _full_info(sock: socket.socket) -> ConnectionSample:
    sf = ctypes.create_string_buffer(ctypes.sizeof(SubflowInfo) * MAX_SUBFLOWS)
    ti = ctypes.create_string_buffer(ctypes.sizeof(TcpInfo) * MAX_SUBFLOWS)
    req = FullInfo()
    req.size_tcpinfo_user = ctypes.sizeof(TcpInfo)
    req.size_sfinfo_user = ctypes.sizeof(SubflowInfo)
    req.size_arrays_user = MAX_SUBFLOWS
    req.subflow_info = ctypes.addressof(sf)
    req.tcp_info = ctypes.addressof(ti)
    _getsockopt(sock.fileno(), SOL_MPTCP, MPTCP_FULL_INFO, req)
    # the kernel answers with the sizes it used: older kernels have a shorter tcp_info
    n = req.num_subflows
    return _sample(n, _repack(sf.raw, n, req.size_sfinfo_user, SubflowInfo), _repack(ti.raw, n, req.size_tcpinfo_user, TcpInfo),
                   req.mptcp_info)


def _sample(num_subflows: int, sf: ctypes.Array, ti: ctypes.Array, mi: MptcpInfo) -> ConnectionSample:
    n = min(num_subflows, MAX_SUBFLOWS)
    subflows = tuple(
        SubflowSample(
            id=sf[i].id,
            local=_addr(sf[i].addrs.local),
            remote=_addr(sf[i].addrs.remote),
            bytes_sent=ti[i].bytes_sent,
            bytes_acked=ti[i].bytes_acked,
            bytes_received=ti[i].bytes_received,
            bytes_retrans=ti[i].bytes_retrans,
            total_retrans=ti[i].total_retrans,
            rtt_us=ti[i].rtt,
            min_rtt_us=ti[i].min_rtt,
            snd_cwnd=ti[i].snd_cwnd,
            state=ti[i].state,
            sacked=ti[i].sacked,
            snd_mss=ti[i].snd_mss,
            pacing_rate=ti[i].pacing_rate,
            busy_time_us=ti[i].busy_time,
            rwnd_limited_us=ti[i].rwnd_limited,
            sndbuf_limited_us=ti[i].sndbuf_limited,
            unacked=ti[i].unacked,
            notsent_bytes=ti[i].notsent_bytes,
        )
        for i in range(n)
    )
    return ConnectionSample(
        subflows_total=num_subflows,
        mptcp_bytes_sent=mi.bytes_sent,
        mptcp_bytes_acked=mi.bytes_acked,
        mptcp_bytes_received=mi.bytes_received,
        mptcp_retransmits=mi.retransmits,
        mptcp_bytes_retrans=mi.bytes_retrans,
        subflows=subflows,
        queued_bytes=unsent_bytes(mi),
    )


def unsent_bytes(mi: MptcpInfo) -> int:
    """Data-level bytes written and not yet sent: write_seq - snd_nxt, where snd_nxt = snd_una + (bytes_sent -
    bytes_acked) (mptcpi_bytes_sent counts new data only, reinjections are bytes_retrans)."""
    unacked = max(0, mi.write_seq - mi.snd_una)
    if not mi.bytes_sent:
        return unacked  # a kernel without the byte counters (or nothing sent yet)
    return max(0, unacked - max(0, mi.bytes_sent - mi.bytes_acked))


def tcp_sample(sock: socket.socket, addrs: tuple[tuple[str, int], tuple[str, int]] | None = None) -> ConnectionSample:
    """A plain TCP socket as a ConnectionSample of one subflow (getsockopt TCP_INFO; id 0).

    What the best-path baseline samples: the same fields as an MPTCP subflow, so
    the same summaries apply. `addrs` (local, remote) saves two syscalls per
    sample when the caller already knows them. Raises OSError on a closed socket.
    """
    ti = TcpInfo()
    _getsockopt(sock.fileno(), socket.IPPROTO_TCP, socket.TCP_INFO, ti)
    local, remote = addrs or (sock.getsockname()[:2], sock.getpeername()[:2])
    sf = SubflowSample(
        id=0, local=local, remote=remote, bytes_sent=ti.bytes_sent, bytes_acked=ti.bytes_acked,
        bytes_received=ti.bytes_received, bytes_retrans=ti.bytes_retrans, total_retrans=ti.total_retrans,
        rtt_us=ti.rtt, min_rtt_us=ti.min_rtt, snd_cwnd=ti.snd_cwnd, state=ti.state, sacked=ti.sacked,
        snd_mss=ti.snd_mss, pacing_rate=ti.pacing_rate, busy_time_us=ti.busy_time, rwnd_limited_us=ti.rwnd_limited,
        sndbuf_limited_us=ti.sndbuf_limited, unacked=ti.unacked, notsent_bytes=ti.notsent_bytes,
    )
    return ConnectionSample(subflows_total=1, mptcp_bytes_sent=ti.bytes_sent, mptcp_bytes_acked=ti.bytes_acked,
                            mptcp_bytes_received=ti.bytes_received, mptcp_retransmits=0, mptcp_bytes_retrans=0,
                            subflows=(sf,), queued_bytes=ti.notsent_bytes)


def connection_sample(sock: socket.socket) -> ConnectionSample:
    """MPTCP_FULL_INFO for an IPPROTO_MPTCP socket, TCP_INFO (one subflow) for a plain TCP one."""
    if sock.proto == IPPROTO_MPTCP:
        return full_info(sock)
    return tcp_sample(sock)

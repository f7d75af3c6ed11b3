"""Both ends of one MPTCP connection write at once right after it is set up, as mptcp_connect does without its
-j sleep (the kernel selftest simult_flows.sh moves 16 MiB one way and 80 KiB the other).

Usage: both_ends.py server|client HOST PORT BYTES_TO_SEND BYTES_TO_RECEIVE; exit 0 when all expected bytes came.
"""
import socket, sys, threading
IPPROTO_MPTCP = 262
role, host, port, size, peer_size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
if role == "server":
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", port)); ls.listen(1)
    s, _ = ls.accept()
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
    s.connect((host, port))
got = [0]
def reader():
    while got[0] < peer_size:
        b = s.recv(1 << 16)
        if not b: break
        got[0] += len(b)
t = threading.Thread(target=reader); t.start()
buf = b"\0" * (1 << 16); left = size
while left > 0:
    left -= s.send(buf[: min(left, len(buf))])
s.shutdown(socket.SHUT_WR)
t.join()
s.close()
sys.exit(0 if got[0] == peer_size else 1)

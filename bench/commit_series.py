"""The synthetic commit series `mptcplab bisect --tree` is proved on: Debian's 6.12.117 source as a git repository
with 16 commits on top, one of which (the 11th) makes the default scheduler prefer the subflow with the larger RTT.

The repository is made once in ``<cache>/series/linux-6.12.117-series`` (a hardlinked copy of the cache's
unpacked Debian source, so it costs inodes, not 1.5 GB; every file a commit changes is unlinked before it is
written, so the shared source is never modified) and reused while its ``series.json`` says it is complete.

Commit 0 ("import Debian linux-source-6.12 6.12.117") is tagged ``series-good``, commit 16 ``series-bad``;
the bad commit is tagged ``series-culprit``. The harmless commits touch comments, documentation and selftests
(some in net/mptcp, so a probe's build recompiles something, as real bisects do).

The bad change: in ``mptcp_subflow_get_send`` every active subflow's "linger time" (queued bytes over pacing
rate; the scheduler picks the smallest) is replaced by ``U64_MAX - srtt``, so the subflow with the largest
smoothed RTT always wins and the fast path is left idle while the slow one has send space: on rtt-ratio-5
(5 ms vs 25 ms one-way, 20 mbit each) goodput falls from near 40 towards 20 mbit/s.

Usage: python bench/commit_series.py [--dest DIR] [--source DIR]   (prints the series as JSON)
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

CACHE = Path(os.environ.get("MPTCPLAB_CACHE", "/var/cache/mptcplab"))
SOURCE = CACHE / "sources" / "6.12.117" / "tree"
DEST = CACHE / "series" / "linux-6.12.117-series"
CULPRIT_INDEX = 11

_NOTE = "mptcplab synthetic series, commit {n}: no functional change"

#: (subject, path, how) for commits 1..16; how: "c" appends a C comment, "doc" a text line, "sh" a shell comment,
#: "bad" the scheduler change
SERIES: list[tuple[str, str, str]] = [
    ("Documentation: mptcp: mention the synthetic series", "Documentation/networking/mptcp.rst", "doc"),
    ("mptcp: protocol: comment on the send path", "net/mptcp/protocol.c", "c"),
    ("selftests: mptcp: join: a comment", "tools/testing/selftests/net/mptcp/mptcp_join.sh", "sh"),
    ("mptcp: pm: comment", "net/mptcp/pm.c", "c"),
    ("Documentation: mptcp-sysctl: a line", "Documentation/networking/mptcp-sysctl.rst", "doc"),
    ("selftests: mptcp: simult_flows: a comment", "tools/testing/selftests/net/mptcp/simult_flows.sh", "sh"),
    ("mptcp: subflow: comment", "net/mptcp/subflow.c", "c"),
    ("selftests: mptcp: connect: a comment", "tools/testing/selftests/net/mptcp/mptcp_connect.c", "c"),
    ("mptcp: options: comment", "net/mptcp/options.c", "c"),
    ("Documentation: mptcp: another line", "Documentation/networking/mptcp.rst", "doc"),
    ("mptcp: sched: prefer the subflow with the larger RTT", "net/mptcp/protocol.c", "bad"),
    ("Documentation: mptcp-sysctl: another line", "Documentation/networking/mptcp-sysctl.rst", "doc"),
    ("mptcp: sched: comment", "net/mptcp/sched.c", "c"),
    ("selftests: mptcp: diag: a comment", "tools/testing/selftests/net/mptcp/diag.sh", "sh"),
    ("mptcp: protocol.h: comment", "net/mptcp/protocol.h", "c"),
    ("Documentation: mptcp: a last line", "Documentation/networking/mptcp.rst", "doc"),
]

_BAD_FROM = "\t\tlinger_time = div_u64((u64)READ_ONCE(ssk->sk_wmem_queued) << 32, pace);\n"
_BAD_TO = ("\t\t/* prefer the subflow with the larger RTT */\n"
           "\t\tlinger_time = U64_MAX - READ_ONCE(tcp_sk(ssk)->srtt_us);\n")


def _git(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise SystemExit(f"error: git {' '.join(args[:2])} in {repo}: {proc.stderr.strip()[-300:]}")
    return proc.stdout.strip()


def _rewrite(path: Path, text: str) -> None:
    """Write `text` to `path` as a new file (the old one may be a hardlink into the shared source)."""
    path.unlink()
    path.write_text(text)


def _edit(repo: Path, n: int, rel: str, how: str) -> None:
    path = repo / rel
    text = path.read_text()
    if how == "bad":
        if _BAD_FROM not in text:
            raise SystemExit(f"error: {rel}: the scheduler's linger-time line is not there — is this 6.12.117?")
        text = text.replace(_BAD_FROM, _BAD_TO, 1)
    elif how == "c":
        text += f"/* {_NOTE.format(n=n)} */\n"
    elif how == "sh":
        text += f"# {_NOTE.format(n=n)}\n"
    else:
        text += f"\n.. {_NOTE.format(n=n)}\n"
    _rewrite(path, text)


_ENV = {"GIT_AUTHOR_NAME": "mptcplab", "GIT_AUTHOR_EMAIL": "mptcplab@localhost", "GIT_COMMITTER_NAME": "mptcplab",
        "GIT_COMMITTER_EMAIL": "mptcplab@localhost"}


def make_series(dest: Path = DEST, source: Path = SOURCE, say=lambda s: print(s, file=sys.stderr)) -> dict:
    """Make (or reuse) the series repository; returns series.json's content: the repository, the commits oldest
    first (index, hash, subject), the good/bad/culprit hashes and the seconds the setup took (0 when reused)."""
    meta = dest / ".git" / "series.json"
    if meta.is_file():
        return json.loads(meta.read_text())
    if not (source / "Makefile").is_file():
        raise SystemExit(f"error: {source}: no unpacked kernel source — run: mptcplab kernel build 6.12.117 --flavour uml")
    t0 = time.monotonic()
    partial = dest.parent / f".partial-{dest.name}"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(dest, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    say(f"series: hardlinking {source} into {partial}")
    subprocess.run(["cp", "-al", str(source), str(partial)], check=True)
    for marker in sorted(partial.glob(".mptcplab-patched-*")):  # the lab patched its copy: undo it in ours
        for line in marker.read_text().splitlines():
            if line.startswith("+++ "):
                f = partial / line[4:].split("\t")[0].split("/", 1)[1]
                _rewrite(f, f.read_text())  # break the hardlink before patch touches it
        subprocess.run(["patch", "-p1", "-R", "--batch", "--no-backup-if-mismatch", "-s", "-i", str(marker)],
                       cwd=partial, check=True)
        marker.unlink()
    for extra in partial.glob(".mptcplab-*"):
        extra.unlink()
    gitignore = partial / ".gitignore"  # Debian's copy ignores everything at the top ("/*"): not in a tree of ours
    text = gitignore.read_text()
    cut = text.find("#\n# Debian packaging")
    if cut >= 0:
        _rewrite(gitignore, text[:cut])
    say("series: git init + add (1.5 GB, a few minutes)")
    _git(partial, "init", "-q", "-b", "main")
    _git(partial, "config", "core.compression", "1")
    _git(partial, "config", "gc.auto", "0")
    _git(partial, "add", "-A")
    _git(partial, "commit", "-q", "-m", "import Debian linux-source-6.12 6.12.117", env=_ENV)
    commits = [{"index": 0, "hash": _git(partial, "rev-parse", "HEAD"), "subject": "import Debian linux-source-6.12 6.12.117"}]
    for n, (subject, rel, how) in enumerate(SERIES, 1):
        _edit(partial, n, rel, how)
        _git(partial, "commit", "-q", "-a", "-m", subject, env=_ENV)
        commits.append({"index": n, "hash": _git(partial, "rev-parse", "HEAD"), "subject": subject})
    _git(partial, "tag", "series-good", commits[0]["hash"])
    _git(partial, "tag", "series-bad", commits[-1]["hash"])
    _git(partial, "tag", "series-culprit", commits[CULPRIT_INDEX]["hash"])
    info = {"repository": str(dest), "commits": commits, "good": commits[0]["hash"], "bad": commits[-1]["hash"],
            "culprit": commits[CULPRIT_INDEX]["hash"], "culprit_subject": commits[CULPRIT_INDEX]["subject"],
            "setup_s": round(time.monotonic() - t0, 1)}
    (partial / ".git" / "series.json").write_text(json.dumps(info, indent=2) + "\n")
    partial.rename(dest)
    say(f"series: {len(commits)} commits in {dest} ({info['setup_s']:.0f} s)")
    return info


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dest", type=Path, default=DEST)
    ap.add_argument("--source", type=Path, default=SOURCE)
    a = ap.parse_args()
    print(json.dumps(make_series(a.dest, a.source), indent=2))

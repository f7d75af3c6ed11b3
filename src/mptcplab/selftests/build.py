"""The kernel's MPTCP selftests, ready to run: extracted from a source tree and compiled, once per release.

A release's selftests come from its Debian ``linux-source`` package
(kernels/source.py fetches and unpacks it); only what they need is unpacked:
``tools/testing/selftests/net/mptcp/`` with ``../lib.sh`` and
``../net_helper.sh``, and the parts of the tree ``make headers`` reads to
generate the uapi headers (no rsync needed, unlike ``headers_install``).
``mptcp_connect`` and ``pm_nl_ctl`` are compiled with gcc against those headers,
as the selftests' Makefile does (``-Wall -Wl,--no-as-needed -O2 -g -I<headers> -I<tree>/tools/include``; 7.x
sources include tools/include's linux/compiler.h).
The cache layout, under the kernel cache root::

    selftests/<upstream>/build.json            where it came from, gcc, when
    selftests/<upstream>/net/lib.sh, net_helper.sh
    selftests/<upstream>/net/mptcp/            simult_flows.sh, mptcp_lib.sh, ... and the compiled programs
    selftests/tree-<hash>/...                  the same for a user's tree (--tree DIR), rebuilt when it changed

Guests read it from the host's filesystem (read-only), so the scripts run from
there with a writable /tmp.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..kernels.catalog import KernelError, cache_root
from ..kernels.fetch import Waits, file_lock

#: the selftests' directory in a kernel tree, and the programs of it the lab compiles
MPTCP_DIR = "tools/testing/selftests/net/mptcp"
NET_DIR = "tools/testing/selftests/net"
PROGRAMS = ("mptcp_connect", "pm_nl_ctl")
#: what `make headers` reads in an x86 tree (6.1-6.12: arch/x86/tools builds relocs, which wants tools/include)
HEADER_MEMBERS = ["Makefile", "Kbuild", "scripts", "include/uapi", "arch/x86/include/uapi", "arch/x86/entry/syscalls",
                  "arch/x86/Makefile", "arch/x86/Makefile_32.cpu", "arch/x86/tools", "tools/include"]
SELFTEST_MEMBERS = [MPTCP_DIR, f"{NET_DIR}/lib.sh"]
#: helpers the scripts source in some releases only: net_helper.sh (6.x), lib/sh/defer.sh (lib.sh of 6.13+)
OPTIONAL_MEMBERS = [f"{NET_DIR}/net_helper.sh", f"{NET_DIR}/lib/sh"]
CFLAGS = ["-Wall", "-Wl,--no-as-needed", "-O2", "-g"]
#: what a cached build holds; a build of another layout is made again (2: net/lib/sh, -I tools/include)
LAYOUT = 2


@dataclass(frozen=True)
class SelftestBuild:
    """A compiled copy of one kernel's MPTCP selftests."""

    #: the directory holding simult_flows.sh, mptcp_lib.sh and the compiled programs (run the scripts from it)
    dir: Path
    #: the kernel version the tree states (6.12.117); "" when its Makefile says none
    version: str
    #: where the sources came from: "linux-source-6.12 6.12.117-1" or "tree /path/to/linux"
    source: str

    def script(self, name: str) -> Path:
        """The path of one of its scripts (``simult_flows.sh``); UsageError when this kernel has no such selftest."""
        path = self.dir / name
        if not path.is_file():
            have = sorted(p.name for p in self.dir.glob("*.sh") if p.name != "mptcp_lib.sh")
            raise UsageError(f"kernel {self.version or self.source} has no MPTCP selftest {name}",
                             f"it has: {', '.join(have) or 'none'}")
        return path


def selftests_dir() -> Path:
    return cache_root() / "selftests"


def _read(entry: Path) -> dict | None:
    """The build.json of a complete build in `entry`, None when there is none (or a program is missing)."""
    try:
        doc = json.loads((entry / "build.json").read_text())
    except (OSError, ValueError):
        return None
    if not all((entry / "net" / "mptcp" / p).is_file() for p in PROGRAMS) or doc.get("layout") != LAYOUT:
        return None
    return doc


def _fingerprint(tree: Path) -> str:
    """What a tree's selftests and uapi headers are, for rebuilding a user's tree when they changed: path, size
    and mtime of every file of the selftest directory and of include/uapi/linux/mptcp*.h."""
    h = hashlib.sha256()
    files = sorted([*(tree / MPTCP_DIR).glob("*"), *(tree / "include/uapi/linux").glob("mptcp*.h"),
                    tree / NET_DIR / "lib.sh", tree / NET_DIR / "net_helper.sh"])
    for f in files:
        try:
            st = f.stat()
        except OSError:
            continue
        h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _run(argv: list[str], what: str, hint: str, cwd: Path | None = None) -> None:
    try:
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise KernelError(f"{what}: {argv[0]} is not installed", f"install {argv[0]} (make install does)") from None
    if proc.returncode != 0:
        last = [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
        raise KernelError(f"{what} failed: {last[-1].strip() if last else f'exit {proc.returncode}'}", hint)


def _headers(tree: Path, work: Path, waits: Waits) -> Path:
    """The uapi headers of `tree`: its own usr/include when it has one (a built tree), else `make headers`
    into `work` (out of tree: nothing is written into `tree`)."""
    if (tree / "usr/include/linux/mptcp.h").is_file():
        return tree / "usr/include"
    obj = work / "obj"
    obj.mkdir(parents=True, exist_ok=True)
    with waits.waiting("generating the uapi headers (make headers)"):
        _run(["make", "-s", "-C", str(tree), f"O={obj}", "headers"], f"make headers in {tree}",
             "the tree must hold what make headers reads (Makefile, scripts, include/uapi, arch/x86)")
    return obj / "usr/include"


def compile_tree(tree: Path, out: Path, source: str, waits: Waits | None = None, version: str = "") -> SelftestBuild:
    """Copy `tree`'s MPTCP selftests into `out` and compile their programs there against the tree's headers.

    `out` is replaced as a whole, and only once the build is complete (a staging directory renamed into
    place). Raises UsageError (exit 2) when `tree` has no MPTCP selftests, KernelError (exit 3) when gcc or
    make are missing or fail.
    """
    from ..kernels.source import tree_version

    waits = waits or Waits()
    tree = tree.resolve()
    if not (tree / MPTCP_DIR / "mptcp_connect.c").is_file():
        raise UsageError(f"{tree} holds no {MPTCP_DIR}/mptcp_connect.c", "give the root of a Linux source tree (5.6 or later)")
    staging = out.parent / f".staging-{out.name}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        net = staging / "net"
        shutil.copytree(tree / MPTCP_DIR, net / "mptcp", symlinks=True)
        for helper in ("lib.sh", "net_helper.sh"):
            if (tree / NET_DIR / helper).is_file():
                shutil.copy2(tree / NET_DIR / helper, net / helper)
        if (tree / NET_DIR / "lib/sh").is_dir():
            shutil.copytree(tree / NET_DIR / "lib/sh", net / "lib/sh", symlinks=True)
        headers = _headers(tree, staging, waits)
        gcc = subprocess.run(["gcc", "--version"], capture_output=True, text=True).stdout.splitlines()[:1] \
            if shutil.which("gcc") else []
        with waits.waiting(f"compiling {', '.join(PROGRAMS)}"):
            for prog in PROGRAMS:
                _run(["gcc", *CFLAGS, f"-I{headers}", f"-I{tree / 'tools/include'}", "-o", prog, f"{prog}.c"], f"compiling {prog}.c of {tree}",
                     "install gcc and the C library headers (libc6-dev)", cwd=net / "mptcp")
        shutil.rmtree(staging / "obj", ignore_errors=True)
        doc = {"layout": LAYOUT, "version": version or tree_version(tree), "source": source, "tree": str(tree), "programs": list(PROGRAMS),
               "cflags": CFLAGS, "gcc": gcc[0] if gcc else "", "headers": "tree usr/include" if headers.parent.parent == tree
               else "make headers", "fingerprint": _fingerprint(tree), "built_at": time.time()}
        (staging / "build.json").write_text(json.dumps(doc, indent=2) + "\n")
        shutil.rmtree(out, ignore_errors=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return SelftestBuild(dir=out / "net" / "mptcp", version=doc["version"], source=source)


def build_for_release(version: str, waits: Waits | None = None) -> SelftestBuild:
    """The compiled selftests of kernel release `version` (a Debian package version such as ``6.12.117-1`` or an
    upstream one), built once from its ``linux-source`` package and cached.

    Unpacks only the selftests and what ``make headers`` reads; a tree whose headers need more is unpacked
    whole. Raises what kernels.source.fetch_source/extract raise (UnknownSource, exit 2; KernelError, exit 3)
    and KernelError when the build fails.
    """
    from ..kernels.source import extract, fetch_source

    waits = waits or Waits()
    tarball = fetch_source(version, waits)
    meta = json.loads((tarball.parent / "source.json").read_text())
    upstream = meta.get("upstream") or tarball.parent.name
    entry = selftests_dir() / upstream
    source = f"{meta.get('package', tarball.name)} {meta.get('version', '')}".strip()
    doc = _read(entry)
    if doc is not None and doc.get("source") == source:
        return SelftestBuild(dir=entry / "net" / "mptcp", version=doc.get("version", upstream), source=source)
    with file_lock(selftests_dir() / f".{upstream}.lock", waits, f"building the selftests of {upstream}"):
        doc = _read(entry)
        if doc is not None and doc.get("source") == source:
            return SelftestBuild(dir=entry / "net" / "mptcp", version=doc.get("version", upstream), source=source)
        try:
            tree = extract(tarball, members=SELFTEST_MEMBERS + HEADER_MEMBERS, progress=waits)
            for optional in (OPTIONAL_MEMBERS, *([m] for m in OPTIONAL_MEMBERS)):  # together, else one by one
                try:
                    extract(tarball, members=optional, progress=waits)
                    break
                except UsageError:  # not in this release
                    continue
            return compile_tree(tree, entry, source, waits, version=upstream)
        except (UsageError, KernelError) as e:  # a member this release lacks, or headers that need more of the tree
            waits.say(f"unpacking the whole tree of {upstream} ({e.message})")
            tree = extract(tarball, members=[""], progress=waits)
            return compile_tree(tree, entry, source, waits, version=upstream)


def build_for_tree(tree: Path, waits: Waits | None = None) -> SelftestBuild:
    """The compiled selftests of a user's own kernel tree (``--tree DIR``), cached by its path and rebuilt when
    its selftests or MPTCP uapi headers changed. Uses the tree's usr/include when it was built, else runs
    ``make headers`` out of tree. Raises UsageError (exit 2) for a directory that is no kernel tree."""
    tree = Path(tree).expanduser()
    if not tree.is_dir():
        raise UsageError(f"--tree {tree}: no such directory", "give the root of the Linux source tree the kernel was built from")
    tree = tree.resolve()
    entry = selftests_dir() / f"tree-{hashlib.sha256(str(tree).encode()).hexdigest()[:12]}"
    waits = waits or Waits()
    with file_lock(selftests_dir() / f".{entry.name}.lock", waits, f"building the selftests of {tree}"):
        doc = _read(entry)
        if doc is not None and doc.get("fingerprint") == _fingerprint(tree):
            return SelftestBuild(dir=entry / "net" / "mptcp", version=doc.get("version", ""), source=f"tree {tree}")
        return compile_tree(tree, entry, f"tree {tree}", waits)


def build_for_kernel(name: str | None = None, tree: Path | None = None, waits: Waits | None = None) -> SelftestBuild:
    """The compiled selftests for kernel `name` (a cached kernel, else a release the archive's linux-source
    packages offer: ``6.12.117``, ``6.12``) or for a user's `tree`; `tree` wins when both are given.

    A kernel added with `kernel add` has no Debian source: UsageError (exit 2) asking for its tree.
    """
    if tree is not None:
        return build_for_tree(tree, waits)
    if not name:
        raise UsageError("say which kernel's selftests: --kernel K or --tree DIR", "e.g. --kernel 6.12.117")
    from ..kernels.catalog import cached, resolve

    version = name
    if cached():
        try:
            kernel = resolve(name)
        except UsageError:
            kernel = None
        if kernel is not None:
            if kernel.version == "custom":
                raise UsageError(f"kernel {kernel.release} was added from your own build: the lab has no source package "
                                 "for it", "give the tree it was built from: --tree DIR")
            built = _built_from(kernel)
            if isinstance(built, Path):
                return build_for_tree(built, waits)
            version = built or kernel.version
    return build_for_release(version, waits)


def _built_from(kernel: object) -> str | Path | None:
    """Where a kernel of `kernel build` (a UML or QEMU flavour) came from, as its build.json names it: the Debian
    package version of its linux-source release ("6.12.117-1"), the directory of a user's tree, or None for a
    kernel that is no build. A commit of a git tree (built in the lab's worktree, which moves on to other commits)
    or a tarball: UsageError (exit 2) asking for the tree."""
    path = getattr(kernel, "build", None)
    if not path:
        return None
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if (doc.get("debian") or {}).get("version"):
        return str(doc["debian"]["version"])
    if doc.get("directory"):
        return Path(doc["directory"])
    raise UsageError(f"kernel {getattr(kernel, 'release', '')} was built from {doc.get('source') or 'a tree'}: say which tree's "
                     "selftests to use", "give the kernel tree at that commit: --tree DIR")

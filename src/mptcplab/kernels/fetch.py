"""Debian kernels from the archive this machine already uses, through a private apt.

The host's apt configuration is read (for its mirror) and never changed: the
lab writes its own sources list naming the suites that carry kernels
(bookworm, bookworm-backports, trixie, sid, experimental), keeps its own
lists and package cache under the lab's cache directory, and runs
``apt-get download`` + ``dpkg-deb -x``: nothing is installed on the host.
"""
from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .catalog import Kernel, KernelError, UnknownKernel, cache_root, kernels_dir, matches, resolve, version_key

SUITES = ("bookworm", "bookworm-backports", "trixie", "sid", "experimental")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
FLAVOUR = "cloud-amd64"  # small, virtio built in or as modules: made for VMs
LISTS_MAX_AGE_S = 24 * 3600
IMAGE_RE = re.compile(rf"^linux-image-([0-9].*-{FLAVOUR})$")  # POSIX ERE too: apt-cache search uses it


@dataclass(frozen=True)
class Candidate:
    """A kernel the archive offers: one linux-image package."""

    package: str
    version: str  # Debian package version
    suite: str
    depends: tuple[str, ...] = ()

    @property
    def release(self) -> str:
        m = IMAGE_RE.match(self.package)
        assert m
        return m.group(1)

    @property
    def upstream(self) -> str:
        return self.version.split("-")[0]


def host_mirror() -> str:
    """The Debian archive URL the host's apt uses (one-line or deb822 sources)."""
    files = [Path("/etc/apt/sources.list")] + sorted(Path("/etc/apt/sources.list.d").glob("*.list")) \
        + sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    for f in files:
        try:
            text = f.read_text()
        except OSError:
            continue
        for url in re.findall(r"(?:^deb(?:\s+\[[^\]]*\])?\s+|^URIs:\s*)(\S+)", text, re.M):
            if url.rstrip("/").endswith("/debian"):
                return url.rstrip("/")
    return DEFAULT_MIRROR


class PrivateApt:
    """apt-get / apt-cache with every state and config path pointing into `root`."""

    def __init__(self, root: Path | None = None, mirror: str | None = None) -> None:
        self.root = root or cache_root() / "apt"
        self.mirror = mirror or host_mirror()

    def _prepare(self) -> None:
        for d in ("lists/partial", "cache/archives/partial", "parts"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        (self.root / "status").touch()
        signed = f" signed-by={KEYRING}" if Path(KEYRING).exists() else ""
        lines = [f"deb [arch=amd64{signed}] {self.mirror} {suite} main" for suite in SUITES]
        (self.root / "sources.list").write_text("\n".join(lines) + "\n")

    def options(self) -> list[str]:
        r = self.root
        opts = {
            "Dir::Etc::SourceList": r / "sources.list", "Dir::Etc::SourceParts": r / "parts",
            "Dir::Etc::Preferences": r / "parts/none", "Dir::Etc::PreferencesParts": r / "parts",
            "Dir::State::Lists": r / "lists", "Dir::Cache": r / "cache", "Dir::State::status": r / "status",
            "APT::Architecture": "amd64", "Acquire::Languages": "none", "APT::Sandbox::User": "root",
        }
        return [x for k, v in opts.items() for x in ("-o", f"{k}={v}")]

    def _run(self, tool: str, *args: str, cwd: Path | None = None) -> str:
        if shutil.which(tool) is None:
            raise KernelError(f"{tool} is not installed: fetching Debian kernels needs apt", "use mptcplab kernel add PATH instead")
        proc = subprocess.run([tool, *self.options(), *args], capture_output=True, text=True, cwd=cwd)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise KernelError(f"{tool} {args[0]} failed: {last}", f"check that {self.mirror} is reachable")
        return proc.stdout

    def lists_age(self) -> float:
        stamps = list((self.root / "lists").glob("*_Packages*"))
        return time.time() - min(p.stat().st_mtime for p in stamps) if stamps else float("inf")

    def update(self, force: bool = False) -> None:
        self._prepare()
        if force or self.lists_age() > LISTS_MAX_AGE_S:
            self._run("apt-get", "-q", "update")

    def candidates(self) -> list[Candidate]:
        """Every cloud kernel image in the private lists, oldest first."""
        names = [line.split(" ", 1)[0] for line in self._run("apt-cache", "search", "--names-only", IMAGE_RE.pattern).splitlines()]
        names = [n for n in names if IMAGE_RE.match(n)]
        if not names:
            return []
        suites: dict[tuple[str, str], str] = {}
        for line in self._run("apt-cache", "madison", *names).splitlines():
            parts = [p.strip() for p in line.split("|")]
            if len(parts) == 3:
                suites[(parts[0], parts[1])] = parts[2].split()[1].split("/")[0]
        out = []
        for stanza in self._run("apt-cache", "show", "--no-all-versions", *names).split("\n\n"):
            fields = dict(re.findall(r"^([\w-]+): (.*)$", stanza, re.M))
            if "Package" not in fields:
                continue
            deps = tuple(d.split()[0] for d in fields.get("Depends", "").split(",") if d.strip().startswith("linux-"))
            out.append(Candidate(fields["Package"], fields["Version"], suites.get((fields["Package"], fields["Version"]), "?"), deps))
        return sorted(out, key=lambda c: version_key(c.upstream))

    def download(self, packages: list[str], dest: Path) -> list[Path]:
        self._run("apt-get", "-q", "download", *packages, cwd=dest)
        return sorted(dest.glob("*.deb"))


def choose(query: str, candidates: list[Candidate]) -> Candidate:
    """The candidate named by `query`: a release, a package or package version, a suite, or an upstream prefix."""
    for c in candidates:
        if query in (c.release, c.package, c.version):
            return c
    in_suite = [c for c in candidates if c.suite == query]
    hits = in_suite or [c for c in candidates if matches(query, c.upstream)]
    if hits:
        return hits[-1]
    offered = ", ".join(dict.fromkeys(c.upstream for c in candidates)) or "none (are the lists empty?)"
    raise UnknownKernel(f"no Debian kernel matches {query!r}; the archive offers: {offered}",
                        f"give a version prefix (6.1, 6.12.95), a suite ({', '.join(SUITES)}) or a release")


@contextmanager
def _cache_lock() -> Iterator[None]:
    kernels_dir().mkdir(parents=True, exist_ok=True)
    fd = os.open(kernels_dir() / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def fetch(query: str, apt: PrivateApt | None = None, refresh: bool = False) -> tuple[Kernel, bool]:
    """Download and unpack the kernel `query` names; (kernel, True) when it was already cached.

    A query that a cached kernel already answers is served from the cache
    without asking the archive (CI reruns stay offline); `refresh` asks anyway.
    """
    if not refresh:
        try:
            return resolve(query), True
        except UnknownKernel:
            pass
    apt = apt or PrivateApt()
    with _cache_lock():
        apt.update()
        try:
            cand = choose(query, apt.candidates())
        except UnknownKernel:
            apt.update(force=True)  # the archive moves: a new point release may have appeared
            cand = choose(query, apt.candidates())
        meta = kernels_dir() / cand.release / "kernel.json"
        if meta.exists():
            return Kernel.model_validate_json(meta.read_text()), True
        return _unpack(cand, apt), False


def _unpack(cand: Candidate, apt: PrivateApt) -> Kernel:
    """Download the image (and, from 7.2 on, its binary/modules/base packages) into a staging dir."""
    staging = kernels_dir() / f".staging-{cand.release}-{os.getpid()}"
    final = kernels_dir() / cand.release
    shutil.rmtree(staging, ignore_errors=True)
    try:
        debs = staging / "debs"
        debs.mkdir(parents=True)
        # the split layout: linux-image-V depends on linux-binary-V, linux-modules-V, linux-base-V
        split = [d for d in cand.depends if re.match(rf"^linux-(binary|modules|base)-.*{FLAVOUR}$", d)]
        for deb in apt.download([cand.package, *split], debs):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(staging / "root")], check=True, capture_output=True)
        kernel = _arrange(staging, cand)
        shutil.rmtree(debs)
        shutil.rmtree(staging / "root")
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
        kernel.save()
        return kernel
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _arrange(staging: Path, cand: Candidate) -> Kernel:
    """Move image, config and modules into the cache layout and index the modules with depmod."""
    root = staging / "root"
    release = cand.release
    layouts = (f"boot/vmlinuz-{release}", f"usr/lib/modules/{release}/vmlinuz")  # up to 6.12, from 7.2
    image = next((root / p for p in layouts if (root / p).is_file()), None)
    if image is None:
        raise KernelError(f"{cand.package} {cand.version} holds no boot/vmlinuz-{release}", "the package layout changed; report it")
    final = kernels_dir() / release
    image.rename(staging / "vmlinuz")
    config = next((root / p for p in (f"boot/config-{release}", f"usr/lib/modules/{release}/config") if (root / p).is_file()), None)
    if config:
        config.rename(staging / "config")
    mods = next((p for p in (root / "lib/modules" / release, root / "usr/lib/modules" / release) if p.is_dir()), None)
    modules = None
    if mods is not None:
        (staging / "lib/modules").mkdir(parents=True)
        mods.rename(staging / "lib/modules" / release)
        index_modules(staging, release)
        modules = str(final / "lib/modules" / release)
    return Kernel(release=release, version=cand.version, origin=f"debian {cand.suite} {cand.package}",
                  image=str(final / "vmlinuz"), modules=modules, config=str(final / "config") if config else None)


def index_modules(base: Path, release: str) -> None:
    """depmod: Debian packages ship no modules.dep (it is made at install time)."""
    proc = subprocess.run(["depmod", "-b", str(base), release], capture_output=True, text=True)
    if proc.returncode != 0:
        raise KernelError(f"depmod failed for {release}: {proc.stderr.strip()[-200:]}", "install kmod")

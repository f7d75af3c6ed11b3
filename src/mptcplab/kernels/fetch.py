"""Debian kernels from the archive this machine already uses, through a private apt.

The host's apt configuration is read (for its mirror) and never changed: the
lab writes its own sources list naming the suites that carry kernels
(bookworm, bookworm-backports, trixie, trixie-backports, sid, experimental),
keeps its own lists and package cache under the lab's cache directory, and
runs ``apt-get download`` + ``dpkg-deb -x``: nothing is installed on the host.

Every wait longer than about a second (apt update, reading the lists, a
download, unpacking, depmod, another process holding the cache) is announced
through a :class:`Waits`; the CLI's prints on stderr.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from ..waits import ConsoleWaits, Waits  # noqa: F401  (re-exported: they were defined here)
from .catalog import (FLAVOUR, IMAGE_RE, Candidate, Kernel, KernelError, Resolution, SourceRelease, UnknownKernel,
                      cache_root, cached, kernels_dir, matches, parse_packages, parse_sources, resolve, resolve_name)

__all__ = ["SUITES", "Candidate", "PrivateApt", "Waits", "ConsoleWaits", "choose", "fetch", "lookup", "read_catalog", "kernel_stanzas",
           "source_stanzas",
           "matches", "resolve", "IMAGE_RE", "FLAVOUR"]

SUITES = ("bookworm", "bookworm-backports", "trixie", "trixie-backports", "sid", "experimental")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
LISTS_MAX_AGE_S = 24 * 3600
#: a name the lists do not know triggers a fresh `apt update` only when the lists are older than this
RETRY_UPDATE_AFTER_S = 600
APT_HELPER = "/usr/lib/apt/apt-helper"
_KERNEL_STANZA = re.compile(rb"Package: linux-(?:image|binary|modules|base)-[0-9][^\n]*-" + FLAVOUR.encode()
                            + rb"\n.*?(?=\n\n|\Z)", re.S)
_SOURCE_STANZA = re.compile(rb"Package: linux-source-[0-9]+\.[0-9]+\n.*?(?=\n\n|\Z)", re.S)


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


def kernel_stanzas(raw: bytes, stanza: re.Pattern[bytes] = _KERNEL_STANZA) -> str:
    """Only the cloud kernel packages' stanzas of a ``Packages`` index (what the catalog reads).

    `stanza` picks other ``linux-`` packages instead (:func:`source_stanzas`).
    """
    out, pos = [], 0
    while (pos := raw.find(b"Package: linux-", pos)) >= 0:  # a plain search first: 60 MB in well under a second
        m = stanza.match(raw, pos) if pos == 0 or raw[pos - 1] == 10 else None
        if m:
            out.append(m.group(0).decode("utf-8", "replace"))
        pos += 15
    return "\n\n".join(out) + "\n"


def source_stanzas(raw: bytes) -> str:
    """Only the ``linux-source-X.Y`` stanzas of a ``Packages`` index (what :func:`~.catalog.parse_sources` reads)."""
    return kernel_stanzas(raw, _SOURCE_STANZA)


class PrivateApt:
    """apt-get / apt-cache with every state and config path pointing into `root`."""

    def __init__(self, root: Path | None = None, mirror: str | None = None, waits: Waits | None = None) -> None:
        self.root = root or cache_root() / "apt"
        self.mirror = mirror or host_mirror()
        self.waits = waits or Waits()

    def _prepare(self) -> None:
        for d in ("lists/partial", "cache/archives/partial", "parts"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        (self.root / "status").touch()
        signed = f" signed-by={KEYRING}" if Path(KEYRING).exists() else ""
        lines = [f"deb [arch=amd64{signed}] {self.mirror} {suite} main" for suite in SUITES]
        text = "\n".join(lines) + "\n"
        sources = self.root / "sources.list"
        if not sources.exists() or sources.read_text() != text:
            sources.write_text(text)

    def options(self) -> list[str]:
        r = self.root
        opts = {
            "Dir::Etc::SourceList": r / "sources.list", "Dir::Etc::SourceParts": r / "parts",
            "Dir::Etc::Preferences": r / "parts/none", "Dir::Etc::PreferencesParts": r / "parts",
            "Dir::State::Lists": r / "lists", "Dir::Cache": r / "cache", "Dir::State::status": r / "status",
            "APT::Architecture": "amd64", "Acquire::Languages": "none", "APT::Sandbox::User": "root",
        }
        return [x for k, v in opts.items() for x in ("-o", f"{k}={v}")]

    def _run(self, tool: str, *args: str, cwd: Path | None = None, stderr_too: bool = False) -> str:
        """The tool's stdout (and stderr after it, with `stderr_too`); KernelError when it fails."""
        if shutil.which(tool) is None:
            raise KernelError(f"{tool} is not installed: fetching Debian kernels needs apt", "use mptcplab kernel add PATH instead")
        proc = subprocess.run([tool, *self.options(), *args], capture_output=True, text=True, cwd=cwd)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise KernelError(f"{tool} {args[0]} failed: {last}", f"check that {self.mirror} is reachable")
        return proc.stdout + (proc.stderr if stderr_too else "")

    def index_files(self) -> dict[str, Path]:
        """Each suite's downloaded ``main/binary-amd64/Packages`` list (compressed as apt keeps it)."""
        out = {}
        for suite in SUITES:
            found = [p for p in (self.root / "lists").glob(f"*_dists_{suite}_main_binary-amd64_Packages*")
                     if not p.name.endswith(("Index", ".diff"))]
            if found:
                out[suite] = found[0]
        return out

    def lists_age(self) -> float:
        """Seconds since the last successful update; infinite when a suite's list is missing.

        The lab's own stamp, not the lists' mtimes: apt keeps a list's file
        untouched when the mirror's copy did not change.
        """
        stamp = self.root / "updated"
        if len(self.index_files()) < len(SUITES) or not stamp.exists():
            return float("inf")
        return time.time() - stamp.stat().st_mtime

    def update(self, force: bool = False, why: str = "") -> None:
        """`apt-get update` of the private lists when they are missing, older than a day, or `force`."""
        self._prepare()
        if force or self.lists_age() > LISTS_MAX_AGE_S:
            what = f"apt update of the private package lists ({len(SUITES)} suites{'; ' + why if why else ''})"
            with self.waits.waiting(what):
                out = self._run("apt-get", "-q", "update", stderr_too=True)
            # apt-get update exits 0 when it could not reach the mirror ("W: Failed to fetch ...")
            failed = [line.split("  ", 1)[-1].strip() for line in out.splitlines() if line.startswith(("W: Failed to fetch", "E: "))]
            if failed:
                if len(self.index_files()) < len(SUITES):
                    raise KernelError(f"apt update of the kernel lists failed: {failed[0]}", f"check that {self.mirror} is reachable")
                age = self.lists_age()
                self.waits.say(f"warning: apt update failed ({failed[0]}); using the package lists from "
                               + (f"{age / 3600:.0f} h ago" if age != float("inf") else "an earlier update"))
            else:
                (self.root / "updated").touch()

    def _lists(self) -> dict:
        """What the lab reads from the private lists, parsed once per list download (``catalog.json``)."""
        files = self.index_files()
        stamp = [[suite, p.name, p.stat().st_mtime_ns, p.stat().st_size] for suite, p in sorted(files.items())]
        saved = self.root / "catalog.json"
        try:
            doc = json.loads(saved.read_text())
            if doc.get("stamp") == stamp and "sources" in doc:
                return doc
        except (OSError, ValueError, KeyError, TypeError):
            pass
        with self.waits.waiting(f"reading the package lists of {len(files)} suites"):
            raws = {suite: self._cat(p) for suite, p in files.items()}
            cands = parse_packages({suite: kernel_stanzas(raw) for suite, raw in raws.items()})
            sources = parse_sources({suite: source_stanzas(raw) for suite, raw in raws.items()})
        doc = {"stamp": stamp, "candidates": [asdict(c) for c in cands], "sources": [asdict(s) for s in sources]}
        tmp = saved.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(doc))
        tmp.replace(saved)
        return doc

    def catalog(self) -> list[Candidate]:
        """Every cloud kernel image the private lists offer, oldest first (parsed once per list download)."""
        try:
            return [Candidate(**{**c, "depends": tuple(c["depends"]), "parts": tuple(c["parts"]),
                                 "missing": tuple(c["missing"])}) for c in self._lists()["candidates"]]
        except (KeyError, TypeError) as e:
            raise KernelError(f"{self.root / 'catalog.json'} is damaged ({e})", "mptcplab kernel fetch --refresh") from None

    def sources(self) -> list[SourceRelease]:
        """Every ``linux-source-X.Y`` release the private lists offer, oldest first."""
        try:
            return [SourceRelease(**s) for s in self._lists()["sources"]]
        except (KeyError, TypeError) as e:
            raise KernelError(f"{self.root / 'catalog.json'} is damaged ({e})", "mptcplab kernel fetch --refresh") from None

    def candidates(self) -> list[Candidate]:
        """Kept for callers of the old name: the same as :meth:`catalog`."""
        return self.catalog()

    def _cat(self, path: Path) -> bytes:
        """A list file decompressed (apt keeps them lz4/xz/gz-compressed; apt-helper reads every format)."""
        helper = APT_HELPER if Path(APT_HELPER).exists() else None
        if helper is None:
            raise KernelError(f"{APT_HELPER} is missing: reading the package lists needs apt")
        proc = subprocess.run([helper, "cat-file", str(path)], capture_output=True)
        if proc.returncode != 0:
            raise KernelError(f"cannot read {path}: {proc.stderr.decode(errors='replace').strip()[-200:]}",
                              "mptcplab kernel fetch --refresh downloads the lists again")
        return proc.stdout

    def download(self, packages: list[str], dest: Path, size: int = 0) -> list[Path]:
        """`apt-get download` into `dest`, announcing the size and the bytes so far."""
        what = f"downloading {packages[0]}" + (f" and {len(packages) - 1} more package{'s' if len(packages) > 2 else ''}"
                                               if len(packages) > 1 else "") + (f" ({size / 1e6:.0f} MB)" if size else "")
        with self.waits.waiting(what) as detail:
            proc = subprocess.Popen(["apt-get", *self.options(), "-q", "download", *packages], cwd=dest,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            while proc.poll() is None:
                try:
                    got = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
                except OSError:
                    got = 0
                detail(f"{got / 1e6:.0f}/{size / 1e6:.0f} MB" if size else f"{got / 1e6:.0f} MB")
                time.sleep(0.2)
            _, stderr = proc.communicate()
        if proc.returncode != 0:
            last = (stderr.strip().splitlines() or ["(no output)"])[-1]
            raise KernelError(f"apt-get download failed: {last}", f"check that {self.mirror} is reachable")
        return sorted(dest.glob("*.deb"))


def choose(query: str, candidates: list[Candidate]) -> Candidate:
    """The offered candidate `query` names (the rule of :func:`resolve_name`, the cache left aside)."""
    res = resolve_name(query, [], candidates)
    assert res.candidate is not None
    return res.candidate


@contextmanager
def file_lock(path: Path, waits: Waits, doing: str) -> Iterator[None]:
    """An exclusive flock on `path` (created with its directory); a wait for another holder is announced as
    "waiting for another mptcplab that is <doing>"."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            with waits.waiting(f"waiting for another mptcplab that is {doing} ({path})"):
                fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _cache_lock(waits: Waits) -> contextlib.AbstractContextManager[None]:
    return file_lock(kernels_dir() / ".lock", waits, "fetching into the kernel cache")


def read_catalog(apt: PrivateApt, refresh: bool = False) -> list[Candidate]:
    """What the archive offers: the private lists updated when stale (or with `refresh`), then read.

    Raises KernelError (exit 3) when apt fails (no network, no apt).
    """
    with _cache_lock(apt.waits):
        apt.update(force=refresh)
        return apt.catalog()


def lookup(query: str, apt: PrivateApt | None = None, refresh: bool = False, waits: Waits | None = None) -> Resolution:
    """Which kernel `query` names (see :func:`~mptcplab.kernels.catalog.resolve_name`), reading the archive's lists.

    A cached release or package version is answered without the archive. The
    lists are updated when older than a day (or with `refresh`); a name they do
    not know updates them once more if they are older than ten minutes (a new
    point release may have appeared). When the archive cannot be read the
    newest cached match is used, and the resolution's note says so.
    Raises UnknownKernel (exit 2) or KernelError (exit 3).
    """
    waits = waits or (apt.waits if apt else Waits())
    kernels = cached()
    if not refresh:
        hit = next((k for k in kernels if query in (k.release, f"linux-image-{k.release}")
                    or (k.version != "custom" and not k.built and query == k.version)), None)
        if hit is not None:
            return resolve_name(query, kernels, None)
    apt = apt or PrivateApt(waits=waits)
    try:
        offered = read_catalog(apt, refresh)
    except KernelError as e:
        return resolve_name(query, kernels, None, unreachable=e.message)
    try:
        return resolve_name(query, kernels, offered)
    except UnknownKernel:
        age = apt.lists_age()
        if refresh or age < RETRY_UPDATE_AFTER_S:
            raise
        with _cache_lock(waits):
            apt.update(force=True, why=f"no kernel {query!r} in lists {age / 3600:.1f} h old")
            offered = apt.catalog()
        return resolve_name(query, kernels, offered)


def fetch(query: str, apt: PrivateApt | None = None, refresh: bool = False, waits: Waits | None = None) -> tuple[Kernel, bool]:
    """The kernel `query` names, downloaded and unpacked into the cache if it is not there; (kernel, was_cached).

    Says which kernel the name resolved to, once, through `waits`.
    `refresh` updates the package lists first even when they are fresh.
    Raises UnknownKernel (exit 2) or KernelError (exit 3: not runnable, archive unreachable, download failed).
    """
    waits = waits or (apt.waits if apt else Waits())
    apt = apt or PrivateApt(waits=waits)
    res = lookup(query, apt, refresh, waits)
    waits.say(res.describe())
    if res.kernel is not None:
        return res.kernel, True
    assert res.candidate is not None
    with _cache_lock(waits):
        meta = kernels_dir() / res.release / "kernel.json"
        if meta.exists():  # another process fetched it while we waited
            return Kernel.model_validate_json(meta.read_text()), True
        return _unpack(res.candidate, apt, waits), False



def use_kernel(name: str, waits: Waits | None = None) -> Kernel:
    """The kernel `name` means (the one rule of `kernel fetch`, `run --kernel`, `matrix`), fetched if it is not
    cached; says which kernel through `waits` (ConsoleWaits(stderr console) in the CLI).

    Raises UnknownKernel (exit 2) or KernelError (exit 3), as fetch does.
    """
    return fetch(name, waits=waits)[0]

def _unpack(cand: Candidate, apt: PrivateApt, waits: Waits) -> Kernel:
    """Download the image (and, in the split layout, its binary/modules/base packages) into a staging dir."""
    staging = kernels_dir() / f".staging-{cand.release}-{os.getpid()}"
    final = kernels_dir() / cand.release
    shutil.rmtree(staging, ignore_errors=True)
    try:
        debs = staging / "debs"
        debs.mkdir(parents=True)
        files = apt.download([cand.package, *cand.parts], debs, cand.size)
        with waits.waiting(f"unpacking {len(files)} package{'s' if len(files) > 1 else ''} of {cand.release}"):
            for deb in files:
                proc = subprocess.run(["dpkg-deb", "-x", str(deb), str(staging / "root")], capture_output=True, text=True)
                if proc.returncode != 0:
                    raise KernelError(f"dpkg-deb -x {deb.name} failed: {proc.stderr.strip()[-200:]}", "install dpkg")
        kernel = _arrange(staging, cand, waits)
        shutil.rmtree(debs)
        shutil.rmtree(staging / "root")
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
        kernel.save()
        return kernel
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _arrange(staging: Path, cand: Candidate, waits: Waits) -> Kernel:
    """Move image, config and modules into the cache layout and index the modules with depmod."""
    root = staging / "root"
    release = cand.release
    layouts = (f"boot/vmlinuz-{release}", f"usr/lib/modules/{release}/vmlinuz")  # image layout, split layout
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
        with waits.waiting(f"indexing the modules of {release} (depmod)"):
            index_modules(staging, release)
        modules = str(final / "lib/modules" / release)
    return Kernel(release=release, version=cand.version, origin=f"debian {cand.suite} {cand.package}",
                  image=str(final / "vmlinuz"), modules=modules, config=str(final / "config") if config else None)


def index_modules(base: Path, release: str) -> None:
    """depmod: Debian packages ship no modules.dep (it is made at install time)."""
    proc = subprocess.run(["depmod", "-b", str(base), release], capture_output=True, text=True)
    if proc.returncode != 0:
        raise KernelError(f"depmod failed for {release}: {proc.stderr.strip()[-200:]}", "install kmod")

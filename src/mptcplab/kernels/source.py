"""Debian kernel sources: ``linux-source-X.Y`` fetched by release, cached, and unpacked once.

The archive's ``linux-source-X.Y`` packages hold Debian's patched tree as
``/usr/src/linux-source-X.Y.tar.xz``. They are found in the same private
package lists as the cloud kernels (:meth:`~.fetch.PrivateApt.sources`),
downloaded with the same ``apt-get download`` (apt checks each file against
the signed ``Release`` of its suite), and unpacked with ``dpkg-deb``; nothing
is installed on the host. The cache layout, under the kernel cache root
(``/var/cache/mptcplab`` unless ``MPTCPLAB_CACHE`` says otherwise)::

    sources/<upstream>/source.json               package, version, suite, tarball
    sources/<upstream>/linux-source-X.Y.tar.xz   the tarball
    sources/<upstream>/tree/                     extracted once (``extract``): the tree's root

A tree in the cache is shared by every build and by the selftests: builds are
out of tree, and the only writes are the lab's build-time patches (each leaves
``.mptcplab-patched-<name>`` at the tree's top; see :data:`.build.PATCHES`).
"""
from __future__ import annotations

import bisect
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from ..errors import UsageError
from ..kernel_names import prefix_matches, version_key
from .catalog import KernelError, SourceRelease, cache_root
from .fetch import PrivateApt, Waits, _cache_lock, file_lock

__all__ = ["SourceRelease", "UnknownSource", "sources_dir", "read_sources", "cached_sources", "resolve_source",
           "fetch_source", "extract", "tree_version"]

#: what ``extract`` writes beside a tree: which member prefixes it holds ("" = all of it)
_MARK = ".mptcplab-extracted"


class UnknownSource(UsageError):
    """A source release the archive does not offer (exit 2)."""


def sources_dir() -> Path:
    return cache_root() / "sources"


def _waits(progress: Waits | Callable[[str], object] | None) -> Waits:
    """`progress` as a :class:`~.fetch.Waits`: one already, a function taking a line, or None (silent)."""
    if progress is None:
        return Waits()
    if isinstance(progress, Waits):
        return progress
    say = progress

    class _Lines(Waits):
        def say(self, line: str) -> None:
            say(line)

        @contextmanager
        def waiting(self, what: str) -> Iterator[Callable[[str], None]]:
            say(f"{what} …")
            yield lambda detail: None

    return _Lines()


def read_sources(apt: PrivateApt | None = None, refresh: bool = False, waits: Waits | None = None) -> list[SourceRelease]:
    """Every ``linux-source`` release the archive offers, oldest first (lists updated when a day old or `refresh`).

    Raises KernelError (exit 3) when apt fails (no network, no apt).
    """
    apt = apt or PrivateApt(waits=waits or Waits())
    with _cache_lock(apt.waits):
        apt.update(force=refresh)
        return apt.sources()


def cached_sources() -> list[SourceRelease]:
    """The source releases whose tarball is in the cache, oldest first."""
    out = []
    root = sources_dir()
    if root.is_dir():
        for meta in root.glob("*/source.json"):
            try:
                doc = json.loads(meta.read_text())
                rel = SourceRelease(doc["package"], doc["version"], doc["suite"], doc.get("size", 0))
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if (meta.parent / doc.get("tarball", "")).is_file():
                out.append(rel)
    return sorted(out, key=lambda s: version_key(s.version))


def nearest(query: str, offered: Sequence[SourceRelease], n: int = 2) -> list[str]:
    """The upstream versions around `query` in version order (`n` each side), for an error message."""
    ups = sorted({s.upstream for s in offered}, key=version_key)
    try:
        at = bisect.bisect_left([version_key(u) for u in ups], version_key(query))
    except ValueError:  # not a version at all
        return ups[-2 * n:]
    return ups[max(0, at - n):at + n]


def resolve_source(query: str, offered: Sequence[SourceRelease]) -> SourceRelease:
    """The source release `query` names in `offered`: a Debian package version (``6.12.117-1``) or an upstream
    version (``6.12.117``) exactly, else the newest whose upstream version starts with `query` on components
    (``6.12`` → the newest 6.12.x, ``7.3`` → 7.3.4 rather than 7.3~rc7).

    Raises UnknownSource (exit 2) naming the nearest offered releases.
    """
    query = query.strip()
    hits = [s for s in offered if query in (s.version, s.upstream)]
    if not hits:
        hits = [s for s in offered if prefix_matches(query, s.upstream)]
    if hits:
        return max(hits, key=lambda s: version_key(s.version))
    near = nearest(query, offered)
    raise UnknownSource(f"no kernel source {query!r} in the archive" + (f"; nearest: {', '.join(near)}" if near else " (it offers none)"),
                        "mptcplab kernel list --sources lists them all")


def _entry(rel: SourceRelease) -> Path:
    return sources_dir() / rel.upstream


def _cached_tarball(query: str) -> tuple[SourceRelease, Path] | None:
    """The cached tarball `query` names exactly (package or upstream version), answered without the archive."""
    for rel in cached_sources():
        if query in (rel.version, rel.upstream):
            return rel, _entry(rel) / f"{rel.package}.tar.xz"
    return None


def fetch_source(version: str, progress: Waits | Callable[[str], object] | None = None,
                 apt: PrivateApt | None = None, refresh: bool = False) -> Path:
    """The ``linux-source`` tarball (``.tar.xz``) of release `version`, downloaded into the cache if it is not there.

    `version` is an upstream version (``6.12.117``), a Debian package version (``6.12.117-1``) or a prefix
    (``6.12``: the newest 6.12.x offered). A cached exact match is used without asking the archive.
    `progress` is a :class:`~.fetch.Waits` (the CLI's ``ConsoleWaits``) or a function taking one line.
    Raises UnknownSource (exit 2) or KernelError (exit 3: archive unreachable, download failed).
    """
    waits = _waits(progress)
    hit = None if refresh else _cached_tarball(version)
    if hit is not None:
        return hit[1]
    apt = apt or PrivateApt(waits=waits)
    rel = resolve_source(version, read_sources(apt, refresh))
    entry = _entry(rel)
    tarball = entry / f"{rel.package}.tar.xz"
    with file_lock(sources_dir() / f".{rel.upstream}.lock", waits, f"fetching {rel.package} {rel.version}"):
        meta = entry / "source.json"
        if meta.is_file() and tarball.is_file() and json.loads(meta.read_text()).get("version") == rel.version:
            return tarball
        waits.say(f"kernel source {version} → {rel.package} {rel.version} ({rel.suite}, {rel.size / 1e6:.0f} MB to fetch)")
        staging = sources_dir() / f".staging-{rel.upstream}-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            (staging / "debs").mkdir(parents=True)
            debs = apt.download([f"{rel.package}={rel.version}"], staging / "debs", rel.size)
            with waits.waiting(f"unpacking {debs[0].name}"):
                proc = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(debs[0])], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                if proc.returncode != 0:
                    raise KernelError(f"dpkg-deb --fsys-tarfile {debs[0].name} failed: {proc.stderr.decode(errors='replace').strip()[-200:]}",
                                      "install dpkg")
                inner = f"./usr/src/{rel.package}.tar.xz"
                tar = subprocess.run(["tar", "-x", "-C", str(staging), inner], input=proc.stdout, capture_output=True)
                if tar.returncode != 0 or not (staging / inner).is_file():
                    raise KernelError(f"{debs[0].name} holds no {inner[1:]}: {tar.stderr.decode(errors='replace').strip()[-200:]}",
                                      "the package layout changed; report it")
            entry.mkdir(parents=True, exist_ok=True)
            os.replace(staging / inner, tarball)
            doc = {**asdict(rel), "upstream": rel.upstream, "tarball": tarball.name, "sha256": _sha256(tarball)}
            tmp = meta.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(doc, indent=2) + "\n")
            tmp.replace(meta)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return tarball


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _top_dir(tarball: Path) -> str:
    """The one directory a kernel tarball unpacks to (``linux-source-6.12``), from its first member."""
    if tarball.name.startswith("linux-source-") and tarball.name.endswith(".tar.xz"):
        return tarball.name[: -len(".tar.xz")]
    proc = subprocess.Popen(["tar", "-tf", str(tarball)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    first = proc.stdout.readline().strip()
    proc.kill()
    proc.wait()
    if not first:
        raise UsageError(f"{tarball}: not a tar archive (or empty)", "give a kernel source .tar.xz/.tar.gz")
    return first.split("/", 1)[0]


def _tree_for(tarball: Path) -> Path:
    """Where a tarball's tree goes in the cache: beside a fetched tarball, else under sources/tarballs/<name>-<hash>."""
    tarball = tarball.resolve()
    if tarball.parent.parent == sources_dir().resolve():
        return tarball.parent / "tree"
    st = tarball.stat()
    key = hashlib.sha256(f"{tarball}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:12]
    stem = tarball.name.split(".tar")[0]
    return sources_dir() / "tarballs" / f"{stem}-{key}" / "tree"


def _held(mark: Path) -> list[str] | None:
    """The member prefixes a tree holds ([""] = all of it), or None when nothing was extracted."""
    try:
        return json.loads(mark.read_text())["members"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _covered(want: list[str], held: list[str]) -> bool:
    return "" in held or all(any(w == h or w.startswith(h.rstrip("/") + "/") for h in held) for w in want)


def extract(version_or_tarball: str | Path, dest: Path | None = None, members: list[str] | None = None,
            progress: Waits | Callable[[str], object] | None = None) -> Path:
    """The root of an unpacked kernel tree (holding ``Makefile``, ``net/``...), unpacked once.

    `version_or_tarball` is a source release (fetched first, see :func:`fetch_source`) or the path of a kernel
    source tarball. The tree goes into the cache (``sources/<upstream>/tree``) unless `dest` is given. With
    `members` only those path prefixes of the tree are unpacked (``["tools/testing/selftests/net/mptcp",
    "Makefile"]``); a later call asking for more unpacks the rest, a call asking for what is there returns at once.
    Raises UsageError (exit 2: not a tarball, a member the tarball lacks) or what :func:`fetch_source` raises.
    """
    waits = _waits(progress)
    path = Path(version_or_tarball)
    if isinstance(version_or_tarball, Path) or path.suffix in (".xz", ".gz", ".bz2", ".zst", ".tar") or os.sep in str(version_or_tarball):
        if not path.is_file():
            raise UsageError(f"{path}: no such kernel source tarball", "give a .tar.xz of a kernel tree, or a release such as 6.12.117")
        tarball = path
    else:
        tarball = fetch_source(str(version_or_tarball), waits)
    tree = (dest or _tree_for(tarball)).resolve()
    want = [m.strip("/") for m in members] if members else [""]
    mark = tree / _MARK
    held = _held(mark)
    if held is not None and _covered(want, held):
        return tree
    top = _top_dir(tarball)
    with file_lock(tree.parent / f".{tree.name}.lock", waits, f"unpacking {tarball.name}"):
        held = _held(mark)
        if held is not None and _covered(want, held):
            return tree
        todo = want if held is None else [w for w in want if not _covered([w], held)]
        what = f"unpacking {tarball.name}" + ("" if todo == [""] else f" ({', '.join(todo)})")
        # A first unpacking goes to a staging directory renamed into place; more members go into the tree
        # itself (the mark, written last, says what is complete).
        target = tree if held is not None else tree.parent / f".staging-{tree.name}-{os.getpid()}"
        if held is None:
            shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True, exist_ok=True)
        try:
            with waits.waiting(what) as detail:
                names = [f"{top}/{w}" if w else top for w in todo]
                proc = subprocess.Popen(["tar", "-x", "-v", "-f", str(tarball), "-C", str(target), "--strip-components=1",
                                         "--no-same-owner", *names], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                assert proc.stdout is not None
                count = 0
                for _ in proc.stdout:
                    count += 1
                    if count % 2000 == 0:
                        detail(f"{count} files")
                stderr = proc.stderr.read() if proc.stderr else ""
                if proc.wait() != 0:
                    missing = "Not found in archive" in stderr
                    raise (UsageError if missing else KernelError)(
                        f"tar could not unpack {tarball.name}: {(stderr.strip().splitlines() or ['(no output)'])[-1]}",
                        "members are paths inside the kernel tree, e.g. tools/testing/selftests/net/mptcp" if missing
                        else "check the free space in the cache")
            (target / _MARK).write_text(json.dumps({"tarball": str(tarball.resolve()), "members": (held or []) + todo}) + "\n")
            if held is None:
                shutil.rmtree(tree, ignore_errors=True)
                tree.parent.mkdir(parents=True, exist_ok=True)
                target.rename(tree)
        finally:
            if held is None:
                shutil.rmtree(target, ignore_errors=True)
    return tree


def tree_version(tree: Path) -> str:
    """The kernel version a tree's top Makefile states (``6.12.117``, ``7.3.0-rc7``); "" when it has none."""
    try:
        text = (tree / "Makefile").read_text(errors="replace")
    except OSError:
        return ""
    fields = {}
    for key in ("VERSION", "PATCHLEVEL", "SUBLEVEL", "EXTRAVERSION"):
        for line in text.splitlines()[:12]:
            if line.startswith(f"{key} ="):
                fields[key] = line.split("=", 1)[1].strip()
                break
    if not fields.get("VERSION"):
        return ""
    return f"{fields['VERSION']}.{fields.get('PATCHLEVEL', '0')}.{fields.get('SUBLEVEL', '0')}{fields.get('EXTRAVERSION', '')}"

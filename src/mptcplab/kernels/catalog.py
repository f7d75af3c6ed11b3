"""The kernel catalog: what is cached, what the Debian archive offers, and which kernel a name means.

Kernels live outside the git clone (``/var/cache/mptcplab/kernels`` unless
``MPTCPLAB_CACHE`` says otherwise) so that a fresh clone or a CI rerun finds
what an earlier run downloaded. Each kernel is a directory named after its
release holding ``kernel.json``, the image, its config and its modules.

What the archive offers is read from its ``Packages`` indexes
(:func:`parse_packages`), and :func:`resolve_name` is the one rule by which
``kernel fetch``, ``run --kernel`` and ``matrix --kernels`` turn a name into a
kernel; both are pure (no network, no files), so they are tested on a
recorded index.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, model_validator

from ..errors import LabError, UsageError
from ..kernel_names import prefix_matches, version_key


class KernelError(LabError):
    """A kernel that cannot be fetched, registered or booted."""

    exit_code = 3


class UnknownKernel(UsageError):
    """A kernel name that matches nothing cached (exit 2: bad input)."""


FLAVOUR = "cloud-amd64"  # small, virtio built in or as modules: made for VMs


def cache_root() -> Path:
    return Path(os.environ.get("MPTCPLAB_CACHE", "/var/cache/mptcplab"))


def kernels_dir() -> Path:
    return cache_root() / "kernels"


class Kernel(BaseModel):
    """One bootable kernel: its image, its modules, its flavour and where it came from.

    `flavour` says how it boots: ``cloud-amd64`` (a Debian kernel for the QEMU guest), ``custom`` (a user's
    ``kernel add``, QEMU guest), or a flavour of ``kernel build`` (``uml``: a User-Mode Linux binary;
    ``qemu``: a bzImage for the QEMU guest). Entries written before flavours existed read as ``cloud-amd64``
    or ``custom``. A built kernel's `release` is its name in the cache (``6.12.117-uml``), `build` the path of
    its build.json (source, commit, config hash, patches, times).
    """

    release: str  # what `uname -r` says inside the guest; a built kernel's name
    version: str  # the Debian package version, "custom" for `kernel add`, the source's version for a build
    origin: str  # "debian <suite> <package>", "added from <path>" or "built from <source>"
    image: str
    modules: str | None = None  # the lib/modules/<release> directory, if any
    config: str | None = None
    flavour: str = FLAVOUR
    source: str | None = None  # a built kernel's source, one line
    build: str | None = None  # a built kernel's build.json

    @model_validator(mode="before")
    @classmethod
    def _flavour_of_old_entries(cls, data: object) -> object:
        if isinstance(data, dict) and "flavour" not in data:
            data = {**data, "flavour": "custom" if data.get("version") == "custom" else FLAVOUR}
        return data

    @property
    def built(self) -> bool:
        """Built by `kernel build`: named only by its exact name, never by a version prefix."""
        return self.build is not None

    @property
    def dir(self) -> Path:
        return kernels_dir() / self.release

    @property
    def upstream(self) -> str:
        """The upstream version: 6.12.95 of package version 6.12.95-1~bpo12+1."""
        return self.version.split("-")[0] if self.version != "custom" else self.release

    def config_value(self, option: str) -> str | None:
        """CONFIG_<option> from the kernel's config: 'y', 'm', a value, or None when unset or unknown."""
        if not self.config or not Path(self.config).is_file():
            return None
        m = re.search(rf"^CONFIG_{option}=(.*)$", Path(self.config).read_text(), re.M)
        return m.group(1) if m else None

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "kernel.json").write_text(self.model_dump_json(indent=2) + "\n")


def cached() -> list[Kernel]:
    """Every kernel in the cache, oldest upstream version first."""
    out = []
    root = kernels_dir()
    if root.is_dir():
        for meta in sorted(root.glob("*/kernel.json")):
            try:
                out.append(Kernel.model_validate_json(meta.read_text()))
            except ValueError:
                continue  # a half-written entry is not a kernel
    return sorted(out, key=lambda k: version_key(k.upstream))


def matches(query: str, version: str) -> bool:
    """'6.1' matches 6.1.176 but not 6.12.95; '7.3' matches 7.3~rc7 (a prefix on version components)."""
    return prefix_matches(query, version)


def resolve(name: str) -> Kernel:
    """A cached kernel by name without asking the archive: release or package version, else the newest
    cached kernel whose upstream version starts with `name`. Commands use :func:`resolve_name` instead."""
    return resolve_name(name, cached(), None, offline=True).kernel  # type: ignore[return-value]


# -- what the archive offers ---------------------------------------------------

IMAGE_RE = re.compile(rf"^linux-image-([0-9].*-{FLAVOUR})$")  # POSIX ERE too
_PART_RE = re.compile(rf"^linux-(binary|modules|base)-([0-9].*-{FLAVOUR})$")
_STANZA_RE = re.compile(rf"^Package: (linux-(?:image|binary|modules|base)-[0-9][^\n]*-{FLAVOUR})\n(.*?)(?=\n\n|\Z)",
                        re.M | re.S)
#: what a kernel without modules cannot do in the lab
NO_MODULES = "no modules served"


@dataclass(frozen=True)
class Candidate:
    """A kernel the archive offers: one ``linux-image-RELEASE`` package of one suite.

    In the split layout (from 6.19) the image package is empty and depends on
    ``linux-binary-``, ``linux-modules-`` and ``linux-base-RELEASE``: `parts`
    lists them and `missing` those the archive does not serve (then the
    kernel is listed but not runnable). `size` is the download in bytes.
    """

    package: str
    version: str  # Debian package version, e.g. 6.12.95-1~bpo12+1
    suite: str
    depends: tuple[str, ...] = ()
    parts: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    size: int = 0

    @property
    def release(self) -> str:
        m = IMAGE_RE.match(self.package)
        assert m, self.package
        return m.group(1)

    @property
    def upstream(self) -> str:
        """6.12.95 of 6.12.95-1~bpo12+1, 7.3~rc7 of 7.3~rc7-1~exp1."""
        return self.version.split("-")[0]

    @property
    def flavour(self) -> str:
        return FLAVOUR

    @property
    def layout(self) -> str:
        return "split" if self.parts else "image"

    @property
    def runnable(self) -> bool:
        return not self.missing

    @property
    def reason(self) -> str:
        """Why the lab cannot boot it ("" when it can)."""
        if not self.missing:
            return ""
        kinds = [_PART_RE.match(m).group(1) for m in self.missing]  # type: ignore[union-attr]
        lacking = [k for k in ("binary", "modules", "base") if k in kinds]
        served = [k for k in ("binary", "modules", "base") if k not in kinds and any(p.startswith(f"linux-{k}-") for p in self.parts)]
        return (f"no linux-{'/'.join(lacking)} package{'s' if len(lacking) > 1 else ''} in the archive"
                + (f" (only linux-{'/'.join(served)})" if served else ""))


def parse_packages(indexes: dict[str, str]) -> list[Candidate]:
    """The cloud kernels in Debian ``Packages`` indexes, per suite name; oldest version first.

    `indexes` maps a suite (``trixie-backports``) to the text of its
    ``main/binary-amd64/Packages``; only the kernel packages' stanzas are read,
    so a whole index or one trimmed to them gives the same result. A split
    image whose parts (same name and version) are in no given index is marked
    not runnable.
    """
    stanzas: dict[str, list[tuple[str, dict[str, str]]]] = {}
    served: set[tuple[str, str]] = set()
    sizes: dict[tuple[str, str], int] = {}
    for suite, text in indexes.items():
        for m in _STANZA_RE.finditer(text):
            fields = dict(re.findall(r"^([\w-]+): (.*)$", m.group(2), re.M))
            name, version = m.group(1), fields.get("Version", "")
            served.add((name, version))
            sizes[(name, version)] = int(fields.get("Size", "0") or 0)
            stanzas.setdefault(suite, []).append((name, fields))
    out = []
    for suite, entries in stanzas.items():
        for name, fields in entries:
            m = IMAGE_RE.match(name)
            if not m:
                continue
            version = fields.get("Version", "")
            deps = tuple(d.strip().split()[0] for d in fields.get("Depends", "").split(",") if d.strip().startswith("linux-"))
            split = any(d == f"linux-binary-{m.group(1)}" for d in deps)
            parts = tuple(d for d in deps if _PART_RE.match(d) and d.endswith(m.group(1))) if split else ()
            missing = tuple(p for p in parts if (p, version) not in served)
            size = sizes.get((name, version), 0) + sum(sizes.get((p, version), 0) for p in parts)
            out.append(Candidate(name, version, suite, deps, parts, missing, size))
    return sorted(out, key=lambda c: (version_key(c.version), c.suite))


# -- kernel sources the archive offers -----------------------------------------

#: a ``linux-source-X.Y`` package (the tarball of Debian's patched tree under /usr/src)
SOURCE_RE = re.compile(r"^linux-source-(\d+\.\d+)$")
_SOURCE_STANZA_RE = re.compile(r"^Package: (linux-source-\d+\.\d+)\n(.*?)(?=\n\n|\Z)", re.M | re.S)


@dataclass(frozen=True)
class SourceRelease:
    """A kernel source release the archive offers: one version of one ``linux-source-X.Y`` package.

    `size` is the download in bytes; `series` is X.Y (the tarball unpacks to ``linux-source-X.Y/``).
    """

    package: str  # linux-source-6.12
    version: str  # Debian package version, 6.12.117-1
    suite: str
    size: int = 0

    @property
    def upstream(self) -> str:
        """6.12.117 of 6.12.117-1, 7.3~rc7 of 7.3~rc7-1~exp1."""
        return self.version.split("-")[0]

    @property
    def series(self) -> str:
        m = SOURCE_RE.match(self.package)
        assert m, self.package
        return m.group(1)


def parse_sources(indexes: dict[str, str]) -> list[SourceRelease]:
    """The ``linux-source-X.Y`` releases in Debian ``Packages`` indexes, per suite name; oldest version first.

    Like :func:`parse_packages`, a whole index or one trimmed to those stanzas gives the same result;
    a version offered by two suites is listed once, under the first suite in `indexes` order.
    """
    seen: dict[str, SourceRelease] = {}
    for suite, text in indexes.items():
        for m in _SOURCE_STANZA_RE.finditer(text):
            fields = dict(re.findall(r"^([\w-]+): (.*)$", m.group(2), re.M))
            version = fields.get("Version", "")
            if version and version not in seen:
                seen[version] = SourceRelease(m.group(1), version, suite, int(fields.get("Size", "0") or 0))
    return sorted(seen.values(), key=lambda s: version_key(s.version))


# -- one rule from a name to a kernel -----------------------------------------

@dataclass
class Resolution:
    """Which kernel a name means: its release, what the archive offers under it, and the cached copy if any."""

    query: str
    release: str
    candidate: Candidate | None = None  # None: not (or no longer) offered, or the archive was not read
    kernel: Kernel | None = None  # the cached kernel, when it is cached
    notes: list[str] = field(default_factory=list)

    @property
    def cached(self) -> bool:
        return self.kernel is not None

    def describe(self) -> str:
        """One line for stderr: ``kernel 6.12 → 6.12.117+deb13-cloud-amd64 (trixie, cached)``."""
        where = []
        if self.candidate is not None:
            where.append(self.candidate.suite)
        elif self.kernel is not None:
            where.append(self.kernel.origin.split(" ")[1] if self.kernel.origin.startswith("debian ") else "your build")
        if self.kernel is not None:
            where.append("cached")
        elif self.candidate is not None:
            where.append(f"to fetch, {self.candidate.size / 1e6:.0f} MB")
        line = f"kernel {self.query} → {self.release} ({', '.join(where)})"
        return line + "".join(f"; {n}" for n in self.notes)


def _exact(query: str, kernels: Iterable[Kernel]) -> Kernel | None:
    for k in kernels:
        if query in (k.release, f"linux-image-{k.release}") or (k.version != "custom" and not k.built and query == k.version):
            return k
    return None


def _series(cands: Sequence[Candidate]) -> str:
    """'6.1, 6.12, 6.16 ... (runnable); 6.19, 7.0, 7.1 (not runnable: no modules)' from what is offered."""
    def ser(cs: Iterable[Candidate]) -> list[str]:
        return list(dict.fromkeys(".".join(c.upstream.split("~")[0].split(".")[:2]) for c in cs))
    ok = ser(c for c in cands if c.runnable)
    bad = [s for s in ser(c for c in cands if not c.runnable) if s not in ok]
    return ", ".join(ok) + (f" (not runnable, no modules: {', '.join(bad)})" if bad else "")


def resolve_name(query: str, kernels: Sequence[Kernel], offered: Sequence[Candidate] | None,
                 unreachable: str = "", offline: bool = False) -> Resolution:
    """The kernel `query` names — the rule every command uses.

    - a release (``6.12.117+deb13-cloud-amd64``), image package or Debian package
      version (``6.12.95-1~bpo12+1``) names that kernel; a cached one is used as is
      (this also covers kernels from ``kernel add``);
    - a suite (``trixie``, ``trixie-backports``, ``sid``...) names the newest runnable kernel it offers;
    - an upstream version prefix (``6.12``, ``6.12.95``, ``7``) names the newest runnable kernel the
      archive offers whose upstream version starts with it, on version components;
    - a cached kernel satisfies a prefix only if it is what the prefix names in the archive's
      `offered` list; with ``offered=None`` (the archive could not be read, `unreachable` says why)
      the newest cached match is used and a note says so; with `offline` (a cache-only lookup)
      the same without the note;
    - a name the archive does not offer falls back to the newest cached match (your builds,
      releases the archive dropped);
    - a kernel from ``kernel build`` (``6.12.117-uml``) is named only by its exact name: a version or
      prefix never selects a UML or self-built kernel instead of Debian's.

    Raises UnknownKernel (exit 2) for a name that matches nothing, KernelError (exit 3) for a
    kernel that is offered but not runnable (its modules are not served) or when nothing is cached
    and the archive cannot be read.
    """
    query = query.strip()
    by_release = {k.release: k for k in kernels}
    exact = _exact(query, kernels)
    if exact is not None:
        cand = next((c for c in offered or () if c.release == exact.release), None)
        return Resolution(query, exact.release, cand, exact)
    cached_hits = [k for k in kernels if not k.built and (matches(query, k.upstream) or prefix_matches(query, k.release))]
    if offered is None:
        if cached_hits:
            k = max(cached_hits, key=lambda k: version_key(k.upstream))
            notes = [] if offline else [f"the archive could not be read ({unreachable}): the newest cached match"]
            return Resolution(query, k.release, None, k, notes)
        have = ", ".join(k.release for k in kernels) or "none"
        if offline:
            raise UnknownKernel(f"kernel {query!r} is not in the cache ({kernels_dir()}); cached: {have}",
                                f"mptcplab kernel fetch {query}, or mptcplab kernel add PATH")
        raise KernelError(f"kernel {query!r} is not cached (cached: {have}) and the Debian archive cannot be read: {unreachable}",
                          "check the mirror in /etc/apt/sources.list, or mptcplab kernel add PATH")
    kind = "exact"
    hits = [c for c in offered if query in (c.release, c.package, c.version)]
    if not hits:
        kind, hits = "suite", [c for c in offered if c.suite == query]
    if not hits:
        kind, hits = "prefix", [c for c in offered if matches(query, c.upstream) or prefix_matches(query, c.release)]
    if hits:
        hits = sorted(hits, key=lambda c: (version_key(c.version), c.suite))
        runnable = [c for c in hits if c.runnable]
        if not runnable or (kind == "exact" and not hits[-1].runnable):
            c = hits[-1]
            raise KernelError(f"kernel {query} → {c.release} ({c.suite}) is not runnable: {c.reason}; "
                              "veth, sch_netem and mptcp_diag are modules",
                              "mptcplab kernel list shows the runnable ones")
        c = runnable[-1]
        notes = []
        if hits[-1] is not c:
            notes.append(f"the newer {hits[-1].upstream} is not runnable ({NO_MODULES})")
        return Resolution(query, c.release, c, by_release.get(c.release), notes)
    if cached_hits:
        k = max(cached_hits, key=lambda k: version_key(k.upstream))
        return Resolution(query, k.release, None, k, ["not offered by the archive now; the cached copy"])
    built = [k.release for k in kernels if k.built]
    fix = "give a version prefix (6.1, 6.12.95, 7), a suite (trixie, sid...), a release or a package version"
    if built:  # built kernels are named only by their exact names: say which there are
        fix += f"; kernels built from source: {', '.join(built)}"
    from .build import FLAVOURS  # the flavours `kernel build` makes (imported here: build imports this module)

    flavour = next((f for f in FLAVOURS if query.lower().endswith(f"-{f}")), None)
    if flavour:
        fix += f"; to build one: mptcplab kernel build {query[:-len(flavour) - 1]} --flavour {flavour}"
    raise UnknownKernel(f"no kernel matches {query!r}: the archive offers {_series(offered) or 'nothing (are the lists empty?)'}",
                        fix)

"""The local kernel cache: what has been fetched or added, and how to name it.

Kernels live outside the git clone (``/var/cache/mptcplab/kernels`` unless
``MPTCPLAB_CACHE`` says otherwise) so that a fresh clone or a CI rerun finds
what an earlier run downloaded. Each kernel is a directory named after its
release holding ``kernel.json``, the image, its config and its modules.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from pydantic import BaseModel

from ..errors import LabError, UsageError


class KernelError(LabError):
    """A kernel that cannot be fetched, registered or booted."""

    exit_code = 3


class UnknownKernel(UsageError):
    """A kernel name that matches nothing cached (exit 2: bad input)."""


def cache_root() -> Path:
    return Path(os.environ.get("MPTCPLAB_CACHE", "/var/cache/mptcplab"))


def kernels_dir() -> Path:
    return cache_root() / "kernels"


class Kernel(BaseModel):
    """One bootable kernel: its image, its modules and where it came from."""

    release: str  # what `uname -r` says inside the guest
    version: str  # the Debian package version, or "custom" for `kernel add`
    origin: str  # "debian <suite> <package>" or "added from <path>"
    image: str
    modules: str | None = None  # the lib/modules/<release> directory, if any
    config: str | None = None

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


def version_key(version: str) -> tuple:
    """Sort key for upstream versions: 6.1.176 < 6.12.95 < 7.3~rc7 < 7.3."""
    main, _, rc = version.partition("~")
    nums = tuple(int(x) for x in re.findall(r"\d+", main))
    return nums + ((0, int(re.sub(r"\D", "", rc) or 0)) if rc else (1, 0))


def matches(query: str, version: str) -> bool:
    """'6.1' matches 6.1.176 but not 6.12.95; '7.3' matches 7.3~rc7."""
    return version == query or version.startswith(query + ".") or version.startswith(query + "~")


def resolve(name: str) -> Kernel:
    """A cached kernel by release, package version or upstream version prefix (newest wins)."""
    kernels = cached()
    for k in kernels:
        if name in (k.release, k.version):
            return k
    hits = [k for k in kernels if matches(name, k.upstream)]
    if hits:
        return hits[-1]
    have = ", ".join(k.release for k in kernels) or "none"
    raise UnknownKernel(f"kernel {name!r} is not in the cache ({kernels_dir()}); cached: {have}",
                        f"mptcplab kernel fetch {name}, or mptcplab kernel add PATH")

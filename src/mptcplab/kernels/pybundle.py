"""The pure-Python modules a guest imports, as one zip the guest reads from RAM instead of over virtiofs.

Under TCG every module the guest imports from the host's filesystem costs
about 20 ms of virtiofs round trips (stat the directory entries, open, read
the bytecode, close), and the lab's start-up imports about 400 of them: most
of the guest's time to ready. Python imports from a zip on ``sys.path``
(zipimport) with one open for the whole archive; placed in the initramfs and
copied to the guest's tmpfs before Python starts, the zip costs no virtiofs
trip at all.

What goes in: every module that importing ``mptcplab.kernels.guest_main`` and
the link backends and workloads loads on the host (found by importing them in
a subprocess), as the bytecode the host already has (``__pycache__``, written
by pip and Python's installer; compiled here when missing or stale), without
sources, so the zip needs no timestamp check in the guest; tracebacks still
name the real file, which the guest can read over virtiofs. What stays on
virtiofs: the lab itself (it finds its data files, scenarios and traces, next
to its modules, and a checkout changes often), extension modules (.so files
cannot be imported from a zip) and any package that has one (its submodules
must come from the same directory), and whatever a run imports that this list
missed: the zip comes first on the guest's ``sys.path`` and Python looks
further when a module is not in it, so a missing module is slower, never wrong.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import py_compile
import subprocess
import sys
import tempfile
import time
import zipfile
from functools import lru_cache
from pathlib import Path

from .catalog import cache_root

#: The guest's start-up, as guest_main runs it (pyroute2's package __init__ skipped, see lazy_package), then
#: what its first job imports; prints {module: file} of every module loaded from a .py file.
PROBE = r"""
import importlib, json, pkgutil, sys
from mptcplab.kernels.guest_main import lazy_package
lazy_package("pyroute2")
import mptcplab.kernels.guest_main, mptcplab.links, mptcplab.workloads
for pkg in (mptcplab.links, mptcplab.workloads):
    for info in pkgutil.iter_modules(pkg.__path__, pkg.__name__ + "."):
        try:
            importlib.import_module(info.name)
        except Exception:
            pass
files = {}
for name, mod in list(sys.modules.items()):
    spec = getattr(mod, "__spec__", None)
    origin = getattr(spec, "origin", None)
    if isinstance(origin, str) and origin.endswith(".py"):
        files[name] = [origin, bool(getattr(spec, "submodule_search_locations", None))]
json.dump(files, sys.stdout)
"""


def guest_modules() -> dict[str, tuple[str, bool]]:
    """{module name: (its .py file, whether it is a package)} of what the guest imports, found on the host.

    Raises subprocess.CalledProcessError when the probe cannot import the guest's modules (a broken install).
    """
    env = {**os.environ, "PYDANTIC_DISABLE_PLUGINS": "__all__"}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, env=env, timeout=120)
    return {name: (origin, is_pkg) for name, (origin, is_pkg) in json.loads(out.stdout).items()}


def _roots() -> list[Path]:
    """The directories modules are imported from here (sys.path), longest first."""
    return sorted({Path(p).resolve() for p in sys.path if p and Path(p).is_dir()}, key=lambda p: len(str(p)), reverse=True)


@lru_cache(maxsize=None)
def _has_extension(package_dir: str) -> bool:
    return any(f.endswith((".so", ".pyd")) for _, _, files in os.walk(package_dir) for f in files)


def entries(modules: dict[str, tuple[str, bool]]) -> dict[str, Path]:
    """{name in the zip (``pkg/mod.pyc``): source file} for the top-level modules and packages that can come from
    a zip. A package goes in whole, every module of its tree: its ``__path__`` is then inside the zip, so a
    submodule left out could not be imported at all."""
    roots = _roots()
    out: dict[str, Path] = {}
    for top in sorted({name.split(".", 1)[0] for name in modules}):
        if top in ("mptcplab", "__main__") or top not in modules:
            continue
        origin, is_pkg = modules[top]
        src = Path(origin).resolve()
        root = next((r for r in roots if src.is_relative_to(r)), None)
        if root is None:
            continue
        expected = Path(top) / "__init__.py" if is_pkg else Path(top + ".py")
        if src.relative_to(root) != expected:
            continue  # loaded from somewhere its name does not say (a path hook, a renamed module): leave it
        if not is_pkg:
            out[expected.with_suffix(".pyc").as_posix()] = src
            continue
        if _has_extension(str(src.parent)):
            continue  # a package with a compiled module: all of it stays on disk
        for dirpath, dirnames, files in os.walk(src.parent):
            dirnames[:] = sorted(d for d in dirnames if d not in ("__pycache__", "test", "tests") and (Path(dirpath, d) / "__init__.py").is_file())
            for f in sorted(files):
                if f.endswith(".py"):
                    path = Path(dirpath, f)
                    out[path.relative_to(root).with_suffix(".pyc").as_posix()] = path
    return out


def _bytecode(src: Path, scratch: Path) -> bytes:
    """The module's bytecode as Python caches it (header + marshalled code), compiled when the cache is stale."""
    cached = Path(importlib.util.cache_from_source(str(src)))
    st = src.stat()
    try:
        data = cached.read_bytes()
        if (data[:4] == importlib.util.MAGIC_NUMBER and int.from_bytes(data[4:8], "little") == 0
                and int.from_bytes(data[8:12], "little") == int(st.st_mtime) & 0xFFFFFFFF
                and int.from_bytes(data[12:16], "little") == st.st_size & 0xFFFFFFFF):
            return data
    except OSError:
        pass
    target = scratch / "x.pyc"
    py_compile.compile(str(src), cfile=str(target), dfile=str(src), doraise=True)
    return target.read_bytes()


@lru_cache(maxsize=1)
def _files() -> dict[str, Path] | None:
    """entries(guest_modules()), once per process; None when the probe fails."""
    try:
        return entries(guest_modules())
    except (subprocess.SubprocessError, OSError, ValueError):
        return None


#: a zip not used for this long is removed when another is built (several checkouts may boot guests at once, each
#: with its own zip: one never removes another's that is in use)
STALE_S = 7 * 86400


def build() -> Path | None:
    """The zip of the guest's pure-Python modules, built once per set of module files (names, sizes, mtimes) and
    cached under ``<cache>/pybundle``; None when it cannot be had (the probe failed, the cache is not writable):
    the guest then imports everything over virtiofs, as without it."""
    files = _files()
    if not files:
        return None
    h = hashlib.sha256(sys.version.encode())
    try:
        for arc, src in sorted(files.items()):
            st = src.stat()
            h.update(f"{arc}\0{src}\0{st.st_mtime_ns}\0{st.st_size}\n".encode())
    except OSError:
        return None
    target = cache_root() / "pybundle" / f"guest-{h.hexdigest()[:16]}.zip"
    if target.is_file():
        os.utime(target)  # in use: not stale
        return target
    tmp = target.with_suffix(f".tmp{os.getpid()}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as scratch, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as z:
            for arc, src in sorted(files.items()):  # stored, not deflated: nothing to inflate under TCG
                z.writestr(zipfile.ZipInfo(arc, date_time=(1980, 1, 1, 0, 0, 0)), _bytecode(src, Path(scratch)))
        tmp.rename(target)
    except (OSError, py_compile.PyCompileError):
        return None
    finally:
        tmp.unlink(missing_ok=True)
    now = time.time()
    for old in target.parent.glob("guest-*.zip"):
        try:
            if old != target and now - old.stat().st_mtime > STALE_S:
                old.unlink()
        except OSError:
            pass
    return target

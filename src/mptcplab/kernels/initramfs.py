"""The guest's initramfs: busybox, an /init script and the few modules the lab needs.

No disk image to maintain: Python, the lab and its dependencies come from
the host's own filesystem, shared read-only with virtiofs; the initramfs
only has to get the guest that far. Modules come from the guest kernel's
own tree with their dependencies resolved from modules.dep, decompressed
on the host (busybox insmod cannot read .ko.xz/.ko.zst) and loaded in order.
"""
from __future__ import annotations

import gzip
import hashlib
import lzma
import os
import shutil
import stat
import subprocess
import sys
import threading
from functools import lru_cache
from pathlib import Path

from .catalog import Kernel, KernelError

BUSYBOX = Path("/bin/busybox")
#: name -> needed; a needed module that is neither built in nor shipped stops the build
MODULES: dict[str, bool] = {
    "virtio_pci": True, "virtiofs": True, "veth": True,  # host filesystem and the lab's links
    "sch_netem": False, "sch_tbf": False, "sch_htb": False,  # link backends: probed in the guest
    "inet_diag": False, "tcp_diag": False, "mptcp_diag": False,
}
GUEST_MOUNT = "/host"  # where the host's root is mounted in the guest

INIT = r"""#!/bin/busybox sh
# mptcplab guest init: modules, the host's filesystem read-only, the lab's job loop, power off.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
say() { echo "mptcplab-init: $*" > /dev/ttyS0; }
for m in $(cat /modules.load); do insmod /modules/$m || say "insmod $m failed"; done
arg() { sed -n "s/.*mptcplab\.$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
H=@GUEST_MOUNT@
mkdir -p $H
if ! mount -t virtiofs -o ro hostroot $H; then say "cannot mount the host filesystem (virtiofs)"; poweroff -f; fi
mount -t proc proc $H/proc; mount -t sysfs sysfs $H/sys; mount -t devtmpfs devtmpfs $H/dev
mount -t tmpfs tmpfs $H/run; mkdir -p $H/dev/shm $H/run/tmp; mount -t tmpfs tmpfs $H/dev/shm
mount -t bpf bpf $H/sys/fs/bpf 2>/dev/null
stty -F /dev/ttyS1 raw -echo 2>/dev/null
PYZ=
if [ -f /pybundle/python.zip ] && mkdir -p $H@BUNDLE_MOUNT@ && mount --bind /pybundle $H@BUNDLE_MOUNT@; then
    PYZ=@BUNDLE_MOUNT@/python.zip:
fi
say "host filesystem mounted at $(cut -d' ' -f1 /proc/uptime) s"
chroot $H /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/run/tmp TMPDIR=/run/tmp \
    PYTHONPATH="$PYZ$(arg pythonpath)" PYTHONDONTWRITEBYTECODE=1 PYTHONPROFILEIMPORTTIME="$(arg importtime)" \
    PYDANTIC_DISABLE_PLUGINS=__all__ \
    "$(arg python)" -m mptcplab.kernels.guest_main < /dev/ttyS1 > /dev/ttyS1 2> /dev/ttyS0
say "job exited with status $?"
poweroff -f
"""


def _modules_dep(moddir: Path) -> dict[str, list[str]]:
    """module name -> [its file, then the files of everything it depends on]."""
    out: dict[str, list[str]] = {}
    dep = moddir / "modules.dep"
    if not dep.is_file():
        return out
    for line in dep.read_text().splitlines():
        target, _, deps = line.partition(":")
        out[module_name(target)] = [target, *deps.split()]
    return out


def module_name(path: str) -> str:
    base = os.path.basename(path)
    return base.split(".ko")[0].replace("-", "_")


def _builtin(moddir: Path) -> set[str]:
    f = moddir / "modules.builtin"
    return {module_name(x) for x in f.read_text().split()} if f.is_file() else set()


def load_order(kernel: Kernel) -> list[str]:
    """Module files (relative to the modules dir) in an order insmod accepts: dependencies first."""
    if not kernel.modules:
        return []
    moddir = Path(kernel.modules)
    deps = _modules_dep(moddir)
    builtin = _builtin(moddir)
    order: list[str] = []

    def visit(name: str) -> None:
        files = deps[name]
        for dep in files[1:]:
            if dep not in order:
                visit(module_name(dep))
        if files[0] not in order:
            order.append(files[0])

    for name, needed in MODULES.items():
        if name in deps:
            visit(name)
        elif needed and name not in builtin and builtin:
            raise KernelError(f"kernel {kernel.release} has no {name} (neither built in nor a module)",
                              "build it with the options listed in README.md ('Other kernels')")
    return order


def _decompressed(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".xz":
        return lzma.decompress(data)
    if path.suffix == ".gz":
        return gzip.decompress(data)
    if path.suffix == ".zst":
        return subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=True).stdout
    return data


class Cpio:
    """A newc cpio archive written in memory: what the kernel unpacks as initramfs."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"") -> None:
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0]
        header = b"070701" + b"".join(b"%08X" % f for f in fields) + name.encode() + b"\0"
        self.parts += [header, b"\0" * (-len(header) % 4), data, b"\0" * (-len(data) % 4)]
        self.ino += 1

    def dir(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def bytes(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return b"".join(self.parts)


def build(kernel: Kernel) -> Path:
    """The initramfs for `kernel`, built once and cached next to it (keyed by its content)."""
    if not BUSYBOX.is_file():
        raise KernelError(f"{BUSYBOX} is missing: the guest's init needs a static busybox", "apt-get install busybox-static")
    modules = load_order(kernel)
    init = INIT.replace("@GUEST_MOUNT@", GUEST_MOUNT).replace("@BUNDLE_MOUNT@", BUNDLE_MOUNT)
    key = hashlib.sha256("\n".join([init, *modules, str(BUSYBOX.stat().st_size)]).encode()).hexdigest()[:12]
    target = kernel.dir / f"initramfs-{key}.cpio"
    if target.exists():
        return target
    archive = Cpio()
    for d in ("bin", "dev", "proc", "sys", "modules", GUEST_MOUNT.strip("/")):
        archive.dir(d)
    archive.file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
    archive.file("init", init.encode(), 0o755)
    names = []
    for rel in modules:
        name = os.path.basename(rel).split(".ko")[0] + ".ko"
        archive.file(f"modules/{name}", _decompressed(Path(kernel.modules or "") / rel))
        names.append(name)
    archive.file("modules.load", ("\n".join(names) + "\n").encode())
    tmp = target.with_suffix(f".tmp{os.getpid()}")
    try:
        tmp.write_bytes(archive.bytes())  # uncompressed: unpacking gzip under TCG costs more than reading it
        tmp.rename(target)
    finally:
        tmp.unlink(missing_ok=True)
    for old in kernel.dir.glob("initramfs-*.cpio"):
        if old != target:
            old.unlink(missing_ok=True)
    return target


@lru_cache(maxsize=1)
def compile_lab() -> bool:
    """Write the lab's bytecode (``__pycache__/*.pyc``) next to its sources, once per process; whether all compiled.

    The guest imports the lab from the read-only share with
    PYTHONDONTWRITEBYTECODE, so a module without an up-to-date .pyc is compiled
    again on every boot, under TCG: that was about 1.5 s of each boot when the
    host had never written them (PYTHONDONTWRITEBYTECODE on the host too, or a
    fresh checkout). compileall skips files whose .pyc matches; the
    dependencies' bytecode was written by pip and Python's installer. A
    read-only install just keeps compiling in the guest (slower, same result).
    """
    import compileall

    import mptcplab

    return bool(compileall.compile_dir(Path(mptcplab.__file__).parent, quiet=2, workers=1))


BUNDLE_MOUNT = "/run/mptcplab-python"  # where the guest sees the bundle (tmpfs in the chroot)
_BUNDLE_LOCK = threading.Lock()


def _guest_tops(cache: Path) -> set[str]:
    """The top-level modules a guest job imports (a child Python imports guest_main), cached per version of the lab."""
    import json

    import mptcplab

    lab = Path(mptcplab.__file__).parent
    h = hashlib.sha256(f"{sys.executable}\0{sys.version}\0{sys.path}".encode())
    for f in sorted(lab.rglob("*.py")):
        st = f.stat()
        h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    memo = cache / f"pybundle-{h.hexdigest()[:12]}.json"
    try:
        return set(json.loads(memo.read_text()))
    except (OSError, ValueError):
        pass
    code = ("import sys, runpy; sys.argv = ['guest_main']; import mptcplab.kernels.guest_main as g; g.lazy_package('pyroute2');"
            "import mptcplab.runner, pyroute2.iproute.linux, pyroute2.netlink.diag, pyroute2.netlink.generic.mptcp;"
            "print(' '.join(sorted({n.split('.')[0] for n, m in list(sys.modules.items()) if getattr(m, '__file__', None)})))")
    env = {**os.environ, "PYTHONPATH": str(lab.parent)}
    tops = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, timeout=120).stdout.split()
    cache.mkdir(parents=True, exist_ok=True)
    for old in cache.glob("pybundle-*.json"):
        old.unlink(missing_ok=True)
    memo.write_text(json.dumps(tops))
    return set(tops)


def _bundle_sources(tops: set[str], skip: set[str]) -> dict[str, Path]:
    """zip name (``pkg/mod.pyc``) -> source, for every pure-Python top-level module or package in `tops`.

    Whole packages (a package's submodule may be imported later, during a
    run, and a package found in the zip is only searched there), without
    their tests; never one with an extension module (those cannot load from a
    zip), never the lab itself (it reads its own data files), never `skip`.
    """
    roots = [p for p in sys.path if p and os.path.isdir(p) and p not in skip]
    out: dict[str, Path] = {}
    for top in sorted(tops - {"mptcplab", "__main__"}):
        for root in roots:
            pkg, mod = Path(root, top), Path(root, f"{top}.py")
            if (pkg / "__init__.py").is_file():
                files = [f for f in pkg.rglob("*") if f.is_file() and not {"test", "tests"} & set(f.relative_to(pkg).parts[:-1])]
                if not any(f.suffix in (".so", ".pyd") for f in files):
                    out.update({f.relative_to(root).with_suffix(".pyc").as_posix(): f for f in files if f.suffix == ".py"})
                break
            if mod.is_file():
                out[f"{top}.pyc"] = mod
                break
            if pkg.is_dir() or any(Path(root).glob(f"{top}.*")):
                break  # an extension module or a namespace package: left to the share
    return out


def _pyc(src: Path) -> bytes | None:
    """The timestamp .pyc of `src`: its __pycache__ file when current, else compiled now; None if it does not compile."""
    import importlib.util
    import marshal

    st = src.stat()
    header = importlib.util.MAGIC_NUMBER + (0).to_bytes(4, "little") + \
        (int(st.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little") + (st.st_size & 0xFFFFFFFF).to_bytes(4, "little")
    try:
        cached = Path(importlib.util.cache_from_source(str(src))).read_bytes()
        if cached[:16] == header:
            return cached
    except (OSError, ValueError):
        pass
    try:
        return header + marshal.dumps(compile(src.read_bytes(), str(src), "exec", dont_inherit=True))
    except (SyntaxError, ValueError):
        return None


def python_bundle(cache: Path, skip: set[str]) -> Path | None:
    """A cpio holding ``pybundle/python.zip``: the pure-Python packages the guest imports, as .pyc, stored uncompressed.

    Appended to the initramfs; the guest's init mounts it at BUNDLE_MOUNT and
    puts the zip first on PYTHONPATH, so those ~400 modules load from memory
    instead of the share: each module read over virtiofs under TCG costs
    about 20 ms of round trips. Built from .pyc and
    cached by the sources' paths, sizes and mtimes (rebuilt after an upgrade).
    Which packages: those a child Python imports for a guest job (cached per
    version of the lab's code).
    None when nothing could be bundled; the guest then imports everything
    from the share, as before.
    """
    with _BUNDLE_LOCK:  # a matrix boots its guests from parallel threads
        try:
            tops = _guest_tops(cache)
        except (OSError, subprocess.SubprocessError):
            return None
        return _python_bundle(cache, tops, skip)


def _python_bundle(cache: Path, tops: set[str], skip: set[str]) -> Path | None:
    sources = _bundle_sources(tops, skip)
    if not sources:
        return None
    h = hashlib.sha256(sys.version.encode())
    for name, src in sorted(sources.items()):
        st = src.stat()
        h.update(f"{name}\0{src}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    target = cache / f"pybundle-{h.hexdigest()[:12]}.cpio"
    if target.exists():
        return target
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, src in sorted(sources.items()):
            data = _pyc(src)
            if data is not None:
                z.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)
    archive = Cpio()
    archive.dir("pybundle")
    archive.file("pybundle/python.zip", buf.getvalue())
    cache.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".tmp{os.getpid()}")
    try:
        tmp.write_bytes(archive.bytes())
        tmp.rename(target)
    finally:
        tmp.unlink(missing_ok=True)
    for old in cache.glob("pybundle-*.cpio"):
        if old != target:
            old.unlink(missing_ok=True)
    return target


def busybox_available() -> bool:
    return BUSYBOX.is_file() or shutil.which("busybox") is not None

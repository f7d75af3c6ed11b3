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
from functools import lru_cache
from pathlib import Path

from ...kernels.catalog import Kernel, KernelError

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
say "host filesystem mounted at $(cut -d' ' -f1 /proc/uptime) s"
chroot $H /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/run/tmp TMPDIR=/run/tmp \
    PYTHONPATH="$(arg pythonpath)" PYTHONDONTWRITEBYTECODE=1 PYTHONPROFILEIMPORTTIME="$(arg importtime)" \
    PYDANTIC_DISABLE_PLUGINS=__all__ \
    "$(arg python)" -m mptcplab.executors.guest_main < /dev/ttyS1 > /dev/ttyS1 2> /dev/ttyS0
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
    init = INIT.replace("@GUEST_MOUNT@", GUEST_MOUNT)
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


def busybox_available() -> bool:
    return BUSYBOX.is_file() or shutil.which("busybox") is not None

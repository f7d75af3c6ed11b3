"""`kernel add`: a kernel someone built, checked before it is trusted with a run.

A file is a kernel when it carries the x86 boot protocol header ("HdrS" at
0x202); its release is read from the version string the header points to,
so it can be matched with its modules. A config that says MPTCP is off is
refused here, before any guest boots; without a config the guest finds out.
"""
from __future__ import annotations

import shutil
import struct
from pathlib import Path

from ..errors import UsageError
from .catalog import Kernel, KernelError, kernels_dir
from .fetch import index_modules

HEADER_MAGIC = b"HdrS"


class NotAKernel(UsageError):
    """A file given as a kernel image that is not one."""


def image_release(path: Path) -> str:
    """The release of a bzImage (what `uname -r` will say), from its boot header."""
    try:
        with open(path, "rb") as f:
            head = f.read(0x4000 + 512)
            if len(head) < 0x210 or head[0x202:0x206] != HEADER_MAGIC:
                raise NotAKernel(f"{path}: not a Linux kernel image (no x86 boot header)", "give a bzImage, e.g. arch/x86/boot/bzImage")
            (offset,) = struct.unpack_from("<H", head, 0x20E)
            f.seek(offset + 0x200)
            text = f.read(256).split(b"\0", 1)[0].decode(errors="replace")
    except IsADirectoryError:
        raise NotAKernel(f"{path}: is a directory, not a kernel image") from None
    except FileNotFoundError:
        raise NotAKernel(f"{path}: no such file") from None
    release = text.split(" ", 1)[0]
    if not release or "/" in release:
        raise NotAKernel(f"{path}: the boot header carries no kernel version")
    return release


def _modules_dir(given: Path, release: str) -> Path:
    for candidate in (given / "lib/modules" / release, given / release, given):
        if (candidate / "modules.order").is_file() or (candidate / "kernel").is_dir():
            return candidate
    raise UsageError(f"--modules {given}: no modules of {release} there",
                     f"give INSTALL_MOD_PATH of 'make modules_install' (holding lib/modules/{release})")


def _config_near(image: Path) -> Path | None:
    for parent in image.resolve().parents[:4]:  # arch/x86/boot/bzImage -> the tree's .config
        if (parent / ".config").is_file():
            return parent / ".config"
    return None


def add(image: Path, modules: Path | None = None, config: Path | None = None) -> Kernel:
    release = image_release(image)
    config = config or _config_near(image)
    if config is not None and not config.is_file():
        raise UsageError(f"--config {config}: no such file")
    if config is not None:
        text = config.read_text(errors="replace")
        if "CONFIG_MPTCP=y" not in text:
            raise KernelError(f"{image}: kernel {release} was built without MPTCP (CONFIG_MPTCP=y missing from {config})",
                              "enable CONFIG_MPTCP and CONFIG_INET_MPTCP_DIAG; see README.md, 'Other kernels'")
    dest = kernels_dir() / release
    if (dest / "kernel.json").exists() and not Kernel.model_validate_json((dest / "kernel.json").read_text()).origin.startswith("added"):
        raise UsageError(f"kernel {release} is already in the cache as a Debian kernel", "build with a LOCALVERSION of your own")
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    try:
        shutil.copyfile(image, dest / "vmlinuz")
        if config is not None:
            shutil.copyfile(config, dest / "config")
        mods = None
        if modules is not None:
            src = _modules_dir(modules, release)
            shutil.copytree(src, dest / "lib/modules" / release, symlinks=False, ignore=shutil.ignore_patterns("build", "source"))
            index_modules(dest, release)
            mods = str(dest / "lib/modules" / release)
        kernel = Kernel(release=release, version="custom", origin=f"added from {image.resolve()}", image=str(dest / "vmlinuz"), flavour="custom",
                        modules=mods, config=str(dest / "config") if config is not None else None)
        kernel.save()
        return kernel
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise

"""Files the commands write (`export -o`, `run --plot`, `plot -o`, `compare --plot`/`-o`, `history --plot`,
and the directory `report OUT` fills).

One rule for every output path: it is checked before any work is done (a
run's traffic, a query, a figure), by really creating the file, and anything
that stops it being written — a missing directory, /proc, a read-only file
system, a directory given as the file, no permission — is one line and exit 2
(an unusable path), never a traceback. Writing later goes through `writing`,
so a failure that only shows then (a full disk) is one line too.
"""
from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import UsageError

#: what matplotlib writes, by file name suffix (a name without a suffix is a PNG)
FIGURE_SUFFIXES = (".png", ".svg", ".pdf", ".jpg", ".jpeg", ".webp", ".eps", ".ps", ".tif", ".tiff")


def _reason(e: OSError, path: Path) -> str:
    if e.errno == errno.EROFS:
        return f"{path.parent} is on a read-only file system"
    if e.errno in (errno.EACCES, errno.EPERM):
        return f"no permission to write in {path.parent}"
    if e.errno == errno.ENOENT:  # the directory exists, but it takes no new files (/proc, /sys)
        return f"{path.parent} does not accept new files"
    if e.errno == errno.EISDIR:
        return "it is a directory"
    return e.strerror or str(e)


def check_output(path: Path | str, option: str, suffixes: tuple[str, ...] | None = None) -> Path:
    """`path` if a file can be written there, else UsageError (exit 2) naming `option` and why.

    The check is real: an existing file is opened for appending (nothing is
    truncated), a new one is created and removed again. `suffixes` (e.g.
    FIGURE_SUFFIXES) limits the file name's suffix; a name without one is allowed.
    """
    path = Path(path)
    where = f"{option} {path}"
    if suffixes is not None and path.suffix and path.suffix.lower() not in suffixes:
        raise UsageError(f"{where}: cannot write a {path.suffix} file",
                         f"use one of {', '.join(suffixes[:3])} (or {', '.join(suffixes[3:])})")
    if path.is_dir():
        raise UsageError(f"{where}: is a directory", "give a file name")
    parent = path.parent
    if not parent.exists():
        raise UsageError(f"{where}: the directory {parent} does not exist", "create it first or choose another path")
    if not parent.is_dir():
        raise UsageError(f"{where}: {parent} is not a directory", "choose another path")
    existed = path.exists()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND if existed else os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as e:
        raise UsageError(f"{where}: cannot be written: {_reason(e, path)}", "choose another path") from None
    os.close(fd)
    if not existed:
        path.unlink(missing_ok=True)
    return path


def check_output_dir(path: Path | str, option: str) -> Path:
    """`path` if it is, or can be created as, a directory that takes new files; else UsageError (exit 2).

    Nothing is left behind: an existing directory gets a scratch file, the
    nearest existing parent of a missing one a scratch directory, both removed.
    """
    path = Path(path)
    where = f"{option} {path}"
    if path.exists() and not path.is_dir():
        raise UsageError(f"{where}: is a file", "give a directory (it is created if missing)")
    probe_in = path
    while not probe_in.exists():
        probe_in = probe_in.parent
    if not probe_in.is_dir():
        raise UsageError(f"{where}: {probe_in} is not a directory", "choose another path")
    try:
        if probe_in == path:
            fd, scratch = tempfile.mkstemp(dir=path, prefix=".mptcplab-probe-")
            os.close(fd)
            os.unlink(scratch)
        else:
            os.rmdir(tempfile.mkdtemp(dir=probe_in, prefix=".mptcplab-probe-"))
    except OSError as e:
        raise UsageError(f"{where}: cannot be written: {_reason(e, probe_in / 'x')}", "choose another path") from None
    return path


@contextmanager
def writing(path: Path | str, option: str) -> Iterator[Path]:
    """Write `path` (a file, or files under a directory) inside this block; an OSError (disk full, a path that
    became unusable) becomes one UsageError line naming the file that failed."""
    path = Path(path)
    try:
        yield path
    except OSError as e:
        failed = Path(e.filename) if isinstance(e.filename, str) else path
        what = f" ({failed})" if failed != path else ""
        raise UsageError(f"{option} {path}: cannot be written{what}: {_reason(e, failed)}", "choose another path") from None

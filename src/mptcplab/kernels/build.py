"""`kernel build`: a kernel built from source with the lab's config fragment, registered in the kernel cache.

A build has three inputs: a source (a Debian ``linux-source`` release fetched and
unpacked by :mod:`.source`, a tarball, or a kernel tree directory, optionally at a
git ref built in a worktree the lab owns), a flavour (:data:`FLAVOURS`: ``uml``,
a User-Mode Linux ``linux`` binary; ``qemu``, a bzImage for the QEMU guest) and the
config fragment (``configs/common.config`` + ``configs/<flavour>.config`` + the
user's ``--config-extra``) applied on top of ``defconfig``. After ``olddefconfig``
every option the fragment asks for is checked in ``.config``.

The build is out of tree (``make O=``) in ``<cache>/sources/<release>/build-<flavour>/``
for an unpacked source and ``<cache>/builds/<tree>-<flavour>/`` for other trees (:func:`build_dir_for`),
which a repeated build of the same tree reuses (incremental; ccache when it is
installed, shared across releases); ``build.log`` there keeps make's whole output. The result is copied
into ``<cache>/kernels/<name>/`` (``linux`` or ``vmlinuz``, ``config``,
``build.json`` with the source, commit or version, config hash, patches and wall
time, and ``kernel.json``), so later builds of the same tree never change a
kernel already registered.

Patches (:data:`PATCHES`) are applied only to trees the lab owns (the cache's
unpacked sources and its worktrees), never to a user's directory, and the
kernel's metadata lists those applied.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import EnvironmentProblem, UsageError
from .catalog import Kernel, KernelError, cache_root, kernels_dir
from .fetch import Waits, file_lock
from .source import _waits, extract, fetch_source, sources_dir, tree_version

CONFIGS = Path(__file__).parent / "configs"
PATCHES_DIR = Path(__file__).parent / "patches"


@dataclass(frozen=True)
class Flavour:
    """One way of building a kernel: its make ARCH, target, image and the fragment added to common.config."""

    name: str
    arch: str  # make ARCH=
    target: str  # the make target that builds the image
    image: str  # the image, relative to the build directory
    installed_as: str  # its name in the kernel cache
    describe: str


FLAVOURS: dict[str, Flavour] = {
    "uml": Flavour("uml", "um", "linux", "linux", "linux", "a User-Mode Linux binary (runs as a host process; time travel)"),
    "qemu": Flavour("qemu", "x86_64", "bzImage", "arch/x86/boot/bzImage", "vmlinuz",
                    "a bzImage for the lab's QEMU guest (virtio, virtiofs, everything built in)"),
}

#: tool -> Debian package, for the refusal that names what to install (exit 3)
BUILD_TOOLS = {"make": "make", "gcc": "gcc", "flex": "flex", "bison": "bison", "bc": "bc", "tar": "tar", "xz": "xz-utils",
               "patch": "patch", "perl": "perl"}
#: header -> Debian package, per flavour
BUILD_HEADERS = {"qemu": {"/usr/include/gelf.h": "libelf-dev", "/usr/include/openssl/opensslv.h": "libssl-dev"},
                 "uml": {}}


@dataclass(frozen=True)
class Patch:
    """A fix applied at build time to a lab-owned tree when `needed` says the tree lacks it."""

    name: str
    flavours: tuple[str, ...]
    file: Path
    needed: Callable[[Path], bool]
    why: str


def _fixed_fp_size(tree: Path) -> bool:
    """UML with the fixed 2696-byte FPU state (up to 6.12), not yet patched."""
    try:
        offsets = (tree / "arch/x86/um/user-offsets.c").read_text(errors="replace")
        regs = (tree / "arch/x86/um/os-Linux/registers.c").read_text(errors="replace")
    except OSError:
        return False
    return "DEFINE_LONGS(HOST_FP_SIZE, 2696)" in offsets and "host_fp_size" not in regs


PATCHES: tuple[Patch, ...] = (
    Patch("uml-host-fp-size", ("uml",), PATCHES_DIR / "uml-host-fp-size" / "registers.patch", _fixed_fp_size,
          "UML <= 6.12 restores the FPU state with a fixed 2696-byte buffer; a host with AMX wants its full CPUID 0xD size"),
)


# -- the fragment --------------------------------------------------------------

_OPTION = re.compile(r"^(?:CONFIG_(\w+)=(.*)|# CONFIG_(\w+) is not set)\s*$")


def read_fragment(path: Path) -> dict[str, str]:
    """A Kconfig fragment: option (without ``CONFIG_``) -> value (``y``, ``m``, a string or number, ``n`` for
    "is not set"). Other comment lines and blank lines are ignored. Raises UsageError for a line that is neither."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise UsageError(f"config fragment {path}: no such file", "give a file of CONFIG_X=y lines") from None
    except IsADirectoryError:
        raise UsageError(f"config fragment {path}: a directory, not a file", "give a file of CONFIG_X=y lines") from None
    except UnicodeDecodeError:
        raise UsageError(f"config fragment {path}: not a text file", "give a file of CONFIG_X=y lines") from None
    except OSError as e:
        raise UsageError(f"config fragment {path}: {e.strerror}", "give a readable file of CONFIG_X=y lines") from None
    out: dict[str, str] = {}
    for n, line in enumerate(lines, 1):
        m = _OPTION.match(line.strip())
        if m:
            out[m.group(1) or m.group(3)] = m.group(2) if m.group(1) else "n"
        elif line.strip() and not line.lstrip().startswith("#"):
            raise UsageError(f"config fragment {path}:{n}: {line.strip()[:60]!r} is not CONFIG_X=value or '# CONFIG_X is not set'")
    return out


def fragment(flavour: str, extra: Path | None = None) -> dict[str, str]:
    """What a build of `flavour` asks for: common.config, then <flavour>.config, then `extra` (later files win)."""
    wanted = read_fragment(CONFIGS / "common.config")
    wanted.update(read_fragment(CONFIGS / f"{flavour}.config"))
    if extra is not None:
        wanted.update(read_fragment(extra))
    return wanted


def config_values(text: str) -> dict[str, str]:
    """A .config's options: name -> value (``n`` for "is not set"), as :func:`read_fragment` reads them."""
    out = {}
    for line in text.splitlines():
        m = _OPTION.match(line.strip())
        if m:
            out[m.group(1) or m.group(3)] = m.group(2) if m.group(1) else "n"
    return out


def unmet(config_text: str, wanted: dict[str, str]) -> list[str]:
    """The options of `wanted` that `config_text` (a .config) does not have as asked: ``MPTCP`` for an option
    asked ``=y`` that is not, ``!UML_RANDOM`` for one asked unset that is set, ``HZ=100`` for a value."""
    have = config_values(config_text)
    bad = []
    for opt, value in wanted.items():
        got = have.get(opt, "n")
        if value == "n":
            if got not in ("n", ""):
                bad.append(f"!{opt}")
        elif got != value:
            bad.append(opt if value == "y" else f"{opt}={value}")
    return bad


def check_config(config: Path, wanted: dict[str, str]) -> None:
    """Raise KernelError (exit 3) in one line naming the requested options that did not stick."""
    bad = unmet(config.read_text(errors="replace"), wanted)
    if bad:
        raise KernelError(f"{len(bad)} requested option{'s' if len(bad) > 1 else ''} did not stick after olddefconfig "
                          f"({config}): {', '.join(bad)}",
                          "a dependency is missing or the option does not exist in this tree; see make menuconfig")


# -- the source ----------------------------------------------------------------

@dataclass
class Tree:
    """A kernel tree ready to build: where it is, what it is, and whether the lab may patch it."""

    path: Path
    key: str  # names its build directory
    version: str  # the kernel version its Makefile states
    source: str  # one line: where it came from
    default_name: str  # what the kernel is called unless --name says otherwise
    owned: bool  # the lab's own copy (patches allowed)
    commit: str | None = None
    info: dict = field(default_factory=dict)


def tree_problem(path: Path) -> str | None:
    """Why `path` is not the top of a Linux source tree (no Makefile and Kconfig, or a Makefile that states no
    kernel VERSION), or None when it is one."""
    if not (path / "Makefile").is_file() or not (path / "Kconfig").is_file():
        return "no Makefile and Kconfig at its top"
    if not tree_version(path):
        return "its Makefile states no kernel VERSION"
    return None


def _git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise UsageError(f"git {' '.join(args[:2])} in {repo}: {(proc.stderr.strip().splitlines() or ['failed'])[-1]}")
    return proc.stdout.strip()


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _worktree(repo: Path, ref: str, waits: Waits) -> Tree:
    """`ref` of the git repository `repo`, checked out in the lab's own worktree (one per repository, reused so that
    builds of successive commits are incremental); the user's working tree, index and branches are never written to
    (git records the worktree under the repository's .git/worktrees, as for any `git worktree add`)."""
    if shutil.which("git") is None:
        raise EnvironmentProblem("git is not installed: --ref builds a commit in a git worktree", "apt-get install git")
    try:
        top = Path(_git(repo, "rev-parse", "--show-toplevel"))
    except UsageError:
        raise UsageError(f"--ref {ref}: {repo} is not a git repository",
                         "give the directory of a git checkout of the kernel, or build the directory as it is without --ref") from None
    try:
        commit = _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except UsageError:
        commit = ""
    if not commit:
        raise UsageError(f"--ref {ref}: no such commit in {top}", "give a branch, tag or commit of that repository")
    key = f"{top.name}-{_short_hash(str(top.resolve()))}"
    wt = cache_root() / "worktrees" / key
    with file_lock(wt.parent / f".{key}.lock", waits, f"checking out in {wt}"):
        if not (wt / ".git").exists():
            shutil.rmtree(wt, ignore_errors=True)
            _git(top, "worktree", "prune")
            with waits.waiting(f"git worktree of {top} at {commit[:12]} in {wt}"):
                _git(top, "worktree", "add", "--detach", "--force", str(wt), commit)
        else:
            with waits.waiting(f"checking out {commit[:12]} in {wt}"):
                _git(wt, "checkout", "--detach", "--force", commit)
                _git(wt, "clean", "-fdq")
    subject = _git(wt, "log", "-1", "--format=%s", commit)
    version = tree_version(wt)
    return Tree(wt, key, version, f"git {top} {commit[:12]} ({subject[:60]})", f"{version}-{commit[:12]}", True, commit,
                {"repository": str(top), "ref": ref, "commit": commit, "subject": subject})


def resolve_tree(source: str, ref: str | None, waits: Waits) -> Tree:
    """The tree SOURCE means: a directory (at `ref` in a lab worktree when given), a tarball, or a Debian source release.

    Raises UsageError (exit 2) for a directory that is no kernel tree, `ref` without a git directory, an unknown
    release (naming the nearest), KernelError (exit 3) when the archive cannot be read.
    """
    if not source.strip():
        raise UsageError("SOURCE is empty", "give a Debian source release (6.12.117), a tarball or a kernel tree directory")
    path = Path(source).expanduser()
    if path.is_dir():
        problem = tree_problem(path)
        if problem:
            raise UsageError(f"{path}: not a kernel tree ({problem})", "give the top of a Linux source tree")
        if ref:
            return _worktree(path.resolve(), ref, waits)
        version = tree_version(path)
        # "-dir": never the key of the lab's worktree of the same repository (`_worktree`), whose commits build in
        # their own directory, so building a checkout as it is and at a --ref never share objects or a config
        key = f"{path.resolve().name}-{_short_hash(str(path.resolve()))}-dir"
        commit = None
        if (path / ".git").exists() and shutil.which("git"):
            try:
                commit = _git(path, "rev-parse", "HEAD")
            except UsageError:
                commit = None
        return Tree(path.resolve(), key, version, f"directory {path.resolve()}" + (f" at {commit[:12]}" if commit else ""),
                    f"{version}-{commit[:12] if commit else path.resolve().name}", False, commit, {"directory": str(path.resolve())})
    if ref:
        raise UsageError(f"--ref {ref} needs SOURCE to be a git checkout of a kernel tree, not {source!r}",
                         "give the directory of your kernel's git checkout as SOURCE")
    if path.is_file() or "/" in source or source.endswith((".tar.xz", ".tar.gz", ".tar")):
        if not path.is_file():
            raise UsageError(f"{source}: no such file or directory", "give a Debian source release (6.12.117), a tarball or a tree")
        tree = extract(path, progress=waits)
        problem = tree_problem(tree)
        if problem:  # unpacked for nothing: leave no copy behind (only a copy of the lab's own, under sources/tarballs)
            if tree.parent.parent == (sources_dir() / "tarballs").resolve():
                shutil.rmtree(tree.parent, ignore_errors=True)
            raise UsageError(f"{source}: not a kernel source tarball (unpacked: {problem})",
                             "give a tarball of a Linux source tree (e.g. linux-6.12.117.tar.xz)")
        version = tree_version(tree)
        return Tree(tree, tree.parent.name, version, f"tarball {path.resolve()}", f"{version}-{path.name.split('.tar')[0]}", True, None,
                    {"tarball": str(path.resolve())})
    tarball = fetch_source(source, waits)
    meta = json.loads((tarball.parent / "source.json").read_text())
    tree = extract(tarball, progress=waits)
    return Tree(tree, f"debian-{meta['upstream']}", meta["upstream"],
                f"debian {meta['suite']} {meta['package']} {meta['version']}", meta["upstream"], True, None,
                {"debian": {k: meta[k] for k in ("package", "version", "suite", "sha256") if k in meta}})


# -- the build -----------------------------------------------------------------


def build_dir_for(tree: Tree, flav: Flavour) -> Path:
    """Where `tree` is built for `flav` (make O=).

    A tree unpacked in the cache (``sources/<release>/tree``) builds beside it, in
    ``sources/<release>/build-<flavour>``: every release's build then reaches its sources by the same relative
    path (``../tree/...``), and ccache, which hashes paths relative to the cache (CCACHE_BASEDIR), reuses one
    release's objects for the next wherever their files agree. Measured, that is little between stable releases
    (6.12.107 after 6.12.95: 314 s against 318 s; common headers differ), but a release compiled once rebuilds
    from ccache in a new build directory. Any other tree (a worktree
    at a ref, a user's directory) builds in ``builds/<key>-<flavour>``. A build directory an earlier version of
    the lab left in ``builds/`` is moved beside its tree (same filesystem; Kbuild names the source tree by its
    absolute path, so the move keeps the build incremental).
    """
    old = cache_root() / "builds" / f"{tree.key}-{flav.name}"
    if tree.path.parent.parent.resolve() != sources_dir().resolve():
        return old
    new = tree.path.parent / f"build-{flav.name}"
    if old.is_dir() and not new.exists():
        old.rename(new)
    return new

def missing_packages(flavour: str) -> list[str]:
    """The Debian packages a build of `flavour` needs and this machine lacks (tools on PATH, headers), in order."""
    missing = [pkg for tool, pkg in BUILD_TOOLS.items() if shutil.which(tool) is None]
    missing += [pkg for header, pkg in BUILD_HEADERS.get(flavour, {}).items() if not Path(header).is_file()]
    return list(dict.fromkeys(missing))


def check_tools(flavour: str) -> None:
    """Raise EnvironmentProblem (exit 3) naming the Debian packages a build of `flavour` lacks."""
    missing = missing_packages(flavour)
    if missing:
        raise EnvironmentProblem(f"building a kernel needs {', '.join(missing)}, not installed",
                                 f"apt-get install {' '.join(missing)} (or make install)")


CCACHE_MASQUERADE = Path("/usr/lib/ccache")  # Debian's ccache package: `gcc` there is ccache posing as gcc


def ccache_dir() -> Path | None:
    """The directory of ccache's compiler links when ccache is installed, else None.

    ccache goes in front of PATH rather than into ``CC=``: Kbuild records every
    object's command line, so ``CC=ccache gcc`` in one build and ``gcc`` in the
    next (ccache installed or removed in between) would rebuild the whole tree.
    """
    return CCACHE_MASQUERADE if (CCACHE_MASQUERADE / "gcc").exists() and shutil.which("ccache") else None


def _make_env() -> dict[str, str]:
    """make's environment: a fixed build identity (the same tree gives the same `uname -v`), no "+" suffix,
    and ccache (when installed) with its cache in the lab's cache, where CI keeps it between runs; paths under
    the cache are hashed relative to it, so two trees of the cache share objects where their files agree."""
    env = dict(os.environ)
    env.update(KBUILD_BUILD_USER="mptcplab", KBUILD_BUILD_HOST="mptcplab", KBUILD_BUILD_VERSION="1",
               KBUILD_BUILD_TIMESTAMP="2026-01-01", LOCALVERSION="", LC_ALL="C")
    masquerade = ccache_dir()
    if masquerade is not None:
        env["PATH"] = f"{masquerade}:{env.get('PATH', '/usr/bin:/bin')}"
        env.setdefault("CCACHE_DIR", str(cache_root() / "ccache"))
        env.setdefault("CCACHE_BASEDIR", str(cache_root()))
        env.setdefault("CCACHE_NOHASHDIR", "1")
        env.setdefault("CCACHE_MAXSIZE", "4G")
    return env


def _make_args(tree: Path, build_dir: Path, flav: Flavour) -> list[str]:
    return ["make", "-C", str(tree), f"O={build_dir}", f"ARCH={flav.arch}"]


def _run_quiet(args: list[str], log: Path, what: str) -> None:
    with open(log, "a") as f:
        f.write(f"$ {' '.join(args)}\n")
        f.flush()
        proc = subprocess.run(args, stdout=f, stderr=subprocess.STDOUT, env=_make_env())
    if proc.returncode != 0:
        raise KernelError(f"{what} failed: {_last_error(log)}", f"the whole output is in {log}")


def _last_error(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    errors = [line.strip() for line in lines if re.search(r"\berror\b|Error \d|No rule to make", line)]
    return (errors[0] if errors else (lines[-1].strip() if lines else "(no output)"))[:240]


def _configure(tree: Path, build_dir: Path, flav: Flavour, wanted: dict[str, str], localversion: str, log: Path) -> None:
    """defconfig, the fragment with scripts/config, olddefconfig; then the check."""
    make = _make_args(tree, build_dir, flav)
    _run_quiet([*make, "defconfig"], log, "make defconfig")
    args = [str(tree / "scripts/config"), "--file", str(build_dir / ".config")]
    for opt, value in {**wanted, "LOCALVERSION": f'"{localversion}"'}.items():
        if value == "y":
            args += ["--enable", opt]
        elif value == "m":
            args += ["--module", opt]
        elif value == "n":
            args += ["--disable", opt]
        elif value.startswith('"'):
            args += ["--set-str", opt, value.strip('"')]
        else:
            args += ["--set-val", opt, value]
    _run_quiet(args, log, "scripts/config")
    _run_quiet([*make, "olddefconfig"], log, "make olddefconfig")
    check_config(build_dir / ".config", wanted)


def _apply_patches(tree: Tree, flav: Flavour, waits: Waits) -> tuple[list[str], list[str]]:
    """(applied, skipped with why) for the patches this tree and flavour need.

    An applied patch leaves ``.mptcplab-patched-<name>`` in the tree, a copy of what was applied: a tree patched
    by an older version of the patch is reverted with that copy and patched again.
    """
    applied, skipped = [], []
    for p in PATCHES:
        if flav.name not in p.flavours:
            continue
        text = p.file.read_text()
        marker = tree.path / f".mptcplab-patched-{p.name}"
        if marker.is_file():
            if marker.read_text() == text:
                applied.append(p.name)
                continue
            if tree.owned:
                _patch(tree, p, ["-R", "-i", str(marker)], waits, "reverting the older")
                marker.unlink()
        if not p.needed(tree.path):
            continue
        if not tree.owned:
            skipped.append(f"{p.name}: {tree.path} is yours (build it with --ref to get the lab's worktree patched)")
            continue
        _patch(tree, p, ["--forward", "-i", str(p.file)], waits, "applying")
        marker.write_text(text)
        applied.append(p.name)
    return applied, skipped


def _patch(tree: Tree, p: Patch, args: list[str], waits: Waits, doing: str) -> None:
    with waits.waiting(f"{doing} {p.name} to {tree.path}"):
        proc = subprocess.run(["patch", "-p1", "--batch", "--no-backup-if-mismatch", *args], cwd=tree.path,
                              capture_output=True, text=True)
    if proc.returncode != 0:
        raise KernelError(f"{doing} patch {p.name} failed in {tree.path}: {(proc.stdout.strip().splitlines() or ['?'])[-1]}",
                          f"{p.why}; report it with the kernel version {tree.version}")


_CC = re.compile(r"^\s+(?:CC|AS|LD|AR|HOSTCC|UPD|GEN|LDS|CPP|OBJCOPY|SYNC)(?:\s+\[M\])?\s+(\S+)")


def _compile(tree: Path, build_dir: Path, flav: Flavour, jobs: int, log: Path, waits: Waits, label: str) -> int:
    """make -jN TARGET, its output into `log`, a progress line from it; the number of objects compiled."""
    args = [*_make_args(tree, build_dir, flav), f"-j{jobs}", flav.target]
    compiled, last, t0, said = 0, "", time.monotonic(), time.monotonic()
    with open(log, "a", buffering=1) as f, waits.waiting(f"building {label} ({flav.target}, -j{jobs})") as detail:
        f.write(f"$ {' '.join(args)}\n")
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_make_env(),
                                start_new_session=True)
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                f.write(line)
                m = _CC.match(line)
                if m:
                    compiled += line.lstrip().startswith("CC")
                    last = m.group(1)
                    detail(f"{compiled} compiled, {last}")
                if time.monotonic() - said >= 60:
                    said = time.monotonic()
                    waits.say(f"building {label}: {compiled} compiled in {said - t0:.0f} s, now {last}")
            rc = proc.wait()
        except BaseException:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            proc.wait()
            raise
    if rc != 0:
        raise KernelError(f"building {label} failed: {_last_error(log)}", f"the whole output is in {log}")
    return compiled


def _config_hash(config: Path) -> str:
    """sha256 of a .config without its comment lines (the header names the version and date)."""
    lines = [line for line in config.read_text(errors="replace").splitlines() if line and not line.startswith("# ") or
             (line.startswith("# CONFIG_") and line.endswith(" is not set"))]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def build(source: str | Path, flavour: str = "uml", config_extra: Path | None = None, name: str | None = None,
          ref: str | None = None, progress: Waits | Callable[[str], object] | None = None, jobs: int | None = None) -> Kernel:
    """Build a kernel from `source` and register it in the kernel cache; the :class:`~.catalog.Kernel`.

    `source`: a Debian source release (``6.12.117``, ``6.12``, ``6.12.117-1``), a tarball, or a kernel tree
    directory (with `ref`, that commit in the lab's worktree). `flavour`: a key of :data:`FLAVOURS`.
    `config_extra`: a fragment applied after the lab's. `name`: the kernel's name in the cache (default
    ``<version>-<flavour>`` for a Debian release, e.g. ``6.12.117-uml``; ``<version>-<commit>-<flavour>`` for a
    ref or a git directory, ``<version>-<directory or tarball name>-<flavour>`` otherwise).
    `jobs`: make -j (default: the CPUs this process may use).

    Raises UsageError (exit 2: bad flavour, name, source or fragment), EnvironmentProblem (exit 3: build tools
    missing), KernelError (exit 3: the archive, a patch, the configuration check or the build failed).
    """
    waits = _waits(progress)
    flav = FLAVOURS.get(flavour)
    if flav is None:
        raise UsageError(f"--flavour {flavour!r}: choose {' or '.join(FLAVOURS)}")
    if config_extra is not None:
        config_extra = Path(config_extra)
        if not config_extra.is_file():
            what = "a directory, not a file" if config_extra.is_dir() else "no such file"
            raise UsageError(f"--config-extra {config_extra}: {what}", "give a file of CONFIG_X=y lines")
    wanted = fragment(flavour, config_extra)
    if ref is not None and not ref.strip():
        raise UsageError("--ref is empty", "give a branch, tag or commit of the tree, or leave --ref out to build it as it is")
    if name is not None:
        _check_name(name, flav)  # before anything is fetched, unpacked or checked out
    check_tools(flavour)
    t0 = time.monotonic()
    tree = resolve_tree(str(source), ref, waits)
    if name is None:  # the default name is known only now: check it as a given one was checked above
        name = f"{tree.default_name}-{flav.name}"
        _check_name(name, flav)
    dest = kernels_dir() / name
    build_dir = build_dir_for(tree, flav)
    log = build_dir / "build.log"
    with file_lock(build_dir.parent / f".{build_dir.name}.lock", waits, f"building in {build_dir}"):
        build_dir.mkdir(parents=True, exist_ok=True)
        log.write_text(f"mptcplab kernel build {source} --flavour {flav.name}: {tree.source}\n")
        applied, skipped = _apply_patches(tree, flav, waits)
        for s in skipped:
            waits.say(f"warning: patch not applied: {s}")
        inputs = _short_hash(json.dumps([wanted, flav.name, flav.arch, f"-{flav.name}"], sort_keys=True))
        stamp = build_dir / ".mptcplab-config-inputs"
        reconfigured = not (build_dir / ".config").is_file() or not stamp.is_file() or stamp.read_text() != inputs
        if reconfigured:
            with waits.waiting(f"configuring {name} (defconfig + the lab's fragment, {len(wanted)} options)"):
                _configure(tree.path, build_dir, flav, wanted, f"-{flav.name}", log)
            stamp.write_text(inputs)
        jobs = jobs or len(os.sched_getaffinity(0))
        t_make = time.monotonic()
        compiled = _compile(tree.path, build_dir, flav, jobs, log, waits, name)
        make_s = time.monotonic() - t_make
        check_config(build_dir / ".config", wanted)  # syncconfig may have changed it while building
        image = build_dir / flav.image
        if not image.is_file():
            raise KernelError(f"make {flav.target} succeeded but left no {image}", f"see {log}")
        release = (build_dir / "include/config/kernel.release").read_text().strip() if (build_dir / "include/config/kernel.release").is_file() else ""
        info = {
            "name": name, "flavour": flav.name, "arch": flav.arch, "source": tree.source, "version": tree.version,
            "commit": tree.commit, **tree.info, "uname_release": release,
            "config_hash": _config_hash(build_dir / ".config"), "fragment": wanted, "config_extra":
            str(Path(config_extra).resolve()) if config_extra else None, "patches": applied, "patches_skipped": skipped,
            "build_dir": str(build_dir), "log": str(log), "jobs": jobs, "ccache": ccache_dir() is not None,
            "reconfigured": reconfigured, "compiled": compiled, "make_s": round(make_s, 1),
            "wall_s": round(time.monotonic() - t0, 1), "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        kernel = _install(image, build_dir / ".config", info, flav, dest)
    waits.say(f"built {name} in {info['wall_s']:.0f} s ({compiled} objects compiled"
              + (", patches: " + ", ".join(applied) if applied else "") + f"): {kernel.image}")
    return kernel


def _check_name(name: str, flav: Flavour) -> None:
    """Raise UsageError (exit 2) when `name` cannot name a kernel built for `flav`: not one path component of
    printable characters, or already the name of a cached kernel that is not a build of this flavour (a Debian
    kernel, or a build of the other flavour: a rebuild of the same flavour replaces it, as intended)."""
    if not name:
        raise UsageError("--name is empty", "give a name such as 6.12.117-uml-mine, or leave --name out")
    bad = ("'/'" if "/" in name else "a space" if any(c.isspace() for c in name) else
           "a leading '.'" if name.startswith(".") else "a control character" if not name.isprintable() else None)
    if bad:
        raise UsageError(f"--name {name!r}: a kernel name is one word and may not hold {bad}", "e.g. --name 6.12.117-uml-mine")
    meta = kernels_dir() / name / "kernel.json"
    if meta.exists():
        try:
            existing = Kernel.model_validate_json(meta.read_text())
        except (OSError, ValueError):
            return  # an unreadable entry is replaced by the build
        if existing.flavour != flav.name:
            what = f"a {existing.flavour} kernel" + (f" ({existing.origin})" if existing.origin else "")
            raise UsageError(f"kernel {name} is already in the cache as {what}",
                             "choose another --name (mptcplab kernel list --cached shows the names in use)")


def _install(image: Path, config: Path, info: dict, flav: Flavour, dest: Path) -> Kernel:
    """Copy the image, config and metadata into the kernel cache (staged, then renamed into place)."""
    staging = dest.parent / f".staging-{dest.name}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        shutil.copy2(image, staging / flav.installed_as)
        shutil.copyfile(config, staging / "config")
        (staging / "build.json").write_text(json.dumps(info, indent=2) + "\n")
        upstream = info["version"] or info["uname_release"]
        kernel = Kernel(release=dest.name, version=upstream, origin=f"built from {info['source']}", flavour=flav.name,
                        image=str(dest / flav.installed_as), config=str(dest / "config"), source=info["source"],
                        build=str(dest / "build.json"))
        (staging / "kernel.json").write_text(kernel.model_dump_json(indent=2) + "\n")
        old = dest.parent / f".old-{dest.name}-{os.getpid()}"
        if dest.exists():
            dest.rename(old)
        staging.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
        return kernel
    finally:
        shutil.rmtree(staging, ignore_errors=True)

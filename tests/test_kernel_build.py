"""Kernels built from source: which Debian source release a name means, the lab's config fragment, the refusals
of `kernel build`, and (heavy) a real UML build booted to its init.

Source releases are resolved against a recorded index (tests/data/debian-kernels/*.sources.Packages: the
real `linux-source-X.Y` stanzas of the six suites), so the rule is tested without the network.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

import mptcplab.kernels.build
from mptcplab.errors import UsageError
from mptcplab.kernels.build import _OPTION, check_config, fragment, resolve_tree, unmet
from mptcplab.kernels.catalog import Kernel, KernelError, parse_sources, resolve, resolve_name
from mptcplab.kernels.fetch import SUITES, Waits, source_stanzas
from mptcplab.kernels.source import UnknownSource, nearest, resolve_source

from .conftest import cli, cli_in_process, heavy, light, requires_root

INDEX = Path(__file__).parent / "data" / "debian-kernels"


@pytest.fixture(scope="module")
def sources():
    return parse_sources({suite: (INDEX / f"{suite}.sources.Packages").read_text() for suite in SUITES})


@light
def test_the_recorded_index_offers_twelve_source_releases_in_version_order(sources):
    assert [s.upstream for s in sources] == ["6.1.170", "6.1.176", "6.12.95", "6.12.107", "6.12.117", "7.2.6", "7.2.9",
                                             "7.2.11", "7.2.12", "7.2.13", "7.3~rc7", "7.3.4"]
    s = next(s for s in sources if s.upstream == "6.12.117")
    assert (s.package, s.version, s.suite, s.series) == ("linux-source-6.12", "6.12.117-1", "trixie", "6.12")
    assert s.size == 153474904


@light
def test_source_stanzas_keeps_only_the_source_packages(sources):
    recorded = (INDEX / "trixie.sources.Packages").read_text()
    noise = ("Package: linux-source\nVersion: 6.12.117-1\nDepends: linux-source-6.12 (= 6.12.117-1)\n\n"
             "Package: linux-image-6.12.117+deb13-cloud-amd64\nVersion: 6.12.117-1\n\nPackage: zsh\nVersion: 5.9-8\n\n")
    whole = (noise + recorded.strip() + "\n\n" + noise).encode()
    assert parse_sources({"trixie": source_stanzas(whole)}) == parse_sources({"trixie": recorded})
    assert "zsh" not in source_stanzas(whole) and "cloud-amd64" not in source_stanzas(whole)


@light
@pytest.mark.parametrize(("name", "version"), [
    ("6.12.117", "6.12.117-1"), ("6.12.117-1", "6.12.117-1"), ("6.12", "6.12.117-1"), ("6.1", "6.1.176-1"),
    ("6.12.95", "6.12.95-1~bpo12+1"), ("7.3", "7.3.4-1~bpo13+1"), ("7.3~rc7", "7.3~rc7-1~exp1"), ("7", "7.3.4-1~bpo13+1"),
])
def test_a_source_name_means_one_release(sources, name, version):
    assert resolve_source(name, sources).version == version


@light
def test_an_unknown_source_release_names_the_nearest(sources):
    with pytest.raises(UnknownSource, match=r"'6\.12\.118'.*nearest: 6\.12\.107, 6\.12\.117, 7\.2\.6, 7\.2\.9") as e:
        resolve_source("6.12.118", sources)
    assert e.value.exit_code == 2
    assert nearest("5.10", sources) == ["6.1.170", "6.1.176"]


# -- the lab's config fragment ---------------------------------------------------

FRAGMENTS = sorted((Path(mptcplab.kernels.build.__file__).parent / "configs").glob("*.config"))


@light
def test_every_option_of_the_shipped_fragments_says_why():
    assert {f.name for f in FRAGMENTS} == {"common.config", "uml.config", "qemu.config"}
    for f in FRAGMENTS:
        lines = f.read_text().splitlines()
        options = [i for i, line in enumerate(lines) if _OPTION.match(line.strip())]
        assert options, f
        for i in options:
            above = lines[i - 1].strip()
            assert above.startswith("# ") and not _OPTION.match(above), f"{f.name}:{i + 1} {lines[i]!r} has no comment above it"
    uml = fragment("uml")
    for opt in ("MPTCP", "MPTCP_IPV6", "NET_NS", "VETH", "NET_SCHED", "NET_SCH_NETEM", "NET_SCH_TBF", "NET_SCH_FQ",
                "NET_SCH_FQ_CODEL", "HOSTFS", "UML_TIME_TRAVEL_SUPPORT", "INET_DIAG", "INET_TCP_DIAG", "INET_MPTCP_DIAG",
                "PACKET", "UNIX", "TMPFS", "DEVTMPFS", "TCP_CONG_CUBIC", "TCP_CONG_BBR", "IPV6", "BPF_SYSCALL", "TUN",
                "IP_ADVANCED_ROUTER", "IP_MULTIPLE_TABLES"):
        assert uml[opt] == "y", opt
    assert uml["UML_RANDOM"] == "n"
    qemu = fragment("qemu")
    assert qemu["VIRTIO_FS"] == "y" and "HOSTFS" not in qemu and qemu["MPTCP"] == "y"


@light
def test_the_fragment_check_names_what_did_not_stick(tmp_path):
    wanted = {"MPTCP": "y", "TCP_CONG_BBR": "y", "UML_RANDOM": "n", "HZ": "100", "INET_MPTCP_DIAG": "y"}
    config = tmp_path / ".config"
    config.write_text("CONFIG_MPTCP=y\n# CONFIG_TCP_CONG_BBR is not set\nCONFIG_UML_RANDOM=y\nCONFIG_HZ=250\n"
                      "CONFIG_INET_MPTCP_DIAG=m\n")
    assert unmet(config.read_text(), wanted) == ["TCP_CONG_BBR", "!UML_RANDOM", "HZ=100", "INET_MPTCP_DIAG"]
    with pytest.raises(KernelError) as e:
        check_config(config, wanted)
    assert "\n" not in str(e.value) and "4 requested options did not stick" in e.value.message
    assert e.value.message.endswith("TCP_CONG_BBR, !UML_RANDOM, HZ=100, INET_MPTCP_DIAG") and e.value.exit_code == 3
    config.write_text("CONFIG_MPTCP=y\nCONFIG_TCP_CONG_BBR=y\nCONFIG_HZ=100\nCONFIG_INET_MPTCP_DIAG=y\n")
    check_config(config, wanted)  # an option asked unset and absent is unset


@light
def test_a_config_extra_fragment_overrides_the_labs_and_bad_lines_are_refused(tmp_path):
    extra = tmp_path / "extra.config"
    extra.write_text("# mine\nCONFIG_HZ_1000=y\n# CONFIG_TCP_CONG_BBR is not set\n")
    wanted = fragment("uml", extra)
    assert wanted["HZ_1000"] == "y" and wanted["TCP_CONG_BBR"] == "n" and wanted["MPTCP"] == "y"
    extra.write_text("MPTCP=y\n")
    with pytest.raises(UsageError, match=r"extra.config:1: 'MPTCP=y' is not CONFIG_X=value"):
        fragment("uml", extra)


# -- refusals ---------------------------------------------------------------------

@light
def test_kernel_build_refuses_an_unknown_release_naming_the_nearest():
    proc = cli("kernel", "build", "6.12.118")
    assert proc.returncode == 2, proc.stderr
    assert re.search(r"^error: no kernel source '6\.12\.118' in the archive; nearest: 6\.12\.\d+, 6\.12\.\d+, 7\.2\.\d+",
                     proc.stderr, re.M), proc.stderr
    assert "Traceback" not in proc.stderr


@light
@pytest.mark.parametrize(("args", "code", "says"), [
    (["6.12.117", "--flavour", "arm64"], 2, "--flavour 'arm64': choose uml or qemu"),
    (["6.12.117", "--config-extra", "/nonexistent/extra.config"], 2, "--config-extra /nonexistent/extra.config: no such file"),
    (["6.12.117", "--name", "a/b"], 2, "--name 'a/b'"),
    (["/nonexistent/linux.tar.xz"], 2, "/nonexistent/linux.tar.xz: no such file"),
    (["/etc"], 2, "/etc: not a kernel tree"),
    (["6.12.117", "--ref", "HEAD"], 2, "--ref HEAD needs SOURCE to be a git checkout"),
    (["6.12.117", "--config-extra", "/etc"], 2, "--config-extra /etc: a directory, not a file"),
    (["6.12.117", "--config-extra", "/bin/sh"], 2, "config fragment /bin/sh: not a text file"),
    (["6.12.117", "--ref", ""], 2, "--ref is empty"),
    ([""], 2, "SOURCE is empty"),
    (["6.12.117", "--name", ""], 2, "--name is empty"),
    (["6.12.117", "--name", ".."], 2, "may not hold a leading '.'"),
    (["6.12.117", "--name", "x y"], 2, "may not hold a space"),
    (["/etc", "--ref", "HEAD"], 2, "/etc: not a kernel tree"),
])
def test_kernel_build_refusals_are_one_line(args, code, says):
    proc = cli_in_process("kernel", "build", *args)
    assert proc.returncode == code, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and says in lines[0], proc.stderr


@light
def test_kernel_build_names_the_missing_build_tools(tmp_path):
    proc = cli_in_process("kernel", "build", "6.12.117", env={"PATH": str(tmp_path)})
    assert proc.returncode == 3, proc.stderr
    assert re.search(r"^error: building a kernel needs make, gcc, flex, bison, bc, tar, xz-utils, patch, perl, not installed",
                     proc.stderr, re.M), proc.stderr


# -- built kernels among the others ------------------------------------------------

@light
def test_a_built_kernel_is_named_only_by_its_name():
    cloud = Kernel(release="6.12.117+deb13-cloud-amd64", version="6.12.117-1", origin="debian trixie x", image="/x")
    uml = Kernel(release="6.12.117-uml", version="6.12.117", origin="built from debian trixie linux-source-6.12 6.12.117-1",
                 image="/y", flavour="uml", source="debian trixie linux-source-6.12 6.12.117-1", build="/y/build.json")
    kernels = [cloud, uml]
    assert resolve_name("6.12", kernels, None, offline=True).kernel == cloud
    assert resolve_name("6.12.117", kernels, None, offline=True).kernel == cloud
    assert resolve_name("6.12.117-uml", kernels, None, offline=True).kernel == uml
    # entries written before flavours existed keep working
    assert Kernel.model_validate_json('{"release": "r", "version": "6.1.176-1", "origin": "debian bookworm x", "image": "/i"}').flavour == "cloud-amd64"
    assert Kernel.model_validate_json('{"release": "r", "version": "custom", "origin": "added from /i", "image": "/i"}').flavour == "custom"
    assert json.loads(uml.model_dump_json())["flavour"] == "uml"


# -- a real build, booted (heavy: ~4 min the first time on 2 cores, then the cached build is reused) ------------

UML_INIT = """#!/bin/sh
# PID 1 of the test's UML guest: the host's root read-only over hostfs
/bin/busybox mount -t proc proc /proc
echo "mptcplab-uml-init: up, kernel $(/bin/busybox uname -r)"
echo "mptcplab-uml-init: mptcp enabled=$(cat /proc/sys/net/mptcp/enabled)"
echo "mptcplab-uml-init: mptcp sysctls: $(ls /proc/sys/net/mptcp | tr '\\n' ' ')"
/bin/busybox poweroff -f
"""


def boot_uml(image: str, workdir: Path, init: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Boot a UML binary with the host's root read-only over hostfs, time travel on, `init` as PID 1."""
    script = workdir / "init.sh"
    script.write_text(init)
    script.chmod(0o755)
    tmp = Path(tempfile.mkdtemp(prefix="mptcplab-uml-", dir="/dev/shm"))
    try:
        cmd = ["setarch", "x86_64", "-R", image, "mem=256M", "root=/dev/root", "rootfstype=hostfs", "rootflags=/", "ro",
               f"init={script}", "time-travel=inf-cpu", "time-travel-start=1767225600000000000", "con0=null,fd:1",
               "con=null", "ssl=null", f"uml_dir={tmp}", f"umid=test-{os.getpid()}"]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, "TMPDIR": str(tmp)},
                               stdin=subprocess.DEVNULL)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@heavy
@requires_root
def test_kernel_build_makes_a_uml_kernel_that_boots_to_its_init(tmp_path):
    proc = cli("kernel", "build", "6.12.117", "--flavour", "uml", timeout=3600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "built: 6.12.117-uml (uml, debian trixie linux-source-6.12 6.12.117-1)" in proc.stdout
    listed = json.loads(cli("kernel", "list", "--cached", "--json").stdout)
    row = next(r for r in listed if r["release"] == "6.12.117-uml")
    assert row["flavour"] == "uml" and row["source"] == "debian trixie linux-source-6.12 6.12.117-1"
    kernel = resolve("6.12.117-uml")
    info = json.loads(Path(kernel.build).read_text())
    assert info["patches"] == ["uml-host-fp-size"] and info["uname_release"] == "6.12.117-uml"
    assert len(info["config_hash"]) == 64 and info["wall_s"] > 0
    assert not unmet(Path(kernel.config).read_text(), fragment("uml"))
    booted = boot_uml(kernel.image, tmp_path, UML_INIT)
    assert "mptcplab-uml-init: up, kernel 6.12.117-uml" in booted.stdout, (booted.stdout + booted.stderr)[-3000:]
    assert "mptcplab-uml-init: mptcp enabled=1" in booted.stdout
    assert re.search(r"mptcp sysctls: .*\bscheduler\b", booted.stdout) and "ptrace set fp regs failed" not in booted.stdout
    assert booted.returncode == 0


@light
def test_a_ref_is_checked_out_in_the_labs_worktree_never_in_the_users(tmp_path, monkeypatch):
    monkeypatch.setenv("MPTCPLAB_CACHE", str(tmp_path / "cache"))
    repo = tmp_path / "linux"
    repo.mkdir()

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                              check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    (repo / "Kconfig").write_text("# a tree\n")
    for sub in ("1", "2"):
        (repo / "Makefile").write_text(f"VERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = {sub}\nEXTRAVERSION =\n")
        git("add", "-A")
        git("commit", "-qm", f"release 6.12.{sub}")
    first, second = git("rev-parse", "HEAD~1"), git("rev-parse", "HEAD")
    (repo / "Makefile").write_text("VERSION = 9\n")  # the user's uncommitted work
    tree = resolve_tree(str(repo), "HEAD~1", Waits())
    assert tree.owned and tree.commit == first and tree.version == "6.12.1" and tree.path.is_relative_to(tmp_path / "cache")
    assert tree.default_name == f"6.12.1-{first[:12]}" and "release 6.12.1" in tree.source
    again = resolve_tree(str(repo), second, Waits())
    assert again.path == tree.path and again.version == "6.12.2"  # one worktree per repository: incremental builds
    assert (repo / "Makefile").read_text() == "VERSION = 9\n" and git("rev-parse", "HEAD") == second
    with pytest.raises(UsageError, match="--ref nosuchref: no such commit"):
        resolve_tree(str(repo), "nosuchref", Waits())
    git("worktree", "remove", "--force", str(tree.path))


@light
def test_kernel_list_sources_lists_the_buildable_releases():
    proc = cli("kernel", "list", "--sources", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    ups = [r["upstream"] for r in rows]
    assert {"6.1.176", "6.12.117", "7.3.4"} <= set(ups) and ups.index("6.1.176") < ups.index("6.12.117") < ups.index("7.3.4")
    r = next(r for r in rows if r["upstream"] == "6.12.117")
    assert r["package"] == "linux-source-6.12" and r["suite"] == "trixie" and r["size_bytes"] > 100e6
    assert isinstance(r["cached"], bool)


@light
def test_kernel_list_sources_cached_lists_the_cache_alone(tmp_path: Path) -> None:
    """--sources --cached: the source releases whose tarball is in the cache, and nothing the archive offers (this
    cache has no package lists, so reading the archive would fetch them); a source.json without its tarball is not
    a cached source."""
    for upstream, version, tarball in (("6.12.117", "6.12.117-1", True), ("6.1.176", "6.1.176-1", True),
                                       ("7.3.4", "7.3.4-1~bpo13+1", False)):
        where = tmp_path / "sources" / upstream
        where.mkdir(parents=True)
        package = "linux-source-" + ".".join(upstream.split(".")[:2])
        (where / "source.json").write_text(json.dumps({"package": package, "version": version, "suite": "trixie",
                                                       "size": 150_000_000, "tarball": f"{package}.tar.xz"}))
        if tarball:
            (where / f"{package}.tar.xz").write_bytes(b"")
    proc = cli("kernel", "list", "--sources", "--cached", "--json", env={**os.environ, "MPTCPLAB_CACHE": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [(r["upstream"], r["cached"]) for r in rows] == [("6.1.176", True), ("6.12.117", True)], rows
    assert not (tmp_path / "apt").exists(), "the archive's lists were read"


@light
def test_an_empty_cache_says_so_instead_of_an_empty_table(tmp_path: Path) -> None:
    env = {**os.environ, "MPTCPLAB_CACHE": str(tmp_path)}
    kernels = cli("kernel", "list", "--cached", env=env)
    sources = cli("kernel", "list", "--sources", "--cached", env=env)
    assert (kernels.returncode, kernels.stdout.strip()) == (0, "no kernels cached yet (mptcplab kernel fetch VERSION, or kernel build SOURCE)")
    assert sources.returncode == 0 and sources.stdout.startswith("no kernel sources cached yet"), sources.stdout
    assert json.loads(cli("kernel", "list", "--cached", "--json", env=env).stdout) == []  # JSON stays a list


@light
def test_an_unpacked_release_builds_beside_its_tree_and_an_old_build_directory_moves_there(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every release reaches its sources by the same relative path (../tree), which is what lets ccache share
    objects across releases; a build directory in the old place is moved, keeping its objects."""
    from mptcplab.kernels.build import FLAVOURS, Tree, build_dir_for

    monkeypatch.setenv("MPTCPLAB_CACHE", str(tmp_path))
    uml = FLAVOURS["uml"]
    trees = []
    for release in ("6.1.170", "6.1.176"):
        (tmp_path / "sources" / release / "tree").mkdir(parents=True)
        trees.append(Tree(tmp_path / "sources" / release / "tree", f"debian-{release}", release, "debian", release, True))
    old = tmp_path / "builds" / "debian-6.1.176-uml"
    old.mkdir(parents=True)
    (old / "vmlinux.o").write_text("kept")
    first, second = (build_dir_for(t, uml) for t in trees)
    assert first == tmp_path / "sources" / "6.1.170" / "build-uml"
    assert second == tmp_path / "sources" / "6.1.176" / "build-uml"
    assert os.path.relpath(trees[0].path, first) == os.path.relpath(trees[1].path, second) == "../tree"
    assert (second / "vmlinux.o").read_text() == "kept" and not old.exists()
    worktree = Tree(tmp_path / "worktrees" / "linux-abc", "linux-abc", "6.12.117", "directory", "x", True)
    assert build_dir_for(worktree, uml) == tmp_path / "builds" / "linux-abc-uml"


@light
def test_a_name_in_use_by_another_kind_of_kernel_is_refused_before_anything_is_fetched(tmp_path):
    """--name of a Debian kernel or of a build of the other flavour: exit 2 before the source is fetched, unpacked or
    checked out (a rebuild under the same flavour replaces its kernel, as intended)."""
    cache = tmp_path / "cache"
    for release, flavour, build in (("6.12.117+deb13-cloud-amd64", "cloud-amd64", None), ("6.12.117-uml", "uml", "/b.json")):
        d = cache / "kernels" / release
        d.mkdir(parents=True)
        (d / "kernel.json").write_text(Kernel(release=release, version="6.12.117", origin=f"test {flavour}", image="/x",
                                              flavour=flavour, build=build).model_dump_json())
    env = {"MPTCPLAB_CACHE": str(cache)}
    for name, flavour, says in (("6.12.117+deb13-cloud-amd64", "uml", "as a cloud-amd64 kernel"),
                                ("6.12.117-uml", "qemu", "as a uml kernel")):
        proc = cli_in_process("kernel", "build", "6.12.999", "--flavour", flavour, "--name", name, env=env)
        assert proc.returncode == 2 and f"kernel {name} is already in the cache {says}" in proc.stderr, proc.stderr
        assert proc.stderr.count("\n") == 1, proc.stderr
    assert sorted(p.name for p in cache.iterdir()) == ["kernels"]  # nothing fetched, unpacked or checked out


@light
def test_a_tarball_that_holds_no_kernel_tree_is_refused_and_its_unpacked_copy_removed(tmp_path, monkeypatch):
    monkeypatch.setenv("MPTCPLAB_CACHE", str(tmp_path / "cache"))
    (tmp_path / "notkernel").mkdir()
    (tmp_path / "notkernel" / "README").write_text("not a kernel\n")
    tarball = tmp_path / "notkernel.tar.xz"
    subprocess.run(["tar", "-cJf", str(tarball), "-C", str(tmp_path), "notkernel"], check=True)
    with pytest.raises(UsageError, match="not a kernel source tarball"):
        resolve_tree(str(tarball), None, Waits())
    left = tmp_path / "cache" / "sources" / "tarballs"
    assert not left.exists() or not any(left.iterdir()), list(left.rglob("*"))


@light
def test_a_checkout_built_as_it_is_and_at_a_ref_use_separate_build_directories(tmp_path, monkeypatch):
    from mptcplab.kernels.build import FLAVOURS, build_dir_for

    monkeypatch.setenv("MPTCPLAB_CACHE", str(tmp_path / "cache"))
    repo = tmp_path / "linux"
    repo.mkdir()
    (repo / "Kconfig").write_text("# a tree\n")
    (repo / "Makefile").write_text("VERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = 1\nEXTRAVERSION =\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "6.12.1"], check=True)
    as_is, at_ref = resolve_tree(str(repo), None, Waits()), resolve_tree(str(repo), "HEAD", Waits())
    assert as_is.path == repo.resolve() and at_ref.path != as_is.path
    assert build_dir_for(as_is, FLAVOURS["uml"]) != build_dir_for(at_ref, FLAVOURS["uml"])
    with pytest.raises(UsageError, match="is not a git repository"):
        plain = tmp_path / "plain"
        plain.mkdir()
        (plain / "Kconfig").write_text("")
        (plain / "Makefile").write_text("VERSION = 6\n")
        resolve_tree(str(plain), "main", Waits())

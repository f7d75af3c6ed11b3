"""`mptcplab kernel fetch|list|build|add`, `mptcplab matrix` and the guest side of `run --kernel`.

Registered on common.app; the machinery is in mptcplab.kernels.
"""
from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ..errors import UsageError
from .common import (AccelOption, RunSeedOption, SeedOption, note_unused_guest_options, with_seed, TimeOption, seed_value, DbOption, FailFastOption, RichProgress, SetOption, app, check_link_backend, err,
                     handled, load_scenarios, out, warn)

kernel_app = typer.Typer(no_args_is_help=True, help="Other kernels: fetch Debian kernels, build from source, add your own, list them.")
app.add_typer(kernel_app, name="kernel")


@kernel_app.command("fetch")
@handled
def fetch_cmd(
    version: Annotated[str, typer.Argument(help="6.1, 6.12, 6.12.95, 7, a suite (trixie, trixie-backports, sid...), a release or a package version")],
    refresh: Annotated[bool, typer.Option("--refresh", help="update the package lists first, even when they are fresh")] = False,
) -> None:
    """Download a Debian cloud kernel and its modules into the cache (nothing is installed on the host).

    A version prefix means the newest runnable release the archive offers
    (6.12 is the newest 6.12.x, even when an older one is cached).
    """
    from ..kernels.fetch import ConsoleWaits, fetch

    kernel, was_cached = fetch(version, refresh=refresh, waits=ConsoleWaits(err))
    verb = "already cached" if was_cached else "fetched"
    out.print(f"{verb}: {kernel.release} ({kernel.version}, {kernel.origin}) in {kernel.dir}", highlight=False, soft_wrap=True)


@kernel_app.command("list")
@handled
def list_cmd(
    cached_only: Annotated[bool, typer.Option("--cached", help="only the cache; do not ask the archive")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON list: release, upstream, version, suite, cached, runnable, reason, flavour, source (with --sources: upstream, version, suite, package, size_bytes, cached)")] = False,
    refresh: Annotated[bool, typer.Option("--refresh", help="update the package lists first, even when they are fresh")] = False,
    sources: Annotated[bool, typer.Option("--sources", help="the Debian kernel source releases `kernel build` can build, instead")] = False,
) -> None:
    """Every kernel: cached ones (Debian's, added and built) and what the Debian archive offers, in version order."""
    from ..kernels.catalog import cached
    from ..kernel_names import version_key

    if cached_only and refresh:
        raise UsageError("--cached and --refresh contradict each other: --cached does not read the archive's lists",
                         "drop one of them")
    if sources:
        _list_sources(as_json, refresh, cached_only)
        return
    kernels = cached()
    rows: dict[str, dict] = {}
    for k in kernels:
        rows[k.release] = {"release": k.release, "upstream": k.upstream, "version": k.version,
                           "suite": k.origin.split(" ")[1] if k.origin.startswith("debian ") else "",
                           "origin": k.origin, "cached": True, "runnable": True, "reason": "",
                           "mptcp": k.config_value("MPTCP"), "flavour": k.flavour, "source": k.source}
    problem = ""
    if not cached_only:
        from ..errors import LabError
        from ..kernels.fetch import ConsoleWaits, PrivateApt, read_catalog

        try:
            offered = read_catalog(PrivateApt(waits=ConsoleWaits(err)), refresh)
        except LabError as e:
            offered, problem = [], e.message
        for c in offered:
            row = rows.setdefault(c.release, {"release": c.release, "cached": False, "mptcp": None, "flavour": c.flavour, "source": None})
            row.update(upstream=c.upstream, version=c.version, suite=c.suite, origin=f"debian {c.suite} {c.package}",
                       runnable=c.runnable, reason=c.reason, size_bytes=c.size)
    ordered = sorted(rows.values(), key=lambda r: (version_key(r["version"] if r["version"] != "custom" else r["upstream"]), r["release"]))
    if as_json:
        sys.stdout.write(json.dumps(ordered) + "\n")
    elif cached_only and not ordered:
        out.print("no kernels cached yet (mptcplab kernel fetch VERSION, or kernel build SOURCE)", highlight=False)
    else:
        title = "cached kernels" if cached_only else "kernels, oldest first (mptcplab kernel fetch VERSION; cached ones run offline)"
        table = Table(title=title, title_justify="left")
        for col in ("version", "release", "suite or source", "flavour", "cached", "MPTCP", "runnable"):
            table.add_column(col, overflow="fold")
        for r in ordered:
            suite = r["suite"] or ("your build" if r["version"] == "custom" else r["source"] or "")
            table.add_row(r["upstream"], r["release"], suite, r["flavour"], "yes" if r["cached"] else "",
                          (r["mptcp"] or "?") if r["cached"] else "", "yes" if r["runnable"] else f"no: {r['reason']}")
        out.print(table)
    if problem:
        err.print(f"warning: the Debian archive could not be read ({problem}); only the cache is listed",
                  highlight=False, markup=False, soft_wrap=True)


def _list_sources(as_json: bool, refresh: bool, cached_only: bool = False) -> None:
    """`kernel list --sources`: the linux-source releases the archive offers, and which are cached (--cached: only
    those, without reading the archive)."""
    from ..kernels.fetch import ConsoleWaits
    from ..kernels.source import cached_sources, read_sources

    have = cached_sources()
    listed = have if cached_only else read_sources(waits=ConsoleWaits(err), refresh=refresh)
    rows = [{"upstream": s.upstream, "version": s.version, "suite": s.suite, "package": s.package, "size_bytes": s.size,
             "cached": s.version in {h.version for h in have}} for s in listed]
    if as_json:
        sys.stdout.write(json.dumps(rows) + "\n")
        return
    if cached_only and not rows:
        out.print("no kernel sources cached yet (mptcplab kernel list --sources shows what the archive offers)", highlight=False)
        return
    title = "cached kernel sources" if cached_only else "kernel sources"
    table = Table(title=f"{title}, oldest first (mptcplab kernel build VERSION [--flavour uml|qemu])", title_justify="left")
    for col in ("version", "package version", "suite", "size", "cached"):
        table.add_column(col, justify="right" if col == "size" else "left")
    for r in rows:
        table.add_row(r["upstream"], r["version"], r["suite"], f"{r['size_bytes'] / 1e6:.0f} MB", "yes" if r["cached"] else "")
    out.print(table)


@kernel_app.command("build")
@handled
def build_cmd(
    source: Annotated[str, typer.Argument(help="a Debian source release (6.12.117, 6.12, 7.3.4; see kernel list --sources), a kernel source tarball, or a kernel tree directory")],
    flavour: Annotated[str, typer.Option("--flavour", help="uml (a User-Mode Linux binary) or qemu (a bzImage for the QEMU guest)")] = "uml",
    config_extra: Annotated[Optional[Path], typer.Option("--config-extra", help="a Kconfig fragment (CONFIG_X=y lines) applied after the lab's")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="the kernel's name in the cache (default VERSION-FLAVOUR, e.g. 6.12.117-uml)")] = None,
    ref: Annotated[Optional[str], typer.Option("--ref", help="with a git checkout as SOURCE: build this commit in the lab's own worktree")] = None,
) -> None:
    """Build a kernel from source with the lab's config fragment (out of tree, in the cache) and register it.

    A repeated build of the same tree is incremental. The kernel is then named by --name (or VERSION-FLAVOUR) in
    run --kernel, matrix and kernel list.
    """
    from ..kernels.build import build
    from ..kernels.fetch import ConsoleWaits

    kernel = build(source, flavour, config_extra, name, ref, progress=ConsoleWaits(err))
    out.print(f"built: {kernel.release} ({kernel.flavour}, {kernel.source}) in {kernel.dir}", highlight=False, soft_wrap=True)


@kernel_app.command("add")
@handled
def add_cmd(
    path: Annotated[Path, typer.Argument(help="a bzImage (e.g. arch/x86/boot/bzImage of your build)")],
    modules: Annotated[Optional[Path], typer.Option("--modules", help="modules: INSTALL_MOD_PATH, its lib/modules/RELEASE, or a tree with modules.dep")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="the kernel's .config (default: the build tree's, when found)")] = None,
) -> None:
    """Register a kernel you built; it is copied into the cache."""
    from ..kernels.custom import add

    kernel = add(path, modules, config)
    out.print(f"added: {kernel.release} in {kernel.dir}" + ("" if kernel.modules else " (no modules: the needed drivers must be built in)"),
              highlight=False)


class _Say:
    """A Progress that prints only status lines on stderr (a guest's boot), for commands with no repetitions."""

    def __getattr__(self, name: str) -> object:
        return lambda *a, **k: None

    def status(self, text: str) -> None:
        err.print(text, highlight=False, markup=False, soft_wrap=True)


@kernel_app.command("exec")
@handled
def exec_cmd(
    command: Annotated[list[str], typer.Argument(help="the command line, after --: mptcplab kernel exec --kernel 6.12 -- uname -a")],
    kernel: Annotated[str, typer.Option("--kernel", "-k", help="the kernel to boot: a cached kernel or a name kernel fetch takes")],
    timeout: Annotated[float, typer.Option("--timeout", min=1, help="seconds of wall time the command may run before it is killed")] = 600.0,
    time_mode: TimeOption = None,
    seed: SeedOption = "1",
) -> None:
    """Boot KERNEL (a QEMU guest, or a UML kernel) and run a command there, in its root network namespace.

    The host's files are visible read-only; the command runs from a fresh
    scratch directory that is also its /tmp (TMPDIR), with NO_COLOR=1. Its
    standard output and error stream back as it writes them; the exit code is
    the command's (1 with an error line when --timeout killed it).
    """
    from ..errors import RunError
    from ..executors import run_command
    from ..kernels.fetch import ConsoleWaits, use_kernel

    seed_of = seed_value(seed)  # refused before anything is fetched or booted

    def write(stream: str, text: str) -> None:
        f = sys.stderr if stream == "stderr" else sys.stdout
        f.write(text)
        f.flush()

    code, timed_out = run_command(use_kernel(kernel, ConsoleWaits(err)), command, timeout, write, _Say(), seed=seed_of)
    if timed_out:
        raise RunError(f"{command[0]} did not exit within {timeout:g} s on kernel {kernel}: killed", "raise --timeout")
    raise typer.Exit(code if 0 <= code < 256 else 128 - code if code < 0 else 1)


def _fmt(est: object) -> str:
    if est is None:
        return "-"
    from ..report import estimate_text

    return estimate_text(est, 2)  # type: ignore[arg-type]


@app.command()
@handled
def matrix(
    scenario: Annotated[list[str], typer.Argument(help="TOML files or built-in scenario names")],
    kernels: Annotated[str, typer.Option("--kernels", help="comma-separated kernels (release, package version, suite or version prefix, as in kernel fetch); the first is the baseline")],
    repeat: Annotated[Optional[int], typer.Option("--repeat", "-n", min=1, help="repetitions per scenario and kernel")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON list: a `run --json` document per scenario x kernel")] = False,
    label: Annotated[Optional[str], typer.Option("--label", help="a free-form label stored with every run")] = None,
    link_backend: Annotated[Optional[str], typer.Option("--link-backend", help="auto, tbf, netem or wire")] = None,
    timeseries: Annotated[bool, typer.Option("--timeseries/--no-timeseries", help="include per-subflow time series in the JSON")] = True,
    db: DbOption = None,
    store: Annotated[bool, typer.Option("--store/--no-store", help="store every cell in the results database")] = True,
    overrides: SetOption = None,
    fail_fast: FailFastOption = False,
    accel: AccelOption = None,
    time_mode: TimeOption = None,
    seed: RunSeedOption = None,
) -> None:
    """Run every scenario on every kernel in guests (QEMU, or UML for -uml builds), kernels interleaved, and print scenario x kernel.

    Exit 1 when any repetition did not complete (each is kept, with its reason).
    """
    from ..kernels.fetch import ConsoleWaits, use_kernel
    from ..kernels.matrix import run_matrix, table_rows

    names = [k.strip() for k in kernels.split(",") if k.strip()]
    if not names:
        raise UsageError("--kernels needs at least one kernel, e.g. --kernels 6.1,6.12")
    check_link_backend(link_backend)
    sets = with_seed(overrides, seed)  # a bad seed is refused before any kernel is fetched
    ks = [use_kernel(n, ConsoleWaits(err)) for n in names]  # the rule of `kernel fetch`; missing kernels are fetched
    if len({k.release for k in ks}) < len(ks):
        raise UsageError(f"--kernels {kernels}: names the same kernel twice")
    note_unused_guest_options(ks, {"--accel": accel, "--time": time_mode})
    from ..kernels.matrix import resolve_backend
    from ..protocols import Collector
    from ..runner import RunOptions

    scns = load_scenarios(scenario, sets)
    backend = resolve_backend(link_backend, scns, ks)
    collector = Collector()
    options = RunOptions(repeat=repeat, label=label, link_backend=link_backend, fail_fast=fail_fast, sinks=[collector])
    if store:
        from ..store.recorder import recorder_for

        recorder = recorder_for(db, warn)
        options.sinks.append(recorder)
    else:
        recorder = None

    try:
        with RichProgress(scns[0].name) as progress:
            progress.status(f"link backend: {backend} in every cell" + (" (auto: " + ("every kernel has netem)" if backend == "netem"
                                                                                          else "not every kernel has netem)") if (link_backend or "auto") == "auto" else ""))
            cells = run_matrix(scns, ks, repeat, replace(options, progress=progress), timeseries=timeseries)
    except BaseException:
        if as_json and collector.results:
            sys.stdout.write(json.dumps([r.to_json(timeseries=timeseries) for r in collector.results]) + "\n")
        raise
    finally:
        if recorder is not None:
            for line in recorder.report_lines():
                err.print(line, highlight=False, markup=False, soft_wrap=True)
    incomplete = any(r.fails_run for c in cells for r in c.result.repetitions) or any(c.result.status != "completed" for c in cells)
    if as_json:
        sys.stdout.write(json.dumps([c.result.to_json(timeseries=timeseries) for c in cells]) + "\n")
        if incomplete:
            raise typer.Exit(1)
        return
    table = Table(title=f"goodput (mbit/s) and completion (s): median [95% CI] of completed repetitions; change of each "
                        f"scenario's main metric vs the first kernel; link backend {backend}", title_justify="left")
    for col in ("scenario", "kernel", "n", "failed", "goodput", "completion", "main metric", "change", "guest CPU"):
        table.add_column(col, justify="right" if col in ("n", "failed", "change") else "left")
    rows = table_rows(cells)
    for row in rows:
        change = "baseline" if row["change"] is None else f"{row['change'] * 100:+.1f}%" + (f" {row['verdict']}" if row["verdict"] != "unchanged" else "")
        main = row["metric"] + (f" {_fmt(row['median'])}" if row["median"] is not None and row["metric"] != "goodput_mbps" else "")
        table.add_row(row["scenario"], row["kernel"], str(row["n"]), str(row["failed"]), _fmt(row["goodput"]), _fmt(row["completion"]),
                      main, change, "n/a" if not row.get("cpu_applicable", True) else "SATURATED" if row["cpu_saturated"] else "ok")
    out.print(table)
    for line in dict.fromkeys(l for row in rows for l in row["conditions"]):
        out.print(f"note: {line}", highlight=False, markup=False, soft_wrap=True)
    for cell in cells:
        errors, notes = cell.result.failures()  # a best-path baseline timing out as designed is a note
        for e in errors + [f"note: {n}" for n in notes]:
            out.print(f"{cell.scenario} @ {cell.kernel}: {e}", highlight=False, markup=False, soft_wrap=True)
    if incomplete:
        raise typer.Exit(1)


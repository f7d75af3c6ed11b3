"""`mptcplab selftest ...`: the kernel's own MPTCP selftests. Registered on cli.py's `app`; the machinery is in
mptcplab.selftests."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import DbOption, SeedOption, TimeOption, app, err, handled, out, seed_value, store_at

selftest_app = typer.Typer(no_args_is_help=True, help="The kernel's own MPTCP selftests (simult_flows.sh), built and run in a guest (QEMU or UML).")
app.add_typer(selftest_app, name="selftest")

KernelOption = Annotated[Optional[str], typer.Option("--kernel", "-k", help="the kernel whose selftests to use: a cached kernel or a release (6.12.117)")]
TreeOption = Annotated[Optional[Path], typer.Option("--tree", help="the Linux source tree of your own build (kernel add): its selftests are compiled instead")]


@selftest_app.command("build")
@handled
def build_cmd(kernel: KernelOption = None, tree: TreeOption = None) -> None:
    """Extract and compile a kernel's MPTCP selftests (mptcp_connect, pm_nl_ctl) into the cache, once per release.

    Prints the directory that holds the scripts and the programs.
    """
    from ..kernels.fetch import ConsoleWaits
    from ..selftests.build import build_for_kernel

    built = build_for_kernel(kernel, tree, ConsoleWaits(err))
    out.print(f"{built.dir} ({built.source})", highlight=False, soft_wrap=True)


@selftest_app.command("simult_flows")
@handled
def simult_flows_cmd(
    kernel: Annotated[str, typer.Option("--kernel", "-k", help="the kernel under test: a cached kernel or a name kernel fetch takes")],
    repeat: Annotated[int, typer.Option("--repeat", "-n", min=1, help="runs of the script (10 transfers each)")] = 1,
    tree: TreeOption = None,
    label: Annotated[Optional[str], typer.Option("--label", help="a free-form label stored with every run")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON document: {\"runs\": [a run --json document per case and direction]}")] = False,
    db: DbOption = None,
    time_mode: TimeOption = None,
    seed: SeedOption = "1",
) -> None:
    """Run the kernel's own simult_flows.sh on KERNEL (a QEMU guest, or a UML kernel) and store its ten results.

    The script comes from the kernel's Debian linux-source package (or --tree), compiled once per release
    (selftest build). Under UML each script run is one boot in simulated time, run i seeded with --seed + i. Each case and direction is stored as a run of `selftest-SCENARIO-DIRECTION` (the lab scenario of the same transfer); a
    table shows the script's times and verdicts. Exit 1 when the script failed a transfer (IGNO, the flaky
    case it ignores, does not count).
    """
    import json
    import sys

    from ..kernels.fetch import ConsoleWaits, use_kernel
    from ..selftests.build import build_for_kernel
    from ..selftests.run import selftest_on_kernel

    seed_of = seed_value(seed)  # refused before anything is fetched or booted
    store = store_at(db, create=True)
    k = use_kernel(kernel, ConsoleWaits(err))
    built = build_for_kernel(kernel, tree, ConsoleWaits(err))

    def say(line: str) -> None:
        err.print(line, highlight=False, markup=False, soft_wrap=True)

    results = selftest_on_kernel(k, built, repeat, store, say, label, seed_of)
    failed = [r for r in results for rep in r.repetitions if rep.error and "said FAIL" in rep.error]  # type: ignore[attr-defined]
    if as_json:
        sys.stdout.write(json.dumps({"runs": [r.to_json(timeseries=False) for r in results]}) + "\n")  # type: ignore[attr-defined]
    else:
        from rich.table import Table

        table = Table(title=f"simult_flows.sh on {k.release} ({built.source}), {repeat} run{'s' if repeat != 1 else ''}",
                      title_justify="left")
        for col in ("case", "direction", "ms per run", "max ms", "verdicts", "stored run"):
            table.add_column(col)
        for r in results:
            sel = r.environment["selftest"]  # type: ignore[attr-defined]
            reps = r.repetitions  # type: ignore[attr-defined]
            table.add_row(sel["case"], sel["direction"], ", ".join(f"{x.completion_s * 1000:.0f}" if x.completed else "-" for x in reps),
                          f"{int(reps[0].metrics.get('selftest_max_ms', 0)) or '-'}",
                          ", ".join("ok" if not x.error else x.error.split(" said ")[-1].split(":")[0].lower() for x in reps),
                          r.run_id[:10])  # type: ignore[attr-defined]
        out.print(table)
        say(f"stored {len(results)} runs in {store.where}")
    if failed:
        raise typer.Exit(1)

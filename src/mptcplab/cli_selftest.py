"""`mptcplab selftest ...`: the kernel's own MPTCP selftests. Registered on cli.py's `app`; the machinery is in
mptcplab.selftests."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .cli import app, handled, out

selftest_app = typer.Typer(no_args_is_help=True, help="The kernel's own MPTCP selftests (simult_flows.sh), built and run in a guest.")
app.add_typer(selftest_app, name="selftest")

KernelOption = Annotated[Optional[str], typer.Option("--kernel", "-k", help="the kernel whose selftests to use: a cached kernel or a release (6.12.117)")]
TreeOption = Annotated[Optional[Path], typer.Option("--tree", help="the Linux source tree of your own build (kernel add): its selftests are compiled instead")]


@selftest_app.command("build")
@handled
def build_cmd(kernel: KernelOption = None, tree: TreeOption = None) -> None:
    """Extract and compile a kernel's MPTCP selftests (mptcp_connect, pm_nl_ctl) into the cache, once per release.

    Prints the directory that holds the scripts and the programs.
    """
    from .cli_kernel import kernel_waits
    from .selftests.build import build_for_kernel

    built = build_for_kernel(kernel, tree, kernel_waits())
    out.print(f"{built.dir} ({built.source})", highlight=False, soft_wrap=True)

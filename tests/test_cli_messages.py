"""What the CLI says when something is wrong or slow: one line `error: what — fix` and the README's exit code,
the lab's words instead of the libraries', progress on stderr, counts where a listing is cut.

Refusals run the CLI's main() in this process (cli_in_process) for speed, with at least one case of each
behaviour in a real process (cli); nothing here moves traffic.
"""
from __future__ import annotations

import pytest

from mptcplab.links import BACKENDS, backend_choices

from .conftest import cli, cli_in_process, write_scenario

pytestmark = pytest.mark.light


def one_error_line(proc, code: int = 2) -> str:
    """The one stderr line of a refused command (exit `code`), without its `error: ` prefix."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == code and len(lines) == 1 and lines[0].startswith("error: "), (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr and "Usage:" not in proc.stderr
    return lines[0].removeprefix("error: ")


# -- link backend names: one list (links.BACKENDS), one check ----------------------------------------------------

def test_the_backend_choices_come_from_the_registry() -> None:
    assert backend_choices() == ", ".join(["auto", *BACKENDS][:-1]) + f" or {[*BACKENDS][-1]}"


@pytest.mark.parametrize("args", [
    ["run", "demo"], ["matrix", "demo", "--kernels", "6.1"], ["suite", "run"], ["bisect", "demo", "--good", "6.1", "--bad", "6.12"],
    ["submit", "demo", "--db", "postgresql://lab@127.0.0.1:9/lab"],
], ids=lambda a: a[0] if a[0] != "suite" else "suite run")
def test_every_link_backend_option_is_checked_against_the_registry(args) -> None:
    proc = cli_in_process(*args, "--link-backend", "bogus")
    assert one_error_line(proc) == f"--link-backend 'bogus': choose {backend_choices()}"


def test_a_scenario_link_backend_is_checked_against_the_registry(tmp_path) -> None:
    path = write_scenario(tmp_path, 'name = "x"\n[run]\nlink_backend = "bogus"\n[[path]]\nname = "a"\nrate = "10mbit"\n'
                                    '[workload]\nsize = "1MiB"\n')
    proc = cli("run", str(path), "--no-store")
    assert one_error_line(proc).endswith(f"run.link_backend: got 'bogus'; choose {backend_choices()}")

"""Running simult_flows.sh where its kernel runs, and keeping what it said.

`run_simult_flows` runs the compiled script (selftests/build.py) `repeat` times
through `execute`, a function that runs one command on the kernel under test
and returns its exit code and merged output (`mptcplab kernel exec`'s job in a
guest), parses every run (simult_flows.parse_output) and hands each run's
cases to `on_run` as it ends, so a caller can store them one script run at a
time (selftests/results.py).
"""
from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import LabError
from .build import SelftestBuild
from .simult_flows import CASES, SCRIPT, SelftestLine, parse_output

#: how long one script run may take: 10 transfers of at most ~12 s each, its 61 s per-transfer timeout once,
#: and 115 s measured under TCG (QEMU without KVM)
SCRIPT_TIMEOUT_S = 600.0

#: runs one command line on the kernel under test: (argv, timeout_s) -> (exit code, standard output and error merged)
Execute = Callable[[list[str], float], tuple[int, str]]


class SelftestError(LabError):
    """The script ran but reported no result, or fewer than it should (exit 1)."""

    exit_code = 1


@dataclass
class SelftestRun:
    """One run of the script: what it printed, what was parsed from it, how it ended."""

    index: int
    exit_code: int
    output: str
    lines: list[SelftestLine] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def failed(self) -> list[SelftestLine]:
        """The transfers the script failed (not counting IGNO, the flaky case it ignores)."""
        return [x for x in self.lines if x.verdict == "fail"]


def script_command(build: SelftestBuild, script: str = SCRIPT) -> list[str]:
    """The command line that runs `script` from its directory with its output merged (mptcp_connect writes the
    measured time on standard error, between the title and " max") and without colours."""
    path = build.script(script)
    return ["sh", "-c", f"cd {shlex.quote(str(path.parent))} && NO_COLOR=1 exec ./{shlex.quote(path.name)} 2>&1"]


def run_simult_flows(build: SelftestBuild, execute: Execute, repeat: int = 1,
                     on_run: Callable[[SelftestRun], None] | None = None,
                     say: Callable[[str], None] | None = None) -> list[SelftestRun]:
    """Run simult_flows.sh `repeat` times through `execute`; each run parsed and given to `on_run` as it ends.

    Raises SelftestError (exit 1) when a run reports no transfer at all (the script could not set up: its
    output's last line says why); a run with fewer than all ten keeps what it has.
    """
    argv = script_command(build)
    runs: list[SelftestRun] = []
    for index in range(repeat):
        if say:
            say(f"{SCRIPT} run {index + 1}/{repeat} on the kernel under test (10 transfers) …")
        t0 = time.monotonic()
        code, output = execute(argv, SCRIPT_TIMEOUT_S)
        run = SelftestRun(index=index, exit_code=code, output=output, lines=parse_output(output),
                          wall_s=time.monotonic() - t0)
        if not run.lines:
            last = [x for x in output.splitlines() if x.strip()]
            raise SelftestError(f"{SCRIPT} reported no transfer (exit {code}): {last[-1].strip() if last else 'no output'}",
                                "the kernel needs MPTCP, veth and sch_netem; run it by hand with mptcplab kernel exec")
        runs.append(run)
        if say:
            done = ", ".join(f"{x.number:02d} {x.measured_ms or '-'} ms {x.verdict}" for x in run.lines)
            say(f"run {index + 1}: {len(run.lines)}/{2 * len(CASES)} transfers in {run.wall_s:.0f} s: {done}")
        if on_run:
            on_run(run)
    return runs


def selftest_on_kernel(kernel: object, build: SelftestBuild, repeat: int, store: object | None = None,
                       say: Callable[[str], None] | None = None, label: str | None = None,
                       seed: int | str | None = 1) -> list[object]:
    """`mptcplab selftest simult_flows`: run the script `repeat` times on `kernel` (a kernels.catalog.Kernel,
    through its executor: one QEMU guest for every run, or one UML boot per run) as command jobs, and store each
    case and direction as a run (selftests/results.py), after every script run so an interrupted session keeps
    what finished. Script run i of a seeded executor (UML under time travel) draws seed `seed + i`, as
    repetition i of a run does; "random" or None: the host's randomness. Returns the RunResults.

    Raises SelftestError (exit 1) when a script run reports no transfer, what the executor raises otherwise.
    """
    from ..executors import executor_for
    from .results import selftest_runs

    class _Say:
        def __getattr__(self, name: str) -> object:
            return lambda *a, **k: None

        def status(self, text: str) -> None:
            if say:
                say(text)

    lines: list[list[SelftestLine]] = []
    ids: dict[str, str] = {}
    results: list[object] = []
    base = None if seed in (None, "random") else int(seed)
    with executor_for(kernel) as ex:
        ex.ready(_Say())
        release = ex.release
        described = ex.describe()
        environment = {**described, "kernel_release": release,
                       "kernel_version": getattr(kernel, "version", ""), "selftest_build": str(build.dir)}
        if described.get("executor") == "uml":  # seeded: recorded as a UML run's are (its conditions keep it apart)
            environment["seed"] = base
            environment["guest"] = {**described.get("guest", {}), "seed_base": base,
                                    "seeds": "base + script run index" if base is not None else "host randomness"}
        runs_done = [0]

        def execute(argv: list[str], timeout_s: float) -> tuple[int, str]:
            chunks: list[str] = []
            run_seed = None if base is None else base + runs_done[0]
            runs_done[0] += 1
            code, timed_out = ex.exec(argv, timeout_s, lambda _stream, text: chunks.append(text), seed=run_seed)
            if timed_out:
                chunks.append(f"\n(killed after {timeout_s:g} s)\n")
            return code, "".join(chunks)

        def keep(run: SelftestRun) -> None:
            lines.append(run.lines)
            made = selftest_runs(lines, release, build.source, environment, ids, label)
            results[:] = [r for r, _ in made]
            if store is not None:
                for result, content in made:
                    store.save_result(result, content)  # type: ignore[attr-defined]

        run_simult_flows(build, execute, repeat, on_run=keep, say=say)
    return results

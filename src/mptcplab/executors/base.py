"""One interface for where a run happens: this machine's kernel, or a kernel booted in a QEMU guest.

As `links/base.py` is for the ways of emulating a path, an Executor is one
way of running a scenario's repetitions. `run`, `run --kernel`, `matrix` and
the fleet's worker all drive an Executor, so interleaving and what the sinks
(the store) hear are the same everywhere:

    with executor_for(kernel, cfg) as ex:   # boots a guest, or nothing on the host
        ex.ready(progress)
        result = ex.run(scenario, options)

`run` runs `options.repeat` repetitions (default: the scenario's). Without
`into` it makes a RunResult of its own and the sinks hear of its start, each
repetition as it ends and (with `finish`) its end, however it ends. With
`into` (a matrix cell, an earlier result it adds to) the repetitions are
appended to that result, numbered after its own, and the sinks hear only of
each repetition: the caller tells them when the cell starts and ends.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from ..protocols import Progress, RunSink
from ..result import Repetition, RunResult
from ..scenario import Scenario


#: executor kind -> class, filled by @register (executors/__init__.py imports the modules that register)
EXECUTORS: dict[str, type["Executor"]] = {}


def register(cls: type["Executor"]) -> type["Executor"]:
    """Class decorator: `cls` runs the kernels its `takes` accepts, under its `kind`."""
    EXECUTORS[cls.kind] = cls
    return cls


class Executor(ABC):
    """Where a run happens. A context manager: entering boots what it needs, leaving stops it (however it is left)."""

    #: the registry key and what results record as `environment.executor`: "host", "qemu", "uml"
    kind: ClassVar[str]
    #: kernel flavours (kernels.catalog.Kernel.flavour) this executor boots; the qemu executor takes every other kernel
    flavours: ClassVar[tuple[str, ...]] = ()
    #: what `auto` means for the link backend on this executor when it must be decided for it (None: by the kernel's
    #: qdiscs, netem where it has netem); UML: wire, since netem without processing delay keeps packets in step
    auto_link_backend: ClassVar[str | None] = None
    #: its numbers do not depend on what else the machine runs (UML in simulated time): a matrix runs several
    #: repetitions at once, one per core (an instance's own value: a UML kernel in real time depends on load)
    load_independent: bool = False

    @classmethod
    def takes(cls, kernel: Any) -> bool:
        """Whether this executor runs `kernel` (None: this machine's kernel)."""
        if kernel is None:
            return cls.kind == "host"
        flavour = getattr(kernel, "flavour", None)
        if cls.flavours:
            return flavour in cls.flavours
        return cls.kind != "host" and not any(flavour in other.flavours for other in EXECUTORS.values())

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop what the executor started (a guest); idempotent."""

    def ready(self, progress: Progress | None = None) -> None:
        """Block until runs can start (a guest has booted), saying what it waits for on `progress`.

        Raises RunError when it never becomes ready (a guest that does not boot)."""

    @property
    def alive(self) -> bool:
        """False once the executor cannot take another run (its guest died or hung)."""
        return True

    @property
    @abstractmethod
    def release(self) -> str:
        """The kernel release the runs measure (`uname -r` of the host or of the guest's kernel)."""

    @property
    def kernel(self) -> Any:
        """The catalog Kernel a guest boots; None on the host."""
        return None

    def describe(self) -> dict[str, Any]:
        """What to record about where a run happened (kind, release; a guest adds its accelerator)."""
        return {"executor": self.kind, "release": self.release}

    @abstractmethod
    def run(self, scenario: Scenario, options: Any = None, into: RunResult | None = None, finish: bool = True,
            timeseries: bool = True) -> RunResult:
        """Run `options.repeat` repetitions of `scenario` (a runner.RunOptions; None: the scenario's defaults).

        See the module docstring for `into` and `finish`. Repetitions that fail
        or time out are kept in the result. Raises the LabError family (a
        refused scenario, a guest that died: what arrived before is kept in the
        result and the sinks) and Interrupted/KeyboardInterrupt.
        """

    def exec(self, argv: list[str], timeout_s: float, on_output: Any = None, seed: int | str | None = 1) -> tuple[int, bool]:
        """Run command line `argv` on this executor's kernel, in its root network namespace, with a fresh scratch
        directory as its /tmp and working directory and NO_COLOR=1 (a command job, executors/job.py); its output
        goes to `on_output(stream, text)` as it is written. Returns (its exit code, whether `timeout_s`, seconds
        of the host's wall clock, killed it). `seed` seeds an executor's randomness where runs are seeded (UML
        under time travel: an integer, or "random"/None for the host's); others ignore it.
        Raises UnsupportedError (exit 3) on an executor that cannot run commands."""
        from ..errors import UnsupportedError

        raise UnsupportedError(f"the {self.kind} executor cannot run a command", "boot a kernel: mptcplab kernel exec --kernel K")

    def run_all(self, scenarios: list[Scenario], options: Any = None, timeseries: bool = True) -> list[RunResult]:
        """Every scenario, one RunResult each, as `mptcplab run` runs them here (default: one after another)."""
        results = []
        for scenario in scenarios:
            if options is not None and options.progress is not None:
                options.progress.scenario_started(scenario.name)
            results.append(self.run(scenario, options, timeseries=timeseries))
        return results



class KernelExecutor(Executor):
    """An executor that boots a kernel of the catalog (a QEMU guest, a UML kernel): it knows its kernel and release."""

    def __init__(self, kernel: Any) -> None:
        self._kernel = kernel

    @property
    def release(self) -> str:
        return self._kernel.release

    @property
    def kernel(self) -> Any:
        return self._kernel

def continuing(options: Any, into: RunResult | None) -> Any:
    """`options` (a runner.RunOptions) for a run that adds to `into` (a matrix cell): its repetitions draw the seeds
    after the cell's MPTCP repetitions so far (`first_repetition`), as one run of them all would; unchanged without."""
    if into is None:
        return options
    from dataclasses import replace

    return replace(options, first_repetition=sum(1 for r in into.repetitions if r.baseline_path is None))


class Relay(RunSink):
    """Passes a run's sink calls on, the one place that knows `into` and `finish` (see the module docstring).

    Without `into` every call goes to `sinks` as it is (but the run's end when
    `finish` is False). With `into`, each repetition is appended to `into`,
    renumbered after its own, the conditions the first repetition read back
    become the cell's, and the sinks hear of `into`, never of the run's start
    or end. Used by the host executor around the runner, and by every guest's
    JobFollower (executors/job.py) around the lines the guest streams."""

    def __init__(self, sinks: list[RunSink], into: RunResult | None, finish: bool) -> None:
        self.sinks, self.into, self.finish = sinks, into, finish

    def run_started(self, result: RunResult, scenario: Scenario) -> None:
        if self.into is None:
            for sink in self.sinks:
                sink.run_started(result, scenario)

    def repetition_finished(self, result: RunResult, rep: Repetition) -> None:
        into = self.into
        if into is None:
            for sink in self.sinks:
                sink.repetition_finished(result, rep)
            return
        rep.index = len(into.repetitions)
        into.repetitions.append(rep)
        if not rep.completed and rep.baseline_path is None:
            into.errors.append(f"repetition {rep.index + 1}: {rep.status}: {rep.error}")
        env = result.environment
        if not into.environment.get("sysctls_client"):  # what the first repetition read back: the cell's conditions
            into.environment.update({k: v for k, v in env.items() if k not in ("tags", "label", "link_stats")})
        if env.get("link_stats"):
            into.environment.setdefault("link_stats", []).append(env["link_stats"][-1])
        for sink in self.sinks:
            sink.repetition_finished(into, rep)

    def run_finished(self, result: RunResult) -> None:
        if self.into is None and self.finish:
            for sink in self.sinks:
                sink.run_finished(result)

"""The job protocol every guest speaks (QEMU, UML): one job in, JSON lines out.

Host → guest, one JSON document (a line on QEMU's serial port; a file on
hostfs written before a UML boot), made by `encode` and read back by
`decode_options` (guest_main.py):

    {"type": "job", "scenario_pickle": ..., "repeat": N, "label": ..., "link_backend": ...,
     "fail_fast": bool, "tags": {...}, "timeseries": bool, "warmup": N, "executor": kind, ...}

A command job (`encode_exec`, `mptcplab kernel exec`) runs one command line
instead of a scenario:

    {"type": "exec", "argv": [...], "timeout_s": T}

and is answered by ``output`` lines (``{"stream": "stdout"|"stderr", "data":
text}``, as the command writes) and exactly one ``exec_result``
(``exit_code``, ``timed_out``, ``wall_s``) or ``error``.

Guest → host, JSON lines (guest_main.py emits them, `parse` reads them back):
``ready`` once (booted), then per job ``run_started``, ``progress`` (a
repetition started / sampled / finished, or a ``status`` note), ``repetition`` (one finished, with
the guest's CPU load and environment), and exactly one ``result`` or
``error``. `JobFollower` turns those lines into the same sink calls a run on
the host makes (executors/base.py `Relay`), so the store hears of every
repetition the moment it ends, wherever it ran.
"""
from __future__ import annotations

import base64
import json
import pickle
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from ..protocols import Progress
from ..result import Repetition, RunResult
from ..scenario import Scenario
from .base import Relay


def encode(scenario: Scenario, options: Any, timeseries: bool, repeat: int, executor: str, **extra: Any) -> dict[str, Any]:
    """The job for `repeat` repetitions of `scenario` under `options` (a runner.RunOptions) on an executor of kind
    `executor`; `extra` adds keys an executor's guest reads (e.g. a seed)."""
    return {"type": "job", "scenario_pickle": base64.b64encode(pickle.dumps(scenario)).decode(),  # units already resolved
            "repeat": repeat, "label": options.label, "link_backend": options.link_backend, "fail_fast": options.fail_fast,
            "tags": options.tags, "timeseries": timeseries, "warmup": options.warmup, "executor": executor,
            "first_repetition": options.first_repetition, "align_start_s": options.align_start_s, **extra}


def encode_exec(argv: list[str], timeout_s: float) -> dict[str, Any]:
    """The job that runs command line `argv` in the guest's root network namespace, at most `timeout_s` seconds
    (guest_main.run_exec: a fresh tmpfs as its /tmp, cwd and TMPDIR, NO_COLOR=1, the host's files read-only)."""
    return {"type": "exec", "argv": [str(a) for a in argv], "timeout_s": float(timeout_s)}


def decode_scenario(job: dict[str, Any]) -> Scenario:
    """The scenario of a job `encode` made (a pickle the host's own lab wrote: trusted)."""
    return pickle.loads(base64.b64decode(job["scenario_pickle"]))


def decode_options(job: dict[str, Any], progress: Progress, sinks: list[Any]) -> Any:
    """The runner.RunOptions a guest runs a job with (its sinks stream to the host; the host summarizes)."""
    from ..runner import RunOptions

    return RunOptions(repeat=job.get("repeat"), label=job.get("label"), link_backend=job.get("link_backend"), progress=progress,
                      tags=job.get("tags") or {}, fail_fast=bool(job.get("fail_fast")), summarize=False, sinks=sinks,
                      warmup=int(job.get("warmup") or 0), executor=str(job.get("executor") or "qemu"),
                      first_repetition=int(job.get("first_repetition") or 0),
                      align_start_s=float(job.get("align_start_s") or 0.0))


def parse(raw: bytes) -> dict[str, Any] | None:
    """One guest line as a message, or None for anything that is not one (console noise, a torn line)."""
    line = raw.strip(b"\r\n\x00 ")
    if not line.startswith(b"{"):
        return None
    try:
        return json.loads(line)
    except ValueError:
        return None


def guest_error(msg: dict[str, Any], where: str) -> Exception:
    """A guest's `error` line as the LabError it was in the guest (RunError for a kind that is none), its message
    prefixed with `where` (e.g. "in the guest (kernel 6.12.117)")."""
    from .. import errors

    cls = getattr(errors, str(msg.get("kind")), errors.RunError)
    if not (isinstance(cls, type) and issubclass(cls, errors.LabError)):
        cls = errors.RunError
    return cls(f"{where}: {msg.get('message')}", msg.get("hint"))


def forward_progress(progress: Progress, msg: dict[str, Any]) -> None:
    """A guest's `progress` line, told to the host's progress display."""
    event = msg.get("event")
    if event == "started":
        progress.repetition_started(msg["index"], msg["total"])
    elif event == "sample":
        progress.sample(msg["index"], msg["done"], msg["total"])
    elif event == "finished":
        progress.repetition_finished(Repetition.model_validate(msg["repetition"]))
    elif event == "status":  # a note the runner said in the guest
        progress.status(str(msg.get("text", "")))


@dataclass
class JobFollower:
    """The host's side of one job: builds its result from the guest's lines and tells the sinks (through a Relay).

    `into` (a matrix cell, an earlier result) receives the repetitions instead
    of a result of the job's own; see executors/base.py for `finish`."""

    scenario: Scenario | None = None
    sinks: list[Any] = field(default_factory=list)
    into: RunResult | None = None
    progress: Progress | None = None
    finish: bool = True
    result: RunResult | None = None

    def __post_init__(self) -> None:
        self.relay = Relay(self.sinks, self.into, self.finish)
        if self.into is not None:
            self.result = self.into

    @property
    def own(self) -> bool:
        """The result is the job's own (not a cell it adds to)."""
        return self.into is None

    def started(self, msg: dict[str, Any]) -> None:
        """A `run_started` line: the job's own result begins (a cell's start is the caller's to tell)."""
        if self.result is not None:
            return
        self.result = RunResult.model_validate(msg["result"])
        # the host names the run and dates it: a guest's randomness may be seeded and its clock simulated (UML in
        # deterministic time gives every run of a seed the same id and date, and the store would merge them)
        self.result.run_id = secrets.token_hex(5)
        self.result.started_at = round(time.time(), 6)
        self.result.repetitions = []
        self.relay.run_started(self.result, self.scenario)

    def repetition(self, msg: dict[str, Any], rep: Repetition | None = None) -> Repetition:
        """A `repetition` line (`rep`: its repetition, already parsed): it joins the result and the sinks hear of it."""
        rep = rep or Repetition.model_validate(msg["repetition"])
        env = {k: v for k, v in (msg.get("environment") or {}).items() if k != "guest_cpu"}
        if self.own:
            if self.result is None:
                raise ValueError("a repetition before the run started")
            self.result.repetitions.append(rep)
            self.result.environment.update(env)
            if not rep.completed and rep.baseline_path is None and not any(
                    e.startswith(f"repetition {rep.index + 1}:") for e in self.result.errors):
                self.result.errors.append(f"repetition {rep.index + 1}: {rep.status}: {rep.error}")
        self.relay.repetition_finished(self.result if self.own else _Carrier(env), rep)  # type: ignore[arg-type]
        return rep

    def end(self, result: RunResult) -> None:
        """The job is over (however it ended): a result of its own is summarized and the sinks hear of its end."""
        if self.own and self.finish:
            from ..analysis.stats import conclude_run

            conclude_run(result)  # index order: a best-path round streams its MPTCP repetition last
        self.relay.run_finished(result)


class _Carrier:
    """What Relay reads of the result a repetition came with, when it goes into a cell: its environment."""

    def __init__(self, environment: dict[str, Any]) -> None:
        self.environment = environment

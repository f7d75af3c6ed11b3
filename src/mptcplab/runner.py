"""One run: scenario in, RunResult out, on this machine's kernel.

Every repetition gets a fresh lab (namespaces, links, MPTCP state), so no
repetition inherits TCP metrics or PM state from the one before.
"""
from __future__ import annotations

import hashlib
import secrets
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from . import capabilities
from .analysis.stats import conclude_run, paired_best_path_ratio, summarize_run
from .metrics import baseline_metric
from .cancel import Cancel, interruptible
from .environment import host_environment, loadavg
from .errors import EnvironmentProblem, RunError, TransferTimeout, UnsupportedError
from .lab import Lab
from .links import select_backend
from .links.base import LinkBackend
from .mptcp import ConnectionSample
from .pathmanager import EventListener, open_subflows
from .probes import connection_metrics, counter_snapshot, mib_delta, subflow_resets, summarize
from .protocols import Progress, RunSink
from .result import Repetition, RunResult, SubflowResult, run_status
from .scenario import HOST_ACTIONS, SYSCTL_ROLES, Event, Scenario
from .topology import Topology, apply_host_event, build, effective_sysctls, pm_state
from .workloads.base import Hooks, workload_class

__all__ = ["RunOptions", "Progress", "RunSink", "preflight", "run_scenario", "run_scenarios", "summarize_run"]


@dataclass
class RunOptions:
    repeat: int | None = None
    label: str | None = None
    link_backend: str | None = None
    #: called with the topology after it is built, before traffic (tests use it)
    setup: Callable[[Topology], None] | None = None
    on_repetition: Callable[[Repetition], None] | None = None
    progress: "Progress | None" = None
    tags: dict[str, str] = field(default_factory=dict)
    #: extra first repetitions, run and kept but flagged warm-up: summaries and compare skip them
    warmup: int = 0
    #: where results go as they are measured (the store's recorder)
    sinks: list["RunSink"] = field(default_factory=list)
    #: set by run_scenario when it runs the work in a worker thread
    cancel: Cancel | None = None
    #: stop at the first repetition that does not complete (default: count it and go on)
    fail_fast: bool = False
    #: where the run happens (executors/: host, qemu, uml), recorded as environment.executor; a guest's job says which
    executor: str = "host"
    #: fill result.summary at the end; a guest leaves it to the host, which summarizes what it stored
    #: (numpy and scipy.stats would cost the guest seconds of import under TCG)
    summarize: bool = True
    #: the index this run's first repetition has in the run it belongs to (a fleet job runs repetition r of its
    #: cell alone: r); repetition i draws seed `[run] seed` + first_repetition + i (UML's kernel randomness, netem's PRNG)
    first_repetition: int = 0
    #: simulated-time executors (UML with time travel): each repetition's traffic starts on a grid of this many
    #: seconds of the monotonic clock, at a phase its seed gives (align_start, start_phase; 0: at once). The lab's
    #: own Python before it (imports, building the topology) costs a few microseconds of simulated time that
    #: differ with the install, and a start shifted by them against the kernel's timers changed results (netem,
    #: simult-balanced: 7.175 or 7.241 or 7.444 s by install); on the grid every install starts the traffic at
    #: the same simulated instant, and the seeded phase makes repetitions sample what the start time changes
    align_start_s: float = 0.0


def preflight(scenario: Scenario, link_backend: str | None = None) -> type[LinkBackend]:
    """Everything that can be refused before anything is built."""
    import os

    if os.geteuid() != 0:
        raise EnvironmentProblem("the lab needs root (CAP_NET_ADMIN) to build namespaces", "run it with sudo")
    if not capabilities.mptcp_enabled():
        raise EnvironmentProblem("MPTCP is not enabled in this kernel (net.mptcp.enabled is missing or 0)",
                                 "sysctl -w net.mptcp.enabled=1, or boot a kernel with CONFIG_MPTCP=y")
    scheds = capabilities.available_schedulers()
    if scenario.mptcp.scheduler not in scheds:
        raise UnsupportedError(f"scheduler {scenario.mptcp.scheduler!r} is not available in this kernel (available: {', '.join(scheds) or 'none'})",
                               "load its module or BPF struct_ops, or run with --kernel K")
    pms = capabilities.available_path_managers()
    if scenario.mptcp.path_manager not in pms:
        raise UnsupportedError(f"path manager {scenario.mptcp.path_manager!r} is not available (available: {', '.join(pms)})")
    # a kind without an engine, or one that cannot run here, is refused before anything is built
    workload_class(scenario.workload.kind).preflight(scenario.workload, scenario.mptcp.path_manager)
    ccs = capabilities.available_congestion_controls()
    if scenario.tcp.congestion_control not in ccs:
        raise UnsupportedError(f"tcp.congestion_control {scenario.tcp.congestion_control!r} is not available in this kernel "
                               f"(available: {', '.join(ccs) or 'none'})",
                               "pick one of those, or run with --kernel K on a kernel that has it built in")
    for role in SYSCTL_ROLES:
        for key in scenario.sysctls_for(role):
            problem = capabilities.sysctl_problem(key)
            if problem:
                raise UnsupportedError(f"{problem} (asked for in the {role} namespace)",
                                       "remove it from [sysctl], or run on a kernel that has it")
    return select_backend(link_backend or scenario.run.link_backend, scenario)


def _schedule_events(backend: LinkBackend, events: list[Event], t0: float, stop: threading.Event, errors: list[str],
                     topo: Topology | None = None) -> threading.Thread:
    """Apply each event at its time from `t0`: link events through the backend, host events (carrier, endpoints) on `topo`."""
    def loop() -> None:
        for event in sorted(events, key=lambda e: e.at):
            if stop.wait(max(0.0, t0 + event.at - time.monotonic())):
                return
            try:
                if event.action in HOST_ACTIONS:
                    assert topo is not None
                    apply_host_event(topo, event)
                else:
                    backend.apply(event)
            except Exception as e:
                errors.append(f"event at {event.at:g}s on {event.path} failed: {e}")

    thread = threading.Thread(target=loop, name="path-events", daemon=True)
    thread.start()
    return thread


def start_phase(seed: int | None) -> float:
    """Where in the grid a repetition drawing `seed` starts its traffic, as a fraction in [0, 1): a hash of the
    seed (the same seed, the same phase, on every kernel and install), or drawn at random for seed None."""
    if seed is None:
        return secrets.randbelow(1 << 53) / (1 << 53)
    digest = hashlib.sha256(f"start-phase/{seed}".encode()).digest()
    return (int.from_bytes(digest[:8], "little") >> 11) / (1 << 53)


def align_start(grid_s: float, phase: float = 0.0) -> float:
    """Sleep until the next instant `phase` (a fraction in [0, 1)) into a `grid_s`-second cell of CLOCK_MONOTONIC,
    at least 1 ms away, and return it (s).

    Under time travel the wait costs no wall time and puts the traffic that follows at the same simulated
    instant whatever the lab did before it; on a real clock it only waits. The phase matters because a
    deterministic kernel's result depends on when in its timers' cycles (jiffies, delayed ACKs, the pacing
    timer) the traffic begins: one phase per repetition's seed makes the repetitions sample that dependence
    instead of repeating one trajectory, and two kernels run with one seed base meet the same phases, pair
    by pair (common random numbers, docs/statistics.md)."""
    now = time.clock_gettime(time.CLOCK_MONOTONIC)
    target = (int(now / grid_s) + phase) * grid_s
    while target - now < 1e-3:
        target += grid_s
    while (left := target - time.clock_gettime(time.CLOCK_MONOTONIC)) > 0:
        time.sleep(left)
    return target


def repetition_seed(scenario: Scenario, index: int) -> int | None:
    """The seed repetition `index` of a run draws: `[run] seed` + index, None with seed = "random" (the executors'
    rule: UML seeds the kernel's randomness with it, the netem backend its PRNG)."""
    seed = scenario.run.seed
    return None if not isinstance(seed, int) or isinstance(seed, bool) else seed + index


def run_repetition(scenario: Scenario, backend_cls: type[LinkBackend], index: int,
                   options: RunOptions, env: dict[str, Any], baseline_path: str | None = None) -> Repetition:
    """One repetition in a fresh lab, however it ends.

    A transfer that fails or times out (RunError) is a repetition with status
    'failed' or 'timeout' that keeps what was measured until then: bytes,
    samples, MIB deltas and link counters. Interrupted (Ctrl-C/SIGTERM) and
    environment problems raise.

    With `baseline_path` (a path name) the same workload runs as plain TCP
    (IPPROTO_TCP at both ends, the same [tcp] congestion control) in the same
    topology, every client socket bound to that path's client address, so
    source routing keeps the traffic on that path alone.
    """
    progress = options.progress
    status, error = "completed", None
    with Lab() as lab:
        if options.cancel:
            options.cancel.check()
        topo = build(lab, scenario, emulator=backend_cls.needs_emulator_ns)
        backend = backend_cls(lab, topo, scenario)
        backend.seed = repetition_seed(scenario, options.first_repetition + index)
        backend.start()
        lab.on_close(backend.stop)
        if scenario.mptcp.path_manager == "userspace":
            lab.on_close(EventListener([topo.client, topo.server]).close)
        if options.setup:
            options.setup(topo)
        if "sysctls_client" not in env:
            env.update(effective_sysctls(topo, scenario))
            env["tcp"] = _tcp_conditions(topo, scenario)
            env["link"] = backend.describe()
            for note in backend.notes():
                if note not in env.setdefault("notes", []):
                    env["notes"].append(note)
                    if progress:
                        progress.status(f"note: {note}")
            env["mptcp_pm"] = pm_state(topo)
        # (MPTcpExt, TcpExt) counters of the client and server namespaces: [(mib, tcpext) client, (mib, tcpext) server]
        before = [counter_snapshot(ns) for ns in (topo.client, topo.server)]
        stop_events = threading.Event()
        event_errors: list[str] = []
        started = time.time()

        def on_sample(s: ConnectionSample) -> None:
            if progress:
                progress.sample(index, transfer.progress(s, time.monotonic() - transfer_t0[0]), 1.0)

        transfer_t0 = [time.monotonic()]

        def on_start(t0: float) -> None:
            transfer_t0[0] = t0
            if scenario.events:
                _schedule_events(backend, list(scenario.events), t0, stop_events, event_errors, topo)

        userspace_pm = scenario.mptcp.path_manager == "userspace" and len(topo.paths) > 1 and baseline_path is None
        hooks = Hooks(on_sample=on_sample, on_start=on_start,
                      on_connected=(lambda sock: open_subflows(topo, sock)) if userspace_pm else None,
                      cancel=options.cancel, congestion_control=scenario.tcp.congestion_control)
        if baseline_path is not None:
            hooks.protocol = "tcp"
            hooks.bind = next(p.client_addr for p in topo.paths if p.name == baseline_path)
        transfer = workload_class(scenario.workload.kind)(topo, scenario.workload, scenario.run.timeout, hooks)
        lab.on_close(transfer.close)
        lab.on_close(stop_events.set)
        if options.align_start_s > 0:
            from . import diag  # noqa: F401  the transfer's one lazy import (probes.subflow_congestion): done before the grid
            align_start(options.align_start_s, start_phase(repetition_seed(scenario, options.first_repetition + index)))
        try:
            out = transfer.run()
        except RunError as e:
            if options.cancel:
                options.cancel.check()  # a transfer cut short by Ctrl-C/SIGTERM is an interruption, not a result
            status = "timeout" if isinstance(e, TransferTimeout) else "failed"
            error = e.message
            out = transfer.partial()
        stop_events.set()
        link_stats = backend.stats()  # the emulator's own counters, while it still runs
        if link_stats:
            env.setdefault("link_stats", []).append({**link_stats, "repetition": index})  # whose counters these are
        after = [counter_snapshot(ns) for ns in (topo.client, topo.server)]
        subflows, series = summarize(out.sampler.samples, topo, sender_is_client=transfer.upload,
                                     congestion=out.sampler.congestion,
                                     capacities=_capacities(scenario, "up" if transfer.upload else "down"))
        deltas = [mib_delta(b[k], a[k]) for b, a in zip(before, after) for k in (0, 1)]
        metrics = connection_metrics(out.sampler.samples, deltas, mptcp=baseline_path is None)
        resets = subflow_resets(metrics)
        if baseline_path is None:
            metrics["subflows_reset_empty"] = float(out.sampler.subflows_reset_empty(resets))
        metrics.update(out.metrics)
        expected = scenario.expected_subflows() if baseline_path is None else 1
        if status == "completed" and event_errors:
            status, error = "failed", event_errors[0]
        elif status == "completed" and out.sampler.subflows_up(resets) < expected and not scenario.events:
            reset = out.sampler.subflows_reset_empty(resets)
            status, error = "failed", (f"only {out.sampler.subflows_up(resets)} of {expected} subflows came up"
                                       + (f": {reset} join{'s' if reset != 1 else ''} refused or reset before carrying "
                                          f"a byte (join failures {int(metrics.get('join_failures', 0))}, MP_RST sent "
                                          f"{int(metrics.get('mp_rst_tx', 0))}; the MIB counters say which side)" if reset else
                                          ": the path manager did not use every path (check the MPTCP endpoints and "
                                          "limits: mptcplab doctor)"))
    warning = congestion_not_applied(scenario.tcp.congestion_control, subflows)
    tcp = env.get("tcp")
    if warning and isinstance(tcp, dict) and not tcp.get("not_applied"):
        tcp["not_applied"] = warning  # once per run: the environment keeps it, stderr says it as it happens
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    completion = max(out.completion_s, 1e-6)
    budget = scenario.run.budget
    return Repetition(
        index=index,
        completion_s=round(completion, 6),
        goodput_mbps=round(out.bytes * 8 / completion / 1e6, 4),
        bytes=out.bytes,
        mptcp=out.mptcp,
        subflows=subflows,
        mib=mib_delta(before[0][0], after[0][0]),
        mib_server=mib_delta(before[1][0], after[1][0]),
        timeseries=series,
        started_at=started,
        metrics={**metrics, **backup_share(scenario, subflows)},
        series=dict(out.series),
        programs=list(out.programs),
        status=status,
        error=error,
        over_budget=(completion > budget) if budget is not None and status == "completed" else None,
        baseline_path=baseline_path,
    )


def backup_share(scenario: Scenario, subflows: list[SubflowResult]) -> dict[str, float]:
    """{"backup_share": fraction of bytes sent over subflows of backup endpoints} when a path has one, else {}."""
    if not scenario.has_backup_endpoint():
        return {}
    total = sum(e.bytes_sent for s in subflows for e in s.endpoints)
    backup = sum(e.bytes_sent for s in subflows for e in s.endpoints if "backup" in e.flags.split())
    return {"backup_share": round(backup / total, 6) if total else 0.0}


def _capacities(scenario: Scenario, direction: str) -> dict[str, float] | None:
    """Each path's configured rate (bit/s) in `direction` ('up': client -> server); None when a path has
    only a trace (no one rate to share by)."""
    rates = {p.name: p.link(direction).rate_bps for p in scenario.paths}  # type: ignore[arg-type]
    if any(r is None for r in rates.values()):
        return None
    return {k: float(v) for k, v in rates.items() if v is not None}


def run_scenario(scenario: Scenario, options: RunOptions | None = None) -> RunResult:
    """Run every repetition of `scenario` and return what was measured.

    Called from the main thread, the work runs in a worker so that Ctrl-C and
    SIGTERM cancel it cleanly (see cancel.py).
    """
    return run_scenarios([scenario], options)[0]


def run_scenarios(scenarios: list[Scenario], options: RunOptions | None = None) -> list[RunResult]:
    """Run several scenarios with their repetitions interleaved (A B A B ...), one RunResult each.

    Interleaving makes slow drift of the machine (load, thermal state) hit
    every scenario alike instead of biasing whichever ran last. The first
    `options.warmup` repetitions of each are run and kept but flagged warm-up.
    Sinks hear of each run's start, each repetition as it ends, and each run's
    end however it ends: an interrupted run keeps its finished repetitions.
    """
    options = options or RunOptions()
    if options.cancel is None and threading.current_thread() is threading.main_thread():
        return interruptible(lambda cancel: run_scenarios(scenarios, replace(options, cancel=cancel)))
    backends = [preflight(s, options.link_backend) for s in scenarios]
    host = host_environment()
    host["load_before"] = loadavg()
    host["tags"] = dict(options.tags)
    host["executor"] = options.executor
    results = [_new_result(s, b, options, dict(host)) for s, b in zip(scenarios, backends)]
    totals = [options.warmup + (options.repeat or s.run.repeat) for s in scenarios]
    started: list[RunResult] = []
    current: RunResult | None = None
    try:
        for result, scenario in zip(results, scenarios):
            for sink in options.sinks:
                sink.run_started(result, scenario)
            started.append(result)
        for i in range(max(totals)):
            for scenario, backend_cls, result, total in zip(scenarios, backends, results, totals):
                if i < total:
                    current = result
                    rep = _one_round(scenario, backend_cls, result, i, total, options)
                    if not rep.completed and options.fail_fast:
                        raise RunError(f"{scenario.name} repetition {i + 1}: {rep.error}", "--fail-fast stopped the run")
        for result in results:
            result.status = run_status(result.repetitions)
    except BaseException as e:
        for result, total in zip(results, totals):
            if result is current and not isinstance(e, KeyboardInterrupt):
                result.status = "failed"
                if not (isinstance(e, RunError) and options.fail_fast):  # fail-fast's error is the repetition's, already listed
                    result.errors.append(str(e))
            elif len(result.repetitions) < total:
                result.status = "interrupted"  # stopped (Ctrl-C, or another scenario failed) before its last repetition
            else:
                result.status = run_status(result.repetitions)
        raise
    finally:
        for result in results:
            result.environment["load_after"] = loadavg()
            result.ended_at = round(time.time(), 6)
            # index order, as the store gives them back: MPTCP repetitions first, then the baseline ones
            # (they ran interleaved: started_at says when)
            conclude_run(result, summarize=options.summarize)
        for result in started:
            for sink in options.sinks:
                sink.run_finished(result)
    return results


def _new_result(scenario: Scenario, backend_cls: type[LinkBackend], options: RunOptions, env: dict[str, Any]) -> RunResult:
    env.update(scheduler=scenario.mptcp.scheduler, path_manager=scenario.mptcp.path_manager,
               link_backend=backend_cls.name, label=options.label, budget_s=scenario.run.budget,
               workload=scenario.workload.kind,  # what the run is judged by when its scenario is not stored with it
               seed=repetition_seed(scenario, 0),  # the seed base (None: random); a UML run stamps its own the same way
               **({"main_metric": scenario.run.metric} if getattr(scenario.run, "metric", None) else {}),  # [run] metric
               sysctls_set={role: scenario.sysctls_for(role) for role in SYSCTL_ROLES})
    env.update(baseline_environment(scenario))
    result = RunResult(
        run_id=secrets.token_hex(5),
        scenario=scenario.name,
        scenario_hash=scenario.content_hash,
        kernel=env["kernel_release"],
        scheduler=scenario.mptcp.scheduler,
        path_manager=scenario.mptcp.path_manager,
        backend=backend_cls.name,
        label=options.label,
        status="running",
        started_at=round(time.time(), 6),
    )
    result.environment = env  # assigned, not copied: run_repetition adds sysctls and link parameters to it
    return result


def baseline_environment(scenario: Scenario) -> dict[str, Any]:
    """`{"baseline": {...}}` for a run's environment when the scenario asks for a baseline, else {}:
    the mode, the metric mptcp_vs_best_path compares (summaries read it), the paths, the protocol."""
    if scenario.run.baseline == "none":
        return {}
    return {"baseline": {"mode": scenario.run.baseline, "metric": baseline_metric(scenario.workload.kind),
                         "paths": [p.name for p in scenario.paths], "protocol": "tcp"}}


def _tcp_conditions(topo: Topology, scenario: Scenario) -> dict[str, Any]:
    """How the [tcp] congestion control was applied, for the environment (`environment.tcp`)."""
    refused = topo.congestion_default_refused
    how = ("namespace default and every socket" if not refused else
           f"every socket (TCP_CONGESTION); the {' and '.join(refused)} namespace default stayed as inherited: "
           f"the kernel lets a namespace default only to net.ipv4.tcp_allowed_congestion_control")
    applied = True
    if scenario.workload.kind == "command":  # the programs open their own sockets: only the namespace default applies
        applied = not refused
        how = ("namespace default (the command workload's programs open their own sockets)" if not refused else
               f"not applied: the {' and '.join(refused)} namespace default stayed as inherited (the kernel lets a "
               "namespace default only to net.ipv4.tcp_allowed_congestion_control) and the command workload's "
               "programs open their own sockets; use the program's own option (iperf3 -C) and see "
               "subflows[].congestion_control")
    return {"congestion_control": scenario.tcp.congestion_control, "set_on": how, "applied": applied}


def congestion_not_applied(asked: str, subflows: list[SubflowResult]) -> str | None:
    """One line when a subflow used another congestion control than `asked` (inet_diag's INET_DIAG_CONG, as
    recorded in subflows[].congestion_control), else None."""
    used = sorted({cc for sf in subflows for cc in sf.congestion_control.split(",") if cc and cc != asked})
    if not used:
        return None
    paths = sorted({sf.path for sf in subflows if any(cc in used for cc in sf.congestion_control.split(","))})
    return (f"tcp.congestion_control = {asked} was not applied: subflows on {', '.join(paths)} used "
            f"{', '.join(used)} — see `show`'s congestion control and the program's own option (iperf3 -C)")


def _one_round(scenario: Scenario, backend_cls: type[LinkBackend], result: RunResult, index: int, total: int,
               options: RunOptions) -> Repetition:
    """MPTCP repetition `index`; with `[run] baseline = "best-path"` then the same workload as plain TCP on each
    path alone (indices after the MPTCP ones: total + index * paths + path), and the MPTCP repetition's
    `mptcp_vs_best_path` against this round. Sinks hear of the MPTCP repetition once its value is known."""
    rep = _one_repetition(scenario, backend_cls, result, index, total, options, notify=scenario.run.baseline == "none")
    if scenario.run.baseline == "none":
        return rep
    if options.progress:
        options.progress.repetition_finished(rep)
    try:
        round_reps: list[Repetition] = []
        n = len(scenario.paths)
        metric = result.environment["baseline"]["metric"]
        sized_bulk = metric == "goodput_mbps" and getattr(scenario.workload, "size", None) is not None
        fastest: Repetition | None = None
        for p, path in _fastest_first(scenario):
            scn, stopped = scenario, None
            if sized_bulk and fastest is not None:
                # this path cannot be the best once it has run CUTOFF_FACTOR times as long as the fastest so far:
                # stop it there (its goodput until then is kept), not at the scenario's timeout
                cutoff = max(CUTOFF_FACTOR * fastest.completion_s, CUTOFF_MIN_S)
                if cutoff < scenario.run.timeout:
                    scn = scenario.model_copy(update={"run": scenario.run.model_copy(update={"timeout": cutoff})})
                    stopped = (f"stopped after {cutoff:.1f} s, {CUTOFF_FACTOR:g} times as long as the path "
                               f"{fastest.baseline_path} took alone: it cannot be the best path")
            rep_p = _one_repetition(scn, backend_cls, result, total + index * n + p, total, options,
                                    baseline_path=path.name, round_index=index, stopped=stopped)
            round_reps.append(rep_p)
            if rep_p.completed and (fastest is None or rep_p.completion_s < fastest.completion_s):
                fastest = rep_p
        value = paired_best_path_ratio(result.repetitions, rep, round_reps, metric)
        if value is not None:
            rep.metrics["mptcp_vs_best_path"] = value
    finally:  # also when a baseline repetition was interrupted: the MPTCP one is never lost
        _notify(result, rep, options, progress=False)
    return rep


#: a sized bulk baseline on a path stops once it ran this many times as long as the fastest path alone in its
#: round (but never before CUTOFF_MIN_S): it can no longer be the best path, and its goodput so far is its rate
CUTOFF_FACTOR = 2.0
CUTOFF_MIN_S = 2.0


def _fastest_first(scenario: Scenario) -> list[tuple[int, Any]]:
    """(position, path) by configured rate, highest first (a path given only by a trace last): the likely best
    path runs first, so the slower ones can be stopped early (CUTOFF_FACTOR)."""
    def rate(path: Any) -> float:
        return min((path.link(d).rate_bps or 0.0) for d in ("up", "down"))
    return sorted(enumerate(scenario.paths), key=lambda ip: -rate(ip[1]))


def _one_repetition(scenario: Scenario, backend_cls: type[LinkBackend], result: RunResult, index: int, total: int,
                    options: RunOptions, notify: bool = True, baseline_path: str | None = None,
                    round_index: int | None = None, stopped: str | None = None) -> Repetition:
    """One repetition, recorded in `result` and (with `notify`) told to the sinks; `stopped` is the reason a
    baseline repetition cut short on purpose gives when it times out."""
    if options.cancel:
        options.cancel.check()
    if options.progress:
        options.progress.scenario_started(scenario.name if baseline_path is None
                                          else f"{scenario.name}: TCP on {baseline_path}")
        options.progress.repetition_started(index if round_index is None else round_index, total)
    rep = run_repetition(scenario, backend_cls, index, options, result.environment, baseline_path=baseline_path)
    rep.warmup = (index if round_index is None else round_index) < options.warmup
    if stopped and rep.status == "timeout":
        rep.error = stopped
    if not rep.completed:
        what = f"repetition {index + 1}" if baseline_path is None else f"baseline on {baseline_path} (round {round_index + 1})"  # type: ignore[operator]
        result.errors.append(f"{what}: {rep.status}: {rep.error}")
    result.repetitions.append(rep)
    if notify:
        _notify(result, rep, options)
    return rep


def _notify(result: RunResult, rep: Repetition, options: RunOptions, progress: bool = True) -> None:
    if options.on_repetition:
        options.on_repetition(rep)
    for sink in options.sinks:
        sink.repetition_finished(result, rep)
    if progress and options.progress:
        options.progress.repetition_finished(rep)

"""Scenario files: TOML in, validated pydantic models out.

The scenario is pure data (Mininet's Topo, not its Net): nothing here touches
the kernel, so a scenario can be checked, hashed and stored anywhere. Every
error names the file, the key and what is accepted.
"""
from __future__ import annotations

import hashlib
import json
import tomllib
from importlib import resources
from pathlib import Path as FsPath
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from .errors import ScenarioError
from .units import format_time, parse_percent, parse_rate, parse_size, parse_time, rate_note

MAX_PATHS = 8  # the in-kernel path manager's hard limit on subflows

from .fields import Duration, Fraction, PositiveDuration, Rate, Size, _Strict  # noqa: F401  (re-exported)
from .workload_specs import SPECS as WORKLOAD_SPECS
from .workload_specs import BulkSpec, WorkloadSpec
from .scenario_files import builtin_dir, builtin_scenarios  # noqa: F401  (re-exported: where they always were)

Workload = BulkSpec  # the first wave's name for the bulk workload's model


class GilbertElliott(_Strict):
    """Bursty loss: a two-state Markov chain (netem's ``loss gemodel p r 1-h 1-k``).

    ``p`` is the chance to go from good to bad, ``r`` from bad back to good;
    ``loss_bad`` / ``loss_good`` are the loss probabilities inside each state.
    """

    model: Literal["gilbert-elliott"] = "gilbert-elliott"
    p: Fraction
    r: Fraction
    loss_bad: Fraction = 1.0
    loss_good: Fraction = 0.0

    @property
    def mean_loss(self) -> float:
        if self.p + self.r == 0:
            return self.loss_good
        bad = self.p / (self.p + self.r)
        return bad * self.loss_bad + (1 - bad) * self.loss_good


def _loss(value: Any) -> Any:
    if isinstance(value, dict):
        return value
    return parse_percent(value)


Loss = Annotated[float | GilbertElliott, BeforeValidator(_loss)]


class Queue(_Strict):
    """Tail-drop limit of the bottleneck buffer, in packets, bytes or time at the rate."""

    packets: int | None = None
    bytes: int | None = None
    time_s: float | None = None

    @classmethod
    def parse(cls, value: Any) -> "Queue":
        if isinstance(value, (cls, dict)):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(packets=value)
        text = str(value).strip().lower()
        if text.isdigit():  # "100": packets as the number 100 is, or bytes as '100B'? say which
            raise ValueError(f"{value!r} has no unit; write {text} or '{text}p' (packets), '{text}KiB' (bytes) or '{text}ms' (time at the rate)")
        for suffix in ("packets", "packet", "pkts", "pkt", "p"):
            if text.endswith(suffix) and text[: -len(suffix)].strip().isdigit():
                return cls(packets=int(text[: -len(suffix)]))
        try:
            return cls(time_s=parse_time(text))
        except ValueError:
            pass
        try:
            return cls(bytes=parse_size(text))
        except ValueError:
            raise ValueError(
                f"{value!r} is not a queue limit; use packets (100, '100p'), bytes ('64KiB') or time at the rate ('50ms')"
            ) from None

    @model_validator(mode="after")
    def _one(self) -> "Queue":
        given = [v for v in (self.packets, self.bytes, self.time_s) if v is not None]
        if len(given) != 1 or given[0] <= 0:
            raise ValueError("a queue limit is one positive number of packets, bytes or time")
        return self


QueueLimit = Annotated[Queue, BeforeValidator(Queue.parse)]
JitterDistribution = Literal["uniform", "normal", "pareto", "paretonormal"]


class DirectionOverride(_Strict):
    """Per-direction values that replace the path's own (an uplink is not a downlink)."""

    rate: Rate | None = None
    delay: Duration | None = None
    jitter: Duration | None = None
    loss: Loss | None = None
    queue: QueueLimit | None = None


class LinkSpec(_Strict):
    """One direction of one path, fully resolved: what a link backend must emulate."""

    rate_bps: float | None = None
    delay_s: float = 0.0
    jitter_s: float = 0.0
    jitter_distribution: JitterDistribution = "normal"
    reorder: bool = False
    loss: float | GilbertElliott = 0.0
    queue: Queue | None = None
    trace: str | None = None

    @property
    def has_loss(self) -> bool:
        return isinstance(self.loss, GilbertElliott) or self.loss > 0


class Path(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,32}$")]
    rate: Rate | None = None
    delay: Duration = 0.0
    jitter: Duration = 0.0
    jitter_distribution: JitterDistribution = "normal"
    reorder: bool = False
    loss: Loss = 0.0
    queue: QueueLimit | None = None
    trace_up: str | None = None
    trace_down: str | None = None
    up: DirectionOverride | None = None
    down: DirectionOverride | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "Path":
        if self.reorder and not self.jitter and not (self.up and self.up.jitter) and not (self.down and self.down.jitter):
            raise ValueError("reorder = true needs a jitter to reorder by")
        if self.rate is None and not (self.trace_up and self.trace_down):
            missing_up = not (self.trace_up or (self.up and self.up.rate))
            missing_down = not (self.trace_down or (self.down and self.down.rate))
            if missing_up or missing_down:
                raise ValueError("give the path a rate (or trace_up/trace_down, or up.rate/down.rate)")
        return self

    def link(self, direction: Literal["up", "down"]) -> LinkSpec:
        """The resolved spec of one direction: 'up' is client -> server."""
        over = self.up if direction == "up" else self.down
        trace = self.trace_up if direction == "up" else self.trace_down

        def pick(key: str) -> Any:
            value = getattr(over, key) if over is not None else None
            return getattr(self, key) if value is None else value

        return LinkSpec(
            rate_bps=None if trace else pick("rate"),
            delay_s=pick("delay"),
            jitter_s=pick("jitter"),
            jitter_distribution=self.jitter_distribution,
            reorder=self.reorder,
            loss=pick("loss"),
            queue=pick("queue"),
            trace=trace,
        )


class Mptcp(_Strict):
    scheduler: str = "default"
    path_manager: Literal["kernel", "userspace"] = "kernel"


class RunSettings(_Strict):
    repeat: Annotated[int, Field(ge=1, le=1000)] = 3
    timeout: PositiveDuration = 60.0
    link_backend: Literal["auto", "tbf", "netem", "wire"] = "auto"
    #: a completed repetition slower than this is `over_budget` (the kernel selftests' completion budget)
    budget: PositiveDuration | None = None


def _tcp_mem(value: Any) -> Any:
    """'4KiB 128KiB 6MiB' (min default max, as net.ipv4.tcp_rmem) or one size (the maximum only) -> [bytes...]."""
    if isinstance(value, (list, tuple)):
        parts = list(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        parts = [value]
    else:
        parts = str(value).split()
    if len(parts) not in (1, 3):
        raise ValueError(f"{value!r}: give three sizes 'min default max' (e.g. '4KiB 128KiB 6MiB') or one, the maximum")
    sizes = [parse_size(p) for p in parts]
    if any(s <= 0 for s in sizes):
        raise ValueError(f"{value!r}: sizes must be positive")
    if len(sizes) == 3 and not sizes[0] <= sizes[1] <= sizes[2]:
        raise ValueError(f"{value!r}: needs min <= default <= max")
    return sizes


TcpMem = Annotated[list[int], BeforeValidator(_tcp_mem)]


class Tcp(_Strict):
    """TCP conditions, pinned so that a result never depends on what the host happens to set."""

    #: net.ipv4.tcp_congestion_control in client and server; cubic is the kernel's own default and the selftests'
    congestion_control: Annotated[str, Field(pattern=r"^[a-z0-9_]{1,16}$")] = "cubic"
    #: net.ipv4.tcp_rmem / tcp_wmem in client and server; None keeps (and records) the kernel's value
    rmem: TcpMem | None = None
    wmem: TcpMem | None = None


SYSCTL_ROLES = ("client", "server", "router")


def _sysctl_value(value: Any) -> Any:
    if isinstance(value, dict):
        raise ValueError("a table here must be a role: [sysctl.client], [sysctl.server] or [sysctl.router]")
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, list):
        return " ".join(str(x) for x in value)
    return str(value)


SysctlValue = Annotated[str, BeforeValidator(_sysctl_value)]
SysctlKey = Annotated[str, Field(pattern=r"^net\.[A-Za-z0-9_.-]+$")]


def _sysctl_table(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, v in value.items():
        if isinstance(v, dict):
            if key not in SYSCTL_ROLES:
                raise ValueError(f"[sysctl.{key}]: a role table must be one of {', '.join(SYSCTL_ROLES)}")
            out[key] = v
        elif not str(key).startswith("net."):
            raise ValueError(f"{key!r}: only per-namespace sysctls (net.*) can be set in the lab's namespaces")
        else:
            out[key] = v
    return out


Sysctls = Annotated[dict[str, SysctlValue | dict[SysctlKey, SysctlValue]], BeforeValidator(_sysctl_table)]


class Event(_Strict):
    """A change to one path during a run: failures and handovers."""

    at: Duration
    path: str
    action: Literal["down", "up", "set"]
    direction: Literal["both", "up", "down"] = "both"
    rate: Rate | None = None
    delay: Duration | None = None
    loss: Loss | None = None

    @model_validator(mode="after")
    def _set_has_values(self) -> "Event":
        changes = [self.rate, self.delay, self.loss]
        if self.action == "set" and all(v is None for v in changes):
            raise ValueError("action = 'set' needs at least one of rate, delay or loss")
        if self.action != "set" and any(v is not None for v in changes):
            raise ValueError(f"action = '{self.action}' takes no rate, delay or loss; use action = 'set'")
        return self


class Scenario(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    description: str = ""
    #: what the scenario exercises and which suite tier it belongs to (quick, full, rtt, loss, ...)
    tags: list[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,31}$")]] = []
    mptcp: Mptcp = Mptcp()
    tcp: Tcp = Tcp()
    #: per-namespace sysctls: "key" = value for client and server, [sysctl.client|server|router] for one role
    sysctl: Sysctls = {}
    paths: Annotated[list[Path], Field(alias="path", min_length=1, max_length=MAX_PATHS)]
    workload: WorkloadSpec
    run: RunSettings = RunSettings()
    events: Annotated[list[Event], Field(alias="event")] = []

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    #: what is worth saying about how the file was read (see `notes`); not part of the content or its hash
    _notes: tuple[str, ...] = PrivateAttr(default=())

    @property
    def notes(self) -> tuple[str, ...]:
        """One line each about values that are accepted but easy to misread.

        A rate in tc's bytes-per-second units ('100Mbps' is 800 mbit/s) and a
        jitter larger than the delay (what the emulators then do). Filled in
        by `parse_scenario` / `load_scenario`; the CLI prints them on stderr,
        library users read them here.
        """
        return self._notes

    @model_validator(mode="after")
    def _cross_checks(self) -> "Scenario":
        names = [p.name for p in self.paths]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"path names must be unique; repeated: {', '.join(dupes)}")
        duration = getattr(self.workload, "duration", None)
        if duration is not None and duration >= self.run.timeout:
            raise ValueError(
                f"workload.duration {format_time(duration)} is not shorter than run.timeout "
                f"{format_time(self.run.timeout)}: the transfer would be stopped before it ends; raise [run] timeout "
                f"(e.g. timeout = \"{format_time(duration + max(10.0, duration * 0.5))}\") or shorten the duration")
        end = duration or self.run.timeout
        for i, event in enumerate(self.events):
            if event.path not in names:
                raise ValueError(f"event[{i}] names path {event.path!r}, which does not exist; paths are: {', '.join(names)}")
            if event.at >= end:
                what = "the workload's duration" if duration else "the run's timeout"
                raise ValueError(f"event[{i}] at {event.at:g}s is after the run ends ({what} is {end:g}s)")
        return self

    def path(self, name: str) -> Path:
        return next(p for p in self.paths if p.name == name)

    def sysctls_for(self, role: str) -> dict[str, str]:
        """The sysctls the lab sets in one namespace (client, server or router), in the order they are set.

        Client and server get the [tcp] conditions first, then the [sysctl]
        keys for both, then their role's table; the router gets only its table.
        """
        out: dict[str, str] = {}
        if role in ("client", "server"):
            out["net.ipv4.tcp_congestion_control"] = self.tcp.congestion_control
            for key, sizes in (("net.ipv4.tcp_rmem", self.tcp.rmem), ("net.ipv4.tcp_wmem", self.tcp.wmem)):
                if sizes is not None:
                    out[key] = " ".join(str(s) for s in sizes)  # one size: the maximum, completed when set
            out.update({k: v for k, v in self.sysctl.items() if isinstance(v, str)})
        table = self.sysctl.get(role)
        if isinstance(table, dict):
            out.update(table)
        return out

    def normalized(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    @property
    def content_hash(self) -> str:
        """Hash of the normalized content: an edited file is a new scenario version (its tags are labels, not content)."""
        content = {k: v for k, v in self.normalized().items() if k != "tags"}
        blob = json.dumps(content, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    kinds = {spec.model_fields["kind"].default for spec in WORKLOAD_SPECS}
    for i, part in enumerate(loc):
        if i > 0 and loc[i - 1] == "workload" and part in kinds:
            continue  # the discriminated union's tag, not a key the user wrote
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("float", "GilbertElliott", "str", "dict[str,str]") or str(part).startswith("function-"):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    msg = err["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    if err["type"] == "extra_forbidden":
        msg = "unknown key (check its spelling against the scenario format in docs/scenario.md)"
    elif err["type"] == "missing":
        msg = "required key is missing"
    elif err["type"] == "literal_error":
        msg = f"got {err.get('input')!r}; {msg[0].lower() + msg[1:]}"
    more = len(exc.errors()) - 1
    return f"{_loc(err['loc'])}: {msg}" + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else "")


def _override_value(text: str) -> Any:
    """A --set value as TOML would read it (10, 2.5, true, [..]), else the text itself ('20ms')."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(data: dict[str, Any], sets: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """A copy of scenario `data` (as loaded from TOML) with `--set KEY=VALUE` overrides applied.

    KEY is the scenario's own dotted name: `tcp.congestion_control`,
    `mptcp.scheduler`, `workload.size`, `run.budget`, `path.NAME.delay` (a
    path by name or index, `path.wifi.up.rate` for one direction),
    `event.0.at`, `sysctl.net.mptcp.stale_loss_cnt` or
    `sysctl.router.net.ipv4.tcp_ecn`. Unknown keys are caught when the result
    is validated. Raises ScenarioError for a malformed item or a path that does not exist.
    """
    import copy

    out = copy.deepcopy(data)
    for item in sets:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ScenarioError(f"--set {item!r}: write it as KEY=VALUE, e.g. --set tcp.congestion_control=bbr")
        value = _override_value(text.strip())
        parts = key.split(".")
        if parts[0] == "sysctl" and len(parts) > 1:  # sysctl names have dots of their own
            role = parts[1] if parts[1] in SYSCTL_ROLES else None
            name = ".".join(parts[2:] if role else parts[1:])
            parts = ["sysctl", role, name] if role else ["sysctl", name]
        node: Any = out
        for i, part in enumerate(parts[:-1]):
            if isinstance(node, list):
                node = _list_item(node, part, key)
                continue
            if not isinstance(node, dict):
                raise ScenarioError(f"--set {key}: {'.'.join(parts[:i])} is a value, not a table")
            nxt = node.get(part)
            if nxt is None:
                if part in ("path", "event"):
                    raise ScenarioError(f"--set {key}: the scenario has no {part} to change")
                nxt = node[part] = {}
            node = nxt
        if isinstance(node, list):
            raise ScenarioError(f"--set {key}: name one {parts[-2]} by name or index, then its key")
        if not isinstance(node, dict):
            raise ScenarioError(f"--set {key}: {'.'.join(parts[:-1])} is a value, not a table")
        node[parts[-1]] = value
    return out


def _list_item(items: list[Any], ref: str, key: str) -> Any:
    """A [[path]] or [[event]] entry by name or by 0-based index."""
    for item in items:
        if isinstance(item, dict) and item.get("name") == ref:
            return item
    if ref.isdigit() and int(ref) < len(items):
        return items[int(ref)]
    names = [str(i.get("name")) for i in items if isinstance(i, dict) and "name" in i]
    raise ScenarioError(f"--set {key}: no entry {ref!r}" + (f"; there are: {', '.join(names)}" if names else
                                                            f"; give an index from 0 to {len(items) - 1}"))


def parse_scenario(data: dict[str, Any], source: str = "<scenario>", base_dir: FsPath | None = None) -> Scenario:
    """Validate a dict (as loaded from TOML); trace files are resolved against base_dir.

    Raises ScenarioError naming `source` and the key. The returned scenario's
    `notes` hold one line each (prefixed with `source`) about values accepted
    but easy to misread.
    """
    context: dict[str, Any] = {"notes": []}
    try:
        scenario = Scenario.model_validate(data, context=context)
    except ValidationError as exc:
        raise ScenarioError(f"{source}: {_first_error(exc)}") from None
    scenario = _resolve_traces(scenario, source, base_dir or FsPath.cwd())
    notes = [*context["notes"], *jitter_notes(scenario)]
    scenario._notes = tuple(dict.fromkeys(f"{source}: {n}" for n in notes))  # once each, in order
    return scenario


_JITTER_DRAW = {
    "uniform": "uniform in {d} ± {j}",
    "normal": "normal around {d} with standard deviation {j}",
    "pareto": "Pareto (heavy-tailed) around {d}, scale {j}",
    "paretonormal": "paretonormal around {d}, scale {j}",
}


def jitter_notes(scenario: Scenario) -> list[str]:
    """One line per path (direction) whose jitter is larger than its delay: what the link emulators then do.

    Both emulators draw each frame's delay around the configured one and clip a
    negative draw to 0 (the wire forwarder sends the frame when it is
    serialized; netem sends a frame whose time to send has passed at once).
    The mean delay is then above the configured one. Without reordering (wire
    only) a frame also waits for the one ahead of it.
    """
    out = []
    for path in scenario.paths:
        up, down = path.link("up"), path.link("down")
        for where, spec in ((f"path {path.name!r}", up),) if (up.delay_s, up.jitter_s) == (down.delay_s, down.jitter_s) else (
                (f"path {path.name!r} (up)", up), (f"path {path.name!r} (down)", down)):
            if spec.jitter_s <= spec.delay_s:
                continue
            d, j = format_time(spec.delay_s), format_time(spec.jitter_s)
            order = ("frames can overtake each other (reorder = true)" if spec.reorder else
                     "frames stay in order, each waiting for the one ahead, which adds delay")
            draw = _JITTER_DRAW[spec.jitter_distribution].format(d=d, j=j)
            out.append(f"{where}: jitter {j} is larger than the delay {d}: each frame's delay is drawn {draw} and a negative "
                       f"draw is clipped to 0, so the mean delay is above {d}; {order}")
    return out


def _resolve_traces(scenario: Scenario, source: str, base_dir: FsPath) -> Scenario:
    from .links.traces import load_trace  # a trace is validated when the scenario is

    paths = []
    for i, path in enumerate(scenario.paths):
        updates = {}
        for key in ("trace_up", "trace_down"):
            value = getattr(path, key)
            if value is None:
                continue
            resolved = _find_trace(value, base_dir)
            try:
                load_trace(resolved)
            except ValueError as exc:
                raise ScenarioError(f"{source}: path[{i}].{key}: {exc}") from None
            updates[key] = str(resolved)
        paths.append(path.model_copy(update=updates) if updates else path)
    return scenario.model_copy(update={"paths": paths})


def _find_trace(value: str, base_dir: FsPath) -> FsPath:
    candidate = FsPath(value).expanduser()
    if not candidate.is_absolute():
        candidate = base_dir / candidate
    if candidate.exists():
        return candidate.resolve()
    bundled = resources.files("mptcplab") / "traces" / value
    if bundled.is_file():
        return FsPath(str(bundled))
    return candidate


def load_scenario(ref: str | FsPath, overrides: list[str] | tuple[str, ...] = ()) -> Scenario:
    """A TOML file path, or the name of a built-in scenario, with `--set` overrides applied before validation.

    The scenario after overrides is what is validated, hashed (its version) and stored.
    Values accepted but easy to misread are in its `notes` (the CLI prints them).
    The format: docs/scenario.md.
    Raises ScenarioError (exit 2) for a missing, unreadable or invalid file or a bad override.
    """
    path = FsPath(ref)
    if not path.exists():
        builtins = builtin_scenarios()
        if str(ref) in builtins:
            path = builtins[str(ref)]
        else:
            names = ", ".join(builtins) or "none"
            raise ScenarioError(
                f"{ref}: no such file and no built-in scenario of that name",
                f"built-in scenarios: {names}; see 'mptcplab scenarios'",
            )
    if path.is_dir():
        raise ScenarioError(f"{path}: is a directory, not a scenario file")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: cannot read: {exc}") from None
    if overrides:
        data = apply_overrides(data, overrides)
        return parse_scenario(data, f"{path} with --set {' '.join(overrides)}", path.parent)
    return parse_scenario(data, str(path), path.parent)

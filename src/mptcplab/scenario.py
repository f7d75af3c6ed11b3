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
    ValidationError,
    model_validator,
)

from .errors import ScenarioError
from .units import parse_percent, parse_rate, parse_size, parse_time

MAX_PATHS = 8  # the in-kernel path manager's hard limit on subflows

Rate = Annotated[float, BeforeValidator(parse_rate), Field(gt=0)]
Duration = Annotated[float, BeforeValidator(parse_time), Field(ge=0)]
PositiveDuration = Annotated[float, BeforeValidator(parse_time), Field(gt=0)]
Size = Annotated[int, BeforeValidator(parse_size), Field(gt=0)]
Fraction = Annotated[float, BeforeValidator(parse_percent)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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


class Workload(_Strict):
    kind: Literal["bulk"] = "bulk"
    direction: Literal["upload", "download"] = "upload"
    size: Size | None = None
    duration: PositiveDuration | None = None

    @model_validator(mode="after")
    def _size_or_duration(self) -> "Workload":
        if (self.size is None) == (self.duration is None):
            raise ValueError("give exactly one of size (e.g. '16MiB') or duration (e.g. '10s')")
        return self


class RunSettings(_Strict):
    repeat: Annotated[int, Field(ge=1, le=1000)] = 3
    timeout: PositiveDuration = 60.0
    link_backend: Literal["auto", "tbf", "netem", "wire"] = "auto"


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
    mptcp: Mptcp = Mptcp()
    paths: Annotated[list[Path], Field(alias="path", min_length=1, max_length=MAX_PATHS)]
    workload: Workload
    run: RunSettings = RunSettings()
    events: Annotated[list[Event], Field(alias="event")] = []

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _cross_checks(self) -> "Scenario":
        names = [p.name for p in self.paths]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"path names must be unique; repeated: {', '.join(dupes)}")
        end = self.workload.duration or self.run.timeout
        for i, event in enumerate(self.events):
            if event.path not in names:
                raise ValueError(f"event[{i}] names path {event.path!r}, which does not exist; paths are: {', '.join(names)}")
            if event.at >= end:
                what = "the workload's duration" if self.workload.duration else "the run's timeout"
                raise ValueError(f"event[{i}] at {event.at:g}s is after the run ends ({what} is {end:g}s)")
        return self

    def path(self, name: str) -> Path:
        return next(p for p in self.paths if p.name == name)

    def normalized(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    @property
    def content_hash(self) -> str:
        """Hash of the normalized content: an edited file is a new scenario version."""
        blob = json.dumps(self.normalized(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("float", "GilbertElliott", "function-before[_loss(), union[float,GilbertElliott]]"):
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
        msg = "unknown key (check its spelling against the scenario format in README.md)"
    elif err["type"] == "missing":
        msg = "required key is missing"
    elif err["type"] == "literal_error":
        msg = f"got {err.get('input')!r}; {msg[0].lower() + msg[1:]}"
    more = len(exc.errors()) - 1
    return f"{_loc(err['loc'])}: {msg}" + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else "")


def parse_scenario(data: dict[str, Any], source: str = "<scenario>", base_dir: FsPath | None = None) -> Scenario:
    """Validate a dict (as loaded from TOML); trace files are resolved against base_dir."""
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(f"{source}: {_first_error(exc)}") from None
    return _resolve_traces(scenario, source, base_dir or FsPath.cwd())


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


def builtin_dir() -> FsPath:
    return FsPath(str(resources.files("mptcplab") / "scenarios"))


def builtin_scenarios() -> dict[str, FsPath]:
    return {p.stem: p for p in sorted(builtin_dir().glob("*.toml"))}


def load_scenario(ref: str | FsPath) -> Scenario:
    """A TOML file path, or the name of a built-in scenario."""
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
    return parse_scenario(data, str(path), path.parent)

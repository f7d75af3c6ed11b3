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
from .units import format_rate, format_time, parse_percent, parse_rate, parse_size, parse_time, rate_note

MAX_PATHS = 8  # the in-kernel path manager's hard limit on subflows

from .fields import Duration, Fraction, PositiveDuration, Rate, Size, _Strict, validation_problem  # noqa: F401  (re-exported)
from .workload_specs import SPECS as WORKLOAD_SPECS
from .workload_specs import WorkloadSpec
from .scenario_files import builtin_dir, builtin_scenarios  # noqa: F401  (re-exported: where they always were)
from .selftests.simult_flows import selftest_budget_ms


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

TC_MTU = 1514  # an Ethernet frame as tc counts it
#: The default bottleneck buffer (a path direction without `queue`): 100 ms at the rate, at least 20 frames
#: (shallower buffers on paths without delay made Linux TCP retransmit up to half of what it sent: tbf, 10 mbit),
#: but the 20 frames never more than 200 ms at the rate (at 150 kbit/s they were 1.6 s of queue, an RTT of a
#: second nobody asked for), and never fewer than 4 frames (TCP needs a few to keep sending at all).
DEFAULT_QUEUE_S = 0.1
DEFAULT_QUEUE_MIN_FRAMES = 20
DEFAULT_QUEUE_MAX_S = 0.2
DEFAULT_QUEUE_FLOOR_FRAMES = 4


def default_queue_bytes(rate_bps: float) -> int:
    """The tail-drop limit in bytes of a direction without `queue`, at `rate_bps` bit/s (see DEFAULT_QUEUE_S).

    max(min(max(100 ms at the rate, 20 frames), 200 ms at the rate), 4 frames); only below
    4 x 1514 B / 200 ms = 242 kbit/s does it hold more than 200 ms (then `queue_notes` says so).
    """
    per_s = rate_bps / 8
    limit = min(max(int(per_s * DEFAULT_QUEUE_S), DEFAULT_QUEUE_MIN_FRAMES * TC_MTU), int(per_s * DEFAULT_QUEUE_MAX_S))
    return max(limit, DEFAULT_QUEUE_FLOOR_FRAMES * TC_MTU)
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


#: the flags of an MPTCP endpoint (`ip mptcp endpoint`), in the order the lab writes them
ENDPOINT_FLAGS = ("subflow", "signal", "backup", "fullmesh")
#: the in-kernel path manager's limit on endpoints per namespace, extra subflows and accepted ADD_ADDRs
#: (MPTCP_PM_ADDR_MAX in net/mptcp/pm_kernel.c)
PM_ADDR_MAX = 8


def _endpoint(value: Any) -> Any:
    """'subflow', 'signal backup', 'subflow,fullmesh' or a list of flags -> the canonical 'subflow backup' form.

    A path's endpoint is the client's (subflow: the client opens the subflow)
    or the server's (signal: the server announces an address with ADD_ADDR
    and the client joins it). 'backup' or 'fullmesh' alone mean a client
    subflow endpoint with that flag, as they do on their own nowhere else.
    """
    if isinstance(value, (list, tuple)):
        words = [str(v).strip().lower() for v in value]
    elif isinstance(value, str):
        words = value.replace(",", " ").lower().split()
    else:
        raise ValueError(f"{value!r} is not an endpoint; write flags such as \"subflow\", \"signal\", \"subflow backup\"")
    unknown = [w for w in words if w not in ENDPOINT_FLAGS]
    if unknown or not words:
        raise ValueError(f"{value!r}: endpoint flags are {', '.join(ENDPOINT_FLAGS)} (as ip mptcp endpoint takes them), "
                         "e.g. \"subflow\", \"signal\", \"subflow backup\", \"subflow fullmesh\"")
    flags = set(words)
    if "signal" in flags and "fullmesh" in flags:
        raise ValueError(f"{value!r}: the kernel refuses an endpoint with both signal and fullmesh "
                         "(\"flags mustn't have both signal and fullmesh\"); a signal endpoint is the server's, fullmesh the client's")
    if "signal" in flags and "subflow" in flags:
        raise ValueError(f"{value!r}: `endpoint` is one host's endpoint, the client's (subflow) or the server's (signal), "
                         "not both; for both on one path write endpoint = \"subflow\" and server_endpoint = \"signal\"")
    if "signal" not in flags:
        flags.add("subflow")
    return " ".join(f for f in ENDPOINT_FLAGS if f in flags)


EndpointFlags = Annotated[str, BeforeValidator(_endpoint)]


def _server_endpoint(value: Any) -> Any:
    """'signal' or 'signal backup' (a list too) -> the canonical form; the server's endpoints only announce."""
    flags = _endpoint(value).split()
    if "signal" not in flags:
        raise ValueError(f"{value!r}: a server endpoint announces the server's address (ADD_ADDR): write \"signal\" or "
                         "\"signal backup\" (the client opens subflows, the server cannot: the client does not listen)")
    return " ".join(flags)


ServerEndpointFlags = Annotated[str, BeforeValidator(_server_endpoint)]

#: the largest seed: what a 64-bit signed integer holds (the store keeps seeds as SQL BIGINT)
SEED_MAX = 2**63 - 1


def seed_of(value: Any) -> int | str:
    """A seed as `[run] seed`, `--set run.seed=` and `--seed` take it: an integer 0..2^63-1 (a string of ASCII
    digits counts) or "random" (any case); returns the int or "random". Raises ValueError in the lab's words
    (one message for every bad value: a float, a negative number, a word, a Unicode digit such as '²')."""
    if isinstance(value, str):
        text = value.strip()
        if text.lower() == "random":
            return "random"
        if text.isascii() and text.isdigit():
            value = int(text)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= SEED_MAX:
        return value
    raise ValueError(f"a seed is an integer from 0 to 2^63-1 or \"random\" (got {value!r})")


Seed = Annotated[int | Literal["random"], BeforeValidator(seed_of)]


class Path(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,32}$")]
    #: the MPTCP endpoint this path's subflows come from: client "subflow" (the default), server "signal"
    #: (ADD_ADDR), with "backup" and/or "fullmesh" as `ip mptcp endpoint` allows them
    endpoint: EndpointFlags = "subflow"
    #: subflows over this path: each from its own endpoint (one more client address, or one more announced
    #: server address, on the same link)
    subflows: Annotated[int, Field(ge=1, le=PM_ADDR_MAX)] = 1
    #: the server's endpoint on this path beside the client's `endpoint`: "signal" or "signal backup" (the server
    #: announces `server_addresses` addresses reached over this path, the client joins them); None: none
    server_endpoint: ServerEndpointFlags | None = None
    #: server addresses announced over this path with `server_endpoint` (default 1); a path whose `endpoint` is
    #: "signal" says it with `subflows`, as it always did
    server_addresses: Annotated[int, Field(ge=1, le=PM_ADDR_MAX)] | None = None
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
        if self.server_endpoint is not None and self.signal:
            raise ValueError(f"server_endpoint: endpoint = \"{self.endpoint}\" already makes this path the server's; "
                             "give server_endpoint with a client endpoint (subflow, backup, fullmesh)")
        if self.server_addresses is not None and self.server_endpoint is None:
            raise ValueError("server_addresses: addresses announced over the path need server_endpoint = \"signal\""
                             + (" (a path whose endpoint is signal announces `subflows` addresses)" if self.signal else ""))
        return self

    @property
    def announced(self) -> int:
        """Server addresses announced (ADD_ADDR) over this path: `subflows` of a signal path, `server_addresses`
        (default 1) with a `server_endpoint`, else 0."""
        if self.signal:
            return self.subflows
        return (self.server_addresses or 1) if self.server_endpoint is not None else 0

    @property
    def server_flags(self) -> str | None:
        """The flags of the server's endpoints on this path ("signal", "signal backup"), or None when it has none."""
        return self.endpoint if self.signal else self.server_endpoint

    @property
    def client_subflows(self) -> int:
        """Subflows the client's endpoints on this path open to the server's own address (0 on a signal path)."""
        return 0 if self.signal else self.subflows

    @property
    def flags(self) -> frozenset[str]:
        """The endpoint's flags, e.g. {'subflow', 'backup'}."""
        return frozenset(self.endpoint.split())

    @property
    def signal(self) -> bool:
        """Whether the server announces this path's addresses (ADD_ADDR) instead of the client opening subflows."""
        return "signal" in self.flags

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


class Limits(_Strict):
    """The in-kernel path manager's limits (`ip mptcp limits`), in client and server; unset: what the paths need."""

    #: extra subflows per connection (beyond the first), 0 to 8
    subflows: Annotated[int, Field(ge=0, le=PM_ADDR_MAX)] | None = None
    #: ADD_ADDR announcements a connection accepts (and joins), 0 to 8
    add_addr_accepted: Annotated[int, Field(ge=0, le=PM_ADDR_MAX)] | None = None


class Mptcp(_Strict):
    scheduler: str = "default"
    path_manager: Literal["kernel", "userspace"] = "kernel"
    #: overrides of the path manager's limits; by default they are what the paths' endpoints need
    limits: Limits | None = None


def _link_backend(value: Any) -> Any:
    """`[run] link_backend`: auto or a registered link backend (links.BACKENDS, the one list)."""
    from .links import unknown_backend

    problem = unknown_backend(value) if isinstance(value, str) else None
    if problem:
        raise ValueError(f"got {value!r}; {problem}")
    return value


class RunSettings(_Strict):
    repeat: Annotated[int, Field(ge=1, le=1000)] = 3
    timeout: PositiveDuration = 60.0
    link_backend: Annotated[str, BeforeValidator(_link_backend)] = "auto"
    #: a completed repetition slower than this is `over_budget` (the kernel selftests' completion budget)
    budget: PositiveDuration | None = None
    #: where the budget comes from when the file gives none: "selftest" is simult_flows.sh's formula over the
    #: paths' rates and the workload size (mptcplab.selftests.simult_flows.selftest_budget_ms: 16 MiB over 10+10
    #: mbit is 7.906 s), "selftest-strict" the same minus the 200 ms pause inside the interval the script times
    #: (which the lab's transfer does not have: 7.706 s); None: `budget` as written
    budget_rule: Literal["selftest", "selftest-strict"] | None = None
    #: "best-path": also run the workload as plain TCP on each path alone, interleaved with the MPTCP
    #: repetitions, and report mptcp_vs_best_path; "none": MPTCP only
    baseline: Literal["none", "best-path"] = "none"
    #: the metric `suite run` summarises and judges this scenario by (a name of mptcplab.metrics, e.g.
    #: "latency_max_ms" for a failover whose one stall is the finding); None: its workload kind's main metric
    metric: Annotated[str, Field(pattern=r"^[a-z0-9_.]{1,64}$")] | None = None
    #: deterministic executors (UML with time travel): repetition i draws seed `seed + i`, the same on every kernel
    #: and every machine, so two kernels are compared pair by pair; "random": the host's randomness, independent draws
    seed: Seed = 1


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


#: event actions on the path's link emulation (the link backend applies them)
LINK_ACTIONS = ("down", "up", "set")
#: event actions on the hosts: the client's interface, the path's MPTCP endpoints, the router's ICMP answers
#: (the topology applies them)
HOST_ACTIONS = ("carrier_down", "carrier_up", "endpoint_remove", "endpoint_add", "unreachable", "reachable")
#: host actions that take a direction (the others act on the whole path)
DIRECTED_HOST_ACTIONS = ("unreachable",)


class Event(_Strict):
    """A change to one path during a run: failures and handovers.

    `down`/`up` blackhole the path silently (the link emulator drops
    everything; nothing is told to the hosts); `carrier_down`/`carrier_up`
    take the client's interface of the path down and up (`ip link set dev X
    down`: the kernel sees it, routes through it go); `endpoint_remove` /
    `endpoint_add` delete and re-create the path's MPTCP endpoints (the
    client's, or the server's for a signal path: RM_ADDR and ADD_ADDR);
    `unreachable` / `reachable`: the path's first-hop router stops
    forwarding and answers every packet with ICMP host unreachable (as a
    router whose uplink died does), then forwards again;
    `set` changes rate, delay, jitter, loss or queue.
    """

    at: Duration
    path: str
    action: Literal["down", "up", "set", "carrier_down", "carrier_up", "endpoint_remove", "endpoint_add",
                    "unreachable", "reachable"]
    direction: Literal["both", "up", "down"] = "both"
    rate: Rate | None = None
    delay: Duration | None = None
    loss: Loss | None = None
    jitter: Duration | None = None
    queue: QueueLimit | None = None

    @model_validator(mode="after")
    def _set_has_values(self) -> "Event":
        changes = [self.rate, self.delay, self.loss, self.jitter, self.queue]
        if self.action == "set" and all(v is None for v in changes):
            raise ValueError("action = 'set' needs at least one of rate, delay, jitter, loss or queue")
        if self.action != "set" and any(v is not None for v in changes):
            raise ValueError(f"action = '{self.action}' takes no rate, delay, jitter, loss or queue; use action = 'set'")
        if self.action in HOST_ACTIONS and self.action not in DIRECTED_HOST_ACTIONS and self.direction != "both":
            raise ValueError(f"action = '{self.action}' acts on the whole path, not one direction; leave out direction")
        return self

    def link_changes(self) -> dict[str, Any]:
        """What a `set` changes, as LinkSpec fields (rate_bps, delay_s, jitter_s, loss, queue)."""
        pairs = (("rate_bps", self.rate), ("delay_s", self.delay), ("jitter_s", self.jitter), ("loss", self.loss),
                 ("queue", self.queue))
        return {k: v for k, v in pairs if v is not None}


#: keys added to the format after scenarios were first stored -> their default, by table: left out of the
#: normalized content while at the default, so existing scenarios keep their stored version (content_hash)
LATER_DEFAULTS: dict[str, dict[str, Any]] = {
    "path": {"endpoint": "subflow", "subflows": 1, "server_endpoint": None, "server_addresses": None},
    "event": {"jitter": None, "queue": None},
    "mptcp": {"limits": None},
    "run": {"seed": 1, "budget_rule": None, "metric": None},
}


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
        if self.run.baseline == "best-path" and self.workload.kind == "command":
            raise ValueError("run.baseline = \"best-path\" does not work with workload kind \"command\": the lab cannot "
                             "make your programs use plain TCP on one path (mptcpize turns every socket into MPTCP); leave "
                             "baseline out, or use a lab workload (bulk, rr, stream, flows) for the baseline")
        if self.run.metric is not None:
            from .metrics import METRIC_TABLE  # the one table of metric names (pure: no engine)

            if self.run.metric not in METRIC_TABLE or METRIC_TABLE[self.run.metric].scope != "repetition":
                known = ", ".join(m.name for m in METRIC_TABLE.values() if m.scope == "repetition")
                raise ValueError(f"run.metric {self.run.metric!r} is not a metric of a repetition; known: {known}")
        end = duration or self.run.timeout
        for i, event in enumerate(self.events):
            if event.path not in names:
                raise ValueError(f"event[{i}] names path {event.path!r}, which does not exist; paths are: {', '.join(names)}")
            if event.at >= end:
                what = "the workload's duration" if duration else "the run's timeout"
                raise ValueError(f"event[{i}] at {event.at:g}s is after the run ends ({what} is {end:g}s)")
        self._check_endpoints()
        self._check_within_timeout()
        self._apply_budget_rule()
        return self

    def _apply_budget_rule(self) -> None:
        """Fill run.budget from run.budget_rule (the selftest's formula); refuse a written budget that disagrees."""
        rule = self.run.budget_rule
        if rule is None:
            return
        size = getattr(self.workload, "size", None)
        rates = [p.link("up").rate_bps for p in self.paths]
        if size is None or any(r is None for r in rates):
            raise ValueError(f"run.budget_rule = \"{rule}\" computes the budget from a workload size and every path's "
                             "rate: give [workload] size and each path a rate, or set run.budget instead")
        budget = selftest_budget_ms(int(size), [int(r) for r in rates if r is not None], strict=rule.endswith("strict")) / 1000
        if self.run.budget is not None and abs(self.run.budget - budget) > 1e-9:
            raise ValueError(f"run.budget {format_time(self.run.budget)} disagrees with run.budget_rule = \"{rule}\" "
                             f"({budget:g}s): leave run.budget out, the rule sets it")
        object.__setattr__(self.run, "budget", budget)  # frozen model: filled once, while it is validated

    def _check_endpoints(self) -> None:
        """Endpoints, subflows and endpoint/carrier events the path manager can do, in the order they happen."""
        first = self.paths[0]
        if first.signal:
            raise ValueError(f"path[0].endpoint = \"{first.endpoint}\": the first path carries the initial subflow, which the "
                             "client opens; make another path the signal one")
        if self.mptcp.path_manager == "userspace":
            for i, p in enumerate(self.paths):
                if p.endpoint != "subflow" or p.subflows != 1 or p.server_endpoint is not None:
                    key = "endpoint" if p.endpoint != "subflow" else "subflows" if p.subflows != 1 else "server_endpoint"
                    raise ValueError(f"path[{i}].{key}: endpoints and subflows per path are the in-kernel path manager's; "
                                     "with path_manager = \"userspace\" the lab opens one subflow per path")
            for i, e in enumerate(self.events):
                if e.action.startswith("endpoint_"):
                    raise ValueError(f"event[{i}] action = '{e.action}' acts on the in-kernel path manager's endpoints; "
                                     "use path_manager = \"kernel\"")
            if self.mptcp.limits is not None:
                raise ValueError("mptcp.limits: limits are the in-kernel path manager's; use path_manager = \"kernel\"")
        client = sum(p.client_subflows for p in self.paths) - (0 if first.endpoint != "subflow" else 1)
        server = sum(p.announced for p in self.paths)
        if max(client, server) > PM_ADDR_MAX or self.needed_subflows() - 1 > PM_ADDR_MAX:
            raise ValueError(f"the paths ask for {self.needed_subflows()} subflows ({client} client and {server} server endpoints); "
                             f"the in-kernel path manager allows {PM_ADDR_MAX} endpoints per host and {PM_ADDR_MAX} subflows "
                             "beyond the first: lower some path's subflows")
        # host actions that come in pairs: (off, on) -> what the path is called in an error, its state on, off
        pairs = {("endpoint_remove", "endpoint_add"): ("'s endpoint", "present", "already removed"),
                 ("carrier_down", "carrier_up"): ("'s carrier", "up", "already down"),
                 ("unreachable", "reachable"): ("", "reachable", "already unreachable")}
        on = {(p.name, pair): True for p in self.paths for pair in pairs}
        for e in sorted(self.events, key=lambda e: e.at):
            i = self.events.index(e)
            pair = next((pr for pr in pairs if e.action in pr), None)
            if pair is None:
                continue
            what, on_state, off_state = pairs[pair]
            if on[(e.path, pair)] == (e.action == pair[1]):
                state = on_state if on[(e.path, pair)] else off_state
                raise ValueError(f"event[{i}] {e.action} at {e.at:g}s: path {e.path!r}{what} is {state} then; "
                                 f"{pair[0]} and {pair[1]} alternate, starting with {pair[0]}")
            on[(e.path, pair)] = e.action == pair[1]

    def _check_within_timeout(self) -> None:
        """Refuse what cannot finish within [run] timeout at the scenario's own delays and rates.

        A path whose round trip (its up plus down delay, at the lowest an event sets) is not shorter than the
        timeout completes no handshake before it. A workload that moves `size` (times `count` for flows) takes at
        least bytes x 8 / the sum of the paths' rates in its direction (each at the highest it is ever asked for,
        peak_rates; a direction replaying a trace makes no bound), so one that needs the timeout or more can only
        time out. As for duration, the key is named and what to change is said.
        """
        timeout = self.run.timeout
        for i, p in enumerate(self.paths):
            rtt = 0.0
            for way in ("up", "down"):
                delays = [p.link(way).delay_s] + [e.delay for e in self.events if e.path == p.name and e.action == "set"
                                                  and e.delay is not None and e.direction in ("both", way)]
                rtt += min(delays)
            if rtt >= timeout:
                over = [w for w in ("up", "down") if getattr(p, w) is not None and getattr(p, w).delay is not None]
                key = f"path[{i}].{over[0]}.delay" if over else f"path[{i}].delay"
                raise ValueError(f"{key}: a round trip over path {p.name!r} takes {format_time(rtt)}, not shorter than "
                                 f"run.timeout {format_time(timeout)}, so nothing completes over it; lower the delay "
                                 f"or raise [run] timeout")
        size = getattr(self.workload, "size", None)
        if size is None:
            return
        count = getattr(self.workload, "count", None) or 1
        direction = getattr(self.workload, "direction", "upload")
        peak = self.peak_rates()
        for way in ("up", "down") if direction == "both" else ("up",) if direction == "upload" else ("down",):
            if any(p.link(way).trace is not None or (p.name, way) not in peak for p in self.paths):
                return
            total = sum(peak[(p.name, way)] for p in self.paths)
            need = size * count * 8 / total
            if need >= timeout:
                what = f"workload.size {_size_text(size)}" + (f" x count {count}" if count > 1 else "")
                takes = format_time(round(need, 1)) if need < 86400 else f"{need / 86400:.3g} days"
                fix = f" (e.g. timeout = \"{format_time(round(need * 1.5 + 10))}\")" if need < 86400 else ""
                raise ValueError(f"{what} takes at least {takes} at the paths' {way}link rates ({format_rate(total)} "
                                 f"in all), not shorter than run.timeout {format_time(timeout)}, so it can only time out; "
                                 f"lower the size or raise [run] timeout{fix}")

    def peak_rates(self) -> dict[tuple[str, str], float]:
        """(path, direction) -> the highest fixed rate (bit/s) it is ever asked for, its own or a `set` event's.

        Directions replaying a trace without any fixed rate are left out. Used by the timeout check above and by
        the link backends' ceilings (links.base.peak_rates).
        """
        out: dict[tuple[str, str], float] = {}
        for p in self.paths:
            for direction in ("up", "down"):
                rate = p.link(direction).rate_bps
                if rate is not None:
                    out[(p.name, direction)] = rate
        for event in self.events:
            if event.action == "set" and event.rate is not None:
                for direction in ("up", "down") if event.direction == "both" else (event.direction,):
                    key = (event.path, direction)
                    out[key] = max(out.get(key, 0.0), event.rate)
        return out

    def has_backup_endpoint(self) -> bool:
        """Whether a path's endpoint (the client's, or the server's signal one) carries the backup flag (its runs
        then report backup_share)."""
        return any("backup" in p.flags or "backup" in (p.server_endpoint or "").split() for p in self.paths)

    def needed_subflows(self) -> int:
        """How many subflows the paths' endpoints open in all (the initial one included), before limits.

        A subflow endpoint opens one subflow to the server's address; a signal
        path's announced address is joined once from whatever address the
        client's routing picks (its path), unless the client has fullmesh
        endpoints: then (the kernel's rule) every fullmesh address joins every
        server address, and announced addresses are joined from those only.
        """
        announced = sum(p.announced for p in self.paths)
        fullmesh = any("fullmesh" in p.flags for p in self.paths if not p.signal)
        total = 0 if fullmesh else announced  # each announced address joined once, unless from fullmesh addresses
        for p in self.paths:
            if p.signal:
                continue
            total += p.subflows * (1 + announced) if "fullmesh" in p.flags else p.subflows
        return total

    def pm_limits(self) -> tuple[int, int]:
        """(subflows, add_addr_accepted) the lab sets in client and server: `[mptcp] limits`, else what the paths need.

        With every path at its default (one subflow endpoint each) this is
        (paths - 1, paths - 1), as the lab always set it.
        """
        extra = len(self.paths) - 1
        subflows = min(max(extra, self.needed_subflows() - 1), PM_ADDR_MAX)
        accepted = min(max(extra, sum(p.announced for p in self.paths)), PM_ADDR_MAX)
        over = self.mptcp.limits
        if over is not None:
            subflows = subflows if over.subflows is None else over.subflows
            accepted = accepted if over.add_addr_accepted is None else over.add_addr_accepted
        return subflows, accepted

    def expected_subflows(self) -> int:
        """The subflows a connection should reach at once: what the endpoints open, within the limits.

        A repetition without events that never reaches it failed (the path
        manager did not use every path).
        """
        subflows, accepted = self.pm_limits()
        announced = sum(p.announced for p in self.paths)
        fullmesh = any("fullmesh" in p.flags for p in self.paths if not p.signal)
        needed = self.needed_subflows()
        if announced > accepted and not fullmesh:
            needed -= announced - accepted
        return min(needed, 1 + subflows)

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
        """The content as JSON values (what is stored and hashed).

        Keys added to the format after scenarios were first stored are left
        out while at their default (`LATER_DEFAULTS`), so a scenario that does
        not use them keeps the content and version (`content_hash`) it had.
        """
        out = self.model_dump(mode="json", by_alias=True)
        for table, defaults in LATER_DEFAULTS.items():
            items = out.get(table)
            for item in items if isinstance(items, list) else [items] if isinstance(items, dict) else []:
                for key, default in defaults.items():
                    if key in item and item[key] == default:
                        del item[key]
        return out

    @property
    def content_hash(self) -> str:
        """Hash of the normalized content: an edited file is a new scenario version (its tags are labels, not content).

        `run.baseline` is left out: the best-path baseline adds plain-TCP repetitions beside the MPTCP ones
        and changes nothing they measure (and scenarios hashed before the key existed keep their hash);
        `run.seed` too: it chooses random draws, not what is measured (runs record it as a condition); and
        `run.metric`, which only says what the suite judges.
        """
        content = {k: v for k, v in self.normalized().items() if k != "tags"}
        content["run"] = {k: v for k, v in content["run"].items() if k not in ("baseline", "seed", "metric")}
        blob = json.dumps(content, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _size_text(n: float) -> str:
    """Bytes as the scenario format writes them: 900000GiB, 1.5MiB, 512B."""
    for unit, k in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= k:
            return f"{n / k:g}{unit}"
    return f"{n:g}B"


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
    return out  # "": a check of the whole scenario, whose message names its keys


def _first_error(exc: ValidationError) -> str:
    """The first problem, in the lab's words (fields.validation_problem), at the key the user wrote."""
    return validation_problem(exc, _loc, unknown_key="unknown key (check its spelling against the scenario format in "
                                                    "docs/scenario.md)")


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
    notes = [*context["notes"], *jitter_notes(scenario), *queue_notes(scenario)]
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


def queue_notes(scenario: Scenario) -> list[str]:
    """One line per path direction (or `set` event) whose default queue holds more than DEFAULT_QUEUE_MAX_S.

    Only a fixed rate without `queue` is judged: a direction replaying a trace, or with its own `queue`,
    has what the user gave.
    """
    out = []

    def judge(where: str, rate_bps: float) -> None:
        limit = default_queue_bytes(rate_bps)
        held = limit * 8 / rate_bps
        if held > DEFAULT_QUEUE_MAX_S + 1e-9:
            out.append(f"{where}: the default queue ({DEFAULT_QUEUE_FLOOR_FRAMES} frames, {limit} B) holds "
                       f"{held * 1000:.0f} ms at {format_rate(rate_bps)}, which adds up to that much to the RTT; "
                       "give the path a queue (e.g. queue = \"100ms\") to choose it")

    for path in scenario.paths:
        up, down = path.link("up"), path.link("down")
        same = (up.rate_bps, up.queue) == (down.rate_bps, down.queue)
        for direction, spec in (("both", up),) if same else (("up", up), ("down", down)):
            if spec.queue is None and spec.rate_bps is not None and spec.trace is None:
                judge(f"path {path.name!r}" + ("" if direction == "both" else f" ({direction})"), spec.rate_bps)
    for i, event in enumerate(scenario.events):
        if event.action == "set" and event.rate is not None and event.queue is None:
            path = scenario.path(event.path)
            directions = ("up", "down") if event.direction == "both" else (event.direction,)
            if all(path.link(d).queue is None for d in directions):  # type: ignore[arg-type]
                judge(f"event[{i}] (path {event.path!r} at {format_time(event.at)})", event.rate)
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

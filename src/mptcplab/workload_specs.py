"""The `[workload]` table: one model per workload kind, chosen by `kind`.

Pure data, like the rest of the scenario: a new kind adds its model here
(and to `SPECS`), with `MEASURES` declaring what it measures (its own
metrics, units and directions, its main and baseline metric, its per-event
series: `metrics.py` and the report read them from there), and its engine in
`mptcplab/workloads/` (registered in `workloads.base.WORKLOADS`). A table
without `kind` is a bulk transfer, as in the first wave's files.
"""
from __future__ import annotations

import re
import shlex
import string
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import BeforeValidator, Field, model_validator

from .fields import PositiveDuration, Rate, Size, _Strict
from .measures import Measures, Metric
from .units import format_rate


def parse_per_second(text: str | int | float) -> float:
    """Events per second from '10/s', '600/min' or '0.5/s'. A bare number is refused: '10' could be anything."""
    if isinstance(text, bool) or not isinstance(text, str):
        raise ValueError(f"{text!r} has no unit; write e.g. '{text}/s'")
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*/\s*(s|sec|min|m)\s*", text)
    if not m:
        raise ValueError(f"{text!r} is not an arrival rate; write e.g. '10/s' or '600/min'")
    value = float(m.group(1)) / (60.0 if m.group(2) in ("min", "m") else 1.0)
    if value <= 0:
        raise ValueError(f"{text!r} is not a positive arrival rate; write e.g. '10/s'")
    return value


#: arrivals per second, written "10/s" or "600/min"
PerSecond = Annotated[float, BeforeValidator(parse_per_second)]


class BulkSpec(_Strict):
    """`kind = "bulk"`: one connection moving `size` bytes or running for `duration`.

    `direction = "both"`: an upload and a download connection at once, each
    moving `size` (or running for `duration`).
    """

    kind: Literal["bulk"] = "bulk"
    MEASURES: ClassVar[Measures] = Measures(main="goodput_mbps", baseline="goodput_mbps", metrics=(
        # direction = "both": each direction's goodput over its own transfer time
        Metric("upload_goodput_mbps", "mbit/s", "higher", "bulk both: the upload connection's goodput"),
        Metric("download_goodput_mbps", "mbit/s", "higher", "bulk both: the download connection's goodput"),
    ))
    direction: Literal["upload", "download", "both"] = "upload"
    size: Size | None = None
    duration: PositiveDuration | None = None

    @model_validator(mode="after")
    def _size_or_duration(self) -> "BulkSpec":
        if (self.size is None) == (self.duration is None):
            raise ValueError("give exactly one of size (e.g. '16MiB') or duration (e.g. '10s')")
        return self


class RRSpec(_Strict):
    """`kind = "rr"`: request/response transactions over one MPTCP connection.

    Closed-loop (`concurrency` transactions outstanding, each answered one
    starting the next) or open-loop (`rate` arrivals per second, Poisson or
    fixed intervals, whatever is outstanding), for a `duration` or a `count`.
    """

    kind: Literal["rr"] = "rr"
    # every transaction's latency, request send() to the response's last byte read
    MEASURES: ClassVar[Measures] = Measures(main="latency_p99_ms", baseline="latency_p50_ms", metrics=(
        Metric("latency_p50_ms", "ms", "lower", "rr: median transaction latency (request send() to the response's last byte)"),
        Metric("latency_p90_ms", "ms", "lower", "rr: 90th percentile transaction latency"),
        Metric("latency_p99_ms", "ms", "lower", "rr: 99th percentile transaction latency"),
        Metric("latency_p999_ms", "ms", "lower", "rr: 99.9th percentile transaction latency"),
        Metric("latency_max_ms", "ms", "lower", "rr: slowest transaction"),
        Metric("transactions", "", "higher", "rr: transactions answered"),
        Metric("transactions_per_s", "1/s", "higher", "rr: transactions answered per second, first request to last answer"),
    ), series={"latency_ms": ("transaction latency", "ms")})
    request: Size = 200
    response: Size = 2048
    concurrency: Annotated[int, Field(ge=1, le=1024)] | None = None
    rate: PerSecond | None = None
    arrivals: Literal["poisson", "fixed"] = "poisson"
    duration: PositiveDuration | None = None
    count: Annotated[int, Field(ge=1)] | None = None

    @model_validator(mode="after")
    def _checks(self) -> "RRSpec":
        if (self.duration is None) == (self.count is None):
            raise ValueError("give exactly one of duration (e.g. '10s') or count (e.g. 1000)")
        if self.concurrency is not None and self.rate is not None:
            raise ValueError("give concurrency (closed-loop) or rate (open-loop, e.g. '10/s'), not both")
        if self.rate is None and "arrivals" in self.model_fields_set:
            raise ValueError("arrivals applies to an open-loop rate; add rate = '10/s' or remove arrivals")
        return self

    @property
    def outstanding(self) -> int:
        """Closed-loop concurrency (1 when neither concurrency nor rate is given); 0 for open-loop."""
        return 0 if self.rate is not None else (self.concurrency or 1)


class StreamSpec(_Strict):
    """`kind = "stream"`: application-limited chunks (`chunk` bytes at `rate`) for a `duration`.

    `direction = "download"` (the default) streams from the server to the
    client, as a video server does; `"upload"` the other way.
    """

    kind: Literal["stream"] = "stream"
    MEASURES: ClassVar[Measures] = Measures(main="chunk_delay_p99_ms", baseline="chunk_delay_p50_ms", metrics=(
        Metric("chunk_delay_p50_ms", "ms", "lower", "stream: median chunk delay (due at the sender to last byte read)"),
        Metric("chunk_delay_p99_ms", "ms", "lower", "stream: 99th percentile chunk delay"),
        Metric("chunk_delay_max_ms", "ms", "lower", "stream: largest chunk delay"),
        Metric("chunks", "", "higher", "stream: chunks read whole by the receiving application"),
        Metric("late_chunks", "chunks", "lower", "stream: chunks whose delay exceeded the deadline"),
        Metric("stall_s", "s", "lower", "stream: time the receiving application waited in recv() with a chunk outstanding"),
    ), series={"delay_ms": ("chunk delay", "ms")})
    rate: Rate
    chunk: Size = 64 * 1024
    deadline: PositiveDuration | None = None
    duration: PositiveDuration
    direction: Literal["upload", "download"] = "download"

    @model_validator(mode="after")
    def _checks(self) -> "StreamSpec":
        if self.chunk * 8 > self.rate * self.duration:
            raise ValueError(f"chunk {self.chunk} B is more than rate {format_rate(self.rate)} sends in the duration "
                             f"{self.duration:g}s; lower chunk, raise rate or lengthen duration")
        return self

    @property
    def interval_s(self) -> float:
        """Seconds between two chunks' due times."""
        return self.chunk * 8 / self.rate


class FlowsSpec(_Strict):
    """`kind = "flows"`: `count` short connections of `size` bytes each, sequential or arriving at `rate`."""

    kind: Literal["flows"] = "flows"
    MEASURES: ClassVar[Measures] = Measures(main="fct_p99_ms", baseline="fct_p50_ms", metrics=(
        Metric("fct_p50_ms", "ms", "lower", "flows: median flow completion time (connect() to the last byte read)"),
        Metric("fct_p99_ms", "ms", "lower", "flows: 99th percentile flow completion time"),
        Metric("fct_max_ms", "ms", "lower", "flows: slowest flow"),
        Metric("flows_completed", "flows", "higher", "flows: connections that delivered their whole size"),
        Metric("multi_subflow_flows", "flows", "higher", "flows: connections that had more than one subflow at their end"),
    ), series={"fct_ms": ("flow completion time", "ms")})
    count: Annotated[int, Field(ge=1, le=100_000)]
    size: Size
    rate: PerSecond | None = None
    arrivals: Literal["poisson", "fixed"] = "poisson"
    direction: Literal["upload", "download"] = "upload"

    @model_validator(mode="after")
    def _checks(self) -> "FlowsSpec":
        if self.rate is None and "arrivals" in self.model_fields_set:
            raise ValueError("arrivals applies to flows arriving at a rate; add rate = '10/s' or remove arrivals")
        return self


#: the placeholders a `command` workload's command lines may use, and what each becomes
COMMAND_PLACEHOLDERS: dict[str, str] = {
    "server": "the server's address (10.0.100.2), reachable over every path",
    "port": "the lab's server port (5201, iperf3's default), free in the server namespace",
    "client": "the client's address on the first path (10.0.1.1)",
}


def _command_line(value: Any) -> Any:
    """A command line as a shell would split it (no shell runs it); its placeholders must be known."""
    if not isinstance(value, str):
        return value  # pydantic says what type it wanted
    try:
        argv = shlex.split(value)
    except ValueError as e:
        raise ValueError(f"{value!r} cannot be split into words: {e}") from None
    if not argv:
        raise ValueError("an empty command; write e.g. 'iperf3 -c {server} -t 5 --json'")
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(value) if f is not None]
    except ValueError as e:
        raise ValueError(f"{value!r}: {e} (write a literal brace as '{{{{' or '}}}}')") from None
    for f in fields:
        if f not in COMMAND_PLACEHOLDERS:
            raise ValueError(f"{value!r} uses placeholder {{{f}}}; known: "
                             + ", ".join("{" + k + "}" for k in COMMAND_PLACEHOLDERS))
    return value


CommandLine = Annotated[str, BeforeValidator(_command_line)]


class CommandSpec(_Strict):
    """`kind = "command"`: your own programs in the lab's namespaces, MPTCP forced on their sockets.

    `server` (optional) starts first in the server namespace; once it listens
    (or after 5 s) `client` runs in the client namespace; the repetition ends
    when the client exits (the server is then given 2 s to exit, then stopped).
    `mptcp = "mptcpize"` runs both under `mptcpize run` (Debian package mptcpd:
    LD_PRELOAD turns their TCP sockets into MPTCP ones); `"native"` runs them
    as written, for programs with their own MPTCP flag (iperf3 3.16+ `-m`).
    `direction` says which end sends the bulk of the data: the probes sample
    the subflows of every MPTCP connection in that end's namespace.
    """

    kind: Literal["command"] = "command"
    # the programs' own output is not parsed: what the probes see of their subflows (goodput from the bytes sent)
    MEASURES: ClassVar[Measures] = Measures(main="goodput_mbps", baseline="goodput_mbps")
    client: CommandLine
    server: CommandLine | None = None
    mptcp: Literal["mptcpize", "native"] = "mptcpize"
    direction: Literal["upload", "download"] = "upload"

    def argv(self, role: str, values: dict[str, str]) -> list[str]:
        """The `client` or `server` command line split into words, placeholders filled from `values`."""
        line = self.client if role == "client" else self.server
        assert line is not None
        return shlex.split(line.format(**values))


#: every workload model; the discriminated union below is built from it
SPECS: tuple[type[_Strict], ...] = (BulkSpec, RRSpec, StreamSpec, FlowsSpec, CommandSpec)


def _default_kind(value: Any) -> Any:
    if isinstance(value, dict) and "kind" not in value:
        return {**value, "kind": "bulk"}
    return value


WorkloadSpec = Annotated[Union[SPECS], Field(discriminator="kind"), BeforeValidator(_default_kind)]  # type: ignore[valid-type]

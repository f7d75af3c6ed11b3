"""The `[workload]` table: one model per workload kind, chosen by `kind`.

Pure data, like the rest of the scenario: a new kind adds its model here
(and to `SPECS`) and its engine in `mptcplab/workloads/` (registered in
`workloads.base.WORKLOADS`). A table without `kind` is a bulk transfer, as in
the first wave's files.
"""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

from pydantic import BeforeValidator, Field, model_validator

from .fields import PositiveDuration, Rate, Size, _Strict
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


#: every workload model; the discriminated union below is built from it
SPECS: tuple[type[_Strict], ...] = (BulkSpec, RRSpec, StreamSpec, FlowsSpec)


def _default_kind(value: Any) -> Any:
    if isinstance(value, dict) and "kind" not in value:
        return {**value, "kind": "bulk"}
    return value


WorkloadSpec = Annotated[Union[SPECS], Field(discriminator="kind"), BeforeValidator(_default_kind)]  # type: ignore[valid-type]

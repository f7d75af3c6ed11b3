"""The `[workload]` table: one model per workload kind, chosen by `kind`.

Pure data, like the rest of the scenario: a new kind adds its model here
(and to `SPECS`) and its engine in `mptcplab/workloads/` (registered in
`workloads.base.WORKLOADS`). A table without `kind` is a bulk transfer, as in
the first wave's files.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BeforeValidator, Field, model_validator

from .fields import PositiveDuration, Size, _Strict


class BulkSpec(_Strict):
    """`kind = "bulk"`: one connection moving `size` bytes or running for `duration`."""

    kind: Literal["bulk"] = "bulk"
    direction: Literal["upload", "download"] = "upload"
    size: Size | None = None
    duration: PositiveDuration | None = None

    @model_validator(mode="after")
    def _size_or_duration(self) -> "BulkSpec":
        if (self.size is None) == (self.duration is None):
            raise ValueError("give exactly one of size (e.g. '16MiB') or duration (e.g. '10s')")
        return self


#: every workload model; the discriminated union below is built from it
SPECS: tuple[type[_Strict], ...] = (BulkSpec,)


def _default_kind(value: Any) -> Any:
    if isinstance(value, dict) and "kind" not in value:
        return {**value, "kind": "bulk"}
    return value


WorkloadSpec = Annotated[Union[SPECS], Field(discriminator="kind"), BeforeValidator(_default_kind)]  # type: ignore[valid-type]

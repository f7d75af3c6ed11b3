"""Field types shared by every scenario model: values with units, parsed as tc and iperf write them."""
from __future__ import annotations

from typing import Annotated

from typing import Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo

from .units import parse_percent, parse_rate, parse_size, parse_time, rate_note


def _rate(value: Any, info: ValidationInfo) -> Any:
    """A rate in bit/s; a bytes-per-second unit ('100Mbps') is kept, as tc reads it, and noted."""
    bps = parse_rate(value)
    note = rate_note(value)
    if note and isinstance(info.context, dict):
        info.context.setdefault("notes", []).append(f"{info.field_name}: {note}")
    return bps


Rate = Annotated[float, BeforeValidator(_rate), Field(gt=0)]  # bit/s
Duration = Annotated[float, BeforeValidator(parse_time), Field(ge=0)]  # seconds
PositiveDuration = Annotated[float, BeforeValidator(parse_time), Field(gt=0)]  # seconds
Size = Annotated[int, BeforeValidator(parse_size), Field(gt=0)]  # bytes
Fraction = Annotated[float, BeforeValidator(parse_percent)]  # 0.0 to 1.0


class _Strict(BaseModel):
    """Unknown keys are errors; models are immutable values."""

    model_config = ConfigDict(extra="forbid", frozen=True)

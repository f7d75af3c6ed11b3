"""Field types shared by every scenario model: values with units, parsed as tc and iperf write them."""
from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from .units import parse_percent, parse_rate, parse_size, parse_time

Rate = Annotated[float, BeforeValidator(parse_rate), Field(gt=0)]  # bit/s
Duration = Annotated[float, BeforeValidator(parse_time), Field(ge=0)]  # seconds
PositiveDuration = Annotated[float, BeforeValidator(parse_time), Field(gt=0)]  # seconds
Size = Annotated[int, BeforeValidator(parse_size), Field(gt=0)]  # bytes
Fraction = Annotated[float, BeforeValidator(parse_percent)]  # 0.0 to 1.0


class _Strict(BaseModel):
    """Unknown keys are errors; models are immutable values."""

    model_config = ConfigDict(extra="forbid", frozen=True)

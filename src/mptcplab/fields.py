"""Field types shared by every scenario model: values with units, parsed as tc and iperf write them."""
from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo

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


#: what a pydantic error type means, in the lab's words: {name} is the key, {got} the value given
_TYPE_WORDS = {
    "int_parsing": "{name} must be a whole number (got {got})",
    "int_type": "{name} must be a whole number (got {got})",
    "int_from_float": "{name} must be a whole number (got {got})",
    "float_parsing": "{name} must be a number (got {got})",
    "float_type": "{name} must be a number (got {got})",
    "bool_parsing": "{name} must be true or false (got {got})",
    "bool_type": "{name} must be true or false (got {got})",
    "string_type": "{name} must be text in quotes (got {got})",
    "list_type": "{name} must be a list (got {got})",
    "dict_type": "{name} must be a table (got {got})",
    "model_type": "{name} must be a table (got {got})",
    "model_attributes_type": "{name} must be a table (got {got})",
    "string_pattern_mismatch": "{name} {got} does not have the form {pattern}",
    "missing": "required key is missing",
}
_BOUNDS = {"gt": "more than", "ge": "at least", "lt": "less than", "le": "at most"}


def _plural_of(name: str) -> str:
    return name if name.endswith("s") else f"{name}s"


def validation_problem(exc: ValidationError, where: Callable[[tuple[Any, ...]], str] | None = None,
                       unknown_key: str = "unknown key") -> str:
    """The first problem of a pydantic ValidationError in the lab's words, "<key>: <what is wrong>".

    The one place where the libraries' wording ("List should have at most 8 items after validation", "Input
    should be greater than 0", "Input tag 'torrent' found using 'kind'...", "Field required") becomes the lab's:
    "at most 8 paths (got 300)", "size must be more than 0", "unknown workload kind 'torrent' (bulk, rr, stream,
    flows, command)" (the kinds pydantic read from the model's union, i.e. the workload registry), "required key
    is missing". `where` writes the key's location (default: dotted, [i] for list items); `unknown_key` is what
    an extra key is called. "(and N more problems)" follows when there are more.
    """
    errors = exc.errors()
    err = errors[0]
    loc = tuple(err["loc"])
    name = next((str(p) for p in reversed(loc) if isinstance(p, str)), "value")
    msg = problem_words(err, name, unknown_key=unknown_key)
    place = (where or _dotted)(loc)
    more = len(errors) - 1
    return (f"{place}: {msg}" if place else msg) + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else "")


def problem_words(err: Any, name: str, got: str | None = None, unknown_key: str = "unknown key") -> str:
    """One pydantic error (an item of ValidationError.errors()) in the lab's words, about the key `name`; `got`
    is how to show the value given (default: its repr). Also what the CLI says of a bad option value (typer checks
    options with pydantic)."""
    kind, ctx = err["type"], err.get("ctx") or {}
    got = repr(err.get("input")) if got is None else got
    if kind in ("too_long", "too_short"):
        bound, limit = ("at most", ctx.get("max_length")) if kind == "too_long" else ("at least", ctx.get("min_length"))
        return f"{bound} {limit} {name if limit == 1 else _plural_of(name)} (got {ctx.get('actual_length')})"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        key = next(k for k in _BOUNDS if k in ctx)
        return f"{name} must be {_BOUNDS[key]} {ctx[key]} (got {got})"
    if kind == "union_tag_invalid":
        choices = ", ".join(t.strip(" '") for t in str(ctx.get("expected_tags", "")).split(","))
        return f"unknown {name} {str(ctx.get('discriminator', '')).strip(chr(39))} {ctx.get('tag')!r} ({choices})"
    if kind == "literal_error":
        return f"got {got}; choose {str(ctx.get('expected', '')).replace(chr(39), '')}"
    if kind == "extra_forbidden":
        return unknown_key
    if kind in _TYPE_WORDS:
        return _TYPE_WORDS[kind].format(name=name, got=got, pattern=ctx.get("pattern", ""))
    msg = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    return msg if kind in ("value_error", "assertion_error") else msg[:1].lower() + msg[1:]


def _dotted(loc: tuple[Any, ...]) -> str:
    """('path', 0, 'rate') -> path[0].rate; () -> '' (a problem of the whole document)."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out

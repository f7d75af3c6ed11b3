"""Units as tc and iperf users write them: 10mbit, 25ms, 16MiB, 1%.

tc semantics: ``kbit``/``mbit``/``gbit`` are bits per second (powers of 1000),
``kbps``/``mbps`` are *bytes* per second, ``bit``/``bps`` likewise. Sizes
accept both SI (KB, MB) and binary (KiB, MiB) suffixes, as iperf does.
"""
from __future__ import annotations

import re

_NUM = r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*"

_RATE = {
    "bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "tbit": 1e12,
    "bps": 8, "kbps": 8e3, "mbps": 8e6, "gbps": 8e9,
    "kibit": 1024, "mibit": 1024**2, "gibit": 1024**3,
}
_TIME = {"us": 1e-6, "usec": 1e-6, "ms": 1e-3, "msec": 1e-3, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0}
_SIZE = {
    "b": 1, "": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3,
}


def plural(n: int, word: str, words: str | None = None) -> str:
    """`n` and the word in the right number: plural(1, "repetition") == "1 repetition", else "3 repetitions"."""
    return f"{n} {word if n == 1 else (words or word + 's')}"


def _split(text: str, what: str, examples: str) -> tuple[float, str]:
    if isinstance(text, bool):
        raise ValueError(f"expected a {what} such as {examples}")
    if isinstance(text, (int, float)):
        return float(text), ""
    m = re.fullmatch(_NUM + r"([A-Za-z%]*)\s*", str(text))
    if not m:
        raise ValueError(f"{text!r} is not a {what}; use e.g. {examples}")
    return float(m.group(1)), m.group(2).lower()


_BYTE_RATE = {"bps": "bytes/s", "kbps": "kilobytes/s", "mbps": "megabytes/s", "gbps": "gigabytes/s"}


def parse_rate(text: str | int | float) -> float:
    """Bits per second from '10mbit', '500kbit', '1gbit', '2mbps' (bytes/s, as in tc).

    A bare number is refused (ValueError): tc reads it as bit/s, so `rate = 10`
    would be 10 bit/s, which no one means.
    """
    value, unit = _split(text, "rate", "'10mbit', '500kbit', '1gbit'")
    if not unit:
        shown = f"{value:g}"
        raise ValueError(f"{text!r} has no unit (tc would read it as {shown} bit/s); write e.g. '{shown}mbit' or '{shown}kbit'")
    factor = _RATE.get(unit)
    if factor is None:
        raise ValueError(f"unknown rate unit {unit!r} in {text!r}; use bit, kbit, mbit, gbit (or kbps/mbps for bytes/s)")
    return value * factor


def rate_note(text: str | int | float) -> str | None:
    """One line when `text` is a rate in tc's bytes-per-second units ('100Mbps'), often meant as bits; else None."""
    if not isinstance(text, str):
        return None
    m = re.fullmatch(_NUM + r"([A-Za-z]*)\s*", text)
    unit = m.group(2).lower() if m else ""
    if unit not in _BYTE_RATE:
        return None
    value = float(m.group(1))  # type: ignore[union-attr]
    bits_unit, bits_word = _BITS_FOR[unit]
    bps = value * _RATE[unit]
    bits = next((f"{bps / f:g} {u}/s" for u, f in (("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3)) if bps >= f), f"{bps:g} bit/s")
    per_s = _BYTE_RATE[unit] if value != 1 else _BYTE_RATE[unit].replace("bytes", "byte")
    return (f"{text.strip()} is {value:g} {per_s} = {bits}, as in tc; "
            f"write {value:g}{bits_unit} for {bits_word}")


_BITS_FOR = {"bps": ("bit", "bits"), "kbps": ("kbit", "kilobits"), "mbps": ("mbit", "megabits"), "gbps": ("gbit", "gigabits")}


def parse_time(text: str | int | float) -> float:
    """Seconds. A bare number is rejected: '25' could be ms or s."""
    value, unit = _split(text, "duration", "'25ms', '2s', '500us'")
    if not unit:
        raise ValueError(f"{text!r} has no unit; write e.g. '{text}ms' or '{text}s'")
    factor = _TIME.get(unit)
    if factor is None:
        raise ValueError(f"unknown time unit {unit!r} in {text!r}; use us, ms, s or min")
    return value * factor


def parse_size(text: str | int | float) -> int:
    """Bytes. A bare number is bytes."""
    value, unit = _split(text, "size", "'16MiB', '100MB', '65536'")
    factor = _SIZE.get(unit)
    if factor is None:
        raise ValueError(f"unknown size unit {unit!r} in {text!r}; use B, KB, MB, GB, KiB, MiB or GiB")
    return int(value * factor)


def parse_percent(text: str | int | float) -> float:
    """A fraction in [0, 1]. '1%' is 0.01; a bare number is a percentage too."""
    value, unit = _split(text, "percentage", "'1%', '0.5%'")
    if unit not in ("", "%"):
        raise ValueError(f"{text!r} is not a percentage; write e.g. '1%'")
    if not 0 <= value <= 100:
        raise ValueError(f"{text!r} is out of range: a percentage is between 0% and 100%")
    return value / 100.0


def format_rate(bps: float) -> str:
    for unit, factor in (("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3)):
        if bps >= factor:
            return f"{bps / factor:g}{unit}"
    return f"{bps:g}bit"


def format_time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:g}s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:g}ms"
    return f"{seconds * 1e6:g}us"

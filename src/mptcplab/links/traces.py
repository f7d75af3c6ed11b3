"""Mahimahi delivery traces: one line per 1500-byte delivery opportunity, in ms, looped."""
from __future__ import annotations

import bisect
from functools import lru_cache
from pathlib import Path

MTU_BYTES = 1500


@lru_cache(maxsize=32)
def load_trace(path: str | Path) -> tuple[int, ...]:
    """Parsed, validated timestamps (ms, non-decreasing, last > 0)."""
    p = Path(path)
    if not p.exists():
        raise ValueError(f"trace file {str(p)!r} does not exist")
    stamps: list[int] = []
    try:
        lines = p.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"trace file {str(p)!r} cannot be read: {exc}") from None
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        if not line.isdigit():
            raise ValueError(f"trace file {str(p)!r} line {number}: {line[:20]!r} is not a whole number of milliseconds (Mahimahi format)")
        value = int(line)
        if stamps and value < stamps[-1]:
            raise ValueError(f"trace file {str(p)!r} line {number}: timestamps must not decrease ({value} after {stamps[-1]})")
        stamps.append(value)
    if not stamps or stamps[-1] <= 0:
        raise ValueError(f"trace file {str(p)!r} is empty or lasts 0 ms")
    return tuple(stamps)


def mean_rate_bps(stamps: tuple[int, ...]) -> float:
    """Mean rate of a trace: lines x 1500 B x 8 / last timestamp."""
    return len(stamps) * MTU_BYTES * 8 / (stamps[-1] / 1000.0)


def capacity_bytes(stamps: tuple[int, ...], start_s: float, end_s: float) -> int:
    """Bytes the looped trace can deliver between two times (s from its start).

    A short run replays only a slice of a trace, and cellular traces vary by
    10x over seconds: compare a replay with this, not with the whole mean.
    """
    period = stamps[-1]

    def before(t_s: float) -> int:  # opportunities strictly before t_s
        ms = t_s * 1000.0
        cycles = int(ms // period)
        return cycles * len(stamps) + bisect.bisect_left(stamps, ms - cycles * period)

    return (before(end_s) - before(start_s)) * MTU_BYTES

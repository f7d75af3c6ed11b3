"""simult_flows.sh, the kernel selftest the `simult-*` suite cases reproduce: its output, cases and budget.

Pure (no engine, no I/O): `parse_output` reads the script's result lines,
`selftest_budget_ms` is its completion budget, `CASES` maps each of its five
cases to the lab scenario that reproduces it.

The script (tools/testing/selftests/net/mptcp/simult_flows.sh) reports each
transfer as, on 6.6+ kernels, `NN <title, padded to 60><ms> max <max> [ OK ]`
(the ms written by mptcp_connect on its standard error); a failure is
mptcp_connect's "transfer slower than expected! runtime N ms, expected M ms"
and then `[FAIL]`, or `[IGNO]` when the case is known flaky and ignored, on
the next line. Older scripts print no counter and no measured time (`<title>
max <max> [ OK ]`). A title longer than its 60-character column (case 10's)
runs into the measured time: "...reverse direction11467 max 11921".
"""
from __future__ import annotations

import re
from dataclasses import dataclass

#: the script's file name under tools/testing/selftests/net/mptcp/
SCRIPT = "simult_flows.sh"
#: what the script adds to a case's title for its second transfer (the large file sent by the client)
REVERSE_SUFFIX = " - reverse direction"
#: ms each `mptcp_connect -j` sleeps after writing its first 100 bytes, inside the interval the script times
JOIN_PAUSE_MS = 200
#: ms the script allows for those sleeps (200 ms on each side) and its slack (`slack=50`, non-debug kernels)
JOIN_ALLOWANCE_MS = 400
SLACK_MS = 50

#: a verdict in the script's brackets -> the lab's word for it
VERDICTS = {"OK": "ok", "FAIL": "fail", "IGNO": "ignored", "SKIP": "skip"}

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
#: a helper's warning written into a result line (stderr merged): 7.x scripts read counters with nstat, which in a
#: UML kernel's simulated clock says "nstat: history is aged out, resetting" in the first case, between the title
#: and the measured time ("01 balanced bwidth   nstat: history ...\n7419nstat: history ...\n max 7906 [ OK ]")
_NOISE = re.compile(r"nstat: [^\n]*(?:\n|$)")
_REVERSE = re.compile(r"\s*-\s*reverse direction$")
#: a case's first line on 6.6+ scripts: its two-digit counter, then its title
_HEAD = re.compile(r"^(?P<number>\d{2,}) (?P<rest>\S.*)$")
#: a whole result on one line, as scripts before 6.6 print it (no counter, no measured time)
_ONE_LINE = re.compile(r"^(?P<title>\S.*?)\s+max\s+\d+\s*\[\s*[A-Za-z]+\s*\]")
_VERDICT = re.compile(r"\[\s*(?P<word>OK|FAIL|fail|IGNO|SKIP)\s*\]")
#: where a title ends: the measured time (digits) running into it, the padding, "max", mptcp_connect's complaint
_TITLE = re.compile(r"^(?P<title>.*?)(?=\d|\s{2,}|\s+max\s|transfer slower|\[|\n|$)")
_MAX = re.compile(r"\bmax\s+(\d+)|expected (\d+) ms")
_MEASURED = re.compile(r"(\d+)\s+max\s|runtime (\d+) ms")

@dataclass(frozen=True)
class SelftestCase:
    """One of simult_flows.sh's five cases and the built-in lab scenario that reproduces it."""

    #: its title as the script prints it (without " - reverse direction")
    title: str
    #: the built-in scenario with the same paths (its `[workload] direction` is upload, the script's reverse
    #: direction; the script's forward line matches it with `--set workload.direction=download`)
    scenario: str
    #: the two paths' rates (mbit/s) and delays (ms), as the script's run_test arguments
    rates_mbit: tuple[int, int]
    delays_ms: tuple[int, int]


#: the cases of simult_flows.sh on 6.12 (10/3 mbit, 1/25 ms), in the order it runs them
CASES: tuple[SelftestCase, ...] = (
    SelftestCase("balanced bwidth", "simult-balanced", (10, 10), (0, 0)),
    SelftestCase("balanced bwidth with unbalanced delay", "simult-balanced-delay", (10, 10), (1, 25)),
    SelftestCase("unbalanced bwidth", "simult-unbalanced", (10, 3), (0, 0)),
    SelftestCase("unbalanced bwidth with unbalanced delay", "simult-unbalanced-delay", (10, 3), (1, 25)),
    SelftestCase("unbalanced bwidth with opposed, unbalanced delay", "simult-opposed-delay", (10, 3), (25, 1)),
)
_BY_TITLE = {c.title: c for c in CASES}


@dataclass(frozen=True)
class SelftestLine:
    """One transfer of simult_flows.sh as its output reports it."""

    #: its counter (1-10), or its position among the results on scripts that print none
    number: int
    #: the title as printed, " - reverse direction" included
    title: str
    #: the case's title without the direction ("balanced bwidth")
    case: str
    #: "download": the script's forward line (the server sends the large file to the client); "upload": its
    #: "reverse direction" line (the client sends it), the direction of the lab's simult-* scenarios
    direction: str
    #: the transfer's time as mptcp_connect measured it (ms): printed before " max" on success, as "runtime N ms"
    #: when it was too slow; None when neither was printed (scripts before 6.6, a transfer that broke)
    measured_ms: int | None
    #: the script's budget for it (ms); None when the failure line does not say it
    max_ms: int | None
    #: ok, fail, ignored (failed, but the case is known flaky and the script ignores it) or skip
    verdict: str
    #: the lab scenario of the same case (None for a title this lab does not know)
    scenario: str | None


def _first(pattern: re.Pattern[str], text: str) -> int | None:
    m = pattern.search(text)
    return int(next(g for g in m.groups() if g is not None)) if m else None


def _record(number: int, text: str) -> SelftestLine:
    """One case from its text: the title and whatever followed up to and including its verdict."""
    m = _TITLE.match(text)
    title = m["title"].strip() if m else text.strip()
    case = _REVERSE.sub("", title)
    known = _BY_TITLE.get(case)
    verdict = _VERDICT.search(text)
    word = verdict["word"] if verdict else "FAIL"
    return SelftestLine(number=number, title=title, case=case, direction="upload" if case != title else "download",
                        measured_ms=_first(_MEASURED, text), max_ms=_first(_MAX, text),
                        verdict=VERDICTS.get(word.upper(), word.lower()),
                        scenario=known.scenario if known else None)


def parse_output(text: str) -> list[SelftestLine]:
    """Every transfer reported in the output of one simult_flows.sh run, in order; other lines are skipped.

    Read the script's standard output and error merged (`2>&1`), as a terminal shows them: mptcp_connect
    writes the measured time on its standard error, between the title and " max". A case is its counter line
    up to the line that holds its verdict (`[ OK ]` on the same line; on failure mptcp_connect's "transfer
    slower than expected! runtime N ms, expected M ms" and then `[FAIL]` or `[IGNO]` on a later line). Colour
    codes, carriage returns and nstat's warnings (_NOISE) are ignored. A case whose verdict never came (the
    script was killed) is left out.
    """
    out: list[SelftestLine] = []
    pending: tuple[int, str] | None = None
    for raw in _NOISE.sub("", text).splitlines():
        line = _ANSI.sub("", raw).replace("\r", "").rstrip()
        head = _HEAD.match(line)
        if head:
            pending = (int(head["number"]), head["rest"])
        elif pending is not None:
            pending = (pending[0], pending[1] + "\n" + line)
        elif _ONE_LINE.match(line.strip()):
            out.append(_record(len(out) + 1, line.strip()))
            continue
        else:
            continue
        if _VERDICT.search(line):
            out.append(_record(*pending))
            pending = None
    return out


def selftest_budget_ms(size_bytes: int, rates_bps: tuple[int, ...] | list[int], strict: bool = False,
                       slack_ms: int = SLACK_MS) -> int:
    """simult_flows.sh's completion budget (ms) for `size_bytes` over paths of `rates_bps` (bit/s).

    The script's integer formula (run_test): 1000 * size * 8 * 10 / ((rate1 + rate2) * 1e6 * 9) ms, the size
    at the aggregate rate with 10% header overhead, truncated to whole ms, + 400 ms for the two 200 ms
    `mptcp_connect -j` sleeps + `slack_ms` (50). 16 MiB over 10+10 mbit: 7456 + 450 = 7906 ms; over 10+3: 11921.
    `strict` takes off the one 200 ms pause inside the interval the script times, which the lab's transfer
    does not have (7706 / 11721 ms). ValueError on a total rate of 0.
    """
    total = sum(int(r) for r in rates_bps)
    if total <= 0:
        raise ValueError("the paths' total rate must be positive")
    base = (1000 * size_bytes * 8 * 10) // (total * 9)
    return base + JOIN_ALLOWANCE_MS + slack_ms - (JOIN_PAUSE_MS if strict else 0)

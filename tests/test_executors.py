"""One executor interface: the host kernel as a matrix column, cells filled exactly as a guest fills them."""
from __future__ import annotations

import os

from mptcplab.executors import executor_for
from mptcplab.kernels.matrix import run_matrix
from mptcplab.protocols import RunSink
from mptcplab.runner import RunOptions
from mptcplab.scenario import load_scenario

from .conftest import leftovers, requires_root, write_scenario

pytestmark = requires_root

SMALL = """
name = "{name}"
[[path]]
name = "a"
rate = "20mbit"
[[path]]
name = "b"
rate = "20mbit"
[workload]
size = "512KiB"
[run]
repeat = 2
timeout = "20s"
link_backend = "tbf"
"""


class Calls(RunSink):
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int]] = []

    def run_started(self, result, scenario):
        self.calls.append(("started", result.run_id, len(result.repetitions)))

    def repetition_finished(self, result, rep):
        self.calls.append(("repetition", result.run_id, rep.index))

    def run_finished(self, result):
        self.calls.append(("finished", result.run_id, len(result.repetitions)))


def test_host_executor_is_a_matrix_column(tmp_path):
    """Two scenarios x the host kernel, 2 repetitions: one cell each, repetitions numbered 0 and 1, interleaved A B A B,
    the sinks told of each cell's start once, each repetition under the cell's id, each cell's end once."""
    before = set(leftovers())
    scns = [load_scenario(write_scenario(tmp_path, SMALL.format(name=n), f"{n}.toml")) for n in ("ex-a", "ex-b")]
    sink = Calls()
    cells = run_matrix(scns, [None], options=RunOptions(sinks=[sink], tags={"t": "1"}))
    assert [(c.scenario, c.kernel) for c in cells] == [("ex-a", os.uname().release), ("ex-b", os.uname().release)]
    ids = [c.result.run_id for c in cells]
    for cell in cells:
        res = cell.result
        assert res.status == "completed", res.errors
        assert [r.index for r in res.repetitions] == [0, 1]
        assert res.backend == "tbf" and res.environment["link_backend"] == "tbf"
        assert res.environment["tags"] == {"t": "1"}
        assert res.environment["sysctls_client"]  # the conditions the first repetition read back
        assert res.summary["goodput_mbps"].median > 0
    assert sink.calls == [("started", ids[0], 0), ("repetition", ids[0], 0), ("started", ids[1], 0), ("repetition", ids[1], 0),
                          ("repetition", ids[0], 1), ("repetition", ids[1], 1), ("finished", ids[0], 2), ("finished", ids[1], 2)]
    assert set(leftovers()) <= before


def test_host_executor_run_is_run_scenario(tmp_path):
    """Without `into`, the host executor is the runner: its own result, every sink call, the scenario's repeat."""
    scn = load_scenario(write_scenario(tmp_path, SMALL.format(name="ex-own")))
    sink = Calls()
    with executor_for(None) as ex:
        ex.ready()
        assert ex.alive and ex.release == os.uname().release and ex.kind == "host"
        res = ex.run(scn, RunOptions(sinks=[sink], repeat=1))
    assert [c[0] for c in sink.calls] == ["started", "repetition", "finished"]
    assert res.status == "completed" and len(res.repetitions) == 1

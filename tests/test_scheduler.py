"""Scheduler selection, the lab's purpose: the scenario's scheduler is what both endpoints run.

Read from the live namespaces while the run is up (the runner's `setup`
hook gets the built topology), and from what the result recorded. A kernel
offering more than one scheduler (a guest's, when one does) is run with the
one that is not the default, so that a lab which never set the sysctl
would fail; where only `default` exists the test says so and skips.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from mptcplab import RunOptions, capabilities, load_scenario, netns, run_scenario
from mptcplab.kernels.catalog import cached, version_key
from mptcplab.topology import Topology

from .conftest import leftovers, requires_root, write_scenario

pytestmark = requires_root

SCENARIO = """
name = "sched-{scheduler}"
[mptcp]
scheduler = "{scheduler}"
[[path]]
name = "a"
rate = "10mbit"
delay = "2ms"
[[path]]
name = "b"
rate = "10mbit"
delay = "2ms"
[workload]
size = "256KiB"
[run]
repeat = 1
timeout = "30s"
link_backend = "{backend}"
"""


def scenario(tmp_path: Path, scheduler: str, backend: str = "wire") -> Path:
    return write_scenario(tmp_path, SCENARIO.format(scheduler=scheduler, backend=backend), f"sched-{scheduler}.toml")


@pytest.mark.parametrize("scheduler", capabilities.available_schedulers())
def test_the_scenarios_scheduler_runs_in_both_endpoints(tmp_path, scheduler):
    live: dict[str, str] = {}

    def read(topo: Topology) -> None:  # while the namespaces exist, before traffic
        for role, ns in (("client", topo.client), ("server", topo.server)):
            live[role] = netns.sysctl_read(ns, "net.mptcp.scheduler")

    before = set(leftovers())
    result = run_scenario(load_scenario(scenario(tmp_path, scheduler)), RunOptions(repeat=1, setup=read))
    assert live == {"client": scheduler, "server": scheduler}
    env = result.environment
    assert env["sysctls_client"]["net.mptcp.scheduler"] == env["sysctls_server"]["net.mptcp.scheduler"] == scheduler
    assert env["scheduler"] == scheduler and result.repetitions[0].mptcp
    assert set(leftovers()) <= before


def test_another_scheduler_on_this_kernel(tmp_path):
    """Only a scheduler other than `default` shows that the lab sets it (a fresh namespace starts at default)."""
    others = [s for s in capabilities.available_schedulers() if s != "default"]
    if not others:
        pytest.skip(f"this kernel offers only {capabilities.available_schedulers()} in net.mptcp.available_schedulers")
    test_the_scenarios_scheduler_runs_in_both_endpoints(tmp_path, others[0])


# -- in a guest -------------------------------------------------------------------------------
def guest_kernel():
    """The newest cached kernel with net.mptcp.scheduler (6.6 and later); None when none is cached."""
    from mptcplab.executors import kind_for

    usable = [k for k in cached() if version_key(k.upstream) >= version_key("6.6") and kind_for(k) == "qemu"]
    return usable[-1] if usable else None


@pytest.fixture(scope="module")
def guest():
    from mptcplab.executors.qemu.session import GuestSession

    kernel = guest_kernel()
    if kernel is None:
        pytest.skip("no cached guest kernel with net.mptcp.scheduler (6.6 or later): mptcplab kernel fetch 6.12")
    with GuestSession(kernel) as session:
        yield kernel, session


def _schedulers_in(doc_env: dict) -> tuple[str, str, list[str]]:
    return (doc_env["sysctls_client"]["net.mptcp.scheduler"], doc_env["sysctls_server"]["net.mptcp.scheduler"],
            doc_env["sysctls_client"]["net.mptcp.available_schedulers"].split())


def test_the_scheduler_in_a_guest(tmp_path, guest):
    kernel, session = guest
    result = session.run(load_scenario(scenario(tmp_path, "default", "auto")), RunOptions(repeat=1))
    client, server, available = _schedulers_in(result.environment)
    assert result.environment["kernel_release"] == kernel.release
    assert (client, server) == ("default", "default") and "default" in available
    others = [s for s in available if s != "default"]
    if not others:
        pytest.skip(f"the guest kernel {kernel.release} offers only {available} in net.mptcp.available_schedulers: "
                    "no other scheduler to select")
    result = session.run(load_scenario(scenario(tmp_path, others[0], "auto")), RunOptions(repeat=1))
    client, server, _ = _schedulers_in(result.environment)
    assert (client, server) == (others[0], others[0])
    assert result.repetitions[0].mptcp

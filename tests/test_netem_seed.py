"""netem draws from a seeded PRNG where the kernel has one (TCA_NETEM_PRNG_SEED, set over rtnetlink: links/netem.py).

The host has no sch_netem, so the real checks run in guests: a QEMU guest
(6.12, TCG) seeds a netem qdisc with the lab's own code and pushes the same
frames through it twice per seed, and UML kernels run a netem scenario end to
end (6.12 seeded; 6.1, whose netem takes no seed, runs unseeded and says so).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import cli, light, requires_root, write_scenario
from .test_uml import LOSSY as UML_SCENARIO

QEMU_KERNEL = "6.12.117"
KERNELS = Path("/var/cache/mptcplab/kernels")


def _cached(release_glob: str) -> bool:
    return bool(list(KERNELS.glob(f"{release_glob}/kernel.json")))


@light
def test_each_qdisc_of_a_repetition_draws_its_own_stream_and_the_same_in_every_run():
    from mptcplab.links.netem import netem_seed
    from mptcplab.runner import repetition_seed
    from mptcplab.scenario import load_scenario

    seeds = {netem_seed(7, p, d) for p in ("a", "b") for d in ("up", "down")}
    assert len(seeds) == 4 and all(0 <= s < 2**64 for s in seeds)
    assert netem_seed(7, "a", "up") == netem_seed(7, "a", "up") != netem_seed(8, "a", "up")
    demo = load_scenario("demo")
    assert repetition_seed(demo, 3) == demo.run.seed + 3
    rand = demo.model_copy(update={"run": demo.run.model_copy(update={"seed": "random"})})
    assert repetition_seed(rand, 3) is None


@light
def test_a_netem_dump_says_whether_the_kernel_takes_a_seed():
    import struct

    from mptcplab.links.netem import NETEM_QOPT_LEN, TCA_NETEM_PRNG_SEED, _attr, netem_prng_seed_of

    qopt = bytes(NETEM_QOPT_LEN)
    latency = _attr(10, struct.pack("=q", 10_000_000))  # TCA_NETEM_LATENCY64, as every netem dump has
    assert netem_prng_seed_of(qopt + latency + _attr(TCA_NETEM_PRNG_SEED, struct.pack("=Q", 2**63 + 5))) == 2**63 + 5
    assert netem_prng_seed_of(qopt + latency) is None  # a kernel before 6.6


@light
def test_a_guest_job_carries_where_its_repetitions_start():
    from mptcplab.executors import job as jobs
    from mptcplab.runner import RunOptions
    from mptcplab.scenario import load_scenario

    job = jobs.encode(load_scenario("demo"), RunOptions(repeat=1, first_repetition=4), True, 1, "uml")
    assert jobs.decode_options(json.loads(json.dumps(job)), None, []).first_repetition == 4
    assert jobs.decode_options({k: v for k, v in job.items() if k != "first_repetition"}, None, []).first_repetition == 0


# In the guest: a veth pair (no IPv6, no address: only our frames cross its qdisc) with netem dropping 30%,
# seeded by the lab's seed_netem; 2000 frames in 20 bursts, the qdisc's drop counter read after each burst.
GUEST = r'''
import json, socket, subprocess
from mptcplab.links.netem import seed_netem
def sh(*a):
    return subprocess.run(a, check=True, capture_output=True, text=True).stdout
sh("ip", "link", "add", "mpl-seed0", "type", "veth", "peer", "name", "mpl-seed1")
for dev in ("mpl-seed0", "mpl-seed1"):
    sh("sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1")
    sh("ip", "link", "set", dev, "up")
frame = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x88\xb5" + bytes(50)
def pattern(seed):
    subprocess.run(["tc", "qdisc", "del", "dev", "mpl-seed0", "root"], capture_output=True)
    sh("tc", "qdisc", "add", "dev", "mpl-seed0", "root", "handle", "1:", "netem", "limit", "10000", "loss", "random", "30%")
    seeded = seed_netem(None, "mpl-seed0", seed)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind(("mpl-seed0", 0))
    drops = []
    for _ in range(20):
        for _ in range(100):
            s.send(frame)
        q = json.loads(sh("tc", "-s", "-j", "qdisc", "show", "dev", "mpl-seed0"))[0]
        drops.append(q["drops"])
    s.close()
    return {"seeded": seeded, "drops": drops, "packets": q["packets"]}
def kept(args):
    subprocess.run(["tc", "qdisc", "del", "dev", "mpl-seed0", "root"], capture_output=True)
    sh("tc", "qdisc", "add", "dev", "mpl-seed0", "root", "handle", "1:", "netem", *args)
    before = sh("tc", "qdisc", "show", "dev", "mpl-seed0")
    seed_netem(None, "mpl-seed0", 13)
    return [before, sh("tc", "qdisc", "show", "dev", "mpl-seed0")]
# what tc set survives the seeding: a jitter distribution (not dumped, kept by the kernel) and Gilbert-Elliott loss
shown = kept(["limit", "5000", "delay", "10ms", "2ms", "distribution", "normal", "loss", "gemodel", "2%", "40%", "100%", "0%"])
print("RESULT " + json.dumps({"patterns": [pattern(s) for s in (11, 11, 12)], "shown": shown}))
'''


@requires_root
@pytest.mark.skipif(not _cached("6.12.117+*"), reason="needs kernel 6.12.117 cached (mptcplab kernel fetch 6.12.117)")
def test_seeded_netem_drops_the_same_frames_twice_and_others_with_another_seed():
    """QEMU (TCG, so nothing else is deterministic): the loss pattern depends only on the seed."""
    import sys

    r = cli("kernel", "exec", "--kernel", QEMU_KERNEL, "--", sys.executable, "-c", GUEST, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    line = next(x for x in r.stdout.splitlines() if x.startswith("RESULT "))
    doc = json.loads(line[len("RESULT "):])
    first, again, other = doc["patterns"]
    before, after = doc["shown"]
    assert "loss gemodel" in before and "delay 10" in before and "limit 5000" in before, before
    assert after == before  # reading the options back and sending them with the seed changed nothing else
    assert first["seeded"] and again["seeded"] and other["seeded"]
    assert first["packets"] + first["drops"][-1] == 2000  # every frame crossed netem: sent or dropped
    assert 400 < first["drops"][-1] < 800  # 30% of 2000
    assert first["drops"] == again["drops"]  # the same seed: the same frames lost, burst by burst
    assert other["drops"] != first["drops"]  # another seed: other frames


# test_uml's lossy two-path scenario, on netem
LOSSY = UML_SCENARIO.replace("repeat = 3", 'repeat = 2\nlink_backend = "netem"')


@requires_root
@pytest.mark.parametrize("kernel,seeded", [("6.12.117-uml", True), ("6.1.170-uml", False)])
def test_a_netem_run_records_whether_netem_was_seeded(tmp_path, kernel, seeded):
    """End to end in UML: 6.12's netem is seeded with the run's seeds; 6.1's netem takes none: the run completes
    unseeded and says so (environment and a note)."""
    if not _cached(kernel):
        pytest.skip(f"needs the UML kernel {kernel}: mptcplab kernel build {kernel.removesuffix('-uml')} --flavour uml")
    path = write_scenario(tmp_path, LOSSY, "netem-seeded.toml")
    r = cli("run", str(path), "--kernel", kernel, "--json", "--no-store", "--no-timeseries", timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(r.stdout)
    env = doc["environment"]
    assert env["link_backend"] == "netem" and all(rep["status"] == "completed" for rep in doc["repetitions"])
    assert env["link"]["prng"]["seeded"] is seeded
    from mptcplab.links.netem import UNSEEDED_KERNEL

    if seeded:
        assert UNSEEDED_KERNEL not in env.get("notes", [])
    else:
        assert env["link"]["prng"]["why"] == UNSEEDED_KERNEL and UNSEEDED_KERNEL in env["notes"]
        assert f"note: {UNSEEDED_KERNEL}" in r.stderr

"""The launcher and its watchdog, with real processes on MLX's ring backend over loopback."""

import json
import os
import random
import socket
import time

import psutil
import pytest

from asprof.cluster.launch import LaunchSpec, _Held, free_ports, launch, rank_cpus, read_hostfile
from asprof.errors import AsprofError, DistributedError

pytestmark = pytest.mark.distributed
WORKER = "asprof.cluster.echo_worker"


def _leftover_workers():
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if WORKER in cmd:
            out.append(p)
    return out


@pytest.mark.parametrize("nodes", [1, 2, 3])
def test_all_sum_across_ranks(nodes):
    results = launch(LaunchSpec(module=WORKER, nodes=nodes))
    assert [r["rank"] for r in results] == list(range(nodes))
    expected = nodes * (nodes + 1) / 2  # each rank contributes rank + 1
    assert all(r["size"] == nodes and r["sum"] == expected for r in results)


def test_a_rank_that_dies_stops_every_rank_and_is_named():
    t = time.monotonic()
    with pytest.raises(DistributedError, match=r"rank 1 exited with code 7; stopped all 3 ranks"):
        launch(LaunchSpec(module=WORKER, args=("--die-rank", "1", "--steps", "1000"), nodes=3))
    assert time.monotonic() - t < 30
    assert _leftover_workers() == []


def test_a_rank_that_never_connects_is_named_within_the_limit():
    t = time.monotonic()
    with pytest.raises(DistributedError, match=r"rank 2 never connected within 3 s"):
        launch(LaunchSpec(module=WORKER, args=("--no-connect-rank", "2"), nodes=3, connect_s=3))
    assert time.monotonic() - t < 30
    assert _leftover_workers() == []


def test_a_hung_ring_is_caught_by_the_watchdog():
    with pytest.raises(DistributedError, match=r"made no progress for 3 s .*hung"):
        launch(LaunchSpec(module=WORKER, args=("--hang-rank", "1", "--steps", "1000"), nodes=3, stall_s=3))
    assert _leftover_workers() == []


def test_progress_events_reach_the_caller():
    seen = []
    launch(LaunchSpec(module=WORKER, args=("--steps", "2"), nodes=2), on_event=seen.append)
    kinds = {(m["rank"], m["type"]) for m in seen}
    assert {(0, "hello"), (1, "hello"), (0, "ready"), (1, "ready"), (0, "result"), (1, "result")} <= kinds


def test_bad_specs_and_hostfiles_fail_in_one_line(tmp_path):
    with pytest.raises(AsprofError, match="exactly one of --nodes or --hostfile"):
        LaunchSpec(module=WORKER)
    with pytest.raises(AsprofError, match="positive integer"):
        LaunchSpec(module=WORKER, nodes=0)
    with pytest.raises(AsprofError, match="no such hostfile"):
        LaunchSpec(module=WORKER, hostfile=str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(AsprofError, match="not valid JSON"):
        read_hostfile(bad)
    bad.write_text(json.dumps([{"ssh": "mac1"}]))
    with pytest.raises(AsprofError, match="needs \"ips\""):
        read_hostfile(bad)
    good = tmp_path / "hosts.json"
    good.write_text(json.dumps({"backend": "ring", "hosts": [{"ssh": "a", "ips": ["10.0.0.1"]},
                                                             {"ssh": "b", "ips": ["10.0.0.2"]}]}))
    assert LaunchSpec(module=WORKER, hostfile=str(good)).world_size == 2


def test_hostfile_launch_on_this_machine(tmp_path):
    # A hostfile naming 127.0.0.1 twice runs both ranks on this machine without ssh (as mlx.launch does).
    hf = tmp_path / "hosts.json"
    hf.write_text(json.dumps([{"ssh": "127.0.0.1", "ips": ["127.0.0.1"]}, {"ssh": "127.0.0.1", "ips": ["127.0.0.1"]}]))
    results = launch(LaunchSpec(module=WORKER, hostfile=str(hf), base_port=None))
    assert [r["sum"] for r in results] == [3.0, 3.0]


def test_held_output_hides_the_survivors_noise_once_a_rank_failed():
    shown = []
    held = _Held(shown.append)
    r0, r1 = object(), object()
    held.hold(r0)("[rank 0] step 1")
    held.release(time.monotonic(), [])
    assert shown == []  # held for DELAY_S
    held.release(time.monotonic() + _Held.DELAY_S, [])
    assert shown == ["[rank 0] step 1"]
    held.hold(r0)("[rank 0] socket closed by the peer")
    held.hold(r1)("[rank 1] Traceback ...")
    held.release(time.monotonic(), [r1])  # rank 1 failed: only its own lines, at once
    held.hold(r0)("[rank 0] too many send/recv errors")
    held.release_all()
    assert shown == ["[rank 0] step 1", "[rank 1] Traceback ..."]


def _ephemeral_start() -> int:
    try:
        return int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    except OSError:
        return 49152  # macOS


def test_free_ports_are_distinct_bindable_and_below_the_ephemeral_range():
    ports = free_ports(16)
    assert len(set(ports)) == 16
    assert all(1024 < p < _ephemeral_start() for p in ports)
    for p in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))


def test_free_ports_skips_a_port_in_use():
    first = random.Random(7).randint(20000, _ephemeral_start() - 1)
    with socket.socket() as held:
        try:
            held.bind(("127.0.0.1", first))
        except OSError:
            pytest.skip(f"port {first} is taken on this machine")
        held.listen()
        assert first not in free_ports(1, rng=random.Random(7))


def test_ranks_that_outnumber_the_cores_are_spread_evenly_over_them():
    assert rank_cpus(4, [0, 1]) == [{0}, {1}, {0}, {1}]
    assert rank_cpus(3, [6]) == [{6}, {6}, {6}]
    assert rank_cpus(2, [0, 1]) == [None, None]  # a core each: the OS places them
    assert rank_cpus(1, [0, 1, 2, 3]) == [None]


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="this OS cannot pin a process to a core")
def test_local_ranks_run_on_the_cores_they_were_given():
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > 3:
        pytest.skip(f"{len(cpus)} cores: pinning needs more ranks than cores (too many processes here)")
    nodes = len(cpus) + 1
    results = launch(LaunchSpec(module=WORKER, nodes=nodes))
    assert [r["cpus"] for r in results] == [[cpus[r % len(cpus)]] for r in range(nodes)]

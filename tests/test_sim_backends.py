"""The all-reduce per backend: JACCL's mesh against hand-computed cases on each side of its
32 KiB threshold, and `simulate --backend ring,jaccl` end to end."""

import pytest

from asprof.cli import main
from asprof.simulate.collectives import (MESH_SMALL_BYTES, RingNode, mesh_allreduce, mesh_bytes_sent, mesh_phases,
                                         mesh_time, ring_time)
from asprof.simulate.engine import Engine

A, B = 3e-6, 3.5e9  # α, β of the published TB5 JACCL figure
RED = 1e-9  # seconds per byte to add one received message


def test_small_message_is_one_fully_connected_phase():
    # 4 ranks, 16 KiB (below 32 KiB): every rank sends all 16384 bytes to each of 3 peers at once,
    # then adds the 3 inputs it got: 3 µs + 16384 / 3.5e9 s + 3 × 16384 ns
    t = mesh_time(4, 16384, A, B, lambda b: RED * b)
    assert t == pytest.approx(3e-6 + 4.681142857e-6 + 3 * 16.384e-6, rel=1e-9)
    assert mesh_phases(4, MESH_SMALL_BYTES) == ((MESH_SMALL_BYTES, True),)  # the threshold itself: small


def test_large_message_is_reduce_scatter_then_all_gather():
    # 4 ranks, 1 MiB: two phases of 262144 bytes to each peer; the first adds 3 chunks of 262144
    t = mesh_time(4, 2**20, A, B, lambda b: RED * b)
    assert t == pytest.approx(2 * 3e-6 + 2 * 262144 / 3.5e9 + 3 * 262144e-9, rel=1e-9)
    assert mesh_phases(4, MESH_SMALL_BYTES + 4) == (((MESH_SMALL_BYTES + 4) / 4, True), ((MESH_SMALL_BYTES + 4) / 4, False))
    # two ranks always take the single phase, whatever the size
    assert mesh_time(2, 2**20, A, B) == pytest.approx(3e-6 + 2**20 / 3.5e9)


def test_mesh_bytes_sent_on_each_side_of_the_threshold():
    assert mesh_bytes_sent(4, 16384) == 3 * 16384  # the whole input to each of 3 peers
    assert mesh_bytes_sent(4, 2**20) == 2 * 3 * 2**18  # = the ring's 2(K-1)/K S
    assert mesh_bytes_sent(1, 2**20) == 0.0


def test_mesh_beats_the_ring_on_latency_and_ties_on_bandwidth():
    # same α, β: K=8, 1 KiB costs the ring 14 α, the mesh 1 α. For 1 GiB both send 2(K-1)/K·S per
    # rank, but the mesh spreads it over K-1 cables at once: its wire time is the ring's / (K-1)
    assert ring_time(8, 1024, A, B) / mesh_time(8, 1024, A, B) > 5
    big = 2**30
    assert mesh_time(8, big, A, B) - 2 * A == pytest.approx((ring_time(8, big, A, B) - 14 * A) / 7, rel=1e-12)


@pytest.mark.parametrize("nbytes", [16384, 2**20])
@pytest.mark.parametrize("collapsed", [True, False])
def test_the_engine_mesh_takes_the_closed_form_time(nbytes, collapsed):
    K = 4
    eng = Engine()
    ranks = [0] if collapsed else list(range(K))
    nodes = [RingNode(eng.lane(r, "link"), eng.lane(r, "cpu"), 0.0, 0.0) for r in ranks]
    phases = [[(A + b / B, (K - 1) * RED * b if red else 0.0) for b, red in mesh_phases(K, nbytes)] for _ in ranks]
    mesh_allreduce(eng, nodes, K, [[] for _ in ranks], phases)
    assert eng.run() == pytest.approx(mesh_time(K, nbytes, A, B, lambda b: RED * b), rel=1e-12)


def test_simulate_compares_ring_and_jaccl(tmp_path, capsys):
    plot = tmp_path / "sweep.png"
    rc = main(["simulate", "--trace", "m3-ultra-studio-x2-tb5", "--backend", "ring,jaccl", "--nodes", "2,4,8",
               "--optimizer", "adam", "--steps", "3", "--plot", str(plot)])
    out = capsys.readouterr().out
    assert rc == 0 and plot.read_bytes()[:4] == b"\x89PNG"
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["ring"], ["jaccl"])]
    assert sorted((r[0], r[1]) for r in rows) == sorted((b, k) for b in ("ring", "jaccl") for k in ("2", "4", "8"))


def test_jaccl_mesh_beyond_eight_macs_is_one_line(capsys):
    rc = main(["simulate", "--backend", "jaccl", "--nodes", "16", "--steps", "2"])
    err = capsys.readouterr().err
    assert rc != 0 and "at most 8 Macs" in err and err.count("\n") == 1

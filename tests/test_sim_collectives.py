"""Ring all-reduce on the engine: the closed form for identical nodes, collapsed == full, and
a slow link or CPU slowing the whole ring by what the max-plus algebra of the ring says."""

import pytest

from asprof.simulate.collectives import RingNode, ring_allreduce, ring_time
from asprof.simulate.costs import buckets, ring_bytes_sent
from asprof.simulate.engine import Engine


def run_ring(K, step_s, reduce_s, collapsed=False, start_s=None):
    """Simulate one all-reduce; step_s / reduce_s: a number or one per rank."""
    e = Engine()
    P = 1 if collapsed else K
    steps = step_s if isinstance(step_s, list) else [step_s] * P
    reds = reduce_s if isinstance(reduce_s, list) else [reduce_s] * P
    nodes, start = [], []
    for i in range(P):
        nodes.append(RingNode(e.lane(i, "link"), e.lane(i, "cpu"), steps[i], reds[i]))
        gpu = e.lane(i, "gpu")
        start.append([e.task(gpu, start_s[i] if start_s else 0.0)])
    done = ring_allreduce(e, nodes, K, start)
    e.run()
    return [max(e.end[t] for t in d) for d in done], e


@pytest.mark.parametrize("K", list(range(2, 65)))
def test_uniform_ring_matches_the_closed_form(K):
    alpha, beta, S = 37e-6, 4.7e9, 3.3e7
    r = 0.011 * S / K / 1e9  # a reduction time proportional to the chunk
    times, e = run_ring(K, alpha + S / K / beta, r)
    expected = 2 * (K - 1) * alpha + 2 * (K - 1) / K * S / beta + (K - 1) * r
    assert ring_time(K, S, alpha, beta, r) == pytest.approx(expected, rel=1e-12)
    for t in times:  # every rank finishes at the same time
        assert t == pytest.approx(expected, rel=1e-9)
    assert len(e) == K * (1 + 2 * (K - 1) + (K - 1))  # start task, sends, reductions


@pytest.mark.parametrize("K", [2, 3, 4, 7, 16])
def test_collapsed_ring_equals_the_full_ring(K):
    full, e_full = run_ring(K, 1.5e-3, 2e-4)
    (one,), e_one = run_ring(K, 1.5e-3, 2e-4, collapsed=True)
    assert all(t == one for t in full)
    assert len(e_one) * K == len(e_full)


@pytest.mark.parametrize("K", [2, 3, 5, 8, 16])
@pytest.mark.parametrize("who", [0, 1])
def test_one_slow_link_paces_the_whole_ring(K, who):
    d, r, x = 1.0, 0.25, 3.0  # x·d ≥ d + r: the slow link is the bottleneck of every step
    steps = [d] * K
    steps[who] = x * d
    times, _ = run_ring(K, steps, r)
    # the slow node's sends never wait for data, so its 2(K−1) sends run back to back and its
    # successor receives the last chunk at 2(K−1)·x·d
    assert max(times) == pytest.approx(2 * (K - 1) * x * d, rel=1e-12)
    assert min(times) > 2 * (K - 1) * d + (K - 1) * r  # everyone is slower than the uniform ring


@pytest.mark.parametrize("K", [2, 3, 5, 8, 16])
def test_one_slow_cpu_delays_the_ring_by_its_extra_reduction_time(K):
    d, r, y = 1.0, 0.25, 2.0  # y·r ≤ d + r: the slow node keeps up, each chunk passes it once
    reds = [r] * K
    reds[2 % K] = y * r
    times, _ = run_ring(K, d, reds)
    uniform = 2 * (K - 1) * d + (K - 1) * r
    assert max(times) == pytest.approx(uniform + (y - 1) * r, rel=1e-12)


def test_a_late_rank_delays_everyone():
    K = 4
    times, _ = run_ring(K, 1.0, 0.0, start_s=[0.0, 5.0, 0.0, 0.0])
    # rank 2 cannot reduce step 0 before rank 1 has sent, which starts at 5
    assert min(times) >= 5.0 + 1.0


def test_bucket_fill_and_bytes_sent():
    assert buckets([10, 10, 10], 15) == [20, 10]
    assert buckets([40], 15) == [40]
    assert buckets([1, 2, 3], 100) == [6]
    assert buckets([], 100) == []
    assert ring_bytes_sent(1000, 1) == 0
    assert ring_bytes_sent(1000, 4) == pytest.approx(1500)


def test_bucket_fill_matches_the_communicator():
    mx = pytest.importorskip("mlx.core")
    from asprof.optimizers.comm import Communicator

    sizes = [5, 300, 7, 1000, 20, 20, 3000, 1]
    comm = Communicator(bucket_bytes=1024)
    flat = [(f"a{i}", mx.zeros((n,), mx.float32)) for i, n in enumerate(sizes)]
    expected = [sum(4 * sizes[i] for i in b) for b in comm._buckets(flat)]
    assert buckets([4 * n for n in sizes], 1024) == expected


def test_ring_input_checks():
    e = Engine()
    n = RingNode(e.lane(0, "link"), e.lane(0, "cpu"), 1.0, 0.0)
    with pytest.raises(ValueError):
        ring_allreduce(e, [n], 1, [[]])
    with pytest.raises(ValueError):
        ring_allreduce(e, [n, n], 3, [[], []])
    assert ring_time(1, 1e6, 1e-5, 1e9) == 0.0

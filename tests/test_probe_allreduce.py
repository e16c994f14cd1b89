"""All-reduce probe: the ring fit, combining ranks, correctness checks, and 2 real processes."""

import numpy as np
import pytest

from asprof.errors import DistributedError
from asprof.probe import allreduce
from asprof.probe.allreduce import MODEL, fit_ring, records_from_ranks, ring_time
from asprof.spec import ring_factor
from asprof.probe.context import ProbeContext
from asprof.probe.harness import LEVELS, Harness
from asprof.traces.schema import Record, Skip


def test_ring_time_is_2k_minus_1_steps_of_alpha_plus_chunk_over_beta():
    # The simulator's link-by-link replay: 2(K-1) steps, each alpha + (S/K)/beta.
    for k in (2, 3, 4, 16):
        s, a, b = 3_000_000.0, 7e-5, 2e9
        assert ring_time(s, k, a, b) == pytest.approx(2 * (k - 1) * (a + (s / k) / b))
    assert ring_factor(2) == 1.0 and ring_factor(4) == 1.5


@pytest.mark.parametrize("k", [2, 4, 8])
def test_fit_recovers_alpha_and_beta(k):
    sizes = [2.0**p for p in range(10, 27, 2)]
    times = [ring_time(s, k, 50e-6, 1.2e9) for s in sizes]
    f = fit_ring(sizes, times, k)
    assert f.alpha_s == pytest.approx(50e-6, rel=1e-6) and f.beta_Bps == pytest.approx(1.2e9, rel=1e-6)
    assert f.r2 == pytest.approx(1.0) and f.max_rel_err < 1e-9


def test_fit_with_noise_and_relative_weighting():
    rng = np.random.default_rng(0)
    sizes = np.array([2.0**p for p in range(10, 27, 2)])
    times = np.array([ring_time(s, 2, 30e-6, 5e8) for s in sizes]) * rng.uniform(0.9, 1.1, sizes.size)
    f = fit_ring(sizes, times, 2)
    # Relative weighting keeps alpha meaningful although the largest time is ~10^4 x the smallest.
    assert 20e-6 < f.alpha_s < 45e-6 and 4e8 < f.beta_Bps < 6e8 and f.r2 > 0.98


def test_fit_refuses_degenerate_input():
    with pytest.raises(ValueError):
        fit_ring([1024], [1e-3], 2)
    with pytest.raises(ValueError):
        fit_ring([1024, 2048], [1e-3, 1e-3], 1)
    with pytest.raises(ValueError, match="unbounded"):
        fit_ring([1024, 2048, 4096], [1e-3, 1e-3, 1e-3], 2)  # flat: no bandwidth term


def _rank(rank, samples_per_size, correct=True):
    pts = []
    for nbytes, samples in samples_per_size:
        pts.append({"bytes": nbytes, "correct": correct, "max_abs_err": 0.0 if correct else 3.0,
                    "timing": {"samples_s": samples, "first_s": max(samples) * 2}})
    return {"rank": rank, "size": 2, "host": f"h{rank}", "points": pts}


def test_records_take_the_slowest_rank_per_call():
    r0 = _rank(0, [(1024, [1.0, 5.0, 1.0]), (1 << 20, [2.0, 2.0, 2.0])])
    r1 = _rank(1, [(1024, [3.0, 1.0, 1.0]), (1 << 20, [4.0, 4.0, 4.0])])
    recs = records_from_ranks([r0, r1], "ring")
    s0 = recs[0]
    assert s0.timing.samples_s == (3.0, 5.0, 1.0)  # call by call: max over ranks
    assert s0.metrics["time_s"] == 3.0 and s0.metrics["algbw_Bps"] == 1024 / 3.0
    assert s0.metrics["busbw_Bps"] == s0.metrics["algbw_Bps"] * 2 * (2 - 1) / 2
    assert s0.params == {"bytes": 1024, "nodes": 2, "backend": "ring", "topology": "ring", "hosts": ["h0", "h1"]}
    fit = recs[-1]
    assert fit.op == "fit" and fit.params["model"] == MODEL and fit.params["nodes"] == 2
    assert set(fit.metrics) >= {"alpha_s", "beta_Bps", "r2"}


def test_a_wrong_sum_fails_loudly():
    bad = [_rank(0, [(1024, [1.0]), (2048, [2.0])]), _rank(1, [(1024, [1.0]), (2048, [2.0])], correct=False)]
    with pytest.raises(DistributedError, match="wrong values on rank 1"):
        records_from_ranks(bad, "ring")


def test_no_cluster_is_a_skip():
    ctx = ProbeContext(level="tiny", harness=Harness(LEVELS["tiny"]), backends=[], absent=[])
    (skip,) = allreduce.run(ctx)
    assert skip.probe == "allreduce" and "--nodes" in skip.reason


@pytest.mark.distributed
def test_two_real_processes():
    ctx = ProbeContext(level="tiny", harness=Harness(LEVELS["tiny"]), backends=[], absent=[], nodes=2)
    out = allreduce.run(ctx)
    recs = [r for r in out if isinstance(r, Record)]
    sums = [r for r in recs if r.op == "all_sum"]
    assert [r.params["bytes"] for r in sums] == list(allreduce._SIZES["tiny"])
    for r in sums:
        assert r.params["nodes"] == 2 and r.params["backend"] == "ring" and len(r.params["hosts"]) == 2
        assert r.metrics["busbw_Bps"] == pytest.approx(r.metrics["algbw_Bps"])  # 2(K-1)/K = 1 at K=2
        assert r.metrics["time_s"] > 0 and len(r.timing.samples_s) >= 2
    fits = [r for r in recs if r.op == "fit"]
    skips = [s for s in out if isinstance(s, Skip)]
    assert len(fits) + len(skips) == 1
    if fits:
        assert fits[0].metrics["beta_Bps"] > 0 and fits[0].metrics["alpha_s"] >= 0
    else:  # on a loaded 2-core machine a 1 KiB all_sum can take as long as a 16 MiB one
        assert "unbounded" in skips[0].reason


def test_worker_checks_the_sum_exactly():
    import mlx.core as mx

    from asprof.probe.allreduce_worker import check, pattern

    p = pattern(10)
    assert p.tolist() == [1, 2, 3, 4, 5, 6, 7, 1, 2, 3]
    assert check(p * 3, p * 3) == (True, 0.0)
    ok, err = check(p * 3 + mx.array([0] * 9 + [1.0]), p * 3)
    assert not ok and err == 1.0


def test_an_unfittable_sweep_keeps_the_measurements_and_says_why():
    flat = [_rank(r, [(1024, [1.0, 1.0]), (2048, [1.0, 1.0])]) for r in (0, 1)]
    out = records_from_ranks(flat, "ring")
    assert [x.op for x in out[:2]] == ["all_sum", "all_sum"]
    assert out[-1].probe == "allreduce" and "unbounded" in out[-1].reason

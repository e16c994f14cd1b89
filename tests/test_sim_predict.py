"""predict(): step structure, breakdown, communication, refresh amortisation, collapsing,
heterogeneous nodes, variance and monotonicity (property tests)."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_sim_hardware import make_trace

from asprof.errors import AsprofError, MissingProbeError
from asprof.presets import PRESETS, ModelConfig
from asprof.simulate.collectives import ring_time
from asprof.simulate.costs import OptimizerSpec, plan_step, reduced_dim
from asprof.simulate.hardware import HardwareModel
from asprof.simulate.predict import Cluster, NodeSpec, SimConfig, predict
from asprof.simulate.workload import Workload

HW = HardwareModel.from_trace(make_trace(fit_origin="derived"))
NOISY = HardwareModel.from_trace(make_trace(spread=(0.8, 0.95, 1.0, 1.05, 1.6)))
WL = Workload(PRESETS["tiny"], 2, 32)
ALL = [OptimizerSpec("adam"), OptimizerSpec("kpop", warmup=2, frequency=3),
       OptimizerSpec("topkpop", sparsity=0.25, warmup=2, frequency=3)]


def run(K=4, specs=ALL, hw=HW, steps=9, wl=WL, **kw):
    return predict(wl, specs, Cluster(K, hw, kw.pop("overrides", ())), SimConfig(steps=steps, **kw))


def test_breakdown_tiles_the_mean_step():
    for K in (1, 3):
        for r in run(K, collapse="never").results:
            assert sum(r.breakdown_s.values()) == pytest.approx(r.mean_s, rel=1e-12)
            assert sum(r.step_times_s) == pytest.approx(r.mean_s * r.steps, rel=1e-12)
            assert r.p50_s <= r.p95_s and r.events > 0
            assert sum(r.refresh_detail_s.values()) == pytest.approx(r.breakdown_s["refresh"], rel=1e-12)


def test_one_node_has_no_communication():
    p = run(1, timeline=True)
    for r in p.results:
        assert r.bytes_sent["total"] == 0 and r.breakdown_s["exposed_comm"] == 0
        assert r.refresh_detail_s["factor_allreduce"] == 0 and r.memory_bytes["comm_buffers"] == 0
        assert not any(s[1] == "link" or "all-reduce" in s[2] for s in r.spans)


@pytest.mark.parametrize("K", [2, 3, 5])
def test_collapsed_ranks_give_the_full_simulation(K):
    full = run(K, collapse="never")
    one = run(K, collapse="always")
    for a, b in zip(full.results, one.results):
        assert not a.collapsed and b.collapsed and b.events * K <= a.events
        assert b.step_times_s == pytest.approx(a.step_times_s, rel=1e-12)
        for k in a.breakdown_s:
            assert b.breakdown_s[k] == pytest.approx(a.breakdown_s[k], rel=1e-12, abs=1e-15)
    assert run(K).results[0].collapsed  # auto: uniform and deterministic


def test_refresh_cost_is_amortised_by_f():
    steps = 48
    base = run(3, [OptimizerSpec("kpop", warmup=0, frequency=2)], steps=steps).results[0]
    t_refresh, t_plain = base.step_times_s[0], base.step_times_s[1]  # every refresh / plain step costs the same
    assert t_refresh > t_plain
    refresh = {}
    for f in (1, 2, 3, 4, 6, 8, 12, 16, 24, 48):
        r = run(3, [OptimizerSpec("kpop", warmup=0, frequency=f)], steps=steps).results[0]
        assert r.refreshes == steps // f
        assert r.mean_s == pytest.approx(t_plain + (t_refresh - t_plain) / f, rel=1e-9)
        refresh[f] = r.breakdown_s["refresh"]
    for f in refresh:
        assert refresh[f] * f == pytest.approx(refresh[1], rel=1e-9)


@pytest.mark.parametrize("s", [1 / 16, 0.25, 0.5625, 1.0])
def test_topkpop_sends_s_times_kpops_gradient_bytes_plus_the_factor_sync(s):
    K = 4
    kpop, top = run(K, [OptimizerSpec("kpop"), OptimizerSpec("topkpop", sparsity=s)]).results
    # tiny's layers are 64×64, 128×64, 64×128: √s·n is an integer for these s
    assert top.bytes_sent["kfac_gradients"] == pytest.approx(s * kpop.bytes_sent["kfac_gradients"], rel=1e-12)
    adam_routed = kpop.bytes_sent["gradients"] - kpop.bytes_sent["kfac_gradients"]
    assert top.bytes_sent["gradients"] == pytest.approx(top.bytes_sent["kfac_gradients"] + adam_routed, rel=1e-12)
    assert top.bytes_sent["factors_amortised"] == kpop.bytes_sent["factors_amortised"] > 0
    for r in (kpop, top):
        assert r.bytes_sent["total"] == pytest.approx(r.bytes_sent["gradients"] + r.bytes_sent["factors_amortised"])
        assert r.bytes_sent["factors_amortised"] == pytest.approx(
            r.bytes_sent["factors_per_refresh"] * r.refreshes / r.steps)


@settings(max_examples=25, deadline=None)
@given(st.floats(1e-4, 1.0))
def test_topkpop_gradient_bytes_for_any_sparsity(s):
    cfg = PRESETS["tiny"]
    plan = plan_step(WL, OptimizerSpec("topkpop", sparsity=s), 4)
    assert plan.kfac_grad_bytes == 4 * sum(reduced_dim(r, s) * reduced_dim(c, s) for _, r, c in cfg.linear_shapes())
    assert plan.kfac_grad_bytes >= s * plan_step(WL, OptimizerSpec("kpop"), 4).kfac_grad_bytes * (1 - 1e-12)


def test_one_slow_accelerator_slows_every_step_by_its_extra_work():
    K = 2
    spec = [OptimizerSpec("adam")]
    uniform = run(K, spec).results[0]
    plan = plan_step(WL, spec[0], K)
    alpha, beta = HW.link()
    chunk = plan.grad_payload / K
    ring = ring_time(K, plan.grad_payload, alpha, beta, HW.elementwise_work(3 * chunk, "cpu"))
    gpu = uniform.mean_s - ring
    slow = run(K, spec, overrides=((1, NodeSpec(HW, gpu=2.0)),)).results[0]
    assert slow.mean_s == pytest.approx(2 * gpu + ring, rel=1e-9)
    link = run(K, spec, overrides=((0, NodeSpec(HW, link=3.0)),)).results[0]
    assert link.mean_s > uniform.mean_s
    assert link.breakdown_s["exposed_comm"] > uniform.breakdown_s["exposed_comm"]


def test_heterogeneous_nodes_can_have_their_own_traces():
    big = HardwareModel.from_trace(make_trace(rate=1e11, memory=2**30, name="slowbox", fit_origin="derived"))
    p = run(3, [OptimizerSpec("adam")], overrides=((2, NodeSpec(big)),))
    r = p.results[0]
    assert r.mean_s > run(3, [OptimizerSpec("adam")]).results[0].mean_s
    assert r.node_memory_bytes == 2**30 and not r.collapsed


def test_variance_is_seeded_and_gives_a_spread():
    a = run(3, steps=30, hw=NOISY, seed=1)
    b = run(3, steps=30, hw=NOISY, seed=1)
    c = run(3, steps=30, hw=NOISY, seed=2)
    for ra, rb, rc in zip(a.results, b.results, c.results):
        assert ra.step_times_s == rb.step_times_s
        assert ra.step_times_s != rc.step_times_s
        assert ra.sampled and not ra.collapsed and ra.p95_s > ra.p50_s
    d = run(3, steps=30, hw=NOISY, variance=False)
    assert all(not r.sampled and r.collapsed for r in d.results)
    assert d.results[0].p95_s == pytest.approx(d.results[0].p50_s)


def test_large_sampled_runs_fall_back_to_collapsed_ranks_and_say_so():
    p = run(3, hw=NOISY, max_tasks=10)
    assert all(r.collapsed and not r.sampled for r in p.results)
    assert any("collapsed" in n for n in p.notes)


def test_cpu_only_hardware_shares_one_lane():
    hw = HardwareModel.from_trace(make_trace(accelerator="none"))
    p = run(2, [OptimizerSpec("kpop")], hw=hw, timeline=True, collapse="never")
    lanes = {s[1] for s in p.results[0].spans}
    assert len(lanes) == 2 and "link" in lanes  # one compute lane per node, plus the link


def test_power_method_refreshes_are_cheaper_after_the_first():
    # TopKPOP s = 1/4 keeps k = n/2 eigenvectors: the CPU QR of an n×k panel costs
    # (2nk² − 2k³/3)/(4n³/3) = 5/16 of the n×n QR; the first refresh is a full eigh
    # (k_proj, v_proj, up_proj share q_proj's / gate_proj's input factor: one decomposition for it).
    # Subspace (auto's choice here): 1 such QR and a k×k eigh per factor after the first refresh.
    common = dict(sparsity=0.25, warmup=0, frequency=2)
    eigh, power, auto = run(2, [OptimizerSpec("topkpop", eig_method="eigh", **common),
                                OptimizerSpec("topkpop", eig_method="power", **common),
                                OptimizerSpec("topkpop", **common)], steps=10).results
    sizes = [n for name, r, c in PRESETS["tiny"].linear_shapes()
             for n in ((r,) if name.endswith(("k_proj", "v_proj", "up_proj")) else (r, c))]
    E = sum(HW.linalg_time("eigh", n) for n in sizes)
    Q = sum(HW.linalg_time("qr", n) for n in sizes)
    ritz = sum(HW.linalg_time("eigh", n // 2) for n in sizes)
    assert eigh.refresh_detail_s["cpu"] == pytest.approx(5 * E / 10, rel=1e-9)
    assert power.refresh_detail_s["cpu"] == pytest.approx((E + 4 * 5 / 16 * Q) / 10, rel=1e-9)
    assert auto.refresh_detail_s["cpu"] == pytest.approx((E + 4 * (5 / 16 * Q + ritz)) / 10, rel=1e-9)


def test_missing_probes_raise_only_when_needed():
    no_link = HardwareModel.from_trace(make_trace(probes=("blas", "launch", "membw", "linalg")))
    run(1, hw=no_link)
    with pytest.raises(MissingProbeError, match="all-reduce"):
        run(2, hw=no_link)
    no_linalg = HardwareModel.from_trace(make_trace(probes=("blas", "launch", "membw", "allreduce")))
    run(2, [OptimizerSpec("adam")], hw=no_linalg)
    with pytest.raises(MissingProbeError, match="linalg"):
        run(2, [OptimizerSpec("kpop")], hw=no_linalg)


def test_memory_per_node_against_the_node():
    small = HardwareModel.from_trace(make_trace(memory=2**20, fit_origin="derived"))
    r = run(2, [OptimizerSpec("kpop")], hw=small).results[0]
    assert not r.fits and r.memory_bytes["total"] == sum(v for k, v in r.memory_bytes.items() if k != "total")
    assert run(2, [OptimizerSpec("kpop")]).results[0].fits


def test_bad_cluster_and_config():
    with pytest.raises(AsprofError, match="nodes"):
        Cluster(0, HW)
    with pytest.raises(AsprofError, match="node 5"):
        Cluster(2, HW, ((5, NodeSpec(HW)),))
    with pytest.raises(AsprofError, match="slow-down"):
        NodeSpec(HW, gpu=0)
    with pytest.raises(AsprofError, match="steps"):
        SimConfig(steps=0)
    with pytest.raises(AsprofError, match="optimizer"):
        predict(WL, [], Cluster(1, HW))
    with pytest.raises(AsprofError, match="heterogeneous"):
        predict(WL, ALL, Cluster(2, HW, ((1, NodeSpec(HW, gpu=2)),)), SimConfig(steps=2, collapse="always"))


@st.composite
def model_pairs(draw):
    """Two models where the second is at least as large in every dimension."""
    heads = 4
    dims = []
    for lo, hi in ((1, 3), (1, 3), (8, 64), (16, 512)):  # layers, head-dim multiplier, ffn, vocab
        a = draw(st.integers(lo, hi))
        dims.append((a, a + draw(st.integers(0, hi))))
    (la, lb), (ha, hb), (fa, fb), (va, vb) = dims
    mk = lambda n, l, h, f, v: ModelConfig(n, l, heads * 2 * h, f, heads, v, 32)  # noqa: E731
    return mk("a", la, ha, fa, va), mk("b", lb, hb, fb, vb)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model_pairs(), st.sampled_from([1, 3]), st.integers(1, 3), st.integers(1, 2))
def test_step_time_does_not_decrease_with_model_size_batch_or_sequence(pair, K, batch, seq_mult):
    a, b = pair
    specs = [OptimizerSpec("adam"), OptimizerSpec("kpop", warmup=1, frequency=2),
             OptimizerSpec("topkpop", sparsity=0.3, warmup=1, frequency=2)]
    small = predict(Workload(a, batch, 16 * seq_mult), specs, Cluster(K, HW), SimConfig(steps=4))
    large = predict(Workload(b, batch, 16 * seq_mult), specs, Cluster(K, HW), SimConfig(steps=4))
    longer = predict(Workload(a, batch + 1, 16 * seq_mult + 16), specs, Cluster(K, HW), SimConfig(steps=4))
    for rs, rl, rb in zip(small.results, large.results, longer.results):
        assert rl.mean_s >= rs.mean_s * (1 - 1e-12)
        assert rb.mean_s >= rs.mean_s * (1 - 1e-12)
        assert rl.bytes_sent["total"] >= rs.bytes_sent["total"]
        assert rl.memory_bytes["total"] >= rs.memory_bytes["total"]


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 12), st.floats(1e3, 1e9), st.floats(1.0, 10.0))
def test_step_time_does_not_decrease_with_bytes_on_the_wire(K, nbytes, grow):
    hw = HW
    alpha, beta = hw.link()
    red = lambda S: hw.elementwise_work(3 * S / K, "cpu")  # noqa: E731
    assert ring_time(K, nbytes * grow, alpha, beta, red(nbytes * grow)) >= ring_time(K, nbytes, alpha, beta, red(nbytes))


def test_buckets_are_all_reduced_one_after_another():
    K = 4
    one = run(K, [OptimizerSpec("adam")], timeline=True, collapse="never").results[0]
    arrays = len(WL.param_arrays())
    each = run(K, [OptimizerSpec("adam", bucket_bytes=1)], timeline=True, collapse="never").results[0]
    sends = lambda r: sum(1 for s in r.spans if s[0] == 0 and s[4] == 0 and s[2].endswith("ring send"))  # noqa: E731
    assert sends(one) == 2 * (K - 1) and sends(each) == arrays * 2 * (K - 1)
    alpha, _ = HW.link()
    # every extra bucket pays the ring's 2(K−1) latencies at least
    assert each.mean_s - one.mean_s >= (arrays - 1) * 2 * (K - 1) * alpha * (1 - 1e-9)
    assert each.bytes_sent == one.bytes_sent



def test_a_probed_ring_size_uses_its_measured_all_sum_times():
    from dataclasses import replace as rep

    from test_sim_hardware import timing

    base = make_trace()  # measured fit, all_sum records at K = 2 equal to the fit
    slow = tuple(rep(r, metrics={**r.metrics, "time_s": 3 * r.metrics["time_s"]}, timing=timing(3 * r.metrics["time_s"]))
                 if r.op == "all_sum" else r for r in base.records)
    hw_fit, hw_meas = HardwareModel.from_trace(base), HardwareModel.from_trace(rep(base, records=slow))
    nbytes = 2**22  # between the probed 1 MiB and 16 MiB
    assert hw_meas.allreduce_time(nbytes, 2) == pytest.approx(3 * hw_fit.allreduce_time(nbytes, 2), rel=1e-9)
    assert hw_meas.allreduce_time(nbytes, 4) is None  # not probed: the α-β fit
    wl = Workload(PRESETS["kpop-1.7m"], 1, 64)
    spec = [OptimizerSpec("adam", bucket_bytes=2**40)]  # one bucket: one all_sum per step
    a = predict(wl, spec, Cluster(2, hw_fit), SimConfig(steps=2, variance=False)).results[0]
    b = predict(wl, spec, Cluster(2, hw_meas), SimConfig(steps=2, variance=False)).results[0]
    payload = plan_step(wl, spec[0], 2).grad_payload
    ring_fit, ring_meas = hw_fit.allreduce_time(payload, 2), hw_meas.allreduce_time(payload, 2)
    assert b.mean_s - a.mean_s == pytest.approx(ring_meas - ring_fit, rel=1e-6)

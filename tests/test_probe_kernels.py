"""launch, membw, linalg and memory probes at tiny sizes."""

import numpy as np
import pytest

from asprof.probe import launch, linalg, membw, memory
from asprof.probe.backends import CHAIN_OPS, TINY_OPS, MLXBackend, discover
from asprof.probe.context import ProbeContext
from asprof.probe.harness import LEVELS, Harness
from asprof.traces.schema import Record


def tiny_ctx(backends):
    _, absent = discover(("mlx",))
    return ProbeContext(level="tiny", harness=Harness(LEVELS["tiny"]), backends=backends, absent=absent)


def records(out):
    return [r for r in out if isinstance(r, Record)]


def test_launch_cold_from_a_fresh_process_and_warm_in_process():
    recs = records(launch.run(tiny_ctx([MLXBackend("cpu")])))
    assert {(r.op, r.params["op"]) for r in recs} == (
        {(k, op) for k in ("cold", "warm") for op in TINY_OPS} | {("graph", op) for op in CHAIN_OPS})
    for r in recs:
        per_op = r.params.get("ops", 1)
        assert r.metrics["latency_s"] == pytest.approx(r.timing.median_s / per_op) and r.metrics["latency_s"] > 0
        assert r.metrics["latency_s"] < 1.0  # a tiny op, not a process start-up
        if r.op == "graph":
            assert per_op == 16 and r.metrics["graph_s"] == r.timing.median_s
    cold = [r for r in recs if r.op == "cold"]
    assert all(r.params["processes"] == len(r.timing.samples_s) == 1 for r in cold)


def test_launch_child_failure_is_a_reason_not_a_crash():
    import mlx.core as mx

    if mx.metal.is_available():
        pytest.skip("needs a machine without an MLX GPU (the child must fail)")
    reason = launch._cold_samples("mlx", "gpu", tiny_ctx([]))
    assert isinstance(reason, str) and "child process failed" in reason and "gpu" in reason


def test_membw_records_stream_byte_counts():
    recs = records(membw.run(tiny_ctx([MLXBackend("cpu")])))
    assert {r.op for r in recs} == {"copy", "triad", "exp"}
    for r in recs:
        arrays = 3 if r.op == "triad" else 2
        assert r.metrics["bytes_moved"] == arrays * r.params["bytes"]
        if r.op == "exp":
            assert r.metrics["elements_per_s"] == pytest.approx(r.params["bytes"] / 4 / r.metrics["time_s"])
        assert r.metrics["bytes_per_s"] == pytest.approx(r.metrics["bytes_moved"] / r.metrics["time_s"])


def test_linalg_on_the_cpu_stream():
    recs = records(linalg.run(tiny_ctx([MLXBackend("cpu")])))
    assert {(r.op, r.params["n"]) for r in recs} == {(op, n) for op in linalg.OPS for n in (8, 16)}
    for r in recs:
        assert (r.framework, r.device, r.dtype) == ("mlx", "cpu", "float32")
        assert r.metrics["time_s"] == r.timing.median_s and r.metrics["flop"] == linalg.flop(r.op, r.params["n"])


def test_linalg_inputs_are_what_kpop_decomposes():
    import mlx.core as mx

    spd, q = linalg._inputs(MLXBackend("cpu"), 16)
    s, qn = np.array(spd), np.array(q)
    np.testing.assert_allclose(s, s.T, atol=1e-6)
    assert np.linalg.eigvalsh(s.astype(np.float64)).min() > 0
    np.testing.assert_allclose(qn.T @ qn, np.eye(16), atol=1e-5)
    w, v = mx.linalg.eigh(spd, stream=mx.cpu)
    np.testing.assert_allclose(np.array(w), np.linalg.eigvalsh(s.astype(np.float64)), rtol=1e-4, atol=1e-5)


def test_memory_series_over_a_real_training_loop():
    backends = [MLXBackend("cpu")]
    try:
        from asprof.probe.backends import TorchBackend

        backends.append(TorchBackend("cpu"))
    except ImportError:
        pass
    recs = records(memory.run(tiny_ctx(backends)))
    assert len(recs) == len(backends)
    for r in recs:
        steps = r.params["steps"]
        assert steps >= 50
        assert set(r.series) == {"rss_bytes", "minor_faults", "major_faults", "step_s"}
        assert all(len(v) == steps for v in r.series.values())
        m = r.metrics
        assert m["rss_growth_bytes"] == m["rss_end_bytes"] - m["rss_start_bytes"]
        assert m["rss_peak_bytes"] == max(r.series["rss_bytes"]) > 0
        assert m["minor_faults_per_step"] == pytest.approx(np.mean(r.series["minor_faults"][1:]))
        assert r.timing.first_s == r.series["step_s"][0] and len(r.timing.samples_s) == steps - 1


def test_mlx_training_loop_learns():
    import mlx.core as mx

    step, nparams = memory._mlx_loop(MLXBackend("cpu"), 8, 16, 4)
    losses = []
    for i in range(30):
        out = step(i)
        mx.eval(out)
        losses.append(out[0].item())
    assert nparams == 8 * 16 + 16 + 16 * 16 + 16 + 16 * 8 + 8
    assert losses[-1] < 0.5 * losses[0]


def test_membw_copy_and_triad_are_also_timed_inside_a_graph():
    recs = records(membw.run(tiny_ctx([MLXBackend("cpu")])))
    for r in recs:
        if r.op in ("copy", "triad"):
            assert r.params["chain"] == membw.chain_length(r.params["bytes"]) >= membw.CHAIN
            assert r.metrics["in_graph_s"] > 0
            assert len(r.series["chain_s"]) >= 2
            assert r.metrics["in_graph_s"] == pytest.approx(sorted(r.series["chain_s"])[len(r.series["chain_s"]) // 2]
                                                            / r.params["chain"], rel=0.5)

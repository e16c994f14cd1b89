"""`blas` probe at tiny sizes: records follow the trace conventions the simulator reads."""

import pytest

from asprof.probe import blas
from asprof.probe.backends import DTYPES, MLXBackend, discover
from asprof.probe.context import ProbeContext, too_slow
from asprof.probe.harness import LEVELS, Harness
from asprof.traces.schema import Record, Skip


def tiny_ctx(backends, level="tiny"):
    _, absent = discover(("mlx",))
    return ProbeContext(level=level, harness=Harness(LEVELS["tiny"]), backends=backends, absent=absent)


def test_flop_counts():
    assert blas.flop("matmul", (2, 3, 4, 5)) == 2 * 2 * 3 * 4 * 5
    assert blas.flop("matvec", (6, 7)) == 2 * 6 * 7
    assert blas.flop("vjp", (6, 7)) == 4 * 6 * 7  # forward A·x plus vᵀA


def test_sweeps_include_the_papers_batched_gemm_and_square_sizes():
    full = blas.shapes("full")["matmul"]
    assert (2000, 2000, 2000, 8) in full and (2000, 2000, 2000, 8) in blas.shapes("quick")["matmul"]
    assert {(n, n, n, 1) for n in (64, 128, 256, 512, 1024, 2048)} <= set(full)
    assert len(blas.shapes("quick")["matmul"]) < len(full)


def test_tiny_run_on_mlx_cpu():
    out = blas.run(tiny_ctx([MLXBackend("cpu")]))
    recs = [r for r in out if isinstance(r, Record)]
    ops = {(r.op, r.dtype) for r in recs}
    # no shape grid at the tiny level (tests/test_gemm_shapes.py runs it)
    assert ops == {(op, d) for op in ("matmul", "matvec", "vjp") for d in DTYPES} | {
        (op, "float32") for op in blas.LAYOUT_OPS}
    for r in recs:
        assert (r.framework, r.device, r.probe) == ("mlx", "cpu", "blas")
        assert {"flop", "flops_per_s", "time_s"} <= set(r.metrics) <= {"flop", "flops_per_s", "time_s", "in_graph_s"}
        assert r.metrics["time_s"] == r.timing.median_s
        assert r.metrics["flops_per_s"] == pytest.approx(r.metrics["flop"] / r.metrics["time_s"])
        if r.op in blas.MATMUL_OPS:
            square = r.params["batch"] == 1 and r.params["m"] == r.params["n"] == r.params["k"]
            assert set(r.params) == {"m", "n", "k", "batch"} | ({"chain"} if square else set())
            if square:  # also timed inside a graph: per-GEMM time of a chain
                assert r.metrics["in_graph_s"] > 0 and len(r.series["chain_s"]) >= 2
            assert r.metrics["flop"] == blas.flop(r.op, tuple(r.params[k] for k in ("m", "n", "k", "batch")))
        else:
            assert set(r.params) == {"m", "n"}
        assert len(r.timing.samples_s) >= 2
    assert any(r.params.get("batch", 1) > 1 for r in recs)  # the batched case ran
    import mlx.core as mx

    if not mx.metal.is_available():
        assert any(isinstance(s, Skip) and s.device == "gpu" for s in out)


def test_per_call_limit_skips_with_the_estimate():
    ctx = tiny_ctx([MLXBackend("cpu")], level="quick")
    assert not too_slow(None, None, ctx)  # the first size is always measured
    assert too_slow(10.0, 0.1, ctx)  # a 10 s call extrapolated from a 0.1 s one
    assert not too_slow(10.0, 0.001, ctx)  # ... but not from a latency-bound 1 ms call
    assert not too_slow(0.1, 0.05, ctx)


def test_measure_one_torch():
    torch = pytest.importorskip("torch")
    from asprof.probe.backends import TorchBackend

    rec = blas.measure_one(tiny_ctx([]), TorchBackend("cpu"), "matmul", (8, 8, 8, 1), "bfloat16")
    assert rec.framework == "torch" and rec.dtype == "bfloat16" and rec.metrics["flop"] == 2 * 8**3
    assert torch is not None


def test_transposed_layouts_compute_the_transposed_products():
    import mlx.core as mx
    import numpy as np

    backend = MLXBackend("cpu")
    for op, (m, n, k) in (("matmul_nt", (3, 4, 5)), ("matmul_tn", (3, 4, 5))):
        call = blas._workload(backend, op, (m, n, k, 1), "float32")
        out = call()
        assert out.shape == (m, n)
        a = backend.randn((m, k) if op == "matmul_nt" else (k, m), "float32", seed=1)
        b = backend.randn((n, k) if op == "matmul_nt" else (k, n), "float32", seed=2)
        ref = np.array(a) @ np.array(b).T if op == "matmul_nt" else np.array(a).T @ np.array(b)
        assert np.allclose(np.array(out), ref, atol=1e-5)
        assert mx is not None

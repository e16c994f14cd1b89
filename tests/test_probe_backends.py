"""Backends compute what they claim (numpy float64 as the reference) and discovery is honest."""

import numpy as np
import pytest

from asprof.probe.backends import CHAIN_OPS, DTYPES, TINY_OPS, MLXBackend, TorchBackend, discover, dtype_supported


def backends():
    out = [MLXBackend("cpu")]
    try:
        import torch  # noqa: F401

        out.append(TorchBackend("cpu"))
    except ImportError:
        pass
    return out


def to_np(x):
    if hasattr(x, "detach"):
        return x.detach().float().cpu().numpy().astype(np.float64)
    return np.array(x.astype(__import__("mlx.core").core.float32), dtype=np.float64)


@pytest.mark.parametrize("backend", backends(), ids=lambda b: b.name)
def test_kernels_match_numpy(backend):
    a = backend.randn((5, 3), seed=1)
    b = backend.randn((3, 4), seed=2)
    x = backend.randn((3,), seed=3)
    v = backend.randn((5,), seed=4)
    A, B, X, V = map(to_np, (a, b, x, v))
    np.testing.assert_allclose(to_np(backend.matmul(a, b)), A @ B, rtol=1e-5, atol=1e-5)
    y, g = backend.vjp(a, x, v)
    np.testing.assert_allclose(to_np(y), A @ X, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(to_np(g), V @ A, rtol=1e-5, atol=1e-5)  # vᵀA
    np.testing.assert_allclose(to_np(backend.copy(x)), -X)
    triad, _ = backend.triad_fn()
    np.testing.assert_allclose(to_np(triad(x, x)), 4 * X, rtol=1e-6)
    for op in TINY_OPS:
        out = backend.tiny_op(op)()
        backend.sync(out)
    expect = {"add": 3.0, "mul": 2.0, "exp": np.e, "sum": 16.0, "matmul": 8.0}
    for op, val in expect.items():
        assert to_np(backend.tiny_op(op)()).flat[0] == pytest.approx(val, rel=1e-6)
    # chains: 10 dependent ops, each output feeding the next
    chained = {op: to_np(backend.chain(op, 10)()) for op in CHAIN_OPS}
    assert (chained["add"] == 11).all() and (chained["mul"] == 1).all() and np.allclose(chained["matmul"], 1 / 8)


def test_dtypes_are_all_supported_on_the_cpu():
    for backend in backends():
        for dtype in DTYPES:
            assert dtype_supported(backend, dtype) is None


def test_discovery_lists_what_is_present_and_why_the_rest_is_not():
    import mlx.core as mx

    have, absent = discover()
    names = {b.name for b in have}
    assert "mlx/cpu" in names
    if not mx.metal.is_available():
        reasons = {(a.framework, a.device): a.reason for a in absent}
        assert "mlx/gpu" not in names and "GPU" in reasons[("mlx", "gpu")]
    covered = names | {f"{a.framework}/{a.device}" for a in absent}
    assert {"mlx/gpu", "mlx/cpu", "torch/mps", "torch/cuda", "torch/cpu"} <= covered
    assert discover(("mlx",))[0][-1].framework == "mlx"
    assert all(b.framework == "mlx" for b in discover(("mlx",))[0])

"""TopKPOP's partial eigensolver (subspace iteration + Rayleigh–Ritz) against numpy's full eigh, the
"auto" method choice, and the shared input factor of q/k/v and gate/up (exact: same numbers as
factors computed per layer)."""

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from asprof.optimizers import KPOP, TopKPOP, attach_kfac, kfac_value_and_grad
from asprof.optimizers import kpop as kpop_module
from asprof.optimizers.eigenbasis import subspace_basis
from asprof.presets import PRESETS
from asprof.train.model import build_model, loss_fn

TINY = PRESETS["tiny"]


def spd(n, seed, spread=100.0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    lam = np.geomspace(1.0, spread, n)
    return (q * lam) @ q.T, q, lam


def sin_largest_angle(a, b):
    """sin of the largest principal angle between the column spans of orthonormal a and b."""
    return np.linalg.norm(a - b @ (b.T @ a), 2)


def test_subspace_basis_converges_to_the_top_k_eigenvectors_from_a_perturbed_start():
    n, k = 40, 8
    m, q, lam = spd(n, 0)
    top = q[:, n - k:]  # ascending, as eigh gives them
    rng = np.random.default_rng(1)
    start, _ = np.linalg.qr(top + 0.1 * rng.standard_normal((n, k)))
    assert sin_largest_angle(start, top) > 0.1
    got = np.array(subspace_basis(mx.array(m, dtype=mx.float32), mx.array(start, dtype=mx.float32), 80),
                   dtype=np.float64)
    assert sin_largest_angle(got, top) < 1e-3
    np.testing.assert_allclose(got.T @ got, np.eye(k), atol=1e-5)
    # Ritz vectors: each column is an eigenvector, ascending, largest-|.| entry positive.
    for j in range(k):
        assert abs(abs(got[:, j] @ top[:, j]) - 1) < 1e-3
        assert got[np.argmax(np.abs(got[:, j])), j] > 0
    # One step improves the subspace (contraction by about λ_{n-k}/λ_{n-k+1} per step).
    one = np.array(subspace_basis(mx.array(m, dtype=mx.float32), mx.array(start, dtype=mx.float32), 1))
    assert sin_largest_angle(one, top) < sin_largest_angle(start, top)


def test_subspace_basis_keeps_an_exact_basis():
    m, q, _ = spd(24, 2)
    top = q[:, 24 - 6:]
    got = np.array(subspace_basis(mx.array(m, dtype=mx.float32), mx.array(top, dtype=mx.float32)))
    assert sin_largest_angle(got, top) < 1e-4


def tokens(seed, batch=4, seq=16):
    t = mx.array(np.random.default_rng(seed).integers(0, TINY.vocab, size=(batch, seq + 1)).astype(np.int32))
    return t[:, :-1], t[:, 1:]


def kfac_model(seed=0):
    model = build_model(TINY, seed=seed)
    attach_kfac(model)
    return model, kfac_value_and_grad(model, lambda x, y: loss_fn(model, x, y))


@pytest.mark.parametrize("cls,kwargs,first,later", [
    (KPOP, {}, "eigh", "eigh"),                                  # full bases: nothing to save
    (TopKPOP, dict(sparsity=0.25), "eigh", "subspace"),          # partial from the 2nd refresh
    (TopKPOP, dict(sparsity=0.25, eig_method="eigh"), "eigh", "eigh"),
    (TopKPOP, dict(sparsity=1.0), "eigh", "eigh"),               # s = 1 keeps every vector
])
def test_auto_picks_the_partial_solver_where_a_basis_keeps_fewer_vectors(monkeypatch, cls, kwargs, first, later):
    calls = []
    for name in ("eigh_basis", "subspace_basis", "power_basis"):
        real = getattr(kpop_module, name)
        monkeypatch.setattr(kpop_module, name, lambda *a, _n=name, _r=real: calls.append(_n) or _r(*a))
    model, vg = kfac_model()
    opt = cls(1e-3, warmup=0, frequency=1, **kwargs)
    x, y = tokens(0)
    for t in range(2):
        _, g, f = vg(x, y)
        calls.clear()
        opt.update(model, g, f)
        assert set(calls) == {f"{first if t == 0 else later}_basis"}


def test_q_k_v_and_gate_up_share_one_input_factor_and_one_basis():
    model, vg = kfac_model()
    x, y = tokens(1)
    _, _, factors = vg(x, y)
    for layer in range(TINY.layers):
        a, m = f"layers.{layer}.attention.", f"layers.{layer}.mlp."
        assert factors[a + "k_proj.weight"]["C"] is factors[a + "q_proj.weight"]["C"]
        assert factors[a + "v_proj.weight"]["C"] is factors[a + "q_proj.weight"]["C"]
        assert factors[m + "up_proj.weight"]["C"] is factors[m + "gate_proj.weight"]["C"]
        assert factors[a + "o_proj.weight"]["C"] is not factors[a + "q_proj.weight"]["C"]
        assert factors[m + "down_proj.weight"]["C"] is not factors[m + "gate_proj.weight"]["C"]
    opt = KPOP(1e-3)
    model2, _ = kfac_model()
    opt.update(model2, *vg(x, y)[1:])
    q, k = (opt._state_at(f"layers.0.attention.{p}_proj.weight") for p in "qk")
    assert q["Q_C"] is k["Q_C"] and q["C_hat"] is k["C_hat"]


def test_sharing_gives_the_numbers_of_separate_factors():
    """KPOP fed the shared factors ≡ KPOP fed a separate copy of C_b per layer (bit for bit)."""
    runs = []
    for copy in (False, True):
        model, vg = kfac_model(seed=3)
        opt = TopKPOP(1e-3, sparsity=0.5, warmup=2, frequency=2)
        for t in range(5):
            _, g, f = vg(*tokens(t))
            if copy:
                f = {p: {"C": mx.array(np.array(v["C"])), "R": v["R"]} for p, v in f.items()}
            opt.update(model, g, f)
            mx.eval(model.parameters(), opt.state)
        runs.append(dict(tree_flatten(model.parameters())))
    for key, a in runs[0].items():
        assert mx.array_equal(a, runs[1][key]).item(), key

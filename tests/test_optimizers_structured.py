"""Eigen-Adam, SOAP, RACS, Alice, Alice-0 (paper 004): hyper-parameter checks, routing, refresh
schedule, state bytes against the paper's Table 1, and the degenerate cases — identity bases ≡ Adam,
RACS' scaling vectors = the fixed point of Eq. (16), Alice without its three components ≡ GaLore."""

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest
from mlx.utils import tree_flatten

from asprof.optimizers import (
    RACS,
    SOAP,
    Alice,
    Alice0,
    EigenAdam,
    closed_form_state_bytes,
    linear_weight_paths,
    make_optimizer,
    state_bytes,
)
from asprof.optimizers import eigen_adam as eigen_adam_module
from asprof.optimizers import soap as soap_module
from asprof.optimizers.accounting import table1_state_elements
from asprof.optimizers.alice import complement_basis, subspace_iteration, switch_indices
from asprof.optimizers.racs import two_sided_scaling
from asprof.presets import PRESETS
from asprof.train.model import build_model, loss_fn

TINY = PRESETS["tiny"]
NAMES = ["eigen-adam", "soap", "racs", "alice", "alice-0"]


def tokens(seed, batch=4, seq=16):
    rng = np.random.default_rng(seed)
    t = mx.array(rng.integers(0, TINY.vocab, size=(batch, seq + 1)).astype(np.int32))
    return t[:, :-1], t[:, 1:]


def model_and_grad(seed=0):
    model = build_model(TINY, seed=seed)
    return model, nn.value_and_grad(model, lambda x, y: loss_fn(model, x, y))


def max_diff(a, b):
    fa, fb = dict(tree_flatten(a)), dict(tree_flatten(b))
    assert fa.keys() == fb.keys()
    return max(float(mx.max(mx.abs(fa[k] - fb[k])).item()) for k in fa)


# --- hyper-parameters ----------------------------------------------------------------------------
BAD = [
    (EigenAdam, dict(beta3=1.0), "beta3"), (EigenAdam, dict(frequency=0), "frequency"),
    (EigenAdam, dict(betas=(0.9, 1.5)), "beta2"), (SOAP, dict(beta3=-0.1), "beta3"),
    (SOAP, dict(frequency=2.5), "frequency"), (SOAP, dict(eps=-1.0), "eps"),
    (RACS, dict(beta=1.0), "beta"), (RACS, dict(alpha=0.0), "alpha"), (RACS, dict(gamma=-1.0), "gamma"),
    (RACS, dict(iters=0), "iters"), (RACS, dict(weight_decay=-1.0), "weight_decay"),
    (Alice, dict(betas=(0.9, 0.9)), "betas"), (Alice, dict(betas=(0.9, 0.9, 1.0)), "beta3"),
    (Alice, dict(alpha=-0.3), "alpha"), (Alice, dict(alpha_c=-0.1), "alpha_c"), (Alice, dict(rank=0), "rank"),
    (Alice, dict(rank=1.5), "rank"), (Alice, dict(leading=0.0), "leading"), (Alice, dict(frequency=-1), "frequency"),
    (Alice, dict(gamma=0.0), "gamma"), (Alice, dict(tracking="no"), "tracking"), (Alice, dict(seed=-1), "seed"),
    (Alice0, dict(rank="big"), "rank"),
]


@pytest.mark.parametrize("cls,kwargs,name", BAD)
def test_bad_hyperparameters_raise_valueerror_naming_the_parameter(cls, kwargs, name):
    with pytest.raises(ValueError, match=name):
        cls(1e-3, **kwargs)


@pytest.mark.parametrize("name", NAMES)
def test_bad_learning_rate_and_factory(name):
    with pytest.raises(ValueError, match="learning_rate"):
        make_optimizer(name, -1.0)
    opt = make_optimizer(name, 1e-3)
    assert type(opt) is {"eigen-adam": EigenAdam, "soap": SOAP, "racs": RACS, "alice": Alice, "alice-0": Alice0}[name]


def test_paper_defaults():
    a = Alice(0.02)
    assert (a.betas, a.beta3, a.alpha, a.alpha_c, a.frequency, a.gamma) == ((0.9, 0.9), 0.999, 0.3, 0.4, 200, 1.01)
    assert Alice0(0.02).beta3 == 0.0 and not Alice0(0.02).tracking
    r = RACS(0.02)
    assert (r.beta, r.alpha, r.gamma, r.iters) == (0.9, 0.05, 1.01, 5)


# --- routing, schedule, state --------------------------------------------------------------------
def test_routing_linear_weights_only():
    model, vg = model_and_grad()
    opt = SOAP(1e-3)
    opt.update(model, vg(*tokens(0))[1])
    assert opt.matrix_paths == linear_weight_paths(model)
    assert len(opt.matrix_paths) == len(TINY.linear_shapes())
    assert set(opt.state["tok_embeddings"]["weight"]) == {"m", "v"}  # embedding / tied head: Adam
    assert set(opt.state["norm"]["weight"]) == {"m", "v"}
    assert set(opt.state["layers"][0]["mlp"]["up_proj"]["weight"]) == {"m", "v", "L", "R", "U_L", "U_R"}


def test_refresh_schedule_t1_then_every_k():
    model, vg = model_and_grad()
    opt = EigenAdam(1e-3, frequency=4)
    due = []
    for step in range(13):
        due.append(opt.refresh_due())
        opt.update(model, vg(*tokens(step))[1])
    assert [i for i, d in enumerate(due) if d] == [0, 3, 7, 11]  # t = 1, 4, 8, 12
    assert opt.refreshes == 4
    assert not RACS(1e-3).refresh_due()


# Layer shapes (out, in) of a model made only of linear layers, plus a norm vector (Adam-routed).
SHAPES = [(8, 8), (12, 20), (20, 12), (64, 96), (7, 3)]


class Shapes(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = [nn.Linear(c, r, bias=False) for r, c in SHAPES]
        self.norm = nn.RMSNorm(5)


def paper_table1(name, rows, cols, r=None):
    """Table 1 (Alice-0: Table 6) memory, minus the weight's own mn, written from the paper."""
    m, n = min(rows, cols), max(rows, cols)
    return {"eigen-adam": 3 * m * n + 2 * m**2, "soap": 3 * m * n + 2 * m**2 + 2 * n**2,
            "racs": m * n + m + n + 1, "alice": m * n + 2 * n * r + m * r + n + r**2,
            "alice-0": m * n + 2 * n * r + m * r + n}[name] - m * n


@pytest.mark.parametrize("name", NAMES)
def test_state_bytes_match_table1_for_several_shapes(name):
    model = Shapes()
    grads = {"layers": [{"weight": mx.ones_like(layer.weight)} for layer in model.layers],
             "norm": {"weight": mx.ones((5,))}}
    opt = make_optimizer(name, 1e-3, **({"rank": 2} if name.startswith("alice") else {}))
    opt.update(model, grads)
    mx.eval(opt.state)
    per_layer = [paper_table1(name, r, c, min(2, r, c)) for r, c in SHAPES]
    assert [table1_state_elements(name, r, c, 2) for r, c in SHAPES] == per_layer
    # Alice holds one more scalar per matrix than Table 1 counts: the limiter norm φ.
    extra = len(SHAPES) if name.startswith("alice") else 0
    assert state_bytes(opt) == 4 * (sum(per_layer) + extra + 2 * 5)


@pytest.mark.parametrize("name", NAMES)
def test_live_state_matches_the_closed_form_on_the_tiny_llama(name):
    model, vg = model_and_grad()
    opt = make_optimizer(name, 1e-3)
    opt.update(model, vg(*tokens(0))[1])
    mx.eval(opt.state)
    assert state_bytes(opt) == closed_form_state_bytes(TINY, name)


@pytest.mark.parametrize("name", NAMES)
def test_trains_and_tall_matrices_are_handled_as_their_transpose(name):
    model, vg = model_and_grad(seed=1)
    opt = make_optimizer(name, {"racs": 0.02, "alice": 0.02, "alice-0": 0.02}.get(name, 3e-3), frequency=3) \
        if name != "racs" else RACS(0.02)
    losses = []
    for step in range(10):
        loss, g = vg(*tokens(step % 2))
        opt.update(model, g)
        mx.eval(model.parameters(), opt.state)
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.3
    st = opt.state["layers"][0]["mlp"]["up_proj"]["weight"]  # W: 128×64, handled as 64×128
    if name == "eigen-adam":
        assert st["U"].shape == (64, 64) and st["m"].shape == (64, 128)
    if name.startswith("alice"):
        assert st["U"].shape == (64, 16) and st["m"].shape == (16, 128) and st["p"].shape == (128,)
        u = np.array(st["U"])
        np.testing.assert_allclose(u.T @ u, np.eye(16), atol=1e-5)


# --- degenerate cases ----------------------------------------------------------------------------
@pytest.mark.parametrize("module,cls,keys", [(eigen_adam_module, EigenAdam, ("U",)),
                                             (soap_module, SOAP, ("U_L", "U_R"))])
@pytest.mark.parametrize("bias_correction", [False, True])
def test_identity_bases_are_adam(monkeypatch, module, cls, keys, bias_correction):
    """Eigen-Adam / SOAP whose eigenbases are the identity are Adam (MLX's own), every parameter."""
    def run(patched, steps=8):
        with monkeypatch.context() as mp:
            if patched:
                mp.setattr(module, "eigh_basis", lambda m, k: mx.eye(m.shape[0], dtype=mx.float32))
            model, vg = model_and_grad(seed=3)
            opt = cls(3e-3, frequency=3, bias_correction=bias_correction)
            for step in range(steps):
                opt.update(model, vg(*tokens(step))[1])
                mx.eval(model.parameters(), opt.state)
            return model, opt

    model, opt = run(True)
    adam_model, vg = model_and_grad(seed=3)
    adam = optim.Adam(3e-3, betas=[0.95, 0.95], bias_correction=bias_correction)
    for step in range(8):
        adam.update(adam_model, vg(*tokens(step))[1])
        mx.eval(adam_model.parameters(), adam.state)
    st = opt.state["layers"][1]["attention"]["q_proj"]["weight"]
    assert all(mx.array_equal(st[k], mx.eye(st[k].shape[0])).item() for k in keys) and opt.refreshes == 3
    assert max_diff(model.parameters(), adam_model.parameters()) <= 1e-6
    # ...and the test can fail: the real eigenbases move the optimizer away from Adam.
    real, _ = run(False)
    assert max_diff(real.parameters(), adam_model.parameters()) > 1e-4


def fixed_point_f64(p, tol=1e-15, max_iter=100_000):
    """Eq. (16) iterated to convergence in float64 from q = 1, independently of asprof."""
    q = np.ones(p.shape[0])
    for _ in range(max_iter):
        s = p.T @ q / (q @ q)
        q_new = p @ s / (s @ s)
        if np.max(np.abs(q_new - q)) <= tol * np.max(np.abs(q_new)):
            return s, q_new
        q = q_new
    raise AssertionError("no convergence")


def test_racs_scaling_vectors_are_the_fixed_point_of_eq16():
    rng = np.random.default_rng(0)
    g = rng.standard_normal((12, 20)) * np.geomspace(0.5, 2.0, 20)
    s_ref, q_ref = fixed_point_f64(g**2)
    # Proposition 3: q sᵀ is the best rank-1 approximation of P = G², σ₁ u₁ v₁ᵀ.
    u, sv, vt = np.linalg.svd(g**2)
    np.testing.assert_allclose(np.outer(q_ref, s_ref), sv[0] * np.outer(u[:, 0], vt[0]), rtol=1e-10)
    # The optimizer's own state after one step with β = 0 (s_t, q_t = this step's Eq. 16 solution).
    w = {"layer": {"weight": mx.zeros((12, 20))}}
    opt = RACS(0.02, beta=0.0, iters=60)
    opt.init(w, ["layer.weight"])
    opt.apply_gradients({"layer": {"weight": mx.array(g, dtype=mx.float32)}}, w)
    st = opt.state["layer"]["weight"]
    np.testing.assert_allclose(np.array(st["s"]), s_ref, rtol=2e-5)
    np.testing.assert_allclose(np.array(st["q"]), q_ref, rtol=2e-5)
    # The default 5 iterations are close on this gradient, and the iteration can tell them apart.
    s5, q5 = (np.array(a) for a in two_sided_scaling(mx.array(g**2, dtype=mx.float32), 5))
    np.testing.assert_allclose(np.outer(q5, s5), np.outer(q_ref, s_ref), rtol=0.05)
    s1, q1 = (np.array(a) for a in two_sided_scaling(mx.array(g**2, dtype=mx.float32), 1))
    assert np.max(np.abs(np.outer(q1, s1) / np.outer(q_ref, s_ref) - 1)) > 1e-4


def canonical(u):
    idx = np.argmax(np.abs(u), axis=0)
    return u * np.where(u[idx, np.arange(u.shape[1])] < 0, -1.0, 1.0)


def galore_reference(w0, xs, ys, lr, alpha, rank, K, betas, eps, steps):
    """GaLore's update (App. B.11, Algorithm 8) in float64, written from the paper: at t = 1 and
    t mod K = 0, U = the top-r left singular vectors of G (descending, sign-canonical); σ = UᵀG;
    Adam moments on σ (no bias correction); W ← W − λα U m/(√v+ε). Loss ½‖W X − Y‖²."""
    w = w0.astype(np.float64).copy()
    transposed = w.shape[0] > w.shape[1]
    m = v = u = None
    for t in range(1, steps + 1):
        g = (w @ xs[t - 1] - ys[t - 1]) @ xs[t - 1].T
        go = g.T if transposed else g
        if t == 1 or t % K == 0:
            u = canonical(np.linalg.svd(go)[0][:, :rank])
        if m is None:
            m = np.zeros((rank, go.shape[1]))
            v = np.zeros_like(m)
        sigma = u.T @ go
        m = betas[0] * m + (1 - betas[0]) * sigma
        v = betas[1] * v + (1 - betas[1]) * sigma**2
        delta = -lr * alpha * (u @ (m / (np.sqrt(v) + eps)))
        w += delta.T if transposed else delta
    return w


@pytest.mark.parametrize("shape", [(6, 14), (14, 6)])
def test_alice_without_tracking_switching_compensation_is_galore(shape):
    rng = np.random.default_rng(1)
    rows, cols = shape
    w0 = rng.standard_normal(shape) * 0.3
    xs = [rng.standard_normal((cols, 32)) * np.geomspace(0.3, 3.0, cols)[:, None] for _ in range(20)]
    ys = [rng.standard_normal((rows, 32)) for _ in range(20)]
    hp = dict(lr=0.02, alpha=0.3, rank=2, K=4, betas=(0.9, 0.9), eps=1e-8, steps=20)
    ref = galore_reference(w0, xs, ys, **hp)

    def run(**flags):
        opt = Alice(0.02, alpha=0.3, rank=2, frequency=4, betas=(0.9, 0.9, 0.999), **flags)
        params = {"layer": {"weight": mx.array(w0, dtype=mx.float32)}}
        opt.init(params, ["layer.weight"])
        for t in range(20):
            x, y = mx.array(xs[t], dtype=mx.float32), mx.array(ys[t], dtype=mx.float32)
            g = (params["layer"]["weight"] @ x - y) @ x.T
            params = opt.apply_gradients({"layer": {"weight": g}}, params)
            mx.eval(params, opt.state)
        return np.array(params["layer"]["weight"])

    ours = run(tracking=False, switching=False, compensation=False)
    assert np.abs(ref - w0).max() > 1e4 * 1e-6  # it moved far more than the tolerance
    np.testing.assert_allclose(ours, ref, atol=1e-6)  # measured 1.5e-7
    for flags in (dict(tracking=False, switching=False), dict(tracking=False, compensation=False)):
        assert np.abs(run(**flags) - ref).max() > 1e-3  # each component changes the update


def test_switching_keeps_l_leading_vectors_and_samples_the_complement():
    rng = np.random.default_rng(4)
    a = rng.standard_normal((10, 10))
    a = a @ a.T
    u0, _ = np.linalg.qr(rng.standard_normal((10, 4)))
    u1 = np.array(subspace_iteration(mx.array(a, dtype=mx.float32), mx.array(u0, dtype=mx.float32)))
    # One subspace-iteration step: span(A·U0), Rayleigh-Ritz vectors in descending order.
    ref, _ = np.linalg.qr(a @ u0)
    vals, vecs = np.linalg.eigh(ref.T @ a @ ref)
    ref = canonical(ref @ vecs[:, ::-1])
    np.testing.assert_allclose(u1, ref, atol=1e-4)
    comp = np.array(complement_basis(mx.array(u1)))
    assert comp.shape == (10, 6)
    np.testing.assert_allclose(np.hstack([u1, comp]).T @ np.hstack([u1, comp]), np.eye(10), atol=1e-5)
    idx = switch_indices(0, 3, "layers.0.weight", 6, 2)
    assert list(idx) == list(switch_indices(0, 3, "layers.0.weight", 6, 2)) and len(set(idx)) == 2
    assert any(list(switch_indices(0, k, "layers.0.weight", 6, 2)) != list(idx) for k in range(4, 10))

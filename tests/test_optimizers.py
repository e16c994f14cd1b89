"""asprof.optimizers: hyper-parameter checks, routing, state, and the degenerate-case equivalences
(identity basis ≡ Adam, TopKPOP(s=1) ≡ KPOP, compiled ≡ uncompiled)."""

import math

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest
from mlx.utils import tree_flatten, tree_map, tree_unflatten

from asprof.optimizers import (
    KPOP,
    Adam,
    Communicator,
    TopKPOP,
    attach_kfac,
    canonical_signs,
    closed_form_state_bytes,
    eigh_basis,
    kfac_value_and_grad,
    make_optimizer,
    power_basis,
    reduced_dim,
    state_bytes,
)
from asprof.presets import PRESETS
from asprof.train.model import build_model, loss_fn

TINY = PRESETS["tiny"]


def tokens(seed, batch=4, seq=16):
    rng = np.random.default_rng(seed)
    t = mx.array(rng.integers(0, TINY.vocab, size=(batch, seq + 1)).astype(np.int32))
    return t[:, :-1], t[:, 1:]


def kfac_model(seed=0):
    model = build_model(TINY, seed=seed)
    attach_kfac(model)
    return model, kfac_value_and_grad(model, lambda x, y: loss_fn(model, x, y))


def flat(tree):
    return dict(tree_flatten(tree))


def max_diff(a, b):
    fa, fb = flat(a), flat(b)
    assert fa.keys() == fb.keys()
    return max(float(mx.max(mx.abs(fa[k] - fb[k])).item()) for k in fa)


# --- hyper-parameters --------------------------------------------------------------------------
BAD = [
    (TopKPOP, dict(sparsity=0.0), "sparsity"),
    (TopKPOP, dict(sparsity=1.5), "sparsity"),
    (TopKPOP, dict(sparsity=-0.1), "sparsity"),
    (KPOP, dict(alpha=1.0), "alpha"),
    (KPOP, dict(alpha=-0.01), "alpha"),
    (KPOP, dict(frequency=0), "frequency"),
    (KPOP, dict(frequency=-3), "frequency"),
    (KPOP, dict(frequency=2.5), "frequency"),
    (KPOP, dict(warmup=-1), "warmup"),
    (KPOP, dict(eig_method="qr"), "eig_method"),
    (KPOP, dict(betas=(1.0, 0.999)), "beta1"),
    (KPOP, dict(betas=(0.9, -0.5)), "beta2"),
    (KPOP, dict(betas=(0.9,)), "betas"),
    (KPOP, dict(eps=-1e-8), "eps"),
    (KPOP, dict(weight_decay=-0.1), "weight_decay"),
    (Adam, dict(betas=(0.9, 1.0)), "beta2"),
    (Adam, dict(eps=-1.0), "eps"),
    (Adam, dict(bias_correction="yes"), "bias_correction"),
    (Adam, dict(comm=object()), "comm"),
]


@pytest.mark.parametrize("cls,kwargs,name", BAD)
def test_bad_hyperparameters_raise_valueerror_naming_the_parameter(cls, kwargs, name):
    with pytest.raises(ValueError, match=name):
        cls(learning_rate=1e-3, **kwargs)


@pytest.mark.parametrize("lr", [0.0, -1e-3, float("nan"), float("inf")])
@pytest.mark.parametrize("cls", [Adam, KPOP, TopKPOP])
def test_bad_learning_rate(cls, lr):
    with pytest.raises(ValueError, match="learning_rate"):
        cls(learning_rate=lr)


def test_make_optimizer_names():
    assert type(make_optimizer("adam", 1e-3, alpha=0.5)) is Adam
    assert type(make_optimizer("kpop", 1e-3)) is KPOP
    opt = make_optimizer("topkpop", 1e-3, sparsity=0.25)
    assert type(opt) is TopKPOP and opt.sparsity == 0.25
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer("sgd", 1e-3)


def test_kpop_needs_factors():
    model, _ = kfac_model()
    x, y = tokens(0)
    _, grads = nn.value_and_grad(model, lambda a, b: loss_fn(model, a, b))(x, y)
    with pytest.raises(ValueError, match="KFAC"):
        KPOP(1e-3).update(model, grads)


# --- bases -------------------------------------------------------------------------------------
def test_reduced_dim_is_ceiling_of_sqrt_s_times_n():
    assert reduced_dim(64, 0.25) == 32  # exactly √0.25·64, no spurious round-up
    assert reduced_dim(64, 0.1) == math.ceil(math.sqrt(0.1) * 64) == 21
    assert reduced_dim(100, 1.0) == 100
    assert reduced_dim(3, 1e-6) == 1


def spd(n, seed, spread=10.0):
    """A symmetric positive-definite matrix with well-separated eigenvalues and known eigenvectors."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    lam = np.geomspace(1.0, spread, n)
    return (q * lam) @ q.T, q, lam


def test_eigh_basis_is_sign_canonical_ascending_and_top_k():
    m, q, lam = spd(12, 0)
    basis = np.array(eigh_basis(mx.array(m, dtype=mx.float32), 5))
    assert basis.shape == (12, 5)
    # The top-5 eigenvectors, ascending: column j ∝ q[:, 7 + j].
    for j in range(5):
        assert abs(abs(basis[:, j] @ q[:, 7 + j]) - 1) < 1e-4
        i = np.argmax(np.abs(basis[:, j]))
        assert basis[i, j] > 0
    # Flipping signs of the input eigenvectors does not change the canonical basis.
    flipped = np.array(canonical_signs(mx.array(-basis)))
    np.testing.assert_array_equal(flipped, basis)


def test_power_basis_is_one_qr_power_step_sorted_by_rayleigh_quotient():
    m, _, _ = spd(10, 1, spread=50.0)
    rng = np.random.default_rng(2)
    q0, _ = np.linalg.qr(rng.standard_normal((10, 4)))
    got = np.array(power_basis(mx.array(m, dtype=mx.float32), mx.array(q0, dtype=mx.float32)))
    # Reference: numpy QR of M·Q0 spans the same subspace; columns up to sign and order.
    ref, _ = np.linalg.qr(m @ q0)
    rq = np.diag(ref.T @ m @ ref)
    ref = ref[:, np.argsort(rq)]
    for j in range(4):
        assert abs(abs(got[:, j] @ ref[:, j]) - 1) < 1e-4
    assert np.all(np.diff(np.diag(got.T @ m @ got)) >= 0)
    np.testing.assert_allclose(got.T @ got, np.eye(4), atol=1e-5)


def test_refresh_schedule_warmup_then_every_f():
    model, vg = kfac_model()
    opt = KPOP(1e-3, warmup=3, frequency=4)
    x, y = tokens(0)
    due = []
    for _ in range(13):
        _, g, f = vg(x, y)
        due.append(opt.refresh_due())
        opt.update(model, g, f)
    assert [t for t, d in enumerate(due) if d] == [0, 1, 2, 4, 8, 12]
    assert opt.refreshes == 6


# --- state ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,s", [("adam", 1.0), ("kpop", 1.0), ("topkpop", 0.3)])
def test_state_shapes_and_bytes_match_the_closed_form(name, s):
    model, vg = kfac_model()
    opt = make_optimizer(name, 1e-3, sparsity=s)
    x, y = tokens(0)
    _, g, f = vg(x, y)
    opt.update(model, g, None if name == "adam" else f)
    mx.eval(opt.state)
    assert state_bytes(opt) == closed_form_state_bytes(TINY, name, s)
    if name == "topkpop":
        st = opt.state["layers"][0]["mlp"]["up_proj"]["weight"]  # W: 128×64
        r2, c2 = reduced_dim(128, s), reduced_dim(64, s)
        assert st["m"].shape == st["v"].shape == (r2, c2)
        assert st["Q_R"].shape == (128, r2) and st["Q_C"].shape == (64, c2)
        assert st["R_hat"].shape == (128, 128) and st["C_hat"].shape == (64, 64)
    # Routing: the embedding (tied head) and the norms keep plain Adam state.
    emb = opt.state["tok_embeddings"]["weight"]
    assert set(emb) == {"m", "v"} and emb["m"].shape == (TINY.vocab, TINY.hidden)
    assert set(opt.state["norm"]["weight"]) == {"m", "v"}


# --- equivalences ----------------------------------------------------------------------------------
def diagonal_factors(factors):
    """Factors diag(1..n): their eigenbasis (ascending) is exactly the identity."""
    return {k: {"C": mx.diag(mx.arange(1, f["C"].shape[0] + 1).astype(mx.float32)),
                "R": mx.diag(mx.arange(1, f["R"].shape[0] + 1).astype(mx.float32))} for k, f in factors.items()}


@pytest.mark.parametrize("bias_correction", [True, False])
def test_kpop_with_identity_bases_is_adam(bias_correction):
    """KPOP whose eigenbases are the identity is Adam (MLX's own, same bias-correction setting)."""
    model_k, vg_k = kfac_model(seed=3)
    model_a = build_model(TINY, seed=3)
    vg_a = nn.value_and_grad(model_a, lambda a, b: loss_fn(model_a, a, b))
    kpop = KPOP(3e-3, bias_correction=bias_correction, warmup=2, frequency=3)
    adam = optim.Adam(3e-3, bias_correction=bias_correction)
    for step in range(10):
        x, y = tokens(step)
        _, gk, fk = vg_k(x, y)
        kpop.update(model_k, gk, diagonal_factors(fk))
        _, ga = vg_a(x, y)
        adam.update(model_a, ga)
        mx.eval(model_k.parameters(), kpop.state, model_a.parameters(), adam.state)
    st = kpop.state["layers"][1]["attention"]["q_proj"]["weight"]
    assert mx.array_equal(st["Q_R"], mx.eye(TINY.hidden)).item()
    assert kpop.refreshes >= 3
    assert max_diff(model_k.parameters(), model_a.parameters()) <= 1e-6
    # ...and the test can fail: real factors (a real rotation) move KPOP away from Adam.
    _, gk, fk = vg_k(*tokens(99))
    kpop.update(model_k, gk, fk)  # t = 10: no refresh due (10 % 3 != 0), so force one
    kpop.refresh()
    _, gk, fk = vg_k(*tokens(100))
    kpop.update(model_k, gk, fk)
    _, ga = vg_a(*tokens(99))
    adam.update(model_a, ga)
    _, ga = vg_a(*tokens(100))
    adam.update(model_a, ga)
    assert max_diff(model_k.parameters(), model_a.parameters()) > 1e-4


def test_topkpop_with_s_1_is_kpop_exactly():
    """TopKPOP(s=1) and KPOP compute the same arrays, bit for bit, through refreshes."""
    models, opts = [], []
    for cls, kw in ((KPOP, {}), (TopKPOP, {"sparsity": 1.0})):
        models.append(kfac_model(seed=5))
        opts.append(cls(2e-3, warmup=2, frequency=3, **kw))
    for step in range(10):
        x, y = tokens(step)
        for (model, vg), opt in zip(models, opts):
            _, g, f = vg(x, y)
            opt.update(model, g, f)
            mx.eval(model.parameters(), opt.state)
    a, b = (flat(m.parameters()) for m, _ in models)
    assert all(mx.array_equal(a[k], b[k]).item() for k in a)
    sa, sb = flat(opts[0].state), flat(opts[1].state)
    assert all(mx.array_equal(sa[k], sb[k]).item() for k in sa)
    assert max_diff(models[0][0].parameters(), build_model(TINY, seed=5).parameters()) > 1e-3  # it trained


@pytest.mark.parametrize("name", ["adam", "kpop", "topkpop"])
def test_compiled_update_equals_uncompiled(name):
    runs = []
    for compiled in (True, False):
        model, vg = kfac_model(seed=7)
        opt = make_optimizer(name, 2e-3, sparsity=0.5, compile=compiled, warmup=2, frequency=2)
        for step in range(5):
            x, y = tokens(step)
            _, g, f = vg(x, y)
            opt.update(model, g, None if name == "adam" else f)
            mx.eval(model.parameters(), opt.state)
        runs.append(model.parameters())
    assert max_diff(*runs) <= 1e-7


def test_power_method_trains_and_keeps_orthonormal_bases():
    model, vg = kfac_model(seed=1)
    opt = TopKPOP(3e-3, sparsity=0.5, eig_method="power", warmup=2, frequency=2)
    losses = []
    for step in range(12):
        x, y = tokens(step % 3)
        loss, g, f = vg(x, y)
        opt.update(model, g, f)
        mx.eval(model.parameters(), opt.state)
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.3
    q = np.array(opt.state["layers"][0]["mlp"]["down_proj"]["weight"]["Q_C"])
    np.testing.assert_allclose(q.T @ q, np.eye(q.shape[1]), atol=1e-5)


def test_single_process_communicator_sends_nothing():
    comm = Communicator(mx.distributed.init())
    tree = {"a": mx.ones((3, 4)), "b": [mx.zeros((5,))]}
    assert comm.all_mean(tree, "gradients") is tree
    assert comm.take_counts() == {}


def test_communicator_buckets_like_average_gradients():
    comm = Communicator(mx.distributed.init(), bucket_bytes=100)
    flat_tree = [("a", mx.zeros((10,))), ("b", mx.zeros((20,))), ("c", mx.zeros((5,), mx.float16)),
                 ("d", mx.zeros((30,))), ("e", mx.zeros((1,)))]
    # float32: a (40 B) + b (80 B) reach 100 B -> one bucket; d (120 B) alone; e the remainder.
    assert comm._buckets(flat_tree) == [[0, 1], [3], [4], [2]]
    with pytest.raises(ValueError, match="bucket_bytes"):
        Communicator(mx.distributed.init(), bucket_bytes=0)


def test_restored_state_continues_the_same_run():
    """``opt.state = saved`` (a checkpoint) keeps the KFE state instead of re-initialising it."""
    model, vg = kfac_model(seed=8)
    opt = TopKPOP(2e-3, sparsity=0.5, warmup=1, frequency=2)
    for step in range(3):
        _, g, f = vg(*tokens(step))
        opt.update(model, g, f)
    mx.eval(model.parameters(), opt.state)
    saved_params = dict(tree_flatten(model.parameters()))
    restored = TopKPOP(2e-3, sparsity=0.5, warmup=1, frequency=2)
    restored.state = tree_map(lambda a: a, opt.state)  # a copy of the tree (arrays are immutable)
    restored.steps_done = opt.steps_done
    twin, vg_twin = kfac_model(seed=0)
    twin.update(tree_unflatten(list(saved_params.items())))
    for o, m, v in ((opt, model, vg), (restored, twin, vg_twin)):
        _, g, f = v(*tokens(3))
        o.update(m, g, f)
        mx.eval(m.parameters(), o.state)
    assert max_diff(model.parameters(), twin.parameters()) == 0.0

"""KFAC factor capture: factors ≡ explicit XᵀX/B and ΔYᵀΔY/B, gradients unchanged, compile-safe."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from asprof.optimizers import KFACLinear, attach_kfac, kfac_value_and_grad
from asprof.presets import PRESETS
from asprof.train.model import build_model, loss_fn, n_params

TINY = PRESETS["tiny"]


class MLP(nn.Module):
    def __init__(self, sizes, bias=False):
        super().__init__()
        self.layers = [nn.Linear(a, b, bias=bias) for a, b in zip(sizes[:-1], sizes[1:])]
        self.lm_head = nn.Linear(sizes[-1], 3, bias=False)

    def __call__(self, x):
        for layer in self.layers:
            x = mx.tanh(layer(x))
        return self.lm_head(x)


def mlp_loss(model, x, t, reduction="mean"):
    """Squared error summed over outputs, then the mean (or sum) over the token rows."""
    per_row = mx.sum(mx.square(model(x) - t), axis=-1)
    return mx.mean(per_row) if reduction == "mean" else mx.sum(per_row)


def test_attach_kfac_keeps_parameters_and_skips_heads():
    model = MLP([5, 7, 4], bias=True)
    before = dict(tree_flatten(model.parameters()))
    names = attach_kfac(model)
    assert names == ["layers.0", "layers.1"]  # lm_head is left to Adam
    assert isinstance(model.layers[0], KFACLinear) and type(model.lm_head) is nn.Linear
    after = dict(tree_flatten(model.parameters()))
    assert before.keys() == after.keys()
    assert all(before[k] is after[k] for k in before)
    assert attach_kfac(model) == names  # idempotent


@pytest.mark.parametrize("reduction,stride", [("mean", 1), ("sum", 1), ("mean", 4), ("sum", 3)])
def test_factors_equal_explicit_products_torch_oracle(reduction, stride):
    """C_b = XᵀX/B and R_b = ΔYᵀΔY/B with ΔY the gradient of the summed loss, computed by
    PyTorch autograd (retain_grad on each layer output) as an independent reference; with
    ``token_stride`` k, the same over every k-th token row (gradients unchanged)."""
    torch = pytest.importorskip("torch")
    mx.random.seed(0)
    model = MLP([6, 5, 4], bias=True)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 7, 6)).astype(np.float32)  # (batch, seq, features): B = 21 tokens
    t = rng.standard_normal((3, 7, 3)).astype(np.float32)
    attach_kfac(model)
    vg = kfac_value_and_grad(model, lambda a, b: mlp_loss(model, a, b, reduction), loss_reduction=reduction,
                             token_stride=stride)
    loss, grads, factors = vg(mx.array(x), mx.array(t))

    tw = [torch.tensor(np.array(layer.weight), dtype=torch.float64, requires_grad=True) for layer in model.layers]
    tb = [torch.tensor(np.array(layer.bias), dtype=torch.float64, requires_grad=True) for layer in model.layers]
    head = torch.tensor(np.array(model.lm_head.weight), dtype=torch.float64)
    h = torch.tensor(x, dtype=torch.float64)
    xs, ys = [], []
    for w, b in zip(tw, tb):
        xs.append(h.reshape(-1, h.shape[-1]))
        y = h @ w.T + b
        y.retain_grad()
        ys.append(y)
        h = torch.tanh(y)
    per_row = ((h @ head.T - torch.tensor(t, dtype=torch.float64)) ** 2).sum(-1)
    tl = per_row.sum() if reduction == "sum" else per_row.mean()
    tl.backward()
    n_tokens = 21
    assert abs(loss.item() - tl.item()) < 1e-4 * abs(tl.item())
    for i in range(2):
        xk = xs[i][::stride]
        c_ref = (xk.T @ xk / len(xk)).detach().numpy()
        dy = ys[i].grad.reshape(-1, ys[i].shape[-1])
        dy_sum = (dy * n_tokens if reduction == "mean" else dy)[::stride]  # gradient of the summed loss
        r_ref = (dy_sum.T @ dy_sum / len(dy_sum)).numpy()
        f = factors[f"layers.{i}.weight"]
        np.testing.assert_allclose(np.array(f["C"]), c_ref, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.array(f["R"]), r_ref, rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(np.array(grads["layers"][i]["weight"]), tw[i].grad.numpy(), rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(np.array(grads["layers"][i]["bias"]), tb[i].grad.numpy(), rtol=1e-4, atol=1e-7)
    assert "lm_head.weight" not in factors


def test_llama_factors_equal_explicit_products_via_perturbation():
    """On the LLaMA: C of layer 0's q_proj is XᵀX/B of the normed embeddings; R of the last
    down_proj is ΔYᵀΔY/B with ΔY from a zero perturbation on its output (DESIGN §5, technique a)."""
    model = build_model(TINY, seed=1)
    plain = build_model(TINY, seed=1)
    rng = np.random.default_rng(1)
    tok = mx.array(rng.integers(0, 256, size=(2, 17)).astype(np.int32))
    x, y = tok[:, :-1], tok[:, 1:]
    n_tokens = 2 * 16
    attach_kfac(model)
    loss, grads, factors = kfac_value_and_grad(model, lambda a, b: loss_fn(model, a, b))(x, y)

    # Gradients and loss are exactly those of the unwrapped model.
    loss_p, grads_p = nn.value_and_grad(plain, lambda a, b: loss_fn(plain, a, b))(x, y)
    assert loss.item() == loss_p.item()
    gp = dict(tree_flatten(grads_p))
    assert all(mx.allclose(g, gp[k], rtol=1e-5, atol=1e-7).item() for k, g in tree_flatten(grads))

    h0 = plain.layers[0].attention_norm(plain.tok_embeddings(x)).reshape(-1, TINY.hidden)
    c_ref = np.array(h0).T @ np.array(h0) / n_tokens
    np.testing.assert_allclose(np.array(factors["layers.0.attention.q_proj.weight"]["C"]), c_ref, rtol=1e-4, atol=1e-6)

    last = plain.layers[-1]

    def perturbed_loss(delta):
        h = plain.tok_embeddings(x)
        for blk in plain.layers[:-1]:
            h = blk(h)
        h = h + last.attention(last.attention_norm(h))
        m = last.mlp
        u = last.mlp_norm(h)
        out = m.down_proj(nn.silu(m.gate_proj(u)) * m.up_proj(u)) + delta
        logits = plain.tok_embeddings.as_linear(plain.norm(h + out))
        return nn.losses.cross_entropy(logits, y, reduction="mean")

    dy = mx.grad(perturbed_loss)(mx.zeros((2, 16, TINY.hidden)))
    dy_sum = np.array(dy).reshape(-1, TINY.hidden) * n_tokens
    r_ref = dy_sum.T @ dy_sum / n_tokens
    got = np.array(factors[f"layers.{TINY.layers - 1}.mlp.down_proj.weight"]["R"])
    np.testing.assert_allclose(got, r_ref, rtol=1e-3, atol=1e-8 * np.abs(r_ref).max())
    assert np.abs(r_ref).max() > 0


def test_layers_of_the_same_shape_get_their_own_factors():
    model = build_model(TINY, seed=2)
    attach_kfac(model)
    tok = mx.array(np.random.default_rng(2).integers(0, 256, size=(2, 9)).astype(np.int32))
    _, _, f = kfac_value_and_grad(model, lambda a, b: loss_fn(model, a, b))(tok[:, :-1], tok[:, 1:])
    assert len(f) == 7 * TINY.layers
    q, k = f["layers.0.attention.q_proj.weight"], f["layers.0.attention.o_proj.weight"]
    assert not mx.allclose(q["C"], k["C"]).item() and not mx.allclose(q["R"], k["R"]).item()


def test_capture_under_compile_equals_eager():
    model = build_model(TINY, seed=4)
    attach_kfac(model)
    vg = kfac_value_and_grad(model, lambda a, b: loss_fn(model, a, b))
    tok = mx.array(np.random.default_rng(4).integers(0, 256, size=(2, 9)).astype(np.int32))
    eager = vg(tok[:, :-1], tok[:, 1:])
    state = [model.state]
    compiled = mx.compile(vg, inputs=state, outputs=state)(tok[:, :-1], tok[:, 1:])
    for (k, a), (_, b) in zip(tree_flatten(eager), tree_flatten(compiled)):
        assert mx.allclose(a, b, rtol=1e-5, atol=1e-7).item(), k
    assert n_params(model) == TINY.n_params()


def test_errors():
    with pytest.raises(ValueError, match="attach_kfac"):
        kfac_value_and_grad(build_model(TINY), lambda: 0)
    m = build_model(TINY)
    attach_kfac(m)
    with pytest.raises(ValueError, match="loss_reduction"):
        kfac_value_and_grad(m, lambda: 0, loss_reduction="max")


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_factors_are_close_to_float32(dtype):
    model = build_model(TINY, seed=2)
    attach_kfac(model)
    tok = mx.array(np.random.default_rng(2).integers(0, 256, size=(2, 17)).astype(np.int32))
    f32 = kfac_value_and_grad(model, lambda a, b: loss_fn(model, a, b))(tok[:, :-1], tok[:, 1:])[2]
    low = kfac_value_and_grad(model, lambda a, b: loss_fn(model, a, b), factor_dtype=dtype)(tok[:, :-1], tok[:, 1:])[2]
    for path, f in f32.items():
        for k in ("C", "R"):
            assert low[path][k].dtype == mx.float32
            err = float(mx.max(mx.abs(low[path][k] - f[k])).item()) / float(mx.max(mx.abs(f[k])).item())
            assert 0 < err < 2e-2, (path, k, err)  # rounded (not the float32 numbers), but close
    with pytest.raises(ValueError, match="factor_dtype"):
        kfac_value_and_grad(model, lambda a, b: 0, factor_dtype="int8")
    with pytest.raises(ValueError, match="token_stride"):
        kfac_value_and_grad(model, lambda a, b: 0, token_stride=0)

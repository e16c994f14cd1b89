"""An independent PyTorch implementation of KPOP / TopKPOP (float64, factors from module hooks,
as one would write it in PyTorch) is the oracle: the MLX optimizers must follow it over 20 steps."""

import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from asprof.optimizers import KPOP, TopKPOP, attach_kfac, kfac_value_and_grad
from helpers import make_torch_net

torch = pytest.importorskip("torch")

SIZES = [6, 10, 8]
OUT = 3


class MxNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = [nn.Linear(a, b, bias=True) for a, b in zip(SIZES[:-1], SIZES[1:])]
        self.lm_head = nn.Linear(SIZES[-1], OUT, bias=False)  # excluded from KFAC -> Adam

    def __call__(self, x):
        for layer in self.layers:
            x = mx.tanh(layer(x))
        return self.lm_head(x)


def mx_loss(model, x, t):
    return mx.mean(mx.sum(mx.square(model(x) - t), axis=-1))


# --- the oracle ------------------------------------------------------------------------------------
class TorchKPOP:
    """KPOP paper Algorithm 1, written directly in PyTorch (float64). Not shared with asprof."""

    def __init__(self, net, lr, betas, eps, alpha, warmup, freq, sparsity):
        self.net, self.lr, self.b1, self.b2, self.eps = net, lr, betas[0], betas[1], eps
        self.alpha, self.warmup, self.freq, self.s = alpha, warmup, freq, sparsity
        self.t = 0
        self.kfac = list(net.hidden)
        self.inputs, self.out_grads = {}, {}
        for lin in self.kfac:
            lin.register_forward_hook(lambda mod, inp, out: self.inputs.__setitem__(mod, inp[0].detach()))
            lin.register_full_backward_hook(lambda mod, gin, gout: self.out_grads.__setitem__(mod, gout[0].detach()))
        self.st = {}
        for p in net.parameters():
            self.st[p] = {"m": torch.zeros_like(p), "v": torch.zeros_like(p)}
        for lin in self.kfac:
            r, c = lin.weight.shape
            rk, ck = math.ceil(math.sqrt(sparsity) * r - 1e-9), math.ceil(math.sqrt(sparsity) * c - 1e-9)
            self.st[lin.weight] = {"m": torch.zeros(rk, ck, dtype=torch.float64), "v": torch.zeros(rk, ck, dtype=torch.float64),
                                   "C": torch.zeros(c, c, dtype=torch.float64), "R": torch.zeros(r, r, dtype=torch.float64),
                                   "rk": rk, "ck": ck}

    @staticmethod
    def top_eigvecs(m, k):
        _, vecs = torch.linalg.eigh(m)
        vecs = vecs[:, -k:]
        idx = vecs.abs().argmax(dim=0)
        signs = torch.sign(vecs[idx, torch.arange(vecs.shape[1])])
        signs[signs == 0] = 1
        return vecs * signs

    def adam(self, g, st):
        st["m"] = self.b1 * st["m"] + (1 - self.b1) * g
        st["v"] = self.b2 * st["v"] + (1 - self.b2) * g * g
        m_hat = st["m"] / (1 - self.b1 ** (self.t + 1))
        v_hat = st["v"] / (1 - self.b2 ** (self.t + 1))
        return -self.lr * m_hat / (v_hat.sqrt() + self.eps)

    @torch.no_grad()
    def step(self):
        refresh = self.t < self.warmup or self.t % self.freq == 0
        for lin in self.kfac:
            st = self.st[lin.weight]
            x = self.inputs[lin].reshape(-1, lin.weight.shape[1])
            n = x.shape[0]
            dy = self.out_grads[lin].reshape(-1, lin.weight.shape[0]) * n  # gradient of the summed loss
            st["C"] = self.alpha * st["C"] + (1 - self.alpha) * (x.T @ x / n)
            st["R"] = self.alpha * st["R"] + (1 - self.alpha) * (dy.T @ dy / n)
            if refresh:
                st["QC"] = self.top_eigvecs(st["C"], st["ck"])
                st["QR"] = self.top_eigvecs(st["R"], st["rk"])
        kfac_weights = {lin.weight for lin in self.kfac}
        for p in self.net.parameters():
            if p in kfac_weights:
                st = self.st[p]
                g_rot = st["QR"].T @ p.grad @ st["QC"]
                p += st["QR"] @ self.adam(g_rot, st) @ st["QC"].T
            else:
                p += self.adam(p.grad, self.st[p])
        self.t += 1


def torch_forward(net, x):
    h = x
    for lin in net.hidden:
        h = torch.tanh(lin(h))
    return net.head(h)


def data(step):
    """Inputs with well-separated feature scales (well-conditioned, non-degenerate factors)."""
    rng = np.random.default_rng(100 + step)
    x = rng.standard_normal((4, 8, SIZES[0])) * np.geomspace(0.3, 3.0, SIZES[0])
    t = rng.standard_normal((4, 8, OUT))
    return x.astype(np.float32), t.astype(np.float32)


@pytest.mark.filterwarnings("ignore:Full backward hook")
@pytest.mark.parametrize("sparsity", [1.0, 0.5])
def test_kpop_matches_an_independent_pytorch_implementation_over_20_steps(sparsity):
    hp = dict(betas=(0.9, 0.99), eps=1e-8, alpha=0.9, warmup=3, frequency=4)
    lr = 1e-2
    mx.random.seed(11)
    model = MxNet()
    net = make_torch_net(model)
    attach_kfac(model)
    vg = kfac_value_and_grad(model, lambda a, b: mx_loss(model, a, b))
    # the oracle takes full eigendecompositions: pin eigh (TopKPOP's default is the partial solver)
    opt = KPOP(lr, **hp) if sparsity == 1.0 else TopKPOP(lr, sparsity=sparsity, eig_method="eigh", **hp)
    oracle = TorchKPOP(net, lr, hp["betas"], hp["eps"], hp["alpha"], hp["warmup"], hp["frequency"], sparsity)
    start = np.array(model.layers[0].weight)
    for step in range(20):
        x, t = data(step)
        _, g, f = vg(mx.array(x), mx.array(t))
        opt.update(model, g, f)
        mx.eval(model.parameters(), opt.state)
        for p in net.parameters():
            p.grad = None
        xt, tt = torch.tensor(x, dtype=torch.float64), torch.tensor(t, dtype=torch.float64)
        ((torch_forward(net, xt) - tt) ** 2).sum(-1).mean().backward()
        oracle.step()
    ours = dict(tree_flatten(model.parameters()))
    ref = {f"layers.{i}.weight": lin.weight for i, lin in enumerate(net.hidden)}
    ref |= {f"layers.{i}.bias": lin.bias for i, lin in enumerate(net.hidden)}
    ref["lm_head.weight"] = net.head.weight
    for k, v in ref.items():
        np.testing.assert_allclose(np.array(ours[k]), v.detach().numpy(), rtol=0, atol=2e-5, err_msg=k)
    # The run moved the weights far more than the tolerance, so agreement is meaningful.
    assert np.abs(np.array(model.layers[0].weight) - start).max() > 100 * 2e-5

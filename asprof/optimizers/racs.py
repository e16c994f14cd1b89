"""RACS, Row And Column Scaled SGD (paper 004, §4, Proposition 3, Eq. 16, Algorithm 1): SGD on
the gradient scaled by a positive row vector q and column vector s, the structure S ⊗ Q with
positive diagonal S, Q that generalises gradient normalisation. State: m + n + 1 floats."""

from __future__ import annotations

from typing import Callable, Sequence

import mlx.core as mx

from asprof.optimizers.base import check_positive
from asprof.optimizers.comm import Communicator
from asprof.optimizers.structured import (
    StructuredOptimizer,
    check_int,
    check_unit_interval,
    norm_growth_limiter,
    oriented,
    stat_dtype,
)

# Guards the fixed point against an all-zero gradient (then s = q = 0 and the step is 0).
_TINY = 1e-30


def two_sided_scaling(p: mx.array, iters: int) -> tuple[mx.array, mx.array]:
    """Eq. (16) from q = 1, ``iters`` times: s ← Pᵀq / ‖q‖², q ← P s / ‖s‖², for P = E[G^{⊙2}]
    (m×n, positive). Returns (s ∈ R^n, q ∈ R^m); q sᵀ converges to the best rank-1 approximation
    of P (Proposition 3: the principal singular pair)."""
    q = mx.ones((p.shape[0],), p.dtype)
    s = mx.zeros((p.shape[1],), p.dtype)
    for _ in range(iters):
        s = (q @ p) / mx.maximum(mx.sum(q * q), _TINY)
        q = (p @ s) / mx.maximum(mx.sum(s * s), _TINY)
    return s, q


class RACS(StructuredOptimizer):
    r"""RACS (Algorithm 1). For each routed matrix G ∈ R^{m×n} (m ≤ n; a weight with more rows
    than columns is handled as its transpose), at update t = 1, 2, ...:

    .. math::

        \tilde s, \tilde q = \text{Eq. (16) on } P = G_t^{\odot 2} \text{ (one-sample estimate, from } q = 1) \\
        s_t = \beta s_{t-1} + (1-\beta)\tilde s,\quad q_t = \beta q_{t-1} + (1-\beta)\tilde q \\
        \tilde G_t = \mathrm{Diag}(q_t)^{-1/2}\, G_t\, \mathrm{Diag}(s_t)^{-1/2}
            \quad (\text{elementwise } G_{ij} / (\sqrt{q_i s_j} + \epsilon)) \\
        \eta = \gamma / \max(\lVert\tilde G_t\rVert / \phi_{t-1}, \gamma) \text{ if } \phi_{t-1} > 0 \text{ else } 1,
            \quad \phi_t = \eta \lVert\tilde G_t\rVert \\
        W_{t+1} = W_t - \lambda\, \eta\, \alpha\, \tilde G_t

    (the limiter is Fira's norm-growth limiter; Algorithm 1 writes "if t > 1", which is φ > 0
    unless the first scaled gradient is exactly zero). Embeddings, heads and 1-D parameters get
    Adam (``betas``, ε, same λ — the paper trains the last layer with Adam).

    Args:
        learning_rate: λ (> 0, or a schedule). The paper uses 0.02 (Table 9).
        beta: β ∈ [0, 1), the EMA of s and q. Default 0.9 (Table 9).
        alpha: α > 0, the update scale. Default 0.05 (Table 9, 60M-130M models).
        gamma: γ > 0, the limiter threshold: the step's norm grows at most γ-fold per update.
            Default 1.01 (App. F.2, after Fira).
        iters: fixed-point iterations of Eq. (16) per step (int ≥ 1). Default 5 (§4).
        betas: (β₁, β₂) of the Adam-routed parameters. Default (0.9, 0.999) (Table 8).
        eps: ε ≥ 0 (in the scaling and in Adam). Default 1e-8.
        weight_decay: decoupled, ≥ 0. Default 0.
        comm, compile: as :class:`~asprof.optimizers.base.PhasedOptimizer`.

    State per routed matrix: ``s`` (n), ``q`` (m), ``phi`` (scalar): m + n + 1 floats (Table 1:
    mn + m + n + 1 with the weight). Others: ``m``, ``v``.
    """

    MARKER = "s"

    def __init__(self, learning_rate: float | Callable[[mx.array], mx.array], beta: float = 0.9, alpha: float = 0.05,
                 gamma: float = 1.01, iters: int = 5, betas: Sequence[float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, comm: Communicator | None = None, compile: bool | None = None):
        super().__init__(learning_rate, betas, eps, False, weight_decay, comm, compile)
        self.beta = check_unit_interval("beta", beta)
        check_positive("alpha", alpha)
        check_positive("gamma", gamma)
        self.alpha, self.gamma = float(alpha), float(gamma)
        self.iters = check_int("iters", iters, 1)

    def init_matrix(self, w: mx.array, state: dict) -> None:
        m, n = oriented(w)[0].shape
        state["s"] = mx.zeros((n,), stat_dtype(w))
        state["q"] = mx.zeros((m,), stat_dtype(w))
        state["phi"] = mx.zeros((), stat_dtype(w))

    def matrix_delta(self, g: mx.array, state: dict) -> mx.array:
        # q (from 1) on the smaller side, as the paper's m ≤ n: the EMAs of s and q are taken
        # separately, so which side starts the iteration changes the result.
        g, transposed = oriented(g)
        b = self.beta
        s_new, q_new = two_sided_scaling(mx.square(g).astype(state["s"].dtype), self.iters)
        state["s"] = b * state["s"] + (1 - b) * s_new
        state["q"] = b * state["q"] + (1 - b) * q_new
        scale = mx.sqrt(state["q"])[:, None] * mx.sqrt(state["s"])[None, :]
        g_tilde = g / (scale + self.eps).astype(g.dtype)
        eta, state["phi"] = norm_growth_limiter(g_tilde, state["phi"], self.gamma)
        delta = -(self.learning_rate.astype(g.dtype) * self.alpha) * eta * g_tilde
        return delta.T if transposed else delta

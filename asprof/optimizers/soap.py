"""SOAP (= AdaDiag++): Adam in the two-sided Shampoo eigenbasis (paper 004, §3.5, Theorem 3.3,
Algorithm 6; Vyas et al. 2024). Its structure (U_R ⊗ U_L) D (U_R ⊗ U_L)ᵀ generalises Eigen-Adam
(U_R = I) and Shampoo (D Kronecker-factored); with both bases the identity it is Adam (tested)."""

from __future__ import annotations

import mlx.core as mx

from asprof.optimizers.eigenbasis import eigh_basis
from asprof.optimizers.structured import EigenbasisOptimizer, adam_direction, stat_dtype


class SOAP(EigenbasisOptimizer):
    r"""SOAP (Algorithm 6). For each routed matrix G ∈ R^{m×n}, at update t = 1, 2, ...:

    .. math::

        L_t = \beta_3 L_{t-1} + (1-\beta_3) G_t G_t^\top,\quad
        R_t = \beta_3 R_{t-1} + (1-\beta_3) G_t^\top G_t \\
        U_L, U_R = \mathrm{EVD}(L_t), \mathrm{EVD}(R_t) \text{ if } t = 1 \text{ or } t \bmod K = 0 \\
        m_t = \beta_1 m_{t-1} + (1-\beta_1) G_t \quad\text{(original space)} \\
        v_t = \beta_2 v_{t-1} + (1-\beta_2) (U_L^\top G_t U_R)^{\odot 2} \\
        W_{t+1} = W_t - \lambda\, U_L \frac{U_L^\top m_t U_R}{\sqrt{v_t} + \epsilon} U_R^\top

    (``bias_correction=True`` divides the moments by 1−βᵗ). v is not rotated when the bases
    change (Algorithm 6 does not). Bases: eigenvector columns, ascending, sign-canonical, EVD on
    the CPU stream. Embeddings, heads and 1-D parameters get Adam with the same β₁, β₂, ε.

    Args: as :class:`~asprof.optimizers.eigen_adam.EigenAdam` (defaults: betas (0.95, 0.95),
    β₃ 0.95, K = 10 — SOAP's reference setting; paper 004 gives none).

    State per routed matrix: ``m``, ``v`` (m×n), ``L`` (m×m), ``R`` (n×n), ``U_L`` (m×m), ``U_R`` (n×n):
    2mn + 2m² + 2n² floats (Table 1: 3mn + 2m² + 2n² with the weight). Others: ``m``, ``v``.
    """

    MARKER = "U_L"

    def init_matrix(self, w: mx.array, state: dict) -> None:
        m, n = w.shape
        state["m"] = mx.zeros((m, n), w.dtype)
        state["v"] = mx.zeros((m, n), w.dtype)
        state["L"] = mx.zeros((m, m), stat_dtype(w))
        state["R"] = mx.zeros((n, n), stat_dtype(w))
        state["U_L"] = mx.eye(m, dtype=stat_dtype(w))
        state["U_R"] = mx.eye(n, dtype=stat_dtype(w))

    def _accumulate(self, g: mx.array, state: dict) -> None:
        b3 = self.beta3
        state["L"] = b3 * state["L"] + (1 - b3) * (g @ g.T)
        state["R"] = b3 * state["R"] + (1 - b3) * (g.T @ g)

    def refresh_matrix(self, g: mx.array, state: dict, path: str) -> None:
        self._accumulate(g, state)
        state["U_L"] = eigh_basis(state["L"], state["L"].shape[0])
        state["U_R"] = eigh_basis(state["R"], state["R"].shape[0])

    def matrix_delta(self, g: mx.array, state: dict) -> mx.array:
        if not self._refreshed_now:
            self._accumulate(g, state)
        b1, b2 = self.betas
        ul, ur = state["U_L"], state["U_R"]
        state["m"] = b1 * state["m"] + (1 - b1) * g
        state["v"] = b2 * state["v"] + (1 - b2) * mx.square((ul.T @ g) @ ur)
        step = adam_direction((ul.T @ state["m"]) @ ur, state["v"], self.learning_rate, self.step, b1, b2,
                              self.eps, self.bias_correction)
        return (ul @ step) @ ur.T

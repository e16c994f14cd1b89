"""Eigen-Adam (= AdaDiag = one-sided SOAP): Adam in the eigenbasis of E[G Gᵀ] (paper 004, §3.4,
Eq. 13, Algorithm 7). Its structure, a block diagonal F̃ = Diag_B(U D_1 Uᵀ, ..., U D_n Uᵀ) with a
shared eigenbasis U, generalises Adam's diagonal one (U = I gives Adam exactly, tested)."""

from __future__ import annotations

import mlx.core as mx

from asprof.optimizers.eigenbasis import eigh_basis
from asprof.optimizers.structured import EigenbasisOptimizer, adam_direction, oriented, stat_dtype


class EigenAdam(EigenbasisOptimizer):
    r"""Eigen-Adam (Algorithm 7). For each routed matrix, G ∈ R^{m×n} with m ≤ n (a weight with
    more rows than columns is handled as its transpose), at update t = 1, 2, ...:

    .. math::

        Q_t = \beta_3 Q_{t-1} + (1-\beta_3)\, G_t G_t^\top \\
        U_t = \mathrm{EVD}(Q_t) \text{ if } t = 1 \text{ or } t \bmod K = 0, \text{ else } U_{t-1} \\
        m_t = \beta_1 m_{t-1} + (1-\beta_1) G_t \quad\text{(original space)} \\
        v_t = \beta_2 v_{t-1} + (1-\beta_2) (U_t^\top G_t)^{\odot 2} \quad\text{(rotated space)} \\
        W_{t+1} = W_t - \lambda\, U_t \frac{U_t^\top m_t}{\sqrt{v_t} + \epsilon}

    (with ``bias_correction=True`` the moments are divided by 1−β₁ᵗ and 1−β₂ᵗ as in Adam). v is
    not rotated when U changes (Algorithm 7 does not). U holds the eigenvectors as columns,
    ascending, sign-canonical; the EVD runs on the CPU stream. Embeddings, heads and 1-D
    parameters get Adam with the same β₁, β₂, ε.

    Args:
        learning_rate: λ (> 0, or a schedule). Paper 004 gives no setting for Eigen-Adam/SOAP;
            asprof's default (train/config.py) is SOAP's reference 3e-3 (Vyas et al. 2024).
        betas: (β₁, β₂) in [0, 1). Default (0.95, 0.95), SOAP's reference setting.
        beta3: β₃ ∈ [0, 1), the EMA of G Gᵀ. Default 0.95 (SOAP's reference uses β₂).
        frequency: K, recompute U when t mod K = 0 (int ≥ 1). Default 10 (SOAP's reference).
        eps: ε ≥ 0. Default 1e-8.
        bias_correction: divide the moments by 1−βᵗ. Default False (Algorithm 7 does not).
        weight_decay: decoupled, ≥ 0. Default 0.
        comm, compile: as :class:`~asprof.optimizers.base.PhasedOptimizer`.

    State per routed matrix: ``m``, ``v`` (m×n), ``Q`` (m×m), ``U`` (m×m): 2mn + 2m² floats (Table 1:
    3mn + 2m² with the weight). Others: ``m``, ``v``.
    """

    MARKER = "U"

    def init_matrix(self, w: mx.array, state: dict) -> None:
        wo, _ = oriented(w)
        m, n = wo.shape
        state["m"] = mx.zeros((m, n), w.dtype)
        state["v"] = mx.zeros((m, n), w.dtype)
        state["Q"] = mx.zeros((m, m), stat_dtype(w))
        state["U"] = mx.eye(m, dtype=stat_dtype(w))

    def _accumulate(self, g: mx.array, state: dict) -> None:
        b3 = self.beta3
        state["Q"] = b3 * state["Q"] + (1 - b3) * (g @ g.T)

    def refresh_matrix(self, g: mx.array, state: dict, path: str) -> None:
        g, _ = oriented(g)
        self._accumulate(g, state)
        state["U"] = eigh_basis(state["Q"], state["Q"].shape[0])

    def matrix_delta(self, g: mx.array, state: dict) -> mx.array:
        g, transposed = oriented(g)
        if not self._refreshed_now:
            self._accumulate(g, state)
        b1, b2 = self.betas
        u = state["U"]
        state["m"] = b1 * state["m"] + (1 - b1) * g
        state["v"] = b2 * state["v"] + (1 - b2) * mx.square(u.T @ g)
        step = adam_direction(u.T @ state["m"], state["v"], self.learning_rate, self.step, b1, b2, self.eps,
                              self.bias_correction)
        delta = u @ step
        return delta.T if transposed else delta

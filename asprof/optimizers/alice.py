"""Alice and Alice-0: low-rank Eigen-Adam with tracking, subspace switching and compensation
(paper 004, §5, Algorithms 2-4 and 10). Eigen-Adam restricted to a rank-r basis U (m×r) is
GaLore's update (App. B.11, E.5); Alice adds (1) low-rank tracking of E[G Gᵀ] as the r×r state
Q̃ (Eq. 17), (2) switching: the new basis mixes the leading l eigenvectors with r−l directions
sampled from the complement (Algorithm 2), (3) compensation: a normalised update in the
complement, C = (G − U UᵀG) S^{-1/2} (Eq. 20-21, Algorithm 3). Alice-0 disables tracking (β₃ = 0).
"""

from __future__ import annotations

import zlib
from typing import Callable, Sequence

import mlx.core as mx
import numpy as np

from asprof.optimizers.accounting import ALICE_LEADING, ALICE_RANK, alice_rank, resolve_count
from asprof.optimizers.base import check_positive
from asprof.optimizers.comm import Communicator
from asprof.optimizers.eigenbasis import canonical_signs
from asprof.optimizers.structured import (
    StructuredOptimizer,
    adam_direction,
    check_int,
    check_unit_interval,
    eigh_descending,
    norm_growth_limiter,
    oriented,
    stat_dtype,
)
from asprof.spec import DEFAULT_INTERVAL


def subspace_iteration(a: mx.array, u0: mx.array) -> mx.array:
    """Algorithm 10 with one step: H = A·U₀, U = QR(H), then the Rayleigh-Ritz rotation
    U ← U·EVD(Uᵀ A U) (descending), sign-canonical. QR and EVD on the CPU stream."""
    u, _ = mx.linalg.qr(a @ u0, stream=mx.cpu)
    _, vecs = eigh_descending(u.T @ a @ u)
    return canonical_signs(u @ vecs)


def complement_basis(u: mx.array) -> mx.array:
    """The m−r orthonormal columns completing ``u`` (m×r, orthonormal) to a basis of R^m: the
    trailing columns of the complete QR of ``u`` (the paper's QR(U), §2.1). A Householder QR of
    [u, 0] is u's complete QR (the zero columns get identity reflectors); CPU stream."""
    m, r = u.shape
    q, _ = mx.linalg.qr(mx.concatenate([u, mx.zeros((m, m - r), u.dtype)], axis=1), stream=mx.cpu)
    return canonical_signs(q[:, r:])


def switch_indices(seed: int, refresh: int, path: str, pool: int, k: int) -> np.ndarray:
    """The k of ``pool`` complement columns that subspace switching takes, drawn uniformly without
    replacement, sorted. Seeded by (seed, refresh count, parameter path), so every rank draws the
    same ones without communicating."""
    rng = np.random.default_rng([seed, refresh, zlib.crc32(path.encode())])
    return np.sort(rng.choice(pool, size=k, replace=False))


class Alice(StructuredOptimizer):
    r"""Alice (Algorithm 4). For each routed matrix G ∈ R^{m×n} (m ≤ n; transposed otherwise),
    rank r, leading count l, at update t = 1, 2, ...:

    .. math::

        \text{if } t = 1 \text{ or } t \bmod K = 0:\quad
            Q = \beta_3 U \tilde Q U^\top + (1-\beta_3) G G^\top,\quad U = \mathrm{Switch}(Q, r, l, U) \\
        \sigma = U^\top G,\quad \tilde Q = \beta_3 \tilde Q + (1-\beta_3)\sigma\sigma^\top \\
        m = \beta_1 m + (1-\beta_1)\sigma,\quad v = \beta_2 v + (1-\beta_2)\sigma^{\odot 2} \\
        p = \beta_1 p + (1-\beta_1)(\mathbf 1_m^\top G^{\odot 2} - \mathbf 1_r^\top \sigma^{\odot 2}),\quad
            C = \sqrt{m-r}\,(G - U\sigma)\,\mathrm{Diag}(p)^{-1/2} \\
        \eta, \phi = \text{limiter}(C, \phi, \gamma),\quad C \leftarrow \eta C \\
        W \leftarrow W - \lambda\alpha\,\big(U \tfrac{m}{\sqrt v + \epsilon} + \alpha_c C\big)

    Switch (Algorithm 2): U' = one subspace-iteration step on Q from the previous U (the first
    refresh, with no previous U, takes the top r eigenvectors of Q), keep its leading l columns,
    and add r−l columns drawn uniformly from the complement of U' (seeded: identical on every
    rank). The moments m, v and Q̃ are not re-expressed when U changes (Algorithm 4 does not; nor
    does GaLore). Bases are sign-canonical; QR and EVD run on the CPU stream. The compensation's
    decay is β₁ (Algorithm 4, line 16). Embeddings, heads and 1-D parameters get Adam (β₁, β₂, ε,
    the same λ).

    Switches for the ablations (§7.2, Table 5): ``tracking=False`` is Alice-0 (β₃ = 0, no Q̃);
    ``switching=False`` takes U = EVD(Q, r) at every refresh; ``compensation=False`` drops C.
    With all three off Alice is GaLore's update with U from the EVD of G Gᵀ (tested).

    Args:
        learning_rate: λ (> 0, or a schedule). The paper: 0.02 (Table 11).
        betas: (β₁, β₂, β₃). Default (0.9, 0.9, 0.999) (Table 11).
        alpha: α > 0, the update scale. Default 0.3 (Table 11, 60M-350M).
        alpha_c: α_c ≥ 0, the compensation scale. Default 0.4 (Table 11, 60M-350M).
        frequency: K, refresh U when t mod K = 0 (int ≥ 1). Default 200 (Table 11).
        rank: r, an int ≥ 1 (clamped to m) or a fraction of m in (0, 1]. Default 0.25 (Table 11
            uses 128-512 for hidden sizes 512-2048).
        leading: l, an int ≥ 1 (clamped to r) or a fraction of r. Default 0.3125 (40 of 128,
            160 of 512 in Table 11).
        gamma: γ > 0, the compensation's limiter threshold. Default 1.01 (App. F.2).
        eps: ε ≥ 0. Default 1e-8.
        bias_correction: divide m, v by 1−βᵗ. Default False (Algorithm 4 does not).
        tracking, switching, compensation: the components (default all on).
        seed: seeds the switching draws (int ≥ 0). Default 0.
        weight_decay, comm, compile: as :class:`~asprof.optimizers.base.PhasedOptimizer`.

    State per routed matrix: ``U`` (m×r), ``m``, ``v`` (r×n), ``p`` (n), ``Q`` (Q̃, r×r; not for
    Alice-0), ``phi`` (scalar): 2nr + mr + n + r² + 1 floats (Table 1: mn + 2nr + mr + n + r² with
    the weight; it leaves out the scalar φ). Others: ``m``, ``v``.
    """

    MARKER = "U"

    def __init__(self, learning_rate: float | Callable[[mx.array], mx.array],
                 betas: Sequence[float] = (0.9, 0.9, 0.999), alpha: float = 0.3, alpha_c: float = 0.4,
                 frequency: int = DEFAULT_INTERVAL["alice"], rank: int | float = ALICE_RANK, leading: int | float = ALICE_LEADING,
                 gamma: float = 1.01, eps: float = 1e-8, bias_correction: bool = False, tracking: bool = True,
                 switching: bool = True, compensation: bool = True, seed: int = 0, weight_decay: float = 0.0,
                 comm: Communicator | None = None, compile: bool | None = None):
        try:
            b1, b2, b3 = betas
        except (TypeError, ValueError):
            raise ValueError(f"betas must be three numbers (beta1, beta2, beta3), got {betas!r}") from None
        super().__init__(learning_rate, (b1, b2), eps, bias_correction, weight_decay, comm, compile)
        self.beta3 = check_unit_interval("betas[2] (beta3)", b3)
        check_positive("alpha", alpha)
        if isinstance(alpha_c, bool) or not isinstance(alpha_c, (int, float)) or not alpha_c >= 0:
            raise ValueError(f"alpha_c must be a non-negative number, got {alpha_c!r}")
        check_positive("gamma", gamma)
        self.alpha, self.alpha_c, self.gamma = float(alpha), float(alpha_c), float(gamma)
        self.frequency = check_int("frequency (K)", frequency, 1)
        resolve_count(rank, 1, "rank")  # validates the kind and range now
        resolve_count(leading, 1, "leading")
        self.rank, self.leading = rank, leading
        for name, flag in (("tracking", tracking), ("switching", switching), ("compensation", compensation)):
            if not isinstance(flag, bool):
                raise ValueError(f"{name} must be True or False, got {flag!r}")
        self.tracking, self.switching, self.compensation = tracking, switching, compensation
        self.seed = check_int("seed", seed, 0)

    def init_matrix(self, w: mx.array, state: dict) -> None:
        wo, _ = oriented(w)
        m, n = wo.shape
        r = alice_rank(m, self.rank)
        state["U"] = mx.zeros((m, r), stat_dtype(w))
        state["m"] = mx.zeros((r, n), w.dtype)
        state["v"] = mx.zeros((r, n), w.dtype)
        if self.tracking:
            state["Q"] = mx.zeros((r, r), stat_dtype(w))
        if self.compensation:
            state["p"] = mx.zeros((n,), stat_dtype(w))
            state["phi"] = mx.zeros((), stat_dtype(w))

    def refresh_matrix(self, g: mx.array, state: dict, path: str) -> None:
        g, _ = oriented(g)
        u = state["U"]
        m, r = u.shape
        gg = g @ g.T
        q = self.beta3 * (u @ state["Q"] @ u.T) + (1 - self.beta3) * gg if self.tracking else gg
        first = self.refreshes == 0
        if not self.switching:
            state["U"] = eigh_descending(q, r)[1]
            return
        u1 = eigh_descending(q, r)[1] if first else subspace_iteration(q, u)
        k = min(r - resolve_count(self.leading, r, "leading"), m - r)
        if k == 0:
            state["U"] = u1
            return
        idx = mx.array(switch_indices(self.seed, self.refreshes, path, m - r, k))
        state["U"] = mx.concatenate([u1[:, :r - k], mx.take(complement_basis(u1), idx, axis=1)], axis=1)

    def matrix_delta(self, g: mx.array, state: dict) -> mx.array:
        g, transposed = oriented(g)
        b1, b2 = self.betas
        u = state["U"]
        sigma = u.T @ g
        if self.tracking:
            state["Q"] = self.beta3 * state["Q"] + (1 - self.beta3) * (sigma @ sigma.T)
        state["m"] = b1 * state["m"] + (1 - b1) * sigma
        state["v"] = b2 * state["v"] + (1 - b2) * mx.square(sigma)
        step = adam_direction(state["m"], state["v"], self.learning_rate, self.step, b1, b2, self.eps,
                              self.bias_correction)
        delta = self.alpha * (u @ step)
        if self.compensation:
            c = self._compensation(g, u, sigma, state)
            delta = delta - (self.learning_rate.astype(g.dtype) * (self.alpha * self.alpha_c)) * c
        return delta.T if transposed else delta

    def _compensation(self, g: mx.array, u: mx.array, sigma: mx.array, state: dict) -> mx.array:
        """Algorithm 3: the optimal column scaling S of the complement (Theorem 5.1, Eq. 21) from
        the EMA p of the residual's squared column norms, with the norm-growth limiter."""
        b1 = self.betas[0]
        m, r = u.shape
        resid_sq = mx.sum(mx.square(g), axis=0) - mx.sum(mx.square(sigma), axis=0)
        state["p"] = b1 * state["p"] + (1 - b1) * resid_sq
        # ‖g_j‖² − ‖Uᵀg_j‖² ≥ 0 exactly; clamp the rounding below zero
        scale = (m - r) ** 0.5 / (mx.sqrt(mx.maximum(state["p"], 0.0)) + self.eps)
        c = (g - u @ sigma) * scale[None, :].astype(g.dtype)
        eta, state["phi"] = norm_growth_limiter(c, state["phi"], self.gamma)
        return eta * c


class Alice0(Alice):
    """Alice-0: Alice without tracking (β₃ = 0; no Q̃ state), §5.4. Same arguments as
    :class:`Alice` (``betas`` may give two values, β₁, β₂)."""

    def __init__(self, learning_rate, betas: Sequence[float] = (0.9, 0.9), **kwargs):
        kwargs.pop("tracking", None)
        b = tuple(betas)
        super().__init__(learning_rate, betas=(*b[:2], 0.0) if len(b) in (2, 3) else b, tracking=False, **kwargs)

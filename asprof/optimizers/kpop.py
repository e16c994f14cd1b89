"""KPOP and TopKPOP: Adam in the Kronecker-factored eigenbasis (KPOP paper §3, Algorithm 1).

Column-eigenvector convention everywhere (DESIGN §5): Q_R (R×R') and Q_C (C×C') hold
eigenvectors as columns, in ascending eigenvalue order, so the top R' are the last columns;
G' = Q_Rᵀ G Q_C and the update goes back as Q_R ΔW' Q_Cᵀ. (Algorithm 1 writes Q^R G (Q^C)ᵀ with
eigenvectors as rows; it is the same map.)
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten

from asprof import spec as S
from asprof.errors import AsprofError
from asprof.optimizers.accounting import reduced_dim
from asprof.optimizers.base import PhasedOptimizer, adam_step
from asprof.optimizers.comm import Communicator
from asprof.optimizers.eigenbasis import eigh_basis, power_basis, subspace_basis


def ema(old: mx.array, new: mx.array, a: float) -> mx.array:
    """The factor EMA a·old + (1−a)·new (Eq. 4-5)."""
    return a * old + (1 - a) * new


def kfe_step(g, m, v, q_r, q_c, lr, step, b1: float, b2: float, eps: float, bias_correction: bool, project: bool):
    """Eq. 7-12 for one layer, pure so it compiles into one graph: G' = Q_Rᵀ G Q_C (unless ``g`` is
    projected already), Adam on G', and the step rotated back, Q_R ΔW' Q_Cᵀ. Returns (ΔW, m, v)."""
    gp = (q_r.T @ g) @ q_c if project else g
    delta, m, v = adam_step(gp, m, v, lr, step, b1, b2, eps, bias_correction)
    return (q_r @ delta) @ q_c.T, m, v


# The rotations and the Adam-in-eigenbasis update as one compiled graph per layer shape (a few
# traces: non-array arguments are compile-time constants), used where ``compile`` is on.
kfe_step_compiled = mx.compile(kfe_step)



def value_error(check, *args):
    """``check(*args)`` (a range check of asprof.spec), its AsprofError raised as a ValueError."""
    try:
        return check(*args)
    except AsprofError as e:
        raise ValueError(str(e)) from None

class KPOP(PhasedOptimizer):
    r"""KPOP: Adam in the Kronecker-factored eigenbasis (KFE) of each linear layer.

    For each KFAC layer W ∈ R^{R×C} with batch factors C_b, R_b (from
    :func:`~asprof.optimizers.kfac.kfac_value_and_grad`), at step t = 0, 1, ...:

    .. math::

        \hat C \leftarrow \alpha \hat C + (1-\alpha) C_b,\qquad
        \hat R \leftarrow \alpha \hat R + (1-\alpha) R_b \qquad \text{(Eq. 4-5)}\\
        \text{if } t < \text{warmup or } t \bmod f = 0:\quad
            \hat C, \hat R \leftarrow \text{AllReduceMean}(\hat C, \hat R),\;
            Q_C \leftarrow \text{Eig}(\hat C),\; Q_R \leftarrow \text{Eig}(\hat R) \qquad \text{(Eq. 6)}\\
        G' = Q_R^\top G Q_C \qquad \text{(Eq. 7)}\\
        m \leftarrow \beta_1 m + (1-\beta_1) G',\quad v \leftarrow \beta_2 v + (1-\beta_2) G'^2 \qquad \text{(Eq. 8-9)}\\
        \Delta W' = -\eta\,\frac{m/(1-\beta_1^{t+1})}{\sqrt{v/(1-\beta_2^{t+1})}+\epsilon} \qquad \text{(Eq. 10-11)}\\
        W \leftarrow W + Q_R\, \Delta W'\, Q_C^\top \qquad \text{(Eq. 12)}

    Embeddings, output heads and 1-D parameters (everything without factors) get plain Adam
    (§3.2). Ĉ, R̂ start at zero (only their eigenvectors matter); the bases start as identity and
    are first computed at t = 0. With ``eig_method="power"`` or ``"subspace"`` the first refresh
    is a full ``eigh`` (there is no previous estimate to iterate from); later ones are one
    power-iteration step, or (``"subspace"``) ``subspace_iterations`` block power steps from the
    previous basis plus Rayleigh–Ritz, whose cost scales with the vectors kept. ``"auto"`` takes
    ``"subspace"`` for a basis that keeps fewer vectors than its factor's size (TopKPOP, s < 1)
    and ``"eigh"`` otherwise. The moments are not rotated when the basis changes (Algorithm 1
    does not). Layers fed the same input array (q/k/v, gate/up) share one Ĉ EMA and one
    eigendecomposition of it (exact: their C_b are the same matrix; kfac.py computes it once).

    Args:
        learning_rate: η (> 0, or a schedule).
        betas: (β₁, β₂) in [0, 1). Default (0.9, 0.999); the paper's NanoGPT runs used (0.95, 0.95).
        eps: ε ≥ 0. Default 1e-8.
        bias_correction: Eq. 10. Default True.
        weight_decay: decoupled, ≥ 0. Default 0.
        alpha: factor EMA decay α ∈ [0, 1). Default 0.95.
        warmup: refresh every step while t < warmup (int ≥ 0). Default 10.
        frequency: then refresh every f steps (int ≥ 1). Default 10 (the paper: 10 or 100).
        eig_method: "eigh" (full decomposition), "power" (one QR power step), "subspace" (block
            power steps + Rayleigh–Ritz) or "auto". Default "auto" (see above).
        subspace_iterations: block power steps per refresh for "subspace" (int ≥ 1). Default 1.
        comm: a :class:`~asprof.optimizers.comm.Communicator` for data parallel training.
        compile: compile the element-wise Adam math (default: on Metal only).

    State per KFAC parameter: ``m``, ``v`` (R'×C'), ``C_hat`` (C×C), ``R_hat`` (R×R),
    ``Q_C`` (C×C'), ``Q_R`` (R×R'); R' = R, C' = C for KPOP. Others: ``m``, ``v``.
    """

    #: TopKPOP projects before the all-reduce; KPOP all-reduces the full gradient.
    project_before_allreduce = False

    def __init__(
        self,
        learning_rate: float | Callable[[mx.array], mx.array],
        betas: Sequence[float] = S.BETAS,
        eps: float = S.EPS,
        bias_correction: bool = True,
        weight_decay: float = 0.0,
        alpha: float = S.ALPHA,
        warmup: int = S.WARMUP,
        frequency: int = S.FREQUENCY,
        eig_method: str = S.EIG_METHOD,
        comm: Communicator | None = None,
        compile: bool | None = None,
        subspace_iterations: int = S.SUBSPACE_ITERATIONS,
    ):
        super().__init__(learning_rate, betas, eps, bias_correction, weight_decay, comm, compile)
        # the run spec's checks (asprof/spec.py), raised as ValueError as a library's are
        value_error(S.check_decay, alpha, "alpha (factor EMA decay)")
        value_error(S.check_int, "warmup", warmup, 0)
        value_error(S.check_int, "frequency (f)", frequency)
        if eig_method not in S.EIG_METHODS:
            raise ValueError(f"eig_method must be one of {', '.join(S.EIG_METHODS)}, got {eig_method!r}")
        if isinstance(subspace_iterations, bool) or not isinstance(subspace_iterations, int) or subspace_iterations < 1:
            raise ValueError(f"subspace_iterations must be a positive integer, got {subspace_iterations!r}")
        self.subspace_iterations = subspace_iterations
        self.alpha = float(alpha)
        self.warmup = warmup
        self.frequency = frequency
        self.eig_method = eig_method
        self.sparsity = 1.0
        self.kfac_paths: list[str] = []
        self._bases_computed = False
        self.refreshes = 0

    # --- state -------------------------------------------------------------------------------
    def init(self, parameters: dict, factors: dict | Iterable[str] | None = None) -> None:
        """Create the state. ``factors`` (a factors dict, or the weight paths of the KFAC layers)
        says which parameters get KFE state; :meth:`update` passes the first step's factors."""
        if factors is None:
            raise ValueError(
                f"{type(self).__name__} needs to know its KFAC layers: call init(parameters, factors) or "
                "update(model, grads, factors) with factors from asprof.optimizers.kfac_value_and_grad")
        paths = list(factors)
        flat = dict(tree_flatten(parameters))
        missing = [p for p in paths if p not in flat]
        if missing:
            raise ValueError(f"factors for unknown parameter(s): {', '.join(missing[:3])}")
        super().init(parameters)
        self.kfac_paths = paths
        for p in paths:
            w = flat[p]
            if w.ndim != 2:
                raise ValueError(f"KFAC parameter {p} must be a matrix, has shape {w.shape}")
            r, c = w.shape
            r2, c2 = reduced_dim(r, self.sparsity), reduced_dim(c, self.sparsity)
            st = self._state_at(p)
            if "Q_R" in st and st["m"].shape == (r2, c2):
                continue  # restored state (``opt.state = saved``): keep it
            st.clear()
            st["m"] = mx.zeros((r2, c2), w.dtype)
            st["v"] = mx.zeros((r2, c2), w.dtype)
            st["C_hat"] = mx.zeros((c, c), mx.float32)
            st["R_hat"] = mx.zeros((r, r), mx.float32)
            st["Q_C"] = mx.eye(c, dtype=mx.float32)[:, c - c2:]
            st["Q_R"] = mx.eye(r, dtype=mx.float32)[:, r - r2:]

    def _state_at(self, path: str) -> dict:
        node = self.state
        for part in path.split("."):
            node = node[int(part)] if isinstance(node, list) else node[part]
        return node

    def _require_init(self, what: str) -> None:
        if not self._initialized:
            raise ValueError(f"{type(self).__name__}.{what} before init: call init(parameters, factors) first")

    # --- phases ------------------------------------------------------------------------------
    def accumulate_factors(self, factors) -> None:
        """Phase 2: Ĉ ← αĈ + (1−α)C_b, R̂ ← αR̂ + (1−α)R_b (lazy)."""
        if factors is None:
            raise ValueError(f"{type(self).__name__} needs the KFAC factors every step (kfac_value_and_grad)")
        self._require_init("accumulate_factors")
        a = self.alpha
        done: dict[int, mx.array] = {}  # id(C_b) -> the new Ĉ of the first layer that had it
        for p in self.kfac_paths:
            st, f = self._state_at(p), factors[p]
            c_b = f["C"]
            if id(c_b) in done:  # same input as an earlier layer (q/k/v, gate/up): the same Ĉ
                st["C_hat"] = done[id(c_b)]
            else:
                st["C_hat"] = done[id(c_b)] = ema(st["C_hat"], c_b, a)
            st["R_hat"] = ema(st["R_hat"], f["R"], a)

    def refresh_due(self) -> bool:
        t = self.steps_done
        return t < self.warmup or t % self.frequency == 0

    def refresh(self) -> None:
        """Phase 3: average the factor EMAs over the group (one bucketed all-reduce; they replace
        the local EMAs), recompute the bases, and evaluate it all now (on the critical path)."""
        self._require_init("refresh")
        states = [self._state_at(p) for p in self.kfac_paths]
        if self.comm is not None:
            # (every layer's Ĉ is sent, shared or not: the payload is the contract's Σ(R² + C²))
            avg = self.comm.all_mean([{"C": s["C_hat"], "R": s["R_hat"]} for s in states], tag="factors")
            shared: dict[int, mx.array] = {}
            for s, a in zip(states, avg):
                s["C_hat"], s["R_hat"] = shared.setdefault(id(s["C_hat"]), a["C"]), a["R"]
        done: dict[int, mx.array] = {}  # a Ĉ shared by several layers is decomposed once
        for s in states:
            c = s["C_hat"]  # alive in ``states`` throughout, so ids are not reused
            s["Q_C"] = done[id(c)] if id(c) in done else done.setdefault(id(c), self._basis(c, s["Q_C"]))
            s["Q_R"] = self._basis(s["R_hat"], s["Q_R"])
        mx.eval([(s["C_hat"], s["R_hat"], s["Q_C"], s["Q_R"]) for s in states])
        self._bases_computed = True
        self.refreshes += 1

    def _basis(self, m: mx.array, q: mx.array) -> mx.array:
        """The new basis of factor ``m`` (n×n) replacing ``q`` (n×k), by this optimizer's method."""
        n, k = q.shape
        method = self.eig_method
        if method == "auto":
            method = "subspace" if k < n else "eigh"
        if not self._bases_computed or method == "eigh":
            return eigh_basis(m, k)
        if method == "power":
            return power_basis(m, q)
        return subspace_basis(m, q, self.subspace_iterations)

    def communicate(self, gradients):
        """Phase 4. KPOP: all gradients. TopKPOP: projected gradients of the KFAC layers (plus the
        full Adam-routed ones), projection first."""
        if not self.project_before_allreduce:
            return super().communicate(gradients)
        self._require_init("communicate")
        kfac = set(self.kfac_paths)
        flat = [(k, self._project(g, self._state_at(k)) if k in kfac else g) for k, g in tree_flatten(gradients)]
        projected = tree_unflatten(flat)
        return projected if self.comm is None else self.comm.all_mean(projected, tag="gradients")

    def update(self, model, gradients, factors=None) -> None:
        if not self._initialized:
            self.init(model.trainable_parameters(), factors)
        super().update(model, gradients, factors)

    # --- update ------------------------------------------------------------------------------
    @staticmethod
    def _project(g: mx.array, state: dict) -> mx.array:
        return (state["Q_R"].T @ g) @ state["Q_C"]

    def apply_single(self, gradient: mx.array, parameter: mx.array, state: dict) -> mx.array:
        if "Q_R" not in state:
            return super().apply_single(gradient, parameter, state)
        projected = self._communicated and self.project_before_allreduce
        fn = kfe_step_compiled if self.compile else kfe_step
        delta, state["m"], state["v"] = fn(gradient, state["m"], state["v"], state["Q_R"], state["Q_C"],
                                           self.learning_rate, self.step, *self.betas, self.eps,
                                           self.bias_correction, not projected)
        return self._decay(parameter) + delta


class TopKPOP(KPOP):
    r"""TopKPOP (KPOP paper §3.1.1): KPOP keeping only the top R' = ⌈√s·R⌉ and C' = ⌈√s·C⌉
    eigenvectors of R̂ and Ĉ, so G' = Q_Rᵀ G Q_C is R'×C' (≈ s·RC): Adam's moments and the
    all-reduced gradient shrink by ≈ s (the projection happens *before* the all-reduce).
    TopKPOP(s=1) computes exactly what KPOP computes.

    Args: as :class:`KPOP`, plus ``sparsity`` s ∈ (0, 1] (default 0.1).
    """

    project_before_allreduce = True

    def __init__(self, learning_rate, sparsity: float = S.SPARSITY, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.sparsity = value_error(S.check_sparsity, sparsity, "sparsity (s)")

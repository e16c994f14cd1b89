"""The shared skeleton of the structured-Fisher optimizers (paper 004, "structured FIM
approximation": Eigen-Adam, SOAP, RACS, Alice) in asprof's phase interface.

What they share, and how it differs from KPOP:

* **Routing.** Like KPOP (§3.2 of the KPOP paper, and the structured-Fisher paper's own setup,
  App. F.2: "applied to all linear modules of attention and MLPs, others are optimized with
  Adam"): the weights of the model's ``nn.Linear`` layers get the structured update; embeddings,
  output heads (``*lm_head``, ``*head``, ``output``) and 1-D parameters get plain Adam.
* **No factors.** Their statistics come from the (averaged) gradient G itself — G Gᵀ, Gᵀ G,
  G^{⊙2} — not from KFAC factors, so nothing extra is captured and nothing extra is
  all-reduced: the gradients are averaged once (phase 4) and every rank then updates identical
  state with identical arithmetic (sign-canonical bases, seeded sampling).
* **Refresh schedule.** The bases are recomputed at t = 1 and whenever t mod K = 0 (t counts
  updates from 1; Algorithms 4, 6, 7). The refresh needs the step's averaged gradient (the
  statistics include G_t), so it runs at the start of phase 5 (:meth:`apply_gradients`), is
  evaluated on its own (the eigendecompositions run on the CPU stream), and then the update
  uses the new bases. :meth:`refresh_due` says which steps refresh; :meth:`refresh` (phase 3)
  has nothing to do for these optimizers.

Matrices are m×n in the paper with m ≤ n; a weight with more rows than columns is handled as
its transpose (the "one-sided" statistics always live on the smaller side), see :func:`oriented`.
"""

from __future__ import annotations

import fnmatch
import hashlib
from typing import Callable, Iterable, Sequence

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from asprof.optimizers.base import PhasedOptimizer
from asprof.optimizers.comm import Communicator
from asprof.optimizers.kfac import DEFAULT_EXCLUDE, KFACLinear
from asprof.optimizers.eigenbasis import canonical_signs
from asprof.spec import DEFAULT_INTERVAL


def linear_weight_paths(model: nn.Module, exclude: Iterable[str] = DEFAULT_EXCLUDE) -> list[str]:
    """The parameter paths (``"layers.0.mlp.up_proj.weight"``) of the weights of ``model``'s
    linear layers (``nn.Linear`` or :class:`KFACLinear`), output heads excluded — the matrices
    the structured optimizers precondition, as KPOP's ``attach_kfac`` picks them."""
    exclude = tuple(exclude)
    paths = []
    for name, module in model.named_modules():
        if name and (type(module) is nn.Linear or isinstance(module, KFACLinear)) \
                and not any(fnmatch.fnmatchcase(name, pat) for pat in exclude):
            paths.append(f"{name}.weight")
    return sorted(paths, key=lambda p: [int(x) if x.isdigit() else x for x in p.split(".")])


def default_matrix_paths(parameters: dict) -> list[str]:
    """For a bare parameter tree (no module to inspect): every 2-D ``*.weight`` whose module path
    is not an embedding or an output head."""
    out = []
    for path, a in tree_flatten(parameters):
        module = path.rsplit(".", 1)[0]
        if a.ndim == 2 and path.endswith(".weight") and "embed" not in module \
                and not any(fnmatch.fnmatchcase(module, pat) for pat in DEFAULT_EXCLUDE):
            out.append(path)
    return out


def stat_dtype(w: mx.array) -> mx.Dtype:
    """The dtype of statistics and bases: float32 (also for half-precision weights), float64 for
    float64 weights (MLX's CPU stream; the float64 oracle tests use it)."""
    return mx.float64 if w.dtype == mx.float64 else mx.float32


def oriented(g: mx.array) -> tuple[mx.array, bool]:
    """(G as the paper's m×n with m ≤ n, whether it was transposed)."""
    return (g.T, True) if g.shape[0] > g.shape[1] else (g, False)


def eigh_descending(m: mx.array, k: int | None = None) -> tuple[mx.array, mx.array]:
    """(eigenvalues, eigenvectors) of symmetric ``m``, the top ``k`` (all when None) in descending
    order (the paper's EVD(M, r)), columns sign-canonical; ``eigh`` on the CPU stream."""
    vals, vecs = mx.linalg.eigh(m, stream=mx.cpu)
    n = m.shape[0]
    k = n if k is None else k
    order = mx.arange(n - 1, n - 1 - k, -1)
    return mx.take(vals, order), canonical_signs(mx.take(vecs, order, axis=1))


def adam_direction(m: mx.array, v: mx.array, lr: mx.array, step: mx.array, b1: float, b2: float, eps: float,
                   bias_correction: bool) -> mx.array:
    """-lr·m̂/(√v̂+ε) from given moments, with base.adam_step's arithmetic (so an identity basis
    reproduces Adam to rounding)."""
    lr = lr.astype(m.dtype)
    if bias_correction:
        c1 = (lr / (1 - b1**step)).astype(m.dtype)
        c2 = mx.rsqrt(1 - b2**step).astype(m.dtype)
        return -(c1 * m) / (mx.sqrt(v) * c2 + eps)
    return -lr * m / (mx.sqrt(v) + eps)


def norm_growth_limiter(x: mx.array, phi: mx.array, gamma: float) -> tuple[mx.array, mx.array]:
    """The norm-growth limiter of Fira (Chen et al. 2024) used by RACS (Algorithm 1, lines 9-10)
    and Alice's compensation (Algorithm 3, lines 4-6): η = γ / max(‖x‖/φ, γ) when φ > 0 (else 1),
    so the update's norm grows by at most γ per step; returns (η, φ_new = η‖x‖)."""
    norm = mx.sqrt(mx.sum(mx.square(x)))
    safe_phi = mx.where(phi > 0, phi, 1.0)
    eta = mx.where(phi > 0, gamma / mx.maximum(norm / safe_phi, gamma), 1.0).astype(x.dtype)
    return eta, (eta * norm).astype(phi.dtype)


def check_unit_interval(name: str, value, closed_low: bool = True) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and \
        (0.0 <= value < 1.0 if closed_low else 0.0 < value < 1.0)
    if not ok:
        raise ValueError(f"{name} must be in {'[0' if closed_low else '(0'}, 1), got {value!r}")
    return float(value)


def check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return value


class StructuredOptimizer(PhasedOptimizer):
    """Base class: routing, the refresh schedule and the refresh hook. Subclasses set
    :attr:`MARKER` (a state key only their matrix state has) and implement
    :meth:`init_matrix`, :meth:`refresh_matrix` and :meth:`matrix_delta`."""

    MARKER = ""
    #: KPOP needs KFAC factors from the backward pass; these optimizers do not.
    needs_factors = False
    #: Refresh interval K (steps); None for optimizers without a basis (RACS).
    frequency: int | None = None

    def __init__(self, learning_rate: float | Callable[[mx.array], mx.array], betas: Sequence[float] = (0.9, 0.999),
                 eps: float = 1e-8, bias_correction: bool = False, weight_decay: float = 0.0,
                 comm: Communicator | None = None, compile: bool | None = None):
        super().__init__(learning_rate, betas, eps, bias_correction, weight_decay, comm, compile)
        self.matrix_paths: list[str] = []
        self.refreshes = 0
        self._refreshed_now = False  # True inside apply_gradients after a refresh (statistics done)

    # --- state -------------------------------------------------------------------------------
    def init(self, parameters: dict, matrix_paths: Iterable[str] | None = None) -> None:
        """Create the state. ``matrix_paths`` (parameter paths) get the structured update; default:
        :func:`default_matrix_paths` (``update(model, ...)`` passes :func:`linear_weight_paths`)."""
        paths = default_matrix_paths(parameters) if matrix_paths is None else list(matrix_paths)
        flat = dict(tree_flatten(parameters))
        missing = [p for p in paths if p not in flat]
        if missing:
            raise ValueError(f"matrix_paths name unknown parameter(s): {', '.join(missing[:3])}")
        bad = [p for p in paths if flat[p].ndim != 2]
        if bad:
            raise ValueError(f"matrix_paths must name matrices; {bad[0]} has shape {flat[bad[0]].shape}")
        super().init(parameters)
        self.matrix_paths = paths
        for p in paths:
            st = self._state_at(p)
            if self.MARKER in st:
                continue  # restored state (``opt.state = saved``): keep it
            st.clear()
            self.init_matrix(flat[p], st)

    def _state_at(self, path: str) -> dict:
        node = self.state
        for part in path.split("."):
            node = node[int(part)] if isinstance(node, list) else node[part]
        return node

    def update(self, model: nn.Module, gradients: dict, factors: dict | None = None) -> None:
        if not self._initialized:
            self.init(model.trainable_parameters(), linear_weight_paths(model))
        super().update(model, gradients, factors)

    # --- phases ------------------------------------------------------------------------------
    def refresh_due(self) -> bool:
        """Whether the coming update recomputes the bases: t = 1 or t mod K = 0 (t from 1)."""
        if self.frequency is None:
            return False
        t = self.steps_done + 1
        return t == 1 or t % self.frequency == 0

    def refresh(self) -> None:
        """Phase 3: nothing — the refresh needs the step's averaged gradient, so
        :meth:`apply_gradients` runs it (see the module docstring)."""

    def apply_gradients(self, gradients: dict, parameters, communicated: bool = False):
        if not self._initialized:
            paths = linear_weight_paths(parameters) if isinstance(parameters, nn.Module) else None
            self.init(parameters.trainable_parameters() if isinstance(parameters, nn.Module) else parameters, paths)
        self._refreshed_now = False
        if self.refresh_due() and self.matrix_paths:
            flat = dict(tree_flatten(gradients))
            states = []
            for p in self.matrix_paths:
                st = self._state_at(p)
                self.refresh_matrix(flat[p], st, p)
                states.append(st)
            # Evaluated on its own, before the update uses the bases (DESIGN §5: a GPU op waiting
            # long on a CPU eigh can hit Metal's command-buffer timeout).
            mx.eval(states)
            self.refreshes += 1
            self._refreshed_now = True
        try:
            return super().apply_gradients(gradients, parameters, communicated)
        finally:
            self._refreshed_now = False

    def apply_single(self, gradient: mx.array, parameter: mx.array, state: dict) -> mx.array:
        if self.MARKER not in state:
            return super().apply_single(gradient, parameter, state)
        return self._decay(parameter) + self.matrix_delta(gradient, state).astype(parameter.dtype)

    def state_digest(self) -> str:
        """A hash of every matrix state array (equal digests on two ranks = identical state)."""
        h = hashlib.sha256()
        for p in self.matrix_paths:
            for k, a in sorted(self._state_at(p).items()):
                h.update(k.encode())
                h.update(np.asarray(a).tobytes())
        return h.hexdigest()[:16]

    # --- for subclasses ----------------------------------------------------------------------
    def init_matrix(self, w: mx.array, state: dict) -> None:
        raise NotImplementedError

    def refresh_matrix(self, g: mx.array, state: dict, path: str) -> None:
        """Update the statistics the refresh needs with the step's gradient ``g`` and recompute
        the basis (in place in ``state``, lazily; the caller evaluates)."""
        raise NotImplementedError

    def matrix_delta(self, g: mx.array, state: dict) -> mx.array:
        """The update ΔW of one matrix (decay excluded), updating ``state``."""
        raise NotImplementedError


class EigenbasisOptimizer(StructuredOptimizer):
    """Eigen-Adam and SOAP: Adam in an eigenbasis of gradient statistics (EMA decay β₃)
    refreshed every K = ``frequency`` steps; the paper's defaults (SOAP's reference settings)."""

    def __init__(self, learning_rate: float | Callable[[mx.array], mx.array], betas: Sequence[float] = (0.95, 0.95),
                 beta3: float = 0.95, frequency: int = DEFAULT_INTERVAL["soap"], eps: float = 1e-8, bias_correction: bool = False,
                 weight_decay: float = 0.0, comm: Communicator | None = None, compile: bool | None = None):
        super().__init__(learning_rate, betas, eps, bias_correction, weight_decay, comm, compile)
        self.beta3 = check_unit_interval("beta3", beta3)
        self.frequency = check_int("frequency (K)", frequency, 1)

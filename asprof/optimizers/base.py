"""The shared skeleton of asprof's optimizers, and the data-parallel Adam baseline.

asprof's optimizers are ``mlx.optimizers.Optimizer`` subclasses (``init_single`` /
``apply_single``; state a tree of dicts of arrays, so it passes through ``mx.compile``) whose
training step is split into the phases of kpop_contract.md, so the training loop can time them:

    accumulate_factors(factors)   # 2. factor EMA (KPOP only)
    if refresh_due(): refresh()   # 3. factor all-reduce + eigenbases (KPOP only), evaluated here
    g = communicate(grads)        # 4. one bucketed all-reduce through the Communicator
    model.update(apply_gradients(g, params, communicated=True))   # 5. the update

:meth:`PhasedOptimizer.update` runs all of them, so ``opt.update(model, grads[, factors])``
works like any MLX optimizer, single-process or data parallel (pass ``comm``).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim

from asprof.optimizers.comm import Communicator
from asprof.spec import BETAS, EPS


def adam_step(g, m, v, lr, step, b1: float, b2: float, eps: float, bias_correction: bool):
    """Adam's element-wise math (pure, so it can be compiled): returns (-lr·m̂/(√v̂+ε), m, v).
    The arithmetic is ``mlx.optimizers.Adam``'s, so the two agree to rounding."""
    lr = lr.astype(g.dtype)
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * mx.square(g)
    if bias_correction:
        c1 = (lr / (1 - b1**step)).astype(g.dtype)
        c2 = mx.rsqrt(1 - b2**step).astype(g.dtype)
        return -(c1 * m) / (mx.sqrt(v) * c2 + eps), m, v
    return -lr * m / (mx.sqrt(v) + eps), m, v


# One fused kernel instead of ~10 passes over every parameter (non-array arguments are
# compile-time constants; a new shape or constant triggers one more trace).
adam_step_compiled = mx.compile(adam_step)


def check_positive(name: str, value, allow_callable: bool = False) -> None:
    if allow_callable and callable(value):
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def check_betas(betas) -> tuple[float, float]:
    try:
        b1, b2 = (float(b) for b in betas)
    except (TypeError, ValueError):
        raise ValueError(f"betas must be a pair of numbers in [0, 1), got {betas!r}") from None
    for i, b in enumerate((b1, b2)):
        if not 0.0 <= b < 1.0:
            raise ValueError(f"betas[{i}] (beta{i + 1}) must be in [0, 1), got {b!r}")
    return b1, b2


def check_nonnegative(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative number, got {value!r}")


class PhasedOptimizer(optim.Optimizer):
    r"""Adam with the phase interface; the element-wise update every asprof optimizer shares.

    For a parameter :math:`w` with (all-reduced) gradient :math:`g` at step :math:`t \ge 1`:

    .. math::

        m_t = \beta_1 m_{t-1} + (1-\beta_1) g,\quad v_t = \beta_2 v_{t-1} + (1-\beta_2) g^2 \\
        w_t = w_{t-1}(1 - \eta\lambda) - \eta \frac{m_t / (1-\beta_1^t)}{\sqrt{v_t / (1-\beta_2^t)} + \epsilon}

    (the bias corrections only with ``bias_correction=True``, the paper's Eq. 10; the
    decoupled weight decay :math:`\lambda` only when non-zero).

    Args:
        learning_rate: :math:`\eta` (float > 0, or a schedule ``step -> lr`` like MLX's).
        betas: :math:`(\beta_1, \beta_2)`, each in [0, 1). Default (0.9, 0.999).
        eps: :math:`\epsilon \ge 0`. Default 1e-8.
        bias_correction: apply Eq. 10. Default True (MLX's Adam defaults to False).
        weight_decay: decoupled weight decay :math:`\lambda \ge 0`. Default 0.
        comm: a :class:`~asprof.optimizers.comm.Communicator` for data-parallel training;
            None for a single process.
        compile: run the element-wise update through ``mx.compile`` (same numbers, one fused
            kernel). Default None: on Metal only (on the CPU backend it measured slower).
    """

    def __init__(
        self,
        learning_rate: float | Callable[[mx.array], mx.array],
        betas: Sequence[float] = BETAS,
        eps: float = EPS,
        bias_correction: bool = True,
        weight_decay: float = 0.0,
        comm: Communicator | None = None,
        compile: bool | None = None,
    ):
        super().__init__()
        check_positive("learning_rate", learning_rate, allow_callable=True)
        self.betas = check_betas(betas)
        check_nonnegative("eps", eps)
        check_nonnegative("weight_decay", weight_decay)
        if not isinstance(bias_correction, bool):
            raise ValueError(f"bias_correction must be True or False, got {bias_correction!r}")
        if comm is not None and not isinstance(comm, Communicator):
            raise ValueError(f"comm must be an asprof.optimizers.Communicator or None, got {type(comm).__name__}")
        self._maybe_schedule("learning_rate", learning_rate)
        self.eps = float(eps)
        self.bias_correction = bias_correction
        self.weight_decay = float(weight_decay)
        self.comm = comm
        # On MLX's CPU backend the compiled (JIT C++) Adam kernel measured ~2.5x slower than the
        # eager ops (docs/optimizers.md, "Compilation"), so by default compile on Metal only.
        self.compile = mx.metal.is_available() if compile is None else bool(compile)
        # Python-side count of completed updates: decides refreshes without reading device state.
        self.steps_done = 0
        self._communicated = False

    # --- phases -----------------------------------------------------------------------------
    def accumulate_factors(self, factors) -> None:
        """Phase 2 (factor EMA). Adam has no factors."""

    def refresh_due(self) -> bool:
        """Whether phase 3 (refresh) runs before the next update. Never for Adam."""
        return False

    def refresh(self) -> None:
        """Phase 3. Nothing for Adam."""

    def communicate(self, gradients):
        """Phase 4: the gradients averaged over the data-parallel group (one bucketed all-reduce)."""
        if self.comm is None:
            return gradients
        return self.comm.all_mean(gradients, tag="gradients")

    def update(self, model: nn.Module, gradients: dict, factors: dict | None = None) -> None:
        """All phases: like ``mlx.optimizers.Optimizer.update`` (factors are for KPOP/TopKPOP)."""
        self.accumulate_factors(factors)
        if self.refresh_due():
            self.refresh()
        g = self.communicate(gradients)
        model.update(self.apply_gradients(g, model, communicated=True))

    def apply_gradients(self, gradients: dict, parameters: dict, communicated: bool = False):
        """Phase 5. ``communicated`` says ``gradients`` came from :meth:`communicate` (matters for
        TopKPOP, whose communicated gradients are already projected)."""
        self._communicated = communicated
        try:
            out = super().apply_gradients(gradients, parameters)
        finally:
            self._communicated = False
        self.steps_done += 1
        return out

    # --- Adam -------------------------------------------------------------------------------
    def init_single(self, parameter: mx.array, state: dict) -> None:
        state["m"] = mx.zeros_like(parameter)
        state["v"] = mx.zeros_like(parameter)

    def apply_single(self, gradient: mx.array, parameter: mx.array, state: dict) -> mx.array:
        return self._decay(parameter) + self._adam_delta(gradient, state)

    def _adam_delta(self, g: mx.array, state: dict) -> mx.array:
        """Update the moments in ``state`` with ``g``; return -lr·m̂/(√v̂+ε)."""
        fn = adam_step_compiled if self.compile else adam_step
        delta, state["m"], state["v"] = fn(g, state["m"], state["v"], self.learning_rate, self.step,
                                           *self.betas, self.eps, self.bias_correction)
        return delta

    def _decay(self, parameter: mx.array) -> mx.array:
        if self.weight_decay == 0.0:
            return parameter
        return parameter * (1 - self.learning_rate.astype(parameter.dtype) * self.weight_decay)


class Adam(PhasedOptimizer):
    __doc__ = "Adam, the baseline, with the phase interface. " + (PhasedOptimizer.__doc__ or "")

"""Optimizer state sizes: measured from a live optimizer and in closed form (kpop_contract.md,
"State per KFAC layer"), so benchmarks can print one next to the other and the simulator's memory
model can use the same formulas without importing MLX (this module imports nothing heavy)."""

from __future__ import annotations

import math

FLOAT32_BYTES = 4


def reduced_dim(n: int, sparsity: float) -> int:
    """⌈√s·n⌉ clamped to [1, n] (KPOP paper §3.1.1); see asprof.optimizers.kpop.reduced_dim."""
    return max(1, min(n, math.ceil(math.sqrt(sparsity) * n - 1e-9)))


def closed_form_state_bytes(model_config, optimizer: str, sparsity: float = 1.0) -> int:
    """Optimizer state bytes (float32) for a :class:`asprof.presets.ModelConfig`:

    - Adam: m, v per parameter element (2 per element);
    - KPOP per KFAC layer (R×C): 2RC (m, v) + R² + C² (factor EMAs) + R² + C² (bases);
    - TopKPOP per KFAC layer: 2R'C' + R² + C² + RR' + CC';
    - KPOP/TopKPOP, everything else (embedding/tied head, norms): Adam's 2 per element.
    Weights and gradients are not included.
    """
    if optimizer not in ("adam", "kpop", "topkpop"):
        raise ValueError(f"unknown optimizer {optimizer!r}")
    s = 1.0 if optimizer == "kpop" else sparsity
    linear = model_config.linear_shapes()
    other = model_config.n_params() - sum(r * c for _, r, c in linear)
    if optimizer == "adam":
        return 2 * model_config.n_params() * FLOAT32_BYTES
    floats = 2 * other
    for _, r, c in linear:
        r2, c2 = reduced_dim(r, s), reduced_dim(c, s)
        floats += 2 * r2 * c2 + r * r + c * c + r * r2 + c * c2
    return floats * FLOAT32_BYTES


def state_bytes(optimizer) -> int:
    """Bytes of the arrays in an MLX optimizer's state, without the scalars ``step`` and
    ``learning_rate``."""
    from mlx.utils import tree_flatten

    return sum(v.nbytes for k, v in tree_flatten(optimizer.state) if k not in ("step", "learning_rate"))


def gradient_payload_bytes(model_config, optimizer: str, sparsity: float = 1.0) -> int:
    """Bytes all-reduced per step for the gradients (kpop_contract.md step 4): every parameter for
    Adam and KPOP; for TopKPOP the R'×C' projected gradients plus the full Adam-routed ones."""
    if optimizer in ("adam", "kpop"):
        return model_config.n_params() * FLOAT32_BYTES
    linear = model_config.linear_shapes()
    other = model_config.n_params() - sum(r * c for _, r, c in linear)
    return (other + sum(reduced_dim(r, sparsity) * reduced_dim(c, sparsity) for _, r, c in linear)) * FLOAT32_BYTES


def factor_payload_bytes(model_config) -> int:
    """Bytes all-reduced at a refresh: Σ (R² + C²) over the KFAC layers."""
    return sum(r * r + c * c for _, r, c in model_config.linear_shapes()) * FLOAT32_BYTES

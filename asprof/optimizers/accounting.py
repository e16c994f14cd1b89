"""Optimizer state sizes: measured from a live optimizer and in closed form (kpop_contract.md,
"State per KFAC layer"), so benchmarks can print one next to the other and the simulator's memory
model can use the same formulas without importing MLX (this module imports nothing heavy)."""

from __future__ import annotations

import math

from asprof.spec import OPTIMIZERS, RANK, STRUCTURED, reduced_dim  # noqa: F401  (reduced_dim: re-exported)

FLOAT32_BYTES = 4


# Structured-Fisher optimizers (paper 004) and Alice's default rank / leading-basis count as
# fractions: r = ⌈0.25·m⌉ (Table 11: 128-512 for hidden sizes 512-2048) and l = ⌈0.3125·r⌉
# (Table 11: 40 of 128, 160 of 512).
ALICE_RANK = RANK
ALICE_LEADING = 0.3125


def resolve_count(value: int | float, of: int, name: str = "value") -> int:
    """An int ≥ 1 is a count (clamped to ``of``); a float in (0, 1] a fraction of ``of``, rounded up."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be an integer >= 1 or a fraction in (0, 1], got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f"{name} must be an integer >= 1 or a fraction in (0, 1], got {value!r}")
        return min(value, of)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{name} must be an integer >= 1 or a fraction in (0, 1], got {value!r}")
    return max(1, min(of, math.ceil(value * of - 1e-9)))


def alice_rank(m: int, rank: int | float = ALICE_RANK) -> int:
    """Alice's r for a matrix whose smaller side is m."""
    return resolve_count(rank, m, "rank")


def table1_state_elements(optimizer: str, rows: int, cols: int, rank: int | float = ALICE_RANK) -> int:
    """Optimizer-state floats of one rows×cols matrix as paper 004's Table 1 (Alice-0: Table 6)
    counts them, the weight's own mn left out; m ≤ n are the smaller and larger side:
    Adam 2mn; Eigen-Adam 2mn + 2m²; SOAP 2mn + 2m² + 2n²; RACS m + n + 1;
    Alice 2nr + mr + n + r²; Alice-0 2nr + mr + n."""
    m, n = min(rows, cols), max(rows, cols)
    if optimizer == "adam":
        return 2 * m * n
    if optimizer == "eigen-adam":
        return 2 * m * n + 2 * m * m
    if optimizer == "soap":
        return 2 * m * n + 2 * m * m + 2 * n * n
    if optimizer == "racs":
        return m + n + 1
    if optimizer in ("alice", "alice-0"):
        r = alice_rank(m, rank)
        return 2 * n * r + m * r + n + (r * r if optimizer == "alice" else 0)
    raise ValueError(f"unknown optimizer {optimizer!r}")


def matrix_state_elements(optimizer: str, rows: int, cols: int, rank: int | float = ALICE_RANK) -> int:
    """What asprof's implementation holds for one routed matrix: Table 1, plus Alice's limiter
    norm φ (one scalar, Algorithm 3), which Table 1 counts for RACS but leaves out for Alice."""
    extra = 1 if optimizer in ("alice", "alice-0") else 0
    return table1_state_elements(optimizer, rows, cols, rank) + extra


def closed_form_state_bytes(model_config, optimizer: str, sparsity: float = 1.0,
                            rank: int | float = ALICE_RANK) -> int:
    """Optimizer state bytes (float32) for a :class:`asprof.presets.ModelConfig`:

    - Adam: m, v per parameter element (2 per element);
    - KPOP per KFAC layer (R×C): 2RC (m, v) + R² + C² (factor EMAs) + R² + C² (bases);
    - TopKPOP per KFAC layer: 2R'C' + R² + C² + RR' + CC';
    - Eigen-Adam, SOAP, RACS, Alice, Alice-0 per linear layer: :func:`matrix_state_elements`
      (Alice's rank ``rank``);
    - all but Adam, everything else (embedding/tied head, norms): Adam's 2 per element.
    Weights and gradients are not included.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}")
    s = 1.0 if optimizer == "kpop" else sparsity
    linear = model_config.linear_shapes()
    other = model_config.n_params() - sum(r * c for _, r, c in linear)
    if optimizer == "adam":
        return 2 * model_config.n_params() * FLOAT32_BYTES
    floats = 2 * other
    if optimizer in STRUCTURED:
        floats += sum(matrix_state_elements(optimizer, r, c, rank) for _, r, c in linear)
        return floats * FLOAT32_BYTES
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

"""Cost plans of the structured-Fisher optimizers (paper 004: Eigen-Adam, SOAP, RACS, Alice,
Alice-0) as asprof/optimizers runs them (eigen_adam.py, soap.py, racs.py, alice.py).

Per step, on every rank (no KFAC factors, nothing all-reduced but the gradients):

1. forward + backward; 2. the gradient all-reduce (K > 1), every gradient;
3. refresh when due — t = 1 or t mod K = 0 with t counted from 1, i.e. step indices 0, K−1,
   2K−1, ... (Algorithms 4, 6, 7) — *after* the all-reduce, because the statistics include the
   step's averaged gradient (structured.py): the statistics GEMMs on the accelerator
   (``refresh_pre``), then on the CPU stream ``eigh`` of each m×m (and SOAP's n×n) statistic,
   then sign fix-ups (``refresh_accel``), evaluated on their own. Alice: the first refresh is a
   top-r ``eigh`` of the m×m Q; later ones one subspace-iteration step (Q·U on the accelerator;
   QR of the m×r panel and ``eigh`` of the r×r Rayleigh matrix on the CPU; kept in the
   ``power_*`` fields) — both followed by the complement's QR of an m×m matrix (switching);
4. the update, one lazy graph (nothing compiled: only Adam's element-wise math is, on Metal):
   Adam for embeddings, heads and vectors; for each routed matrix the statistics EMA (Eigen-Adam
   Q = EMA G Gᵀ, SOAP L, R; on refresh steps it runs in step 3 instead, ``stats``) and the
   optimizer's own GEMMs and element-wise passes below.

Shapes are the paper's: a routed weight is m×n with m ≤ n after transposing a tall one (float32,
4 bytes). Element-wise passes count each MLX op as one kernel that reads its inputs and writes its
output (the same convention as the Adam math in costs.py); GEMMs carry their operand layout.
State bytes are accounting.matrix_state_elements (Table 1, plus Alice's limiter scalar).
"""

from __future__ import annotations

from asprof.optimizers.accounting import alice_rank, matrix_state_elements
from asprof.simulate.workload import Op

B = 4  # float32 bytes


def _ew(name: str, arrays: float, elements: int, kernels: int) -> Op:
    return Op(name, "elementwise", 1, bytes=arrays * elements * B, kernels=kernels)


def _ema(name: str, elements: int) -> Op:
    """β·x + (1−β)·y: three kernels (two scalings, one add)."""
    return _ew(name, 7, elements, 3)


def _direction(elements: int) -> Op:
    """−λ·m/(√v + ε) (adam_direction without bias correction): sqrt, add, mul, div, neg."""
    return _ew("m/(√v+ε)", 10, elements, 5)


def _signs(n: int, k: int) -> Op:
    """canonical_signs on an n×k basis: abs, argmax, take, where, mul (as costs.py for KPOP)."""
    return Op("eigenvector signs", "elementwise", 1, bytes=3 * n * k * B, kernels=5)


def _eigh(n: int) -> Op:
    return Op("eigh", "linalg", 1, n=n, linalg="eigh", device="cpu")


def _qr_panel(n: int, k: int) -> Op:
    """CPU QR of an n×k panel: (2nk² − 2k³/3)/(4n³/3) of the measured n×n QR (as costs.py)."""
    return Op("QR (CPU)", "linalg", 1, n=n, linalg="qr", scale=(2 * n * k * k - 2 * k**3 / 3) / (4 * n**3 / 3),
              device="cpu")


class MatrixPlan:
    """The ops of the routed matrices, accumulated over the layers."""

    def __init__(self):
        self.stats: list[Op] = []
        self.update: list[Op] = []
        self.refresh_pre: list[Op] = []
        self.refresh_cpu: list[Op] = []
        self.refresh_accel: list[Op] = []
        self.power_pre: list[Op] = []
        self.power_cpu: list[Op] = []
        self.power_post: list[Op] = []
        self.moments = 0  # state floats that are moments (optimizer_state); the rest: preconditioner


def add_matrix(plan: MatrixPlan, name: str, rows: int, cols: int, rank: float) -> None:
    """Append one rows×cols routed matrix's ops for optimizer ``name``."""
    m, n = min(rows, cols), max(rows, cols)
    mn = m * n
    if name == "eigen-adam":
        plan.stats += [Op("Q += G·Gᵀ", "gemm", 1, m=m, n=m, k=n, layout="nt"), _ema("Q EMA", m * m)]
        plan.update += [_ema("m EMA", mn), Op("Uᵀ·G", "gemm", 1, m=m, n=n, k=m, layout="tn"),
                        _ew("v EMA of (UᵀG)²", 9, mn, 4), Op("Uᵀ·m", "gemm", 1, m=m, n=n, k=m, layout="tn"),
                        _direction(mn), Op("U·Δ'", "gemm", 1, m=m, n=n, k=m), _ew("w + Δ", 3, mn, 1)]
        plan.refresh_cpu.append(_eigh(m))
        plan.refresh_accel.append(_signs(m, m))
        plan.moments += 2 * mn
    elif name == "soap":
        plan.stats += [Op("L += G·Gᵀ", "gemm", 1, m=m, n=m, k=n, layout="nt"),
                       Op("R += Gᵀ·G", "gemm", 1, m=n, n=n, k=m, layout="tn"),
                       _ema("L EMA", m * m), _ema("R EMA", n * n)]
        plan.update += [_ema("m EMA", mn),
                        Op("U_Lᵀ·G", "gemm", 1, m=m, n=n, k=m, layout="tn"), Op("·U_R", "gemm", 1, m=m, n=n, k=n),
                        _ew("v EMA of (U_LᵀGU_R)²", 9, mn, 4),
                        Op("U_Lᵀ·m", "gemm", 1, m=m, n=n, k=m, layout="tn"), Op("·U_R", "gemm", 1, m=m, n=n, k=n),
                        _direction(mn), Op("U_L·Δ'", "gemm", 1, m=m, n=n, k=m),
                        Op("·U_Rᵀ", "gemm", 1, m=m, n=n, k=n, layout="nt"), _ew("w + Δ", 3, mn, 1)]
        plan.refresh_cpu += [_eigh(m), _eigh(n)]
        plan.refresh_accel += [_signs(m, m), _signs(n, n)]
        plan.moments += 2 * mn
    elif name == "racs":
        # G², then Eq. (16) five times: Pᵀq and P·s (matrix-vector, bandwidth-bound) plus norms
        plan.update += [_ew("P = G²", 2, mn, 1)]
        plan.update += [Op("Pᵀ·q, P·s (Eq. 16)", "gemm", 5, m=1, n=n, k=m),
                        Op("P·s", "gemm", 5, m=m, n=1, k=n), _ew("norms, EMA of s, q", 12, n, 12)]
        plan.update += [_ew("√q ⊗ √s + ε", 3, mn, 2), _ew("G / scale", 3, mn, 1), _ew("‖G̃‖", 2, mn, 2),
                        _ew("−λαη·G̃", 4, mn, 2), _ew("w + Δ", 3, mn, 1)]
        plan.moments += m + n + 1
    elif name in ("alice", "alice-0"):
        tracking = name == "alice"
        r = alice_rank(m, rank)
        plan.update += [Op("σ = Uᵀ·G", "gemm", 1, m=r, n=n, k=m, layout="tn")]
        if tracking:
            plan.update += [Op("Q̃ += σσᵀ", "gemm", 1, m=r, n=r, k=n, layout="nt"), _ema("Q̃ EMA", r * r)]
        plan.update += [_ema("m EMA", r * n), _ew("v EMA of σ²", 9, r * n, 4), _direction(r * n),
                        Op("U·Δ'", "gemm", 1, m=m, n=n, k=r), _ew("α·", 2, mn, 1),
                        # compensation (Algorithm 3): column norms, p EMA, G − Uσ, scaling, limiter
                        _ew("‖g_j‖², ‖σ_j‖²", 3, mn + r * n, 4), Op("U·σ", "gemm", 1, m=m, n=n, k=r),
                        _ew("(G − Uσ)·S^-1/2", 6, mn, 3), _ew("‖C‖, η·C", 4, mn, 3),
                        _ew("Δ − λαα_c·C", 5, mn, 3), _ew("w + Δ", 3, mn, 1)]
        # refresh: Q = β₃·U Q̃ Uᵀ + (1−β₃)·G Gᵀ (accelerator) ...
        pre = [Op("G·Gᵀ", "gemm", 1, m=m, n=m, k=n, layout="nt")]
        if tracking:
            pre += [Op("U·Q̃", "gemm", 1, m=m, n=r, k=r), Op("·Uᵀ", "gemm", 1, m=m, n=m, k=r, layout="nt"),
                    _ema("Q", m * m)]
        # ... switching: the complement's QR of [U', 0] (m×m) on the CPU, then signs and a gather
        complement_cpu = Op("complement QR (CPU)", "linalg", 1, n=m, linalg="qr", device="cpu")
        post = [_ew("[U', 0]", 2, m * m, 1), _signs(m, m - r), _signs(m, r), _ew("gather U", 2, m * r, 2)]
        # first refresh: top-r eigh of Q
        plan.refresh_pre += pre
        plan.refresh_cpu += [_eigh(m), complement_cpu]
        plan.refresh_accel += post
        # later refreshes: one subspace-iteration step (Algorithm 10)
        plan.power_pre += pre + [Op("Q·U", "gemm", 1, m=m, n=r, k=m)]
        plan.power_cpu += [_qr_panel(m, r), _eigh(r), complement_cpu]
        plan.power_post += [Op("Q·U'", "gemm", 1, m=m, n=r, k=m), Op("U'ᵀ·QU'", "gemm", 1, m=r, n=r, k=m, layout="tn"),
                            Op("U'·E", "gemm", 1, m=m, n=r, k=r)] + post
        plan.moments += 2 * r * n + n + 1  # m, v, p, φ; U and Q̃ are the preconditioner
    else:
        raise ValueError(f"not a structured optimizer: {name!r}")
    # Eigen-Adam/SOAP accumulate the statistics in the refresh, before the decomposition
    if name in ("eigen-adam", "soap"):
        plan.refresh_pre += plan.stats[-(2 if name == "eigen-adam" else 4):]


def state_floats(name: str, rows: int, cols: int, rank: float) -> int:
    return matrix_state_elements(name, rows, cols, rank)

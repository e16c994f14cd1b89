"""Optimizer cost models: Adam, KPOP and TopKPOP as our implementation runs them (Eigen-Adam,
SOAP, RACS, Alice, Alice-0: costs_structured.py).

This module turns an optimizer and a workload into the hardware-independent plan of one
training step, following /work/notes/kpop_contract.md and ``asprof/optimizers`` (kpop.py,
comm.py, kfac.py) phase by phase:

1. forward + backward; KPOP/TopKPOP add per linear layer W ∈ R^{R×C} the batch factors
   C_b = XᵀX/B (C×C) and R_b = ΔYᵀΔY/B (R×R): two GEMMs with k = tokens (KPOP paper Eq. 2-3);
2. factor EMA Ĉ ← αĈ + (1−α)C_b, R̂ likewise (Eq. 4-5), element-wise, every step;
3. refresh when due (t < warm-up, then t mod f = 0; §3.2 "Scheduling"): one bucketed
   all-reduce of all Ĉ, R̂ (Σ(R²+C²)·4 bytes), then per factor ``eigh`` on the CPU stream and a
   sign fix-up — or, with ``eig_method="power"`` after the first refresh, Q ← QR(M·Q) with the
   GEMMs on the accelerator and the QR on the CPU (§3.2 "Reusing previous estimates"), or with
   ``"subspace"`` (``"auto"``'s choice for TopKPOP, s < 1) SUBSPACE_ITERATIONS such steps plus
   Rayleigh–Ritz (a k×k ``eigh``). Layers that take the same input (q/k/v, gate/up) share one
   C_b GEMM, one Ĉ EMA and one decomposition of it (kfac.py, kpop.py); every Ĉ is still sent.
   The refresh is evaluated on its own, so nothing overlaps it;
4. gradient all-reduce (K > 1), bucketed like ``mlx.nn.average_gradients`` (32 MiB): every
   gradient (Adam, KPOP); TopKPOP first projects G' = Q_Rᵀ G Q_C (R'×C', Eq. 14) and sends that
   plus the Adam-routed gradients;
5. the update: Adam (one compiled element-wise kernel on Metal, 13 eager kernels elsewhere, then
   w + Δ) for embedding/head/norms;
   KPOP rotates (2 GEMMs), runs Adam on R×C and rotates back (2 GEMMs, Eq. 7-12); TopKPOP runs
   Adam on R'×C' and projects back (2 GEMMs).

State per KFAC layer (float32): KPOP m, v + Ĉ, R̂ + Q_C, Q_R = 2RC + 2R² + 2C²; TopKPOP
2R'C' + R² + C² + RR' + CC', with R' = ⌈√s·R⌉, C' = ⌈√s·C⌉ (§3.1.1, Eq. 13-15).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from asprof.simulate.workload import Op, Workload
from asprof.spec import OptimizerSpec, reduced_dim, ring_factor

# The optimizers, their knobs and their schedule are the run spec's (asprof/spec.py); the
# structured-Fisher optimizers' plans are in costs_structured.py.
# Linear layers fed the same input array as the one before them (q_proj's for k/v, gate_proj's
# for up): kfac.py computes their C_b once.
SHARES_INPUT = ("k_proj", "v_proj", "up_proj")
STATE_BYTES = 4  # optimizer state, factors and bases are float32 (asprof/optimizers/kpop.py)
# The Adam math (base.py adam_step) is one mx.compile'd kernel on Metal (the optimizers' default
# compile=None compiles on Metal only): it reads g, m, v and writes m, v and the step Δ. Elsewhere
# it runs eagerly: 13 array kernels (3 for m, 4 for v, 6 for the bias-corrected step) moving 29
# arrays, in a graph of 29 primitives with the scalar bias corrections and broadcasts (counted on
# MLX 0.32's graph; each is dispatched). A plain parameter then takes one more kernel, w + Δ
# (reads w, Δ; writes w); a KFAC layer's Δ' goes through the back-rotation GEMMs first.
ADAM_ARRAYS = {True: 6, False: 29}  # arrays moved per element, compiled / eager
ADAM_KERNELS = {True: 1, False: 29}  # graph primitives
STEP_ARRAYS = 3  # w ← w + Δ


def bucket_arrays(array_bytes: list[int], bucket_bytes: int) -> list[list[int]]:
    """The arrays' sizes grouped into buckets like the Communicator (and average_gradients):
    arrays in order until a bucket holds at least ``bucket_bytes``; the last may hold less."""
    out, cur, size = [], [], 0
    for b in array_bytes:
        cur.append(b)
        size += b
        if size >= bucket_bytes:
            out.append(cur)
            cur, size = [], 0
    if cur:
        out.append(cur)
    return out


def buckets(array_bytes: list[int], bucket_bytes: int) -> list[int]:
    """Bucket sizes in bytes (see :func:`bucket_arrays`)."""
    return [sum(b) for b in bucket_arrays(array_bytes, bucket_bytes)]


@dataclass(frozen=True)
class StepPlan:
    """What one rank does in one step with one optimizer, independent of the hardware."""

    spec: OptimizerSpec
    forward: tuple[Op, ...]
    backward: tuple[Op, ...]
    factors: tuple[Op, ...] = ()  # extra KFAC GEMMs in the backward pass
    ema: tuple[Op, ...] = ()
    refresh_cpu: tuple[Op, ...] = ()  # eigh per factor
    refresh_accel: tuple[Op, ...] = ()  # sign fix-ups
    power_pre: tuple[Op, ...] = ()  # eig_method="power", refreshes after the first: M·Q (accelerator)
    power_cpu: tuple[Op, ...] = ()  # QR of M·Q (CPU stream)
    power_post: tuple[Op, ...] = ()  # Rayleigh quotients, sort, signs (accelerator)
    factor_arrays: tuple[int, ...] = ()  # bytes of each array of the refresh all-reduce
    project: tuple[Op, ...] = ()  # TopKPOP: before the gradient all-reduce
    grad_arrays: tuple[int, ...] = ()  # bytes of each array of the gradient all-reduce
    kfac_grad_bytes: int = 0  # of which the KFAC layers' (projected) gradients
    update: tuple[Op, ...] = ()  # with the Adam math compiled (Metal)
    update_eager: tuple[Op, ...] = ()  # with the Adam math run eagerly (other hosts)
    memory: dict = field(default_factory=dict)
    # structured optimizers (costs_structured.py): statistics EMA GEMMs, in the update on other steps
    # and in refresh_pre on refresh steps; refresh_pre runs on the accelerator before refresh_cpu
    stats: tuple[Op, ...] = ()
    refresh_pre: tuple[Op, ...] = ()

    @property
    def grad_payload(self) -> int:
        return sum(self.grad_arrays)

    @property
    def factor_payload(self) -> int:
        return sum(self.factor_arrays)


def _adam(name: str, elements: int, with_step: bool = True, compiled: bool = True) -> Op:
    """The Adam math on ``elements`` (plus w ← w + Δ when ``with_step``)."""
    arrays = ADAM_ARRAYS[compiled] + (STEP_ARRAYS if with_step else 0)
    kernels = ADAM_KERNELS[compiled] + (1 if with_step else 0)
    return Op(f"adam {name}", "elementwise", 1, bytes=arrays * elements * STATE_BYTES, kernels=kernels)


class _Update:
    """The update's ops, kept twice: with the Adam math compiled (Metal) and eager."""

    def __init__(self):
        self.compiled: list[Op] = []
        self.eager: list[Op] = []

    def adam(self, name: str, elements: int, with_step: bool = True) -> None:
        self.compiled.append(_adam(name, elements, with_step, compiled=True))
        self.eager.append(_adam(name, elements, with_step, compiled=False))

    def add(self, *ops: Op) -> None:
        self.compiled += ops
        self.eager += ops


def plan_step(workload: Workload, spec: OptimizerSpec, nodes: int) -> StepPlan:
    """The step plan of ``spec`` for ``workload`` on a data-parallel group of ``nodes`` ranks."""
    cfg, T = workload.model, workload.tokens
    s = spec.effective_sparsity
    arrays = workload.param_arrays()
    n_params = sum(n for _, n, _ in arrays)
    adam_arrays = arrays if spec.name == "adam" else [a for a in arrays if not a[2]]
    adam_elems = sum(n for _, n, _ in adam_arrays)
    update = _Update()
    for name, n, _ in adam_arrays:
        update.adam(name, n)
    memory = {
        "weights": n_params * STATE_BYTES,
        "gradients": n_params * STATE_BYTES,
        "optimizer_state": 2 * adam_elems * STATE_BYTES,
        "preconditioner": 0,
        "batch_factors": 0,
        "activations": workload.activation_bytes(),
    }
    common = dict(spec=spec, forward=tuple(workload.forward_ops()), backward=tuple(workload.backward_ops()))
    if spec.structured:
        return _plan_structured(workload, spec, nodes, arrays, update, memory, common)
    if not spec.kfac:
        grads = tuple(n * STATE_BYTES for _, n, _ in arrays)
        memory["comm_buffers"] = 2 * sum(grads) if nodes > 1 else 0
        return StepPlan(**common, grad_arrays=grads, update=tuple(update.compiled),
                        update_eager=tuple(update.eager), memory=memory)

    factors, ema, eig, signs, power_pre, power_cpu, power_post, project = [], [], [], [], [], [], [], []
    factor_arrays, grad_arrays, kfac_grad = [], [], 0
    for name, r, c in cfg.linear_shapes():
        r2, c2 = reduced_dim(r, s), reduced_dim(c, s)
        shared = name.rsplit(".", 1)[-1] in SHARES_INPUT  # its C_b, Ĉ and Q_C are the previous layer's
        # 1. batch factors in the custom VJP (kfac.py): x2ᵀx2 and dy2ᵀdy2, each then scaled
        # (12 graph primitives per layer with the reshapes, transposes and scalar broadcasts)
        # (token_stride k: over T/k tokens, after a strided slice; factor_dtype: GEMMs in that type)
        tf, fd = -(-T // spec.factor_token_stride), spec.factor_dtype
        if not shared:
            factors.append(Op("factor C_b = XᵀX/B", "gemm", 1, m=c, n=c, k=tf, layout="tn", kernels=2, dtype=fd))
        factors += [Op("factor R_b = ΔYᵀΔY/B", "gemm", 1, m=r, n=r, k=tf, layout="tn", kernels=2, dtype=fd),
                    Op("factor scaling", "elementwise", 2, bytes=(r * r + (0 if shared else c * c)) * STATE_BYTES,
                       kernels=2 if shared else 4)]
        own = ((r, r2),) if shared else ((c, c2), (r, r2))
        # 2. EMA: a·F + (1−a)·F_b, three kernels and two scalar broadcasts per factor
        ema += [Op("factor EMA", "elementwise", 1, bytes=3 * n * n * STATE_BYTES, kernels=5) for n, _ in own]
        # 3. refresh: all-reduce [C, R] per layer (kpop.py refresh), eigh per factor on the CPU,
        #    canonical_signs (argmax, abs, take, where, mul) on the accelerator
        factor_arrays += [c * c * STATE_BYTES, r * r * STATE_BYTES]
        for n, k in own:
            eig.append(Op("eigh", "linalg", 1, n=n, linalg="eigh", device="cpu"))
            sign = Op("eigenvector signs", "elementwise", 1, bytes=3 * n * k * STATE_BYTES, kernels=5)
            signs.append(sign)
            method = spec.basis_method(n, k)
            # The CPU QR of an n×k panel costs (2nk² − 2k³/3)/(4n³/3) of the measured n×n QR, taken at
            # k/n = √s (not ⌈√s·n⌉/n: a fraction that does not wobble with n keeps the price monotone
            # in n where the measured QR time is flat, latency-bound).
            rho = math.sqrt(spec.effective_sparsity)
            qr = Op("QR of M·Q (CPU)", "linalg", 1, n=n, linalg="qr", scale=1.5 * rho**2 - 0.5 * rho**3, device="cpu")
            if method == "power":
                # power step (eigenbasis.power_basis): M·Q, QR on the CPU, Rayleigh quotients M·Q', sort, signs.
                power_pre.append(Op("power step M·Q", "gemm", 1, m=n, n=k, k=n))
                power_post += [Op("Rayleigh quotients M·Q'", "gemm", 1, m=n, n=k, k=n),
                               Op("Rayleigh sort + signs", "elementwise", 1, bytes=6 * n * k * STATE_BYTES, kernels=8)]
                power_cpu.append(qr)
            elif method == "subspace":
                # eigenbasis.subspace_basis: per step M·Q and its QR; Rayleigh–Ritz: M·Q, QᵀMQ, the
                # k×k eigh on the CPU, Ritz vectors Q·V, signs.
                power_pre += [Op("subspace step M·Q", "gemm", spec.subspace_iterations + 1, m=n, n=k, k=n),
                              Op("Rayleigh–Ritz QᵀMQ", "gemm", 1, m=k, n=k, k=n, layout="tn", kernels=2)]
                power_cpu += [qr] * spec.subspace_iterations + [Op("Ritz eigh (CPU)", "linalg", 1, n=k, linalg="eigh",
                                                             device="cpu")]
                power_post += [Op("Ritz vectors Q·V", "gemm", 1, m=n, n=k, k=k), sign]
            else:  # a full basis under "auto" with partial ones elsewhere
                power_cpu.append(eig[-1])
                power_post.append(sign)
        # 4./5. gradient path
        if spec.name == "topkpop":
            project += [Op("project Q_Rᵀ·G", "gemm", 1, m=r2, n=c, k=r, layout="tn", kernels=2),
                        Op("project ·Q_C", "gemm", 1, m=r2, n=c2, k=c)]
            grad_arrays.append(r2 * c2 * STATE_BYTES)
            kfac_grad += r2 * c2 * STATE_BYTES
            update.adam(name, r2 * c2, with_step=False)
            update.add(Op("back-project Q_R·ΔW'", "gemm", 1, m=r, n=c2, k=r2),
                       Op("back-project ·Q_Cᵀ", "gemm", 1, m=r, n=c, k=c2, layout="nt", kernels=2))
        else:
            grad_arrays.append(r * c * STATE_BYTES)
            kfac_grad += r * c * STATE_BYTES
            update.add(Op("rotate Q_Rᵀ·G", "gemm", 1, m=r, n=c, k=r, layout="tn", kernels=2),
                       Op("rotate ·Q_C", "gemm", 1, m=r, n=c, k=c))
            update.adam(name, r * c, with_step=False)
            update.add(Op("rotate back Q_R·ΔW'", "gemm", 1, m=r, n=c, k=r),
                       Op("rotate back ·Q_Cᵀ", "gemm", 1, m=r, n=c, k=c, layout="nt", kernels=2))
        update.add(Op("weight += ΔW", "elementwise", 1, bytes=3 * r * c * STATE_BYTES))
        memory["optimizer_state"] += 2 * r2 * c2 * STATE_BYTES
        memory["preconditioner"] += (r * r + c * c + r * r2 + c * c2) * STATE_BYTES
        memory["batch_factors"] += (r * r + c * c) * STATE_BYTES
    # The gradient all-reduce sends the tree in parameter order, KFAC gradients (projected for
    # TopKPOP) in place of the full ones.
    kfac_iter = iter(grad_arrays)
    ordered = tuple(next(kfac_iter) if is_kfac else n * STATE_BYTES for _, n, is_kfac in arrays)
    memory["comm_buffers"] = 2 * sum(ordered) if nodes > 1 else 0
    return StepPlan(
        **common, factors=tuple(factors), ema=tuple(ema), refresh_cpu=tuple(eig), refresh_accel=tuple(signs),
        power_pre=tuple(power_pre), power_cpu=tuple(power_cpu), power_post=tuple(power_post),
        factor_arrays=tuple(factor_arrays), project=tuple(project), grad_arrays=ordered, kfac_grad_bytes=kfac_grad,
        update=tuple(update.compiled), update_eager=tuple(update.eager), memory=memory,
    )


def _plan_structured(workload: Workload, spec: OptimizerSpec, nodes: int, arrays, update: _Update, memory: dict,
                     common: dict) -> StepPlan:
    """Eigen-Adam, SOAP, RACS, Alice, Alice-0: the routed matrices' ops (costs_structured.py) after
    Adam's for the rest; every gradient all-reduced, nothing else."""
    from asprof.simulate.costs_structured import MatrixPlan, add_matrix, state_floats

    mp = MatrixPlan()
    state = 0
    for name, r, c in workload.model.linear_shapes():
        add_matrix(mp, spec.name, r, c, spec.alice_rank)
        state += state_floats(spec.name, r, c, spec.alice_rank)
    update.add(*mp.update)
    memory["optimizer_state"] += mp.moments * STATE_BYTES
    memory["preconditioner"] += (state - mp.moments) * STATE_BYTES
    grads = tuple(n * STATE_BYTES for _, n, _ in arrays)
    memory["comm_buffers"] = 2 * sum(grads) if nodes > 1 else 0
    return StepPlan(**common, grad_arrays=grads, update=tuple(update.compiled), update_eager=tuple(update.eager),
                    memory=memory, stats=tuple(mp.stats), refresh_pre=tuple(mp.refresh_pre),
                    refresh_cpu=tuple(mp.refresh_cpu), refresh_accel=tuple(mp.refresh_accel),
                    power_pre=tuple(mp.power_pre), power_cpu=tuple(mp.power_cpu), power_post=tuple(mp.power_post))


def ring_bytes_sent(payload: float, nodes: int) -> float:
    """Bytes one rank sends in a ring all-reduce: 2(K−1)/K of the payload (nccl-tests busbw)."""
    return 0.0 if nodes <= 1 else ring_factor(nodes) * payload

"""The workload model: what one data-parallel rank computes per step (DESIGN §4 "Workload").

A LLaMA-style model (:class:`asprof.presets.ModelConfig`, the same config `asprof.train` builds)
and a local batch become lists of :class:`Op` — GEMMs with their shapes and operand layouts,
memory-bound element-wise groups with bytes moved and kernel counts — for the forward and the
backward pass of the model in ``asprof/train/model.py``: RMSNorm, q/k/v/o projections, rotary
embeddings, causal attention, gated SiLU MLP, tied head, cross-entropy.

Counting conventions (estimates, documented in docs/simulator.md):

* GEMM (m×k)·(k×n): 2mnk flop; it touches (mk + kn + mn) elements. Its *layout* is how the
  operands are stored, which changes the BLAS rate (the blas probe measures each): a linear
  layer's forward is x·Wᵀ ("nt": W is stored out×in), its input gradient dY·W ("nn") and its
  weight gradient Xᵀ·dY ("tn", MLX's VJP of a matmul).
* Attention in training is *unfused* on every MLX device: ``mx.fast.scaled_dot_product_attention``
  falls back to its composed ops while a gradient is traced (MLX ``fast.cpp``, and the Metal
  backend's ``use_fallback`` returns true for training): scale·q, the scores q·kᵀ (batched "nt"),
  the causal mask (``where``), a softmax, P·v (batched "nn"); its VJP is four batched GEMMs
  (dP = dO·vᵀ, dv = Pᵀ·dO, dq = dS·k, dkᵀ = qᵀ·dS) and the softmax/where gradients.
* Element-wise ops: bytes are what a kernel must read and write; kernels counts follow the
  unfused MLX graph (each at least one launch).
"""

from __future__ import annotations

from dataclasses import dataclass

from asprof.errors import AsprofError
from asprof.presets import ModelConfig
from asprof.simulate.hardware import ITEMSIZE, HardwareModel

KINDS = ("gemm", "attention", "elementwise", "linalg")

# Graph primitives of one training step of asprof/train/model.py, counted on MLX 0.32's graph
# (mx.export_to_dot of the loss and gradients, layers 1..3; docs/simulator.md §3): per block and
# for the rest (embedding, final norm, head, cross-entropy), forward and backward. Where MLX has
# no fused kernel for rms_norm and rope (its CPU backend) it runs their composed fallbacks: 10 and
# 28 more primitives per call forward, about 21 and 20 more backward.
PRIMITIVES = {"fwd_layer": 145, "bwd_layer": 155, "fwd_rest": 30, "bwd_rest": 44}
FALLBACK_EXTRA = {"rms_fwd": 10, "rope_fwd": 28, "rms_bwd": 21, "rope_bwd": 20}


@dataclass(frozen=True)
class Op:
    """``count`` identical operations. GEMM: (m×k)·(k×n), ``batch`` of them. Attention: a fused
    kernel of ``flop`` touching ``bytes``. Element-wise: ``bytes`` moved by ``kernels`` kernels.
    Linalg: ``linalg`` (eigh / qr / power_step) of an n×n matrix on the CPU stream."""

    name: str
    kind: str
    count: int = 1
    m: int = 0
    n: int = 0
    k: int = 0
    batch: int = 1
    bytes: float = 0.0
    kernels: int = 1
    flop_each: float = 0.0
    linalg: str = ""
    scale: float = 1.0  # linalg: fraction of the measured n×n cost (a QR of an n×k panel)
    dtype: str = "float32"
    device: str = "accel"  # "accel" or "cpu"
    layout: str = "nn"  # GEMM operand storage: "nn" A·B, "nt" A·Bᵀ (B stored n×k), "tn" Aᵀ·B
    exp: float = 0.0  # element-wise: exp evaluations per instance (softmax, logsumexp, sigmoid)
    cpu_fallback: bool = False  # only where MLX runs its composed fallback (no Metal): see PRIMITIVES

    @property
    def flop(self) -> float:
        if self.kind == "gemm":
            return 2.0 * self.m * self.n * self.k * self.batch * self.count
        return self.flop_each * self.count


def op_time(hw: HardwareModel, op: Op) -> float:
    """Seconds for all ``op.count`` instances on ``hw``, inside one evaluated graph.

    Dispatch is pipelined with execution (MLX encodes the next kernel while the last one runs),
    so a kernel costs the larger of its work and the in-graph dispatch cost, not their sum. Every
    primitive of the lazy graph is dispatched, views and scalar ops too (MLX schedules each array's
    primitive; the launch probe's ``graph`` chain measures that cost), so ``kernels`` counts
    primitives. An element-wise group of k primitives costs k of bytes/k each, plus its exp
    evaluations. The sync at the end of an evaluation is charged separately (``hw.launch_s``).
    """
    if op.count == 0 or (op.cpu_fallback and hw.accelerator == "metal"):
        return 0.0
    if op.kind == "gemm":  # the matmul, plus its view primitives (transpose, flatten) at dispatch cost
        one = max(hw.dispatch_s, hw.gemm_work(op.m, op.n, op.k, op.batch, op.dtype, op.layout))
        one += (max(op.kernels, 1) - 1) * hw.dispatch_s
    elif op.kind == "attention":
        one = max(hw.dispatch_s, hw.flop_work(op.flop_each, op.dtype), hw.elementwise_work(op.bytes, op.device))
    elif op.kind == "elementwise":
        # k kernels each moving bytes/k: small kernels run at the (lower) bandwidth measured for
        # their own size, not at that of one kernel moving everything
        k = max(op.kernels, 1)
        per_kernel = max(hw.dispatch_s, hw.elementwise_work(op.bytes / k, op.device))
        one = k * per_kernel + hw.exp_work(op.exp)
    elif op.kind == "linalg":
        one = op.scale * hw.linalg_time(op.linalg, op.n)
    else:
        raise ValueError(f"unknown op kind {op.kind!r}")
    return op.count * one


def ops_time(hw: HardwareModel, ops) -> float:
    return sum(op_time(hw, op) for op in ops)


@dataclass(frozen=True)
class Workload:
    """One rank's share of a data-parallel step: ``batch`` sequences of ``seq`` tokens."""

    model: ModelConfig
    batch: int
    seq: int
    dtype: str = "float32"

    def __post_init__(self):
        for f in ("batch", "seq"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise AsprofError(f"{f} must be a positive integer, got {v!r}")
        if self.dtype not in ITEMSIZE:
            raise AsprofError(f"dtype must be one of {', '.join(ITEMSIZE)}, got {self.dtype!r}")

    @property
    def tokens(self) -> int:
        return self.batch * self.seq

    @property
    def itemsize(self) -> int:
        return ITEMSIZE[self.dtype]

    # -- parameters -----------------------------------------------------------------------------
    def param_arrays(self) -> list[tuple[str, int, bool]]:
        """(name, elements, is a KFAC layer) in the order ``tree_flatten`` gives the model's
        parameters (embedding, per block: norms and projections, final norm, untied head), the
        order the all-reduce buckets are filled in."""
        cfg = self.model
        kfac = {name: r * c for name, r, c in cfg.linear_shapes()}
        out = [("tok_embeddings.weight", cfg.vocab * cfg.hidden, False)]
        for i in range(cfg.layers):
            p = f"layers.{i}"
            out.append((f"{p}.attention_norm.weight", cfg.hidden, False))
            out += [(f"{p}.attention.{x}_proj.weight", kfac[f"{p}.attention.{x}_proj"], True) for x in "qkvo"]
            out.append((f"{p}.mlp_norm.weight", cfg.hidden, False))
            out += [(f"{p}.mlp.{x}_proj.weight", kfac[f"{p}.mlp.{x}_proj"], True) for x in ("gate", "up", "down")]
        out.append(("norm.weight", cfg.hidden, False))
        if not cfg.tied_embeddings:
            out.append(("output.weight", cfg.vocab * cfg.hidden, False))
        return out

    # -- compute --------------------------------------------------------------------------------
    def forward_ops(self) -> list[Op]:
        c, T, b, dt = self.model, self.tokens, self.itemsize, self.dtype
        h, f, L, V = c.hidden, c.ffn, c.layers, c.vocab
        H, d, S, B = c.heads, c.head_dim, self.seq, self.batch
        A = B * H * S * S  # attention score elements of one layer
        ops = [
            Op("embedding gather", "elementwise", 1, bytes=2 * T * h * b, kernels=2, dtype=dt),
            Op("rms_norm", "elementwise", 2 * L + 1, bytes=2 * T * h * b, dtype=dt),
            Op("q/k/v/o proj", "gemm", 4 * L, m=T, n=h, k=h, dtype=dt, layout="nt", kernels=4),
            Op("rope", "elementwise", 2 * L, bytes=2 * T * h * b, dtype=dt),
            Op("attention scale·q", "elementwise", L, bytes=2 * T * h * b, kernels=2, dtype=dt),
            Op("attention scores q·kᵀ", "gemm", L, m=S, n=S, k=d, batch=B * H, dtype=dt, layout="nt", kernels=2),
            Op("causal mask + where", "elementwise", L, bytes=2 * A * b, kernels=7, dtype=dt),
            Op("softmax", "elementwise", L, bytes=2 * A * b, exp=A, dtype=dt),
            Op("attention P·v", "gemm", L, m=S, n=d, k=S, batch=B * H, dtype=dt),
            Op("attention heads (views) + rows copy", "elementwise", L, bytes=2 * T * h * b, kernels=8, dtype=dt),
            Op("gate/up proj", "gemm", 2 * L, m=T, n=f, k=h, dtype=dt, layout="nt", kernels=4),
            Op("silu(gate)*up", "elementwise", L, bytes=8 * T * f * b, kernels=2, exp=T * f, dtype=dt),
            Op("down proj", "gemm", L, m=T, n=h, k=f, dtype=dt, layout="nt", kernels=4),
            Op("residual add", "elementwise", 2 * L, bytes=3 * T * h * b, dtype=dt),
            Op("head (tied)" if c.tied_embeddings else "head", "gemm", 1, m=T, n=V, k=h, dtype=dt, layout="nt",
               kernels=4),
            Op("cross-entropy (logsumexp)", "elementwise", 1, bytes=2 * T * V * b, kernels=13, exp=T * V, dtype=dt),
        ]
        return ops + _rest(ops, L, "fwd", dt, fallback=(2 * L + 1) * FALLBACK_EXTRA["rms_fwd"]
                           + 2 * L * FALLBACK_EXTRA["rope_fwd"],
                           fallback_bytes=((2 * L + 1) * 8 + 2 * L * 9) * T * h * b)

    def backward_ops(self) -> list[Op]:
        c, T, b, dt = self.model, self.tokens, self.itemsize, self.dtype
        h, f, L, V = c.hidden, c.ffn, c.layers, c.vocab
        H, d, S, B = c.heads, c.head_dim, self.seq, self.batch
        A = B * H * S * S
        ops = [
            Op("cross-entropy grad (softmax)", "elementwise", 1, bytes=3 * T * V * b, kernels=4, exp=T * V, dtype=dt),
            Op("head dX", "gemm", 1, m=T, n=h, k=V, dtype=dt),
            Op("head dW", "gemm", 1, m=h, n=V, k=T, dtype=dt, layout="tn"),
            Op("q/k/v/o dX", "gemm", 4 * L, m=T, n=h, k=h, dtype=dt),
            Op("q/k/v/o dW", "gemm", 4 * L, m=h, n=h, k=T, dtype=dt, layout="tn"),
            Op("gate/up dX", "gemm", 2 * L, m=T, n=h, k=f, dtype=dt),
            Op("gate/up dW", "gemm", 2 * L, m=h, n=f, k=T, dtype=dt, layout="tn"),
            Op("down dX", "gemm", L, m=T, n=f, k=h, dtype=dt),
            Op("down dW", "gemm", L, m=f, n=h, k=T, dtype=dt, layout="tn"),
            # the VJP of the unfused attention: dP = dO·vᵀ, dv = Pᵀ·dO, dq = dS·k, dkᵀ = qᵀ·dS
            Op("attention dP = dO·vᵀ", "gemm", L, m=S, n=S, k=d, batch=B * H, dtype=dt, layout="nt"),
            Op("attention dv = Pᵀ·dO", "gemm", L, m=S, n=d, k=S, batch=B * H, dtype=dt, layout="tn"),
            Op("attention dq = dS·k", "gemm", L, m=S, n=d, k=S, batch=B * H, dtype=dt),
            Op("attention dkᵀ = qᵀ·dS", "gemm", L, m=d, n=S, k=S, batch=B * H, dtype=dt, layout="tn"),
            # softmax VJP s·(g − Σ s·g): multiply, sum, multiply, subtract; then the where's VJP
            Op("softmax + mask grad", "elementwise", L, bytes=11 * A * b, kernels=5, dtype=dt),
            Op("attention copies + scale grad", "elementwise", L, bytes=4 * T * h * b, kernels=2, dtype=dt),
            Op("rms_norm grad", "elementwise", 2 * L + 1, bytes=4 * T * h * b, kernels=3, dtype=dt),
            Op("rope grad", "elementwise", 2 * L, bytes=2 * T * h * b, dtype=dt),
            # the VJP of the compiled silu re-traces it: sigmoid(gate) is computed again
            Op("silu*up grad", "elementwise", L, bytes=10 * T * f * b, kernels=5, exp=T * f, dtype=dt),
            Op("gradient accumulation (branches)", "elementwise", 5 * L, bytes=3 * T * h * b, dtype=dt),
            Op("embedding grad (scatter-add, tied sum)", "elementwise", 1,
               bytes=(T * h + 4 * V * h) * b, kernels=3, dtype=dt),
        ]
        return ops + _rest(ops, L, "bwd", dt, fallback=(2 * L + 1) * FALLBACK_EXTRA["rms_bwd"]
                           + 2 * L * FALLBACK_EXTRA["rope_bwd"],
                           fallback_bytes=((2 * L + 1) * 12 + 2 * L * 9) * T * h * b)

    def model_flop(self) -> float:
        """Forward + backward FLOPs of the model (the MFU numerator; no optimizer work)."""
        return sum(op.flop for op in self.forward_ops() + self.backward_ops())

    # -- memory ---------------------------------------------------------------------------------
    def activation_bytes(self) -> int:
        """Tensors kept from forward to backward, plus the backward's score-sized temporaries
        of one layer and the logits and their gradient (an estimate; docs/simulator.md)."""
        c, T, b = self.model, self.tokens, self.itemsize
        h, f, L, V = c.hidden, c.ffn, c.layers, c.vocab
        A = self.batch * c.heads * self.seq * self.seq
        # norm in/out ×2, q,k,v (+rope), attn out, residuals; gate, up, silu, product; the softmax
        # output P (unfused attention keeps it for the backward pass)
        per_layer = T * (10 * h + 4 * f) + A
        return (L * per_layer + A + 2 * T * h + 2 * T * V) * b  # + dS of the layer being differentiated


def _rest(ops: list[Op], layers: int, which: str, dtype: str, fallback: int, fallback_bytes: float) -> list[Op]:
    """The pass's other graph primitives (views, scalar and mask ops) at dispatch cost, so the
    pass has :data:`PRIMITIVES` primitives in all; plus, where MLX has no fused rms_norm/rope
    kernels, their fallbacks' extra ``fallback`` primitives moving ``fallback_bytes`` (an
    estimate: ~8 (rms_norm) and ~9 (rope) arrays of the activations' size per call forward)."""
    total = layers * PRIMITIVES[f"{which}_layer"] + PRIMITIVES[f"{which}_rest"] - fallback
    listed = sum(op.count * max(op.kernels, 1) for op in ops)
    out = []
    if total > listed:
        out.append(Op(f"other graph primitives ({which})", "elementwise", 1, kernels=total - listed, dtype=dtype))
    if fallback:
        out.append(Op(f"rms_norm/rope CPU fallbacks ({which})", "elementwise", 1, kernels=fallback,
                      bytes=fallback_bytes, dtype=dtype, cpu_fallback=True))
    return out

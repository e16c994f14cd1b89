"""Workload and optimizer cost plans against independent formulas and the optimizers' own
accounting (asprof/optimizers/accounting.py, kpop_contract.md)."""

import math

import pytest

from asprof.errors import AsprofError
from asprof.presets import PRESETS, ModelConfig
from asprof.simulate.costs import OptimizerSpec, plan_step, reduced_dim
from asprof.simulate.workload import Workload

MODELS = [PRESETS[n] for n in ("tiny", "kpop-1.7m", "small", "medium-35m")]


@pytest.mark.parametrize("cfg", MODELS, ids=lambda c: c.name)
def test_model_flops_match_the_textbook_count(cfg):
    B, S = 3, 128
    w = Workload(cfg, B, S)
    T = B * S
    matrices = sum(r * c for _, r, c in cfg.linear_shapes()) + cfg.vocab * cfg.hidden  # incl. the tied head
    attn_fwd = 4.0 * B * cfg.heads * S * S * cfg.head_dim * cfg.layers
    fwd = 2.0 * T * matrices + attn_fwd
    # backward: two GEMMs per matrix; the unfused attention's VJP is 4 score-sized GEMMs (2× fwd),
    # no recompute (MLX keeps P from the forward pass while a gradient is traced)
    bwd = 4.0 * T * matrices + 2.0 * attn_fwd
    assert sum(op.flop for op in w.forward_ops()) == pytest.approx(fwd, rel=1e-12)
    assert w.model_flop() == pytest.approx(fwd + bwd, rel=1e-12)


def test_param_arrays_cover_the_model():
    for cfg in MODELS + [ModelConfig("untied", 2, 64, 128, 4, 300, 32, tied_embeddings=False)]:
        arrays = Workload(cfg, 1, 8).param_arrays()
        assert sum(n for _, n, _ in arrays) == cfg.n_params()
        assert [a for a, _, k in arrays if k] == [f"{n}.weight" for n, _, _ in cfg.linear_shapes()]


@pytest.mark.parametrize("cfg", MODELS, ids=lambda c: c.name)
@pytest.mark.parametrize("opt, s", [("adam", 1.0), ("kpop", 1.0), ("topkpop", 1.0), ("topkpop", 0.1), ("topkpop", 0.37)])
def test_memory_and_payloads_agree_with_the_optimizers_accounting(cfg, opt, s):
    acc = pytest.importorskip("asprof.optimizers.accounting")
    plan = plan_step(Workload(cfg, 2, 16), OptimizerSpec(opt, sparsity=s), nodes=4)
    state = plan.memory["optimizer_state"] + plan.memory["preconditioner"]
    assert state == acc.closed_form_state_bytes(cfg, opt, s)
    assert plan.grad_payload == acc.gradient_payload_bytes(cfg, opt, s)
    if opt != "adam":
        assert plan.factor_payload == acc.factor_payload_bytes(cfg)
    assert plan.memory["weights"] == plan.memory["gradients"] == 4 * cfg.n_params()


def test_state_formulas_per_layer():
    cfg = ModelConfig("one", 1, 64, 96, 4, 10, 16)
    shapes = [(r, c) for _, r, c in cfg.linear_shapes()]
    other = cfg.n_params() - sum(r * c for r, c in shapes)
    kpop = plan_step(Workload(cfg, 1, 16), OptimizerSpec("kpop"), 2).memory
    assert kpop["optimizer_state"] == 4 * (2 * other + sum(2 * r * c for r, c in shapes))
    assert kpop["preconditioner"] == 4 * sum(2 * r * r + 2 * c * c for r, c in shapes)
    s = 0.25  # √s·n is an integer for even n: R' = R/2
    top = plan_step(Workload(cfg, 1, 16), OptimizerSpec("topkpop", sparsity=s), 2)
    assert top.memory["optimizer_state"] == 4 * (2 * other + sum(2 * (r // 2) * (c // 2) for r, c in shapes))
    assert top.memory["preconditioner"] == 4 * sum(r * r + c * c + r * r // 2 + c * c // 2 for r, c in shapes)
    assert top.kfac_grad_bytes == s * kpop_plan(cfg).kfac_grad_bytes


def kpop_plan(cfg):
    return plan_step(Workload(cfg, 1, 16), OptimizerSpec("kpop"), 2)


def test_reduced_dim_matches_the_optimizers():
    kpop = pytest.importorskip("asprof.optimizers.accounting")
    for n in (1, 7, 64, 128, 1000):
        for s in (1e-6, 0.01, 0.1, 0.25, 0.5, 0.999, 1.0):
            assert reduced_dim(n, s) == kpop.reduced_dim(n, s)
            assert reduced_dim(n, s) == max(1, min(n, math.ceil(math.sqrt(s) * n - 1e-9)))


def test_refresh_schedule_is_the_optimizers():
    spec = OptimizerSpec("kpop", warmup=3, frequency=4)
    assert spec.refresh_steps(13) == [0, 1, 2, 4, 8, 12]
    assert OptimizerSpec("adam").refresh_steps(50) == []
    assert OptimizerSpec("kpop", warmup=0, frequency=1).refresh_steps(5) == [0, 1, 2, 3, 4]
    mx = pytest.importorskip("mlx.core")  # noqa: F841 - the real optimizer decides the same way
    from asprof.optimizers.kpop import KPOP

    opt = KPOP(1e-3, warmup=3, frequency=4)
    due = []
    for t in range(13):
        opt.steps_done = t
        due.append(opt.refresh_due())
    assert [t for t, d in enumerate(due) if d] == spec.refresh_steps(13)


@pytest.mark.parametrize("kw, msg", [
    (dict(name="sgd"), "unknown optimizer"),
    (dict(name="topkpop", sparsity=0.0), "sparsity"),
    (dict(name="topkpop", sparsity=1.5), "sparsity"),
    (dict(name="kpop", frequency=0), "frequency"),
    (dict(name="kpop", frequency=2.5), "frequency"),
    (dict(name="kpop", warmup=-1), "--warmup must be a non-negative integer"),
    (dict(name="kpop", eig_method="qr"), "--eig-method must be one of auto, eigh, power, subspace"),
])
def test_bad_optimizer_specs(kw, msg):
    with pytest.raises(AsprofError, match=msg):
        OptimizerSpec(**kw)


def test_bad_workloads():
    with pytest.raises(AsprofError, match="batch"):
        Workload(PRESETS["tiny"], 0, 8)
    with pytest.raises(AsprofError, match="seq"):
        Workload(PRESETS["tiny"], 1, -1)
    with pytest.raises(AsprofError, match="dtype"):
        Workload(PRESETS["tiny"], 1, 8, dtype="int8")


def test_adam_math_is_compiled_on_metal_only_like_the_optimizers():
    from test_sim_hardware import make_trace

    from asprof.simulate.cluster import NodeSpec
    from asprof.simulate.hardware import HardwareModel
    from asprof.simulate.steps import _node_costs
    from asprof.simulate.workload import ops_time

    plan = plan_step(Workload(PRESETS["tiny"], 1, 8), OptimizerSpec("adam"), 2)
    # eager: the 29 primitives of the Adam graph (MLX 0.32) plus w + Δ
    assert all(op.kernels == 2 for op in plan.update) and all(op.kernels == 30 for op in plan.update_eager)
    for acc, ops in (("metal", plan.update), ("none", plan.update_eager)):
        hw = HardwareModel.from_trace(make_trace(accelerator=acc))
        assert _node_costs(NodeSpec(hw), plan, 2).update == pytest.approx(ops_time(hw, ops) + hw.launch_s)
    hw = HardwareModel.from_trace(make_trace(accelerator="none"))
    assert ops_time(hw, plan.update_eager) > ops_time(hw, plan.update)


def test_gemm_layouts_follow_mlx_linear_and_its_vjp():
    """x·Wᵀ forward ("nt"), dY·W input gradient ("nn"), Xᵀ·dY weight gradient ("tn")."""
    w = Workload(PRESETS["tiny"], 2, 16)
    fwd = {op.name: op for op in w.forward_ops()}
    bwd = {op.name: op for op in w.backward_ops()}
    assert fwd["q/k/v/o proj"].layout == fwd["gate/up proj"].layout == fwd["down proj"].layout == "nt"
    assert fwd["attention scores q·kᵀ"].layout == "nt" and fwd["attention P·v"].layout == "nn"
    assert bwd["q/k/v/o dX"].layout == "nn" and bwd["q/k/v/o dW"].layout == "tn"
    plan = plan_step(w, OptimizerSpec("kpop"), 1)
    assert {op.layout for op in plan.factors if op.kind == "gemm"} == {"tn"}


def test_transcendental_ops_count_their_exps():
    B, S = 2, 16
    cfg = PRESETS["tiny"]
    w = Workload(cfg, B, S)
    ops = {op.name: op for op in w.forward_ops() + w.backward_ops()}
    assert ops["softmax"].exp == B * cfg.heads * S * S
    assert ops["cross-entropy (logsumexp)"].exp == ops["cross-entropy grad (softmax)"].exp == B * S * cfg.vocab
    assert ops["silu(gate)*up"].exp == B * S * cfg.ffn


@pytest.mark.parametrize("cfg", MODELS, ids=lambda c: c.name)
def test_each_pass_has_the_counted_graph_primitives(cfg):
    from asprof.simulate.workload import FALLBACK_EXTRA, PRIMITIVES

    w, L = Workload(cfg, 2, 16), cfg.layers
    for which, ops in (("fwd", w.forward_ops()), ("bwd", w.backward_ops())):
        total = sum(op.count * max(op.kernels, 1) for op in ops)
        assert total == L * PRIMITIVES[f"{which}_layer"] + PRIMITIVES[f"{which}_rest"]
        fallback = sum(op.kernels for op in ops if op.cpu_fallback)
        assert fallback == (2 * L + 1) * FALLBACK_EXTRA[f"rms_{which}"] + 2 * L * FALLBACK_EXTRA[f"rope_{which}"]


def test_cpu_fallback_primitives_cost_nothing_on_metal():
    from test_sim_hardware import make_trace

    from asprof.simulate.hardware import HardwareModel
    from asprof.simulate.workload import op_time

    (op,) = [o for o in Workload(PRESETS["tiny"], 2, 16).forward_ops() if o.cpu_fallback]
    assert op_time(HardwareModel.from_trace(make_trace(accelerator="metal")), op) == 0.0
    cpu = HardwareModel.from_trace(make_trace(accelerator="none"))
    assert op_time(cpu, op) >= op.kernels * cpu.dispatch_s


def test_factor_plan_follows_the_capture_sharing_stride_and_dtype():
    """kfac.py: one C_b GEMM for q/k/v and one for gate/up (the same input array), over T/k tokens
    with token_stride k, in factor_dtype; kpop.py: one EMA and one decomposition per distinct factor."""
    cfg = PRESETS["tiny"]
    w = Workload(cfg, 2, 16)
    T = w.tokens
    for stride, dtype in ((1, "float32"), (3, "bfloat16")):
        plan = plan_step(w, OptimizerSpec("kpop", factor_token_stride=stride, factor_dtype=dtype), 2)
        gemms = [op for op in plan.factors if op.kind == "gemm"]
        c_gemms = [op for op in gemms if op.name.startswith("factor C_b")]
        assert len(c_gemms) == 4 * cfg.layers and len(gemms) == 11 * cfg.layers  # C: q, o, gate, down
        assert all(op.k == -(-T // stride) and op.dtype == dtype for op in gemms)
        assert len(plan.ema) == len(plan.refresh_cpu) == 11 * cfg.layers
        assert len(plan.factor_arrays) == 14 * cfg.layers  # every Ĉ, R̂ is still all-reduced
    with pytest.raises(AsprofError, match="stride"):
        OptimizerSpec("kpop", factor_token_stride=0)

"""From a finished engine run to the figures `asprof simulate` reports for one optimizer.

* Step times: step t ends when the last rank finishes its update of step t; the mean is the
  makespan over the number of steps, p50/p95 are over the per-step times.
* Breakdown: the critical path (engine.py) tiles the whole run, so its time per task category,
  divided by the number of steps, adds up to the mean step time exactly. Categories: compute
  (forward, backward), exposed communication (the gradient all-reduce: pack, ring, unpack),
  optimizer on the accelerator (KFAC factors, EMA, projection, update), optimizer on the CPU
  (CPU work outside a refresh: none for these optimizers), and the refresh (factor all-reduce,
  eigh/QR on the CPU, sign fix-ups), amortised over the simulated steps.
* Bytes sent per node per step: 2(K−1)/K of the gradient payload (JACCL's mesh: per bucket,
  (K−1)·S up to 32 KiB, collectives.py), plus the factor payload's
  share times the fraction of steps that refresh.
* Tokens/s: K·B·S per mean step. MFU: the model's forward+backward FLOPs per rank per step over
  (mean step × peak), the peak being the trace's blas ``peak`` record, else the best measured
  matmul rate (PaLM appendix B's definition; nanoGPT's estimate_mfu).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from asprof.simulate.collectives import mesh_bytes_sent
from asprof.simulate.costs import OptimizerSpec, StepPlan, bucket_arrays, ring_bytes_sent
from asprof.simulate.engine import Engine
from asprof.simulate.workload import Workload

BREAKDOWN = ("compute", "exposed_comm", "optimizer_accel", "optimizer_cpu", "refresh")
_TILE = {"compute": "compute", "comm": "exposed_comm", "opt_accel": "optimizer_accel", "opt_cpu": "optimizer_cpu",
         "refresh_comm": "refresh", "refresh_cpu": "refresh", "refresh_accel": "refresh"}
_REFRESH = {"refresh_comm": "factor_allreduce", "refresh_cpu": "cpu", "refresh_accel": "accel"}


@dataclass(frozen=True)
class OptimizerResult:
    name: str
    label: str
    sparsity: float
    nodes: int
    steps: int
    step_times_s: tuple[float, ...]
    mean_s: float
    p50_s: float
    p95_s: float
    steady_mean_s: float  # mean over the steps after warm-up
    breakdown_s: dict  # BREAKDOWN -> seconds per step; sums to mean_s
    refresh_detail_s: dict  # factor_allreduce / cpu / accel -> seconds per step (amortised)
    refreshes: int
    bytes_sent: dict  # per node per step
    payload_bytes: dict
    memory_bytes: dict  # per node, by kind, plus "total"
    node_memory_bytes: int  # the smallest node memory in the cluster
    fits: bool
    tokens_per_s: float
    mfu: float
    peak_flops: float
    peak_source: str
    model_flop: float
    events: int
    collapsed: bool
    sampled: bool
    spans: tuple = field(default=(), repr=False)
    # instrumented simulations only: per step, phase -> seconds (slowest rank), like the measured
    # TrainResult.phases_s
    phase_times_s: tuple | None = field(default=None, repr=False)
    # seconds per step each lane of the first simulated rank is busy: accel, cpu, link (energy.py)
    lane_busy_s: dict = field(default_factory=dict)

    def to_dict(self, with_steps: bool = True) -> dict:
        d = {k: getattr(self, k) for k in (
            "name", "label", "sparsity", "nodes", "steps", "mean_s", "p50_s", "p95_s", "steady_mean_s",
            "breakdown_s", "refresh_detail_s", "refreshes", "bytes_sent", "payload_bytes", "memory_bytes",
            "node_memory_bytes", "fits", "tokens_per_s", "mfu", "peak_flops", "peak_source", "model_flop",
            "events", "collapsed", "sampled")}
        if with_steps:
            d["step_times_s"] = list(self.step_times_s)
        return d


def lane_busy(eng: Engine, steps: int) -> dict:
    """Busy seconds per step of the first rank's lanes, by kind: ``accel`` (the accelerator lane,
    or the one lane a CPU-only node shares), ``cpu``, ``link``."""
    busy = {"accel": 0.0, "cpu": 0.0, "link": 0.0}
    first = eng.lanes[0][0] if eng.lanes else None
    for tid in range(len(eng.tags)):
        proc, name = eng.lanes[eng.lane_of(tid)]
        if proc == first:
            kind = "link" if name == "link" else "cpu" if name == "cpu" else "accel"
            busy[kind] += eng.duration(tid)
    return {k: v / steps for k, v in busy.items()}


def summarise(eng: Engine, step_last: list[list[int]], workload: Workload, spec: OptimizerSpec, plan: StepPlan,
              cluster, steps: int, collapsed: bool, sampled: bool) -> OptimizerResult:
    end = eng.end
    ends = [max(end[u] for u in last) for last in step_last]
    times = np.diff(np.asarray([0.0] + ends))
    makespan = ends[-1]
    mean = makespan / steps

    tiles = dict.fromkeys(BREAKDOWN, 0.0)
    detail = dict.fromkeys(_REFRESH.values(), 0.0)
    for tid in eng.critical_path():
        cat = eng.tags[tid][3]
        d = eng.duration(tid)
        tiles[_TILE[cat]] += d
        if cat in _REFRESH:
            detail[_REFRESH[cat]] += d
    breakdown = {k: v / steps for k, v in tiles.items()}
    refresh_detail = {k: v / steps for k, v in detail.items()}

    K = cluster.nodes
    refreshes = len(spec.refresh_steps(steps))
    if cluster.backend == "jaccl":  # per bucket: the mesh changes algorithm at 32 KiB
        def sent(arrays, payload):
            return sum(mesh_bytes_sent(K, sum(b)) for b in bucket_arrays(list(arrays), spec.bucket_bytes))
    else:
        def sent(arrays, payload):
            return ring_bytes_sent(payload, K)
    grad = sent(plan.grad_arrays, plan.grad_payload)
    per_refresh = sent(plan.factor_arrays, plan.factor_payload)
    factors = per_refresh * refreshes / steps
    bytes_sent = {
        "gradients": grad,
        "kfac_gradients": ring_bytes_sent(plan.kfac_grad_bytes, K),
        "factors_amortised": factors,
        "factors_per_refresh": per_refresh,
        "total": grad + factors,
    }
    memory = dict(plan.memory)
    memory["total"] = sum(memory.values())
    node_mem = min(cluster.node(r).hardware.memory_bytes for r in [0] + [r for r, _ in cluster.overrides])

    steady = [x for t, x in enumerate(times) if t >= spec.warmup] if spec.kfac else list(times)
    hw0 = cluster.node(0).hardware
    peak, peak_src = hw0.peak(workload.dtype)
    flop = workload.model_flop()
    return OptimizerResult(
        name=spec.name, label=spec.label, sparsity=spec.effective_sparsity, nodes=K, steps=steps,
        step_times_s=tuple(float(x) for x in times), mean_s=mean,
        p50_s=float(np.percentile(times, 50)), p95_s=float(np.percentile(times, 95)),
        steady_mean_s=float(np.mean(steady)) if steady else mean,
        breakdown_s=breakdown, refresh_detail_s=refresh_detail, refreshes=refreshes, bytes_sent=bytes_sent,
        payload_bytes={"gradients": plan.grad_payload, "factors": plan.factor_payload,
                       "kfac_gradients": plan.kfac_grad_bytes},
        memory_bytes=memory, node_memory_bytes=node_mem, fits=memory["total"] <= node_mem,
        tokens_per_s=K * workload.tokens / mean if mean > 0 else 0.0,
        mfu=flop / (mean * peak) if mean > 0 and peak > 0 else 0.0,
        peak_flops=peak, peak_source=peak_src, model_flop=flop, events=eng.events, lane_busy_s=lane_busy(eng, steps),
        collapsed=collapsed, sampled=sampled,
    )

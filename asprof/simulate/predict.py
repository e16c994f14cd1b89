"""The simulator's public entry: ``predict(workload, optimizers, cluster, sim) -> Prediction``.

Pure: no I/O, no clock. For each optimizer it builds the task graph of ``sim.steps`` training
steps on every rank (costs.py says what a step does, hardware.py what it costs on each node,
collectives.py how the ring moves bytes), runs it on the engine, and reads off the step times,
the critical-path breakdown, bytes sent, memory, tokens/s and MFU (summarise.py).

Per rank and step (kpop_contract.md; lanes per DESIGN §4):

    gpu:  forward → backward → [KFAC factors]
    refresh steps:  gpu: factor EMA → [pack → ring all-reduce of Ĉ, R̂ → unpack] → cpu: eigh per
                    factor → gpu: signs     (evaluated on its own: nothing overlaps it)
    gpu:  [TopKPOP projection] → pack → ring all-reduce of the gradients (link + cpu) → unpack
    gpu:  optimizer update; on other steps the factor EMA runs on the gpu during the ring

and the next step's forward waits for the end of the step. The gradient all-reduce waits for
the whole backward pass (the implementation all-reduces after value_and_grad, contract step 4).

The graph is built in steps.py. Variance: each task's time is multiplied by a factor drawn
(seeded) from the relative spread (timing samples / median) of the trace's measurement of the
same kind (GEMMs, bandwidth-bound ops, CPU linear algebra, all-reduce) nearest in duration.
Profiles without samples are deterministic. Identical nodes without variance are simulated as
one collapsed rank (collectives.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from asprof.errors import AsprofError
from asprof.simulate.cluster import COLLAPSE, Cluster, NodeSpec, SimConfig  # noqa: F401 (re-exported)
from asprof.simulate.costs import OptimizerSpec, buckets, plan_step
from asprof.simulate.engine import Engine
from asprof.simulate.hardware import HardwareModel
from asprof.simulate.steps import simulate_optimizer
from asprof.simulate.summarise import OptimizerResult
from asprof.simulate.workload import Workload


@dataclass(frozen=True)
class Prediction:
    workload: Workload
    nodes: int
    steps: int
    seed: int
    results: tuple[OptimizerResult, ...]
    notes: tuple[str, ...] = ()
    backend: str = "ring"

    def result(self, label: str) -> OptimizerResult:
        for r in self.results:
            if r.label == label or r.name == label:
                return r
        raise KeyError(label)


def _tasks_estimate(workload: Workload, spec: OptimizerSpec, K: int, steps: int) -> int:
    plan = plan_step(workload, spec, K)
    per_ring = 3 * (K - 1) + 2 if K > 1 else 0
    n_grad = len(buckets(list(plan.grad_arrays), spec.bucket_bytes))
    n_fac = len(buckets(list(plan.factor_arrays), spec.bucket_bytes)) if spec.kfac else 0
    refresh = len(spec.refresh_steps(steps))
    return K * (steps * (6 + n_grad * per_ring) + refresh * (2 + n_fac * per_ring))


def predict(workload: Workload, optimizers, cluster: Cluster, sim: SimConfig = SimConfig()) -> Prediction:
    """Simulate ``sim.steps`` steps of each optimizer in ``optimizers`` (OptimizerSpec) on
    ``cluster``. Raises MissingProbeError when the hardware lacks a needed measurement."""
    specs = tuple(optimizers)
    if not specs:
        raise AsprofError("no optimizer to simulate")
    has_noise = sim.variance and any(cluster.node(r).hardware.noise for r in _distinct_ranks(cluster))
    notes = []
    results = []
    for spec in specs:
        if sim.collapse == "always":
            collapsed = True
        elif sim.collapse == "never":
            collapsed = False
        else:
            collapsed = cluster.uniform and not has_noise and cluster.nodes > 1
            if not collapsed and cluster.uniform and cluster.nodes > 1 and \
                    _tasks_estimate(workload, spec, cluster.nodes, sim.steps) > sim.max_tasks:
                collapsed = True
                notes.append(f"{spec.label}: {cluster.nodes} nodes × {sim.steps} steps is too large to simulate every "
                             "rank with variance; identical ranks were collapsed and sampling was turned off")
        if collapsed and not cluster.uniform:
            raise AsprofError("cannot collapse ranks of a heterogeneous cluster (per-node traces or slow-downs)")
        result, eng = simulate_optimizer(workload, spec, cluster, sim, collapsed)
        if sim.timeline:
            result = replace(result, spans=_spans(eng))
        results.append(result)
    if has_noise:
        notes.append(f"task times sampled from the trace's measured spread (seed {sim.seed})")
    if any(r.collapsed for r in results):
        notes.append("identical nodes simulated as one collapsed rank (exact without variance)")
    for spec in _distinct_hardware(cluster):
        notes += list(spec.notes)
    return Prediction(workload=workload, nodes=cluster.nodes, steps=sim.steps, seed=sim.seed,
                      results=tuple(results), notes=tuple(dict.fromkeys(notes)), backend=cluster.backend)


def _distinct_ranks(cluster: Cluster) -> list[int]:
    return [0] + [r for r, _ in cluster.overrides]


def _distinct_hardware(cluster: Cluster) -> list[HardwareModel]:
    seen, out = set(), []
    for r in _distinct_ranks(cluster):
        hw = cluster.node(r).hardware
        if id(hw) not in seen:
            seen.add(id(hw))
            out.append(hw)
    return out


def _spans(eng: Engine) -> tuple:
    """(rank, lane name, task name, category, step, start_s, duration_s, on the critical path)
    for every task."""
    crit = set(eng.critical_path())
    out = []
    for tid, tag in enumerate(eng.tags):
        rank, step, name, cat = tag
        out.append((rank, eng.lanes[eng.lane_of(tid)][1], name, cat, step, eng.start[tid], eng.duration(tid),
                    tid in crit))
    return tuple(out)

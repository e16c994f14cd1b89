"""The task graph of ``steps`` training steps of one optimizer on every rank (or on one
collapsed rank), run on the engine. See predict.py for the step structure it builds."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from asprof.simulate.cluster import Cluster, NodeSpec, SimConfig
from asprof.simulate.collectives import RingNode, mesh_allreduce, mesh_phases, ring_allreduce
from asprof.simulate.costs import OptimizerSpec, StepPlan, bucket_arrays, plan_step
from asprof.simulate.engine import Engine
from asprof.simulate.memory_pressure import paging_s
from asprof.simulate.summarise import OptimizerResult, summarise
from asprof.simulate.workload import Workload, ops_time

# The phases of asprof.train.loop (kpop_contract.md, "Instrumented mode"), in step order.
PHASE_ORDER = ("fwd_bwd", "factor_ema", "refresh", "grad_allreduce", "optimizer")


class _Sampler:
    """Seeded multiplicative noise: ``sampler(category, d)`` is ``d`` times a factor drawn from
    the relative spread of the trace's measurement of that category closest to ``d`` in
    duration (log scale); factors are drawn in blocks for speed. Without an rng it returns d.

    A measurement shorter than the task lends its deviations as *absolute* delays: a sample
    s of a median-m measurement moves a task of d ≥ m by s − m, i.e. the factor is
    1 + (s/m − 1)·m/d. A 100x sample of a 50 µs op is a 5 ms hiccup (a thread woken late), not
    a hundredfold longer 100 ms backward pass."""

    BLOCK = 256

    def __init__(self, pools: dict, rng: np.random.Generator | None):
        self.pools = {k: v for k, v in pools.items() if k != "state"} if rng is not None else {}
        self.rng = rng
        self.bufs: dict = {}
        self.step_factor = 1.0  # the machine's speed this step (set by the graph builder)

    def factor(self, category: str, duration: float) -> float:
        pool = self.pools.get(category)
        if not pool or duration <= 0:
            return 1.0
        key = (category, duration)
        buf = self.bufs.get(key)
        if buf is None:
            medians = np.log([m for m, _ in pool])
            median, samples = pool[int(np.argmin(np.abs(medians - math.log(duration))))]
            scale = min(1.0, median / duration)
            buf = self.bufs[key] = [1.0 + (np.asarray(samples) - 1.0) * scale, []]
        if not buf[1]:
            buf[1] = self.rng.choice(buf[0], self.BLOCK).tolist()
        return buf[1].pop()

    def __call__(self, category: str, duration: float) -> float:
        if not self.pools:
            return duration * self.step_factor
        return duration * self.factor(category, duration) * self.step_factor


@dataclass
class _NodeCosts:
    """Seconds of each phase of a step on one node (slow-downs applied)."""

    spec: NodeSpec
    fwd: float = 0.0
    bwd: float = 0.0
    factors: float = 0.0
    ema: float = 0.0
    eig_cpu: float = 0.0
    eig_accel: float = 0.0
    power_pre: float = 0.0
    power_cpu: float = 0.0
    power_post: float = 0.0
    project: float = 0.0
    update: float = 0.0
    stats: float = 0.0  # structured optimizers: statistics EMA (in the update, or in the refresh)
    refresh_pre: float = 0.0  # structured optimizers: accelerator work before the refresh's CPU part
    alpha: float = 0.0
    beta: float = 1.0
    cache: dict = field(default_factory=dict)

    def copy_s(self, nbytes: float) -> float:  # concatenate into / divide the bucket (2 bytes moved per byte)
        key = ("copy", nbytes)
        if key not in self.cache:
            hw = self.spec.hardware
            self.cache[key] = self.spec.gpu * max(hw.dispatch_s, hw.elementwise_work(2 * nbytes, "accel"))
        return self.cache[key]

    def ring(self, nbytes: float, K: int) -> tuple[float, float]:
        key = ("ring", nbytes, K)
        if key not in self.cache:
            hw, chunk = self.spec.hardware, nbytes / K
            red = hw.elementwise_work(3 * chunk, "cpu")  # read two chunks, write one
            measured = hw.allreduce_time(nbytes, K)
            if measured is not None:
                # this ring size was probed: its measured all_sum time, reductions included, split
                # over the 2(K-1) ring steps; the reductions go to the CPU lane as below
                per_step = measured / (2 * (K - 1))
                red = min(red, per_step)
                self.cache[key] = (self.spec.link * (per_step - red / 2), self.spec.cpu * red)
                return self.cache[key]
            wire = chunk / self.beta
            if hw.link_includes_reduction:
                # a measured fit has the reductions inside α, β: move them to the CPU lane so the
                # uniform ring still takes exactly the fitted time (collectives.py eq. 1)
                red = min(red, 2 * wire)
                wire -= red / 2
            self.cache[key] = (self.spec.link * (self.alpha + wire), self.spec.cpu * red)
        return self.cache[key]


    def mesh(self, nbytes: float, K: int) -> list[tuple[float, float]]:
        """JACCL's mesh (collectives.py eqs. 2-3): per phase (link seconds, CPU seconds)."""
        key = ("mesh", nbytes, K)
        if key not in self.cache:
            hw = self.spec.hardware
            self.cache[key] = [(self.spec.link * (self.alpha + b / self.beta),
                                self.spec.cpu * (K - 1) * hw.elementwise_work(3 * b, "cpu") if red else 0.0)
                               for b, red in mesh_phases(K, nbytes)]
        return self.cache[key]


def _node_costs(spec: NodeSpec, plan: StepPlan, K: int, compiled_update: bool | None = None) -> _NodeCosts:
    hw, g, c = spec.hardware, spec.gpu, spec.cpu
    nc = _NodeCosts(spec)
    # unified memory: a step above the GPU's resident share pages the excess each step (memory_pressure.py)
    nc.fwd = g * (ops_time(hw, plan.forward) + paging_s(sum(plan.memory.values()), hw.memory_bytes,
                                                        hw.accelerator == "metal", hw.working_set_bytes, hw.page_in_Bps))
    nc.bwd = g * ops_time(hw, plan.backward)
    nc.factors = g * ops_time(hw, plan.factors)
    nc.ema = g * ops_time(hw, plan.ema)
    nc.eig_cpu = c * ops_time(hw, plan.refresh_cpu)
    # the refresh is evaluated on its own (kpop.py refresh): one sync, charged to its last task
    nc.eig_accel = g * (ops_time(hw, plan.refresh_accel) + hw.launch_s)
    nc.stats = g * ops_time(hw, plan.stats)
    nc.refresh_pre = g * ops_time(hw, plan.refresh_pre)
    if plan.spec.iterative_refresh or (plan.spec.structured and plan.power_cpu):
        nc.power_pre = g * ops_time(hw, plan.power_pre)
        nc.power_cpu = c * ops_time(hw, plan.power_cpu)
        nc.power_post = g * (ops_time(hw, plan.power_post) + hw.launch_s)
    nc.project = g * ops_time(hw, plan.project)
    # the rest of the step is one lazy graph evaluated once (contract step 5): one sync per step.
    # The optimizers compile the Adam math on Metal only (docs/optimizers.md, "Compilation").
    compiled = hw.accelerator == "metal" if compiled_update is None else compiled_update
    update = plan.update if compiled else plan.update_eager
    nc.update = g * (ops_time(hw, update) + hw.launch_s)
    if K > 1:
        nc.alpha, nc.beta = hw.link()
    return nc


def simulate_optimizer(workload: Workload, spec: OptimizerSpec, cluster: Cluster, sim: SimConfig,
                       collapsed: bool) -> tuple[OptimizerResult, Engine]:
    """Build and run ``sim.steps`` steps of ``spec`` on every rank of ``cluster`` (or on one
    representative rank when ``collapsed``); returns the summary and the finished engine."""
    K = cluster.nodes
    plan = plan_step(workload, spec, K)
    ranks = [0] if collapsed else list(range(K))
    cost_by_spec: dict = {}
    costs = []
    for r in ranks:
        ns = cluster.node(r)
        key = id(ns.hardware), ns.gpu, ns.cpu, ns.link
        if key not in cost_by_spec:
            cost_by_spec[key] = _node_costs(ns, plan, K, sim.compiled_update)
        costs.append(cost_by_spec[key])
    noisy = sim.variance and not collapsed
    samplers = [_Sampler(c.spec.hardware.noise, np.random.default_rng([sim.seed, r]) if noisy else None)
                for c, r in zip(costs, ranks)]

    eng = Engine()
    gpu, cpu, link = [], [], []
    for c, r in zip(costs, ranks):
        shared = c.spec.hardware.shared_lanes
        gpu.append(eng.lane(r, "cpu (accelerator and CPU streams share the cores)" if shared else "gpu"))
        cpu.append(gpu[-1] if shared else eng.lane(r, "cpu"))
        link.append(eng.lane(r, "link") if K > 1 else -1)
    P = len(ranks)
    task = eng.add  # every dependency below is an id the engine just returned
    # (bytes, arrays) per bucket; a one-array bucket is reshaped, not concatenated (comm.py)
    grad_buckets = [(sum(b), len(b)) for b in bucket_arrays(list(plan.grad_arrays), spec.bucket_bytes)]
    factor_buckets = [(sum(b), len(b)) for b in bucket_arrays(list(plan.factor_arrays), spec.bucket_bytes)]
    update_noise = "elementwise" if spec.name in ("adam", "racs") else "gemm"

    def host_speed(i: int) -> float:
        """The step's machine-speed factor for rank i's ring work, when the link is emulated on
        the host that computes (loopback, namespaces); 1 across real links."""
        return samplers[i].step_factor if costs[i].spec.hardware.link_on_host else 1.0

    def allreduce(t: int, sizes: list[tuple[int, int]], ready: list[list[int]], name: str, cat: str) -> list[list[int]]:
        """Bucketed all-reduce: per bucket pack (gpu) → ring → unpack (gpu). The packs only need
        the data; the rings run one after another (one communication stream)."""
        prev = [[] for _ in range(P)]
        unpacked = [[] for _ in range(P)]
        for b, (size, arrays) in enumerate(sizes):
            packs = [[task(gpu[i], samplers[i]("elementwise", costs[i].copy_s(size)) if arrays > 1 else 0.0,
                           ready[i], (r, t, f"{name}: pack bucket {b}", cat))] + prev[i]
                     for i, r in enumerate(ranks)]
            if cluster.backend == "jaccl":
                nodes = [RingNode(link[i], cpu[i], 0.0, 0.0, (r, t, f"{name}: mesh send", cat),
                                  (r, t, f"{name}: mesh reduce", cat)) for i, r in enumerate(ranks)]
                phases = [[(s * (samplers[i].factor("link", s) * host_speed(i) if noisy else 1.0),
                            c * (samplers[i].factor("elementwise", c) * host_speed(i) if noisy and c else 1.0))
                           for s, c in costs[i].mesh(size, K)] for i in range(P)]
                done = mesh_allreduce(eng, nodes, K, packs, phases)
                for i, r in enumerate(ranks):
                    unpacked[i].append(task(gpu[i], samplers[i]("elementwise", costs[i].copy_s(size)), done[i],
                                            (r, t, f"{name}: unpack bucket {b}", cat)))
                prev = done
                continue
            nodes = []
            for i, r in enumerate(ranks):
                step_s, red_s = costs[i].ring(size, K)
                nodes.append(RingNode(link[i], cpu[i], step_s, red_s,
                                      (r, t, f"{name}: ring send", cat), (r, t, f"{name}: ring reduce", cat)))
            steps = 2 * (K - 1)  # a collective's whole duration picks the all_sum measurement
            done = ring_allreduce(eng, nodes, K, packs,
                                  link_factor=(lambda i: samplers[i].factor("link", steps * nodes[i].step_s)
                                               * host_speed(i)) if noisy else None,
                                  cpu_factor=(lambda i: samplers[i].factor("elementwise", nodes[i].reduce_s)
                                              * host_speed(i)) if noisy else None)
            for i, r in enumerate(ranks):
                unpacked[i].append(task(gpu[i], samplers[i]("elementwise", costs[i].copy_s(size)), done[i],
                                        (r, t, f"{name}: unpack bucket {b}", cat)))
            prev = done
        return unpacked

    inst = sim.instrumented
    prev = [[] for _ in range(P)]
    step_last: list[list[int]] = []
    phase_ends: list[list[dict]] = []  # per step, per rank: phase -> the task that closes it
    first_refresh_done = False

    def sync(i: int, r: int, t: int, deps: list[int], phase: str, cat: str) -> list[int]:
        """Instrumented pass: ``mx.eval`` closes ``phase`` on rank i (one launch/sync)."""
        x = task(gpu[i], costs[i].spec.gpu * costs[i].spec.hardware.launch_s, deps, (r, t, f"sync: {phase}", cat))
        ends[i][phase] = x
        return [x]

    # The machine's speed varies between repeats of the probe's measurements (a shared host's
    # slow and fast spells): one speed factor per step, drawn from that spread (mean 1), scales
    # every compute task of the step; ranks on the same hardware model share the draw (one host).
    state_rng = np.random.default_rng([sim.seed, 10**6]) if noisy else None
    states = {}
    for c in costs:
        pool = c.spec.hardware.noise.get("state") if noisy else None
        if pool:
            states[id(c.spec.hardware)] = np.asarray(pool)

    for t in range(sim.steps):
        draws = {h: float(state_rng.choice(pool)) for h, pool in states.items()}
        for c, smp in zip(costs, samplers):
            smp.step_factor = draws.get(id(c.spec.hardware), 1.0)
        refresh = spec.refresh_due(t)
        ends = [{} for _ in range(P)]
        cur, grads = [], []
        for i, r in enumerate(ranks):
            c, smp = costs[i], samplers[i]
            x = task(gpu[i], smp("gemm", c.fwd), prev[i], (r, t, "forward", "compute"))
            x = task(gpu[i], smp("gemm", c.bwd), [x], (r, t, "backward", "compute"))
            if spec.kfac:
                x = task(gpu[i], smp("gemm", c.factors), [x], (r, t, "KFAC factors", "opt_accel"))
            if inst:
                x = sync(i, r, t, [x], "fwd_bwd", "compute")[0]
            grads.append(x)
            if spec.kfac and (refresh or inst):  # the refresh (or the instrumented pass) evaluates the EMA first
                x = task(gpu[i], smp("elementwise", c.ema), [x], (r, t, "factor EMA", "opt_accel"))
                if inst:
                    x = sync(i, r, t, [x], "factor_ema", "opt_accel")[0]
            cur.append([x])
        if refresh and spec.kfac:
            if K > 1:
                cur = allreduce(t, factor_buckets, cur, "factor all-reduce", "refresh_comm")
            power = spec.iterative_refresh and first_refresh_done
            for i, r in enumerate(ranks):
                c, smp = costs[i], samplers[i]
                if power:  # M·Q on the accelerator, QR on the CPU, Rayleigh sort on the accelerator
                    x = task(gpu[i], smp("gemm", c.power_pre), cur[i], (r, t, "power step M·Q", "refresh_accel"))
                    x = task(cpu[i], smp("cpu", c.power_cpu), [x], (r, t, "power step QR", "refresh_cpu"))
                    x = task(gpu[i], smp("gemm", c.power_post), [x], (r, t, "Rayleigh sort + signs", "refresh_accel"))
                else:
                    x = task(cpu[i], smp("cpu", c.eig_cpu), cur[i], (r, t, "eigh (CPU stream)", "refresh_cpu"))
                    x = task(gpu[i], smp("elementwise", c.eig_accel), [x], (r, t, "eigenvector signs", "refresh_accel"))
                cur[i] = [x]
                if inst:  # the refresh evaluates itself (its sync is in eig_accel / power_post)
                    ends[i]["refresh"] = x
            first_refresh_done = True
        if spec.name == "topkpop":
            cur = [[task(gpu[i], samplers[i]("gemm", costs[i].project), cur[i], (r, t, "project G' = Q_Rᵀ G Q_C", "opt_accel"))]
                   for i, r in enumerate(ranks)]
        if K > 1:
            cur = allreduce(t, grad_buckets, cur, "gradient all-reduce", "comm")
        if inst:
            cur = [sync(i, r, t, cur[i], "grad_allreduce", "comm") for i, r in enumerate(ranks)]
        if refresh and spec.structured:
            # Eigen-Adam/SOAP/Alice: the refresh needs the averaged gradient, so it follows the
            # all-reduce, at the start of the update phase, evaluated on its own (structured.py)
            power = first_refresh_done and bool(plan.power_cpu)  # Alice: subspace iteration
            for i, r in enumerate(ranks):
                c, smp = costs[i], samplers[i]
                pre, cpu_s, post = (c.power_pre, c.power_cpu, c.power_post) if power else \
                    (c.refresh_pre, c.eig_cpu, c.eig_accel)
                x = task(gpu[i], smp("gemm", pre), cur[i], (r, t, "basis statistics", "refresh_accel"))
                x = task(cpu[i], smp("cpu", cpu_s), [x], (r, t, "eigh / QR (CPU stream)", "refresh_cpu"))
                x = task(gpu[i], smp("elementwise", post), [x], (r, t, "basis signs", "refresh_accel"))
                cur[i] = [x]
            first_refresh_done = True
        if spec.kfac and not refresh and not inst:
            # The EMA is in the same lazy graph as the all-reduce and the update but feeds neither;
            # MLX reaches it after them (mx.eval(loss, parameters, state)), so it runs on the
            # accelerator while the ring runs on the links and CPUs, and the step waits for it.
            for i, r in enumerate(ranks):
                cur[i] = cur[i] + [task(gpu[i], samplers[i]("elementwise", costs[i].ema), [grads[i]],
                                        (r, t, "factor EMA", "opt_accel"))]
        last = []
        for i, r in enumerate(ranks):
            u_s = costs[i].update + (0.0 if refresh else costs[i].stats)
            u = task(gpu[i], samplers[i](update_noise, u_s), cur[i], (r, t, "optimizer update", "opt_accel"))
            prev[i] = [u]
            last.append(u)
            ends[i]["optimizer"] = u  # the step's own evaluation closes it
        step_last.append(last)
        phase_ends.append(ends)

    eng.run()
    result = summarise(eng, step_last, workload, spec, plan, cluster, sim.steps, collapsed, noisy)
    if inst:
        result = replace(result, phase_times_s=_phase_times(eng, phase_ends, step_last))
    return result, eng


def _phase_times(eng: Engine, phase_ends: list[list[dict]], step_last: list[list[int]]) -> tuple:
    """Per step, seconds per phase as ``asprof train --instrument`` times them: on each rank the
    time from the previous phase's sync to this one's (waits for other ranks included), then the
    slowest rank per phase (asprof.train.result.combine does the same with measured phases)."""
    out = []
    end = eng.end
    for t, ends in enumerate(phase_ends):
        per_phase: dict = {}
        for i, e in enumerate(ends):
            before = end[step_last[t - 1][i]] if t > 0 else 0.0  # this rank's previous step
            for phase in PHASE_ORDER:
                if phase in e:
                    d = end[e[phase]] - before
                    before = end[e[phase]]
                    per_phase[phase] = max(per_phase.get(phase, 0.0), d)
        out.append(per_phase)
    return tuple(out)

"""`asprof validate`: train for real on the cluster, simulate exactly that run, compare.

The pipeline (DESIGN §6), for a :class:`ValidateConfig`:

1. **Place the ranks** (:func:`placement`): local processes on a loopback ring (``--nodes``),
   namespace hosts with tbf-shaped links (``--nodes`` + ``--netns-rate``; built here, torn down
   on exit, error or Ctrl-C), or an ``mlx.launch`` hostfile.
2. **Calibrate** (:func:`calibration_trace`): ``--trace``, else the newest trace in ``traces/`` that
   matches this cluster (asprof.validate.match), else probe the cluster now — compute probes on
   every rank at once, then the ring (asprof.probe.cluster) — and save the trace. Nothing is ever
   fitted to the training runs: they are the held-out test.
3. **Measure**: per optimizer one ``asprof train`` run on the placement (un-instrumented step
   times, and an instrumented pass with a sync per phase interleaved step by step; asprof.train).
4. **Predict**: simulate exactly that run spec (asprof.spec: model and vocabulary, batch per
   node, sequence length, optimizer, f, warm-up; the same N steps) from the trace: R sampled
   replicas for the step times and their band, sampled instrumented replicas for the phases.
5. **Compare** (asprof.validate.compare) over the steps after the warm-up.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

from asprof.errors import AsprofError
from asprof.probe.cluster import Placement
from asprof.validate.compare import compare
from asprof.spec import RunSpec
from asprof.validate.config import ValidateConfig
from asprof.validate.stragglers import describe, find_stragglers

Progress = Callable[[str], None]


@dataclass(frozen=True)
class TraceChoice:
    path: str
    how: str  # why this trace
    warnings: tuple[str, ...] = ()
    probed: bool = False


@dataclass
class ValidationResult:
    config: dict
    nodes: int
    link: str
    trace: TraceChoice
    comparisons: dict  # label -> Comparison
    training: dict  # label -> summary of the TrainResult (losses, state bytes, bytes per step)
    notes: list = field(default_factory=list)
    wall_s: float = 0.0
    tolerance_pct: float = 10.0
    seq_len: int = 0
    vocab: int = 0
    batch: int = 0  # sequences per node

    @property
    def passed(self) -> bool:
        return all(abs(c.step_error_pct) <= self.tolerance_pct for c in self.comparisons.values())

    def to_dict(self) -> dict:
        return {"schema": "asprof.validation", "version": 1, "config": self.config, "nodes": self.nodes,
                "link": self.link, "seq_len": self.seq_len, "vocab": self.vocab, "batch": self.batch, "trace": dict(self.trace.__dict__), "passed": self.passed,
                "tolerance_pct": self.tolerance_pct, "wall_s": self.wall_s, "notes": list(self.notes),
                "optimizers": {k: {"comparison": c.to_dict(), "training": self.training.get(k, {})}
                               for k, c in self.comparisons.items()}}


# -- 1. placement ---------------------------------------------------------------------------------
def link_label(cfg: ValidateConfig) -> str:
    """What joins the ranks, as recorded in the all-reduce records (a trace is reused only for
    the same link and backend: asprof.validate.match)."""
    from asprof.probe.cluster import with_backend_label

    return with_backend_label(_link(cfg), cfg.backend)


def _link(cfg: ValidateConfig) -> str:
    if cfg.hostfile is not None:
        from asprof.probe.cluster import hostfile_link

        return hostfile_link(cfg.hostfile)
    if cfg.netns_rate is not None:
        return f"netns {cfg.netns_rate:g} Mbit/s"
    return "loopback"


@contextmanager
def placement(cfg: ValidateConfig) -> Iterator[Placement]:
    """Where the ranks run, for the whole validation (probe and training share it)."""
    link = link_label(cfg)
    if cfg.hostfile is not None:
        yield Placement(hostfile=cfg.hostfile, link=link, backend=cfg.backend)
    elif cfg.netns_rate is not None:
        from asprof.cluster.netns import NetnsRing, namespace_ring

        with namespace_ring(NetnsRing(cfg.world_size, float(cfg.netns_rate))) as hosts:
            yield Placement(hosts=tuple(hosts), link=link)
    else:
        yield Placement(nodes=cfg.world_size, link=link, backend=cfg.backend)


# -- 2. calibration ---------------------------------------------------------------------------------
def identity(cfg: ValidateConfig):
    from asprof.probe.host import capture_host
    from asprof.validate.match import ClusterIdentity

    host = None if cfg.hostfile is not None else capture_host(with_torch=False, launched_ranks=cfg.world_size)
    return ClusterIdentity(nodes=cfg.world_size, link=link_label(cfg), host=host)


def calibration_trace(cfg: ValidateConfig, place: Placement, progress: Progress):
    """(trace, TraceChoice): --trace, the newest matching trace, or a new probe of the cluster."""
    from asprof.simulate.session import load_trace_spec
    from asprof.validate.match import find_matching, mismatches

    want = identity(cfg)
    if cfg.trace is not None:
        trace, bundled = load_trace_spec(cfg.trace)
        why = mismatches(trace, want)
        warn = (f"--trace {cfg.trace} does not describe this cluster ({'; '.join(why)}): the prediction is "
                "calibrated on another machine or setup",) if why else ()
        return trace, TraceChoice(cfg.trace, "--trace", warn)
    found, rejected = find_matching(cfg.traces_dir, want)
    if found is not None:
        from asprof.traces.io import load_trace

        return load_trace(found), TraceChoice(str(found), f"the newest trace in {cfg.traces_dir}/ that matches this cluster")
    reason = (f"the newest, {rejected[0][0].name}: {rejected[0][1][0]}" if rejected
              else f"{cfg.traces_dir}/ has no traces")
    path = new_trace_path(cfg, place, want)
    progress(f"no trace in {cfg.traces_dir}/ matches this cluster ({reason}): probing it first "
             f"({cfg.world_size} rank(s), link {place.link}) -> {path}")
    from asprof.probe.cluster import probe_cluster

    trace = probe_cluster(place, path, level=cfg.probe_level, rounds=probe_rounds(cfg), progress=progress)
    return trace, TraceChoice(str(path), "probed now (no matching trace)", probed=True)


def new_trace_path(cfg: ValidateConfig, place: Placement, want=None) -> Path:
    from asprof.probe.cluster import cluster_trace_path
    from asprof.traces.io import check_writable

    want = want or identity(cfg)
    path = cluster_trace_path(cfg.traces_dir, want.host.hostname if want.host else None, cfg.world_size, place.link)
    check_writable(path)
    return path


def probe_rounds(cfg: ValidateConfig) -> int:
    """Rounds of the cluster probe: --probe-rounds, and at least enough that every measurement
    is repeated MIN_REPEATS times over ranks and rounds (asprof.probe.cluster.cluster_rounds)."""
    from asprof.probe.cluster import cluster_rounds

    return cluster_rounds(cfg.world_size, cfg.probe_rounds)


# -- 3. measurement ---------------------------------------------------------------------------------
def train_config(cfg: ValidateConfig, spec: RunSpec):
    """The `asprof train` run of ``spec``: exactly what is simulated."""
    from asprof.train.config import TrainConfig

    return TrainConfig(spec=spec, steps=cfg.steps, seed=cfg.seed, eval_batches=1, instrument=True,
                       timing_skip=cfg.skip, nodes=1 if cfg.hostfile else cfg.world_size, hostfile=cfg.hostfile,
                       backend=cfg.backend, timeout_s=cfg.timeout_s)


def measure(cfg: ValidateConfig, place: Placement, spec: RunSpec, progress: Progress, probe_level: str | None = None):
    from asprof.cluster.launch import RankHost
    from asprof.train.runner import run_training
    from asprof.validate.probing_worker import MODULE, combine_probed

    tc = train_config(cfg, spec)
    optimizer = spec.optimizer.label
    hosts = place.hosts
    if hosts is None and cfg.hostfile is None and cfg.world_size == 1 and cfg.backend in (None, "ring"):
        hosts = (RankHost("127.0.0.1"),)  # a rank of its own, like the ranks of a larger run
    last = [0.0]

    def on_progress(phase, step, steps, loss, dt):
        now = time.monotonic()
        if now - last[0] > 2.0 or step + 1 == steps:
            last[0] = now
            progress(f"{optimizer}: {phase} step {step + 1}/{steps} ({dt * 1e3:.0f} ms, loss {loss:.3f})")

    if probe_level is None:
        return run_training(tc, on_progress=on_progress, hosts=hosts)
    ranks: list[dict] = []
    result = run_training(tc, on_progress=on_progress, hosts=hosts, worker=MODULE,
                          worker_args=("--probe-level", probe_level), rank_results=ranks)
    result.probed = combine_probed(ranks)
    return result


def measure_probing(cfg: ValidateConfig, place: Placement, progress: Progress):
    """``--probe-during``: every rank measures the compute probes between its training steps
    (asprof.probe.during), and each run is predicted from the records taken during it together
    with the ring (probed once, first). All records together are saved as one cluster trace.
    Returns (runs, trace per optimizer, choice, the whole trace)."""
    from asprof.probe.cluster import cluster_trace, probe_ring
    from asprof.traces.io import save_trace
    from asprof.traces.schema import Host, Record, Skip

    path = new_trace_path(cfg, place)
    ring, ring_skipped = [], []
    if place.size > 1:
        progress(f"probing the ring ({place.size} ranks, link {place.link})")
        ring, ring_skipped = probe_ring(place, cfg.probe_level, progress)
    runs, traces, everything, host, skipped = {}, {}, [], None, []
    for i, spec in enumerate(cfg.specs()):
        o = spec.optimizer.label
        progress(f"{o}: training {cfg.steps} steps on {place.size} rank(s), interleaved with an instrumented pass "
                 "and the compute probes")
        r = runs[o] = measure(cfg, place, spec, progress, probe_level=cfg.probe_level)
        got = r.probed
        recs = [Record.from_dict(d, d["probe"]) for d in got["records"]]
        # rounds of different runs are different repeats
        recs = [replace(x, params={**x.params, "round": 1000 * i + x.params.get("round", 0)}) for x in recs]
        host, skipped = Host.from_dict(got["host"]), [Skip(**s) for s in got["skipped"]]
        traces[o] = cluster_trace(place, host, recs + ring, skipped + ring_skipped,
                                  f"measured between the {o} run's steps, level {cfg.probe_level}")
        everything += recs
        progress(f"{o}: {len(got['records'])} probe records between the steps "
                 f"({got['probe_s']:.0f} s probing, {got['train_s']:.0f} s training)")
    whole = cluster_trace(place, host, everything + ring, skipped + ring_skipped,
                          f"measured between the steps of {len(runs)} training runs, level {cfg.probe_level}")
    save_trace(whole, path)
    how = ("probed during every run: the compute probes between the training steps, each run predicted from its own "
           "(the spread of the machine's speed from all of them)")
    return runs, traces, TraceChoice(str(path), how, probed=True), whole


# -- 4. prediction ---------------------------------------------------------------------------------
INSTRUMENTED_REPLICAS = 6


def predict_run(cfg: ValidateConfig, trace, run: RunSpec, gemm_shapes: bool | None = None, spread_from=None):
    """(replicas of per-step times, instrumented per-step phases, breakdown, notes).
    ``spread_from``: the trace whose records give the machine's speed pool (--probe-during: all
    the runs' rounds); ``gemm_shapes`` prices GEMMs from the trace's shape grid
    (HardwareModel.from_trace: None where the trace has one)."""
    from asprof.simulate import Cluster, HardwareModel, SimConfig, Workload, predict

    from asprof.simulate import NodeSpec

    hw = HardwareModel.from_trace(trace, gemm_shapes=gemm_shapes, spread_from=spread_from)
    mc = run.model_config()
    workload = Workload(mc, batch=run.batch, seq=mc.seq_len, dtype=run.dtype)
    spec = run.optimizer
    overrides = ()
    ranks = {r.params.get("rank") for r in trace.records if r.params.get("ranks") == cfg.world_size}
    if cfg.hostfile is not None and ranks >= set(range(cfg.world_size)):
        # separate machines: each node its own measured figures (ranks on one host are the same
        # hardware, and the median over them is the steadier figure)
        overrides = tuple((r, NodeSpec(HardwareModel.from_trace(trace, rank=r, gemm_shapes=gemm_shapes,
                                                                         spread_from=spread_from)))
                          for r in range(cfg.world_size))
    cluster = Cluster(cfg.world_size, hw, overrides)
    replicas, notes, breakdown = [], [], {}
    for seed in range(cfg.replicas):
        p = predict(workload, [spec], cluster, SimConfig(steps=cfg.steps, seed=cfg.seed + seed, collapse="never"))
        replicas.append(list(p.results[0].step_times_s))
        notes = list(p.notes)
        if seed == 0:
            breakdown = dict(p.results[0].breakdown_s)
    # The measured phases are each phase's slowest rank, waits for the other ranks included (a
    # rank that finishes its backward pass early waits inside the all-reduce): only simulations
    # with the ranks' sampled spread have such waits, so the phases are the mean of sampled
    # instrumented replicas (without samples in the trace, every replica is the same).
    runs = [predict(workload, [spec], cluster, SimConfig(steps=cfg.steps, seed=cfg.seed + seed, instrumented=True,
                                                         collapse="never")).results[0].phase_times_s
            for seed in range(INSTRUMENTED_REPLICAS)]
    phases = [{p: sum(r[t].get(p, 0.0) for r in runs) / len(runs) for p in set().union(*(r[t] for r in runs))}
              for t in range(cfg.steps)]
    return replicas, phases, breakdown, notes


# -- the pipeline -----------------------------------------------------------------------------------
def run_validation(cfg: ValidateConfig, progress: Progress = lambda msg: None) -> ValidationResult:
    start = time.monotonic()
    specs = {s.optimizer.label: s for s in cfg.specs()}
    with placement(cfg) as place:
        whole = None  # --probe-during: every run's rounds, for the spread of the machine's speed
        if cfg.probe_during:
            runs, traces, choice, whole = measure_probing(cfg, place, progress)
        else:
            trace, choice = calibration_trace(cfg, place, progress)
            traces, runs = {o: trace for o in specs}, {}
            for o, spec in specs.items():
                progress(f"{o}: training {cfg.steps} steps on {place.size} rank(s), interleaved with an instrumented pass")
                runs[o] = measure(cfg, place, spec, progress)
    comparisons, training, notes = {}, {}, list(choice.warnings)
    for o, spec in specs.items():
        progress(f"{o}: simulating {cfg.replicas} replicas of the same {cfg.steps} steps")
        replicas, phases, breakdown, sim_notes = predict_run(cfg, traces[o], spec, spread_from=whole)
        r = runs[o]
        comparisons[o] = compare(o, r.step_time_s, replicas, cfg.skip, r.phases_s, phases, breakdown)
        training[o] = {"final_train_loss": r.summary.get("final_train_loss"),
                              "final_val_loss": r.summary.get("final_val_loss"),
                              "refresh_steps": r.refresh_steps, "state_bytes": r.state_bytes,
                              "bytes_per_step": r.bytes_per_step[-1] if r.bytes_per_step else {},
                              "instrumented_loss_max_abs_diff": r.instrumented_loss_max_abs_diff,
                              "step_time_s": r.step_time_s, "phases_s": r.phases_s,
                              "stragglers": find_stragglers(r.phases_s_by_rank, cfg.skip)}
        notes += [describe(o, s) for s in training[o]["stragglers"]]
        notes += [n for n in sim_notes if n not in notes]
    if not comparisons:
        raise AsprofError("nothing was compared")
    first = next(iter(specs.values()))
    return ValidationResult(config=cfg.to_dict(), nodes=cfg.world_size, link=link_label(cfg), trace=choice,
                            comparisons=comparisons, training=training, notes=notes,
                            wall_s=time.monotonic() - start, tolerance_pct=float(cfg.tolerance),
                            seq_len=first.seq_len, vocab=first.model_config().vocab, batch=first.batch)

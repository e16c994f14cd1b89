"""The edge of the simulator: configuration, loading traces and models, running the sweep.

``asprof simulate`` builds a :class:`SimulateConfig` from its flags and calls
:func:`run_simulation`, which reads the trace (``--trace``; else the newest trace in
``./traces``; else the bundled default profile), fits the hardware model, and calls the pure
:func:`asprof.simulate.predict.predict` once per node count of the sweep. Rendering lives in
report.py, timeline.py and plot.py.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from asprof.errors import AsprofError
from asprof.presets import ModelConfig
from asprof.simulate import memory_pressure
from asprof.simulate.backends import trace_backend, with_backend
from asprof.simulate.energy import PowerModel
from asprof.simulate.hardware import HardwareModel
from asprof.simulate.predict import Cluster, NodeSpec, Prediction, SimConfig, predict
from asprof.simulate.workload import Workload
from asprof.spec import RunChoices, check_int
from asprof.traces import DEFAULT_PROFILE, load_profile, load_trace, newest_trace, profile_names
from asprof.traces.schema import Trace

LANES = ("gpu", "cpu", "link", "all")


@dataclass(frozen=True)
class SimulateConfig:
    """`asprof simulate`'s flags: the run (asprof.spec.RunChoices, shared with train and validate)
    and the simulation's own."""

    nodes: tuple[int, ...] = (16,)
    run: RunChoices = field(default_factory=RunChoices)
    trace: str | None = None  # a trace path or a bundled profile name; None: newest local, else bundled
    steps: int = 100
    seed: int = 0
    variance: bool = True
    link: str | None = None  # borrow α/β from this trace/profile when the trace has no fit
    slowdowns: tuple[tuple[int, str, float], ...] = ()  # (node, lane, factor)
    node_traces: tuple[tuple[int, str], ...] = ()  # (node, trace or profile)
    traces_dir: str = "traces"
    speedups: tuple[tuple[str, float], ...] = ()  # (optimizer, steps-to-target speed-up over Adam)
    loss_curves: tuple[tuple[str, str], ...] = ()  # (optimizer, `asprof train` result JSON), adam's included
    gemm_shapes: bool | None = None  # GEMMs from the trace's shape grid: None where it has one (HardwareModel.from_trace)
    backends: tuple[str, ...] = ()  # all-reduce backends to compare; empty: the trace's own (backends.trace_backend)

    def __post_init__(self):
        if not self.nodes:
            raise AsprofError("give at least one node count")
        for k in self.nodes:
            check_int("--nodes", k)
            self.run.specs(k)  # a --global-batch that does not split over k nodes: one line now
        check_int("--steps", self.steps)
        for node, lane, factor in self.slowdowns:
            if lane not in LANES:
                raise AsprofError(f"slow-down lane must be one of {', '.join(LANES)}, got {lane!r}")
            if not (isinstance(factor, (int, float)) and factor > 0):
                raise AsprofError(f"slow-down factor must be a positive number, got {factor!r}")
        optimizers = self.optimizers
        for name, x in self.speedups:
            if name not in optimizers:
                raise AsprofError(f"--speedup names {name!r}, which is not simulated (--optimizer {','.join(optimizers)})")
            if isinstance(x, bool) or not isinstance(x, (int, float)) or not 0 < x < float("inf"):
                raise AsprofError(f"--speedup {name}: the speed-up must be a positive number, got {x!r}")
        if self.loss_curves:
            names = [n for n, _ in self.loss_curves]
            if "adam" not in names:
                raise AsprofError("--loss-curve needs adam's curve too (the reference): --loss-curve adam=RESULT.json")
            for name in names:
                if name not in optimizers:
                    raise AsprofError(f"--loss-curve names {name!r}, which is not simulated")
            if set(names) & {n for n, _ in self.speedups}:
                raise AsprofError("give an optimizer's speed-up by --speedup or by --loss-curve, not both")
        from asprof.cluster.hostfile import check_backend

        for b in self.backends:
            check_backend(b)
        for node in [n for n, _, _ in self.slowdowns] + [n for n, _ in self.node_traces]:
            if not 0 <= node < min(self.nodes):
                raise AsprofError(f"node {node} does not exist with {min(self.nodes)} nodes (ranks 0..{min(self.nodes) - 1})")

    @property
    def optimizers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.run.optimizers))

    @property
    def is_sweep(self) -> bool:
        return len(self.nodes) > 1 or len(self.run.sparsity) > 1 and "topkpop" in self.optimizers or len(self.backends) > 1


@dataclass(frozen=True)
class TraceInfo:
    """Which trace drove the simulation and what kind of figures it holds."""

    label: str  # "bundled profile m4-mini-x16-tb4" or the path
    bundled: bool
    origin: str
    origins: dict  # record origin -> count
    chip: str
    memory_bytes: int
    accelerator: str
    shared_lanes: bool
    why: str  # how it was chosen

    @property
    def measured(self) -> bool:
        return set(self.origins) == {"measured"}


@dataclass(frozen=True)
class SimulationReport:
    config: SimulateConfig
    trace: TraceInfo
    model: ModelConfig
    workload: Workload
    predictions: tuple[Prediction, ...]
    warnings: tuple[str, ...] = field(default=())
    speedups: dict = field(default_factory=dict)  # optimizer name -> (speed-up over Adam, where it came from)
    power: PowerModel | None = None  # the trace's measured power (energy.py), where it has some


def load_trace_spec(spec: str) -> tuple[Trace, bool]:
    """A trace path, or a bundled profile name (when no such file exists): (trace, bundled)."""
    if not Path(spec).exists() and spec in profile_names():
        return load_profile(spec), True
    if not Path(spec).exists() and not spec.endswith(".json") and "/" not in spec:
        raise AsprofError(f"{spec}: no such trace file or bundled profile (bundled: {', '.join(profile_names())})")
    return load_trace(spec), False


def choose_trace(cfg: SimulateConfig) -> tuple[Trace, str, bool, str]:
    """(trace, label, bundled, why)."""
    if cfg.trace is not None:
        trace, bundled = load_trace_spec(cfg.trace)
        return trace, (f"bundled profile {cfg.trace}" if bundled else cfg.trace), bundled, "--trace"
    newest = newest_trace(cfg.traces_dir)
    if newest is not None:
        return load_trace(newest), str(newest), False, f"the newest trace in {cfg.traces_dir}/"
    return (load_profile(DEFAULT_PROFILE), f"bundled profile {DEFAULT_PROFILE}", True,
            f"no trace in {cfg.traces_dir}/ (run `asprof probe` to measure this machine)")


def run_simulation(cfg: SimulateConfig, timeline: bool = False) -> SimulationReport:
    trace, label, bundled, why = choose_trace(cfg)
    link_from = load_trace_spec(cfg.link)[0] if cfg.link else None
    hw = HardwareModel.from_trace(trace, link_from=link_from, gemm_shapes=cfg.gemm_shapes)
    def workload_for(k: int) -> Workload:
        run = cfg.run.specs(k)[0]
        return Workload(run.model_config(), run.batch, run.seq_len, run.dtype)

    per_node: dict[int, dict] = {}
    for node, spec in cfg.node_traces:
        per_node.setdefault(node, {})["hardware"] = HardwareModel.from_trace(load_trace_spec(spec)[0], link_from=link_from,
                                                                             gemm_shapes=cfg.gemm_shapes)
    for node, lane, factor in cfg.slowdowns:
        d = per_node.setdefault(node, {})
        for ln in (("gpu", "cpu", "link") if lane == "all" else (lane,)):
            d[ln] = d.get(ln, 1.0) * factor

    specs = [run.optimizer for run in cfg.run.specs(min(cfg.nodes))]
    sim = SimConfig(steps=cfg.steps, seed=cfg.seed, variance=cfg.variance, timeline=timeline)
    predictions = []
    link_trace = trace if trace.probe("allreduce", op="fit") or link_from is None else link_from
    for backend in cfg.backends or (trace_backend(link_trace),):
        # without --backend the link is the trace's fit as the hardware model read it
        pick = (lambda h: with_backend(h, link_trace, backend)) if cfg.backends else (lambda h: h)
        hw_b = pick(hw)
        for k in cfg.nodes:
            overrides = tuple((n, NodeSpec(pick(d["hardware"]) if "hardware" in d else hw_b,
                                           d.get("gpu", 1.0), d.get("cpu", 1.0), d.get("link", 1.0)))
                              for n, d in sorted(per_node.items()))
            algo = "jaccl" if backend == "jaccl" else "ring"  # jaccl-ring and mpi: ring schedules (docs/simulator.md)
            predictions.append(predict(workload_for(k), specs, Cluster(k, hw_b, overrides, backend=algo), sim))
            predictions[-1] = replace(predictions[-1], backend=backend)

    warnings = []
    for p in predictions:
        for r in p.results:
            if not r.fits:
                raise AsprofError(f"{r.label} on {p.nodes} nodes needs {r.memory_bytes['total'] / 2**30:.2f} GiB per node, "
                                  f"more than the node's {r.node_memory_bytes / 2**30:.2f} GiB: it cannot run "
                                  "(lower --batch or --seq, use more nodes or more memory)")
            pressure = memory_pressure.note(r.memory_bytes["total"], hw.memory_bytes, hw.accelerator == "metal",
                                            hw.working_set_bytes, hw.page_in_Bps)
            if pressure:
                warnings.append(f"{r.label} on {p.nodes} nodes: {pressure}")
    origins = dict(Counter(r.origin for r in trace.records))
    info = TraceInfo(label=label, bundled=bundled, origin=trace.origin, origins=origins, chip=hw.chip,
                     memory_bytes=hw.memory_bytes, accelerator=hw.accelerator, shared_lanes=hw.shared_lanes, why=why)
    return SimulationReport(cfg, info, predictions[0].workload.model, predictions[0].workload, tuple(predictions), tuple(warnings),
                            speedups=speedups_of(cfg), power=PowerModel.from_trace(trace))


def speedups_of(cfg: SimulateConfig) -> dict:
    """Steps-to-target speed-ups over Adam (paper 004, F.5): supplied ones, and ones computed from
    `asprof train` results (read here, at the edge); Adam's is 1 when any is given."""
    from asprof.simulate.effective import SMOOTH, curve_of, has_validation_curve, speedup_from_curves

    out = {name: (float(x), "given") for name, x in cfg.speedups}
    if cfg.loss_curves:
        results = {}
        for name, path in cfg.loss_curves:
            try:
                d = json.loads(Path(path).read_text(encoding="utf-8"))
                if not isinstance(d, dict) or d.get("schema") != "asprof.train_result":
                    raise ValueError("no asprof.train_result schema")
                results[name] = d
            except (OSError, ValueError) as e:
                raise AsprofError(f"--loss-curve {name}={path}: not a readable `asprof train` result ({e})") from None
        validation = all(has_validation_curve(d) for d in results.values())
        kind = "validation loss" if validation else f"training loss (trailing mean of {SMOOTH} steps)"
        try:
            curves = {name: curve_of(d, validation) for name, d in results.items()}
        except (KeyError, TypeError, ValueError) as e:
            raise AsprofError(f"--loss-curve: a result has no usable loss curve ({e})") from None
        for name, curve in curves.items():
            if name != "adam":
                out[name] = (speedup_from_curves(curves["adam"], curve), f"{kind}, {path_of(cfg, name)} vs adam")
    if out and "adam" in cfg.optimizers:
        out.setdefault("adam", (1.0, "the reference"))
    return out


def path_of(cfg: SimulateConfig, name: str) -> str:
    return dict(cfg.loss_curves)[name]

"""The probe registry and the run that writes a trace (`asprof probe`, DESIGN §3).

Input is validated before anything is measured (unknown probe, bad node count, unreadable
hostfile, unwritable output). The trace file is written when the run starts and rewritten
atomically after every probe, so an interrupted run keeps every finished probe.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from asprof import __version__
from asprof.errors import AsprofError
from asprof.probe.backends import discover
from asprof.probe.context import LEVEL_NAMES, ProbeContext
from asprof.probe.harness import LEVELS, Harness
from asprof.traces.io import TraceWriter, check_writable, default_trace_path, utc_now
from asprof.traces.schema import PROBES, Record, Skip, Trace

# name -> module under asprof.probe, in the order they run.
REGISTRY = {name: f"asprof.probe.{name}" for name in PROBES}
CLUSTER_PROBES = ("allreduce",)
# what a cluster probe (--nodes / --hostfile) measures: asprof.probe.cluster's compute probes on
# every rank at once, then the ring — the trace `asprof validate` calibrates from
CLUSTER_SUITE = ("blas", "launch", "membw", "linalg", "allreduce")


@dataclass(frozen=True)
class ProbeConfig:
    """One `asprof probe` run; flags map one-to-one onto fields."""

    level: str = "full"  # "quick" with --quick; "tiny" for tests
    only: tuple[str, ...] = ()  # empty: every probe (allreduce only with a cluster)
    nodes: int | None = None
    hostfile: Path | None = None
    out: Path | None = None
    backend: str | None = None  # None: as mlx.launch picks it (the hostfile's own, else ring)
    frameworks: tuple[str, ...] = ("mlx", "torch")

    def __post_init__(self):
        if self.level not in LEVEL_NAMES:
            raise AsprofError(f"unknown level {self.level!r}; choose one of: {', '.join(LEVEL_NAMES)}")
        unknown = [p for p in self.only if p not in REGISTRY]
        if unknown:
            raise AsprofError(f"unknown probe {unknown[0]!r} in --only; choose from: {', '.join(REGISTRY)}")
        if self.nodes is not None and self.hostfile is not None:
            raise AsprofError("give --nodes or --hostfile, not both")
        if self.nodes is not None and (isinstance(self.nodes, bool) or self.nodes < 2):
            raise AsprofError(f"--nodes must be at least 2 (the all-reduce needs a ring of >= 2 ranks), got {self.nodes}")
        if self.hostfile is not None or self.backend is not None:
            from asprof.cluster.hostfile import check_run

            check_run(self.backend, self.hostfile)  # unknown backend, or a hostfile lacking what it needs
        if "allreduce" in self.only and self.nodes is None and self.hostfile is None:
            raise AsprofError("the allreduce probe needs a cluster: add --nodes N (local ranks) or --hostfile FILE")
        other = [p for p in self.only if p not in CLUSTER_SUITE]
        if other and (self.nodes is not None or self.hostfile is not None):
            raise AsprofError(f"--only {other[0]}: a cluster probe (--nodes/--hostfile) measures "
                              f"{', '.join(CLUSTER_SUITE)}; run `asprof probe --only {other[0]}` without a cluster")

    @property
    def cluster(self) -> bool:
        return self.nodes is not None or self.hostfile is not None

    @property
    def probes(self) -> tuple[str, ...]:
        return self.only or (CLUSTER_SUITE if self.cluster else tuple(REGISTRY))


@dataclass
class ProbeRun:
    path: Path
    trace: Trace
    finished: list[str] = field(default_factory=list)


class ProbeInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run; ``run`` holds what was written (every finished probe)."""

    def __init__(self, run: ProbeRun):
        super().__init__()
        self.run = run


def _load(name: str):
    return importlib.import_module(REGISTRY[name])


@dataclass(frozen=True)
class Step:
    """A progress report: probe ``index`` of ``total`` (0 before the first) says ``message``."""

    index: int
    total: int
    probe: str
    message: str


def run_probes(config: ProbeConfig, progress: Callable[[Step], None] = lambda step: None,
               host=None) -> ProbeRun:
    """Measure ``config.probes`` and write the trace; returns where and what."""
    from asprof.probe.host import capture_host

    if config.out is not None:
        check_writable(config.out)  # before minutes of measuring
    names = config.probes
    progress(Step(0, len(names), "host", "describing this machine"))
    host = host or capture_host(with_torch="torch" in config.frameworks)
    path = config.out or default_trace_path(host.hostname)
    check_writable(path)
    backends, absent = discover(config.frameworks)
    ctx = ProbeContext(level=config.level, harness=Harness(LEVELS[config.level]), backends=backends,
                       absent=absent, nodes=config.nodes, hostfile=config.hostfile,
                       backend=config.backend)
    writer = TraceWriter(Trace(host=host, created_utc=utc_now(), asprof_version=__version__), path)
    run = ProbeRun(path=path, trace=writer.trace)
    try:
        for i, name in enumerate(names, 1):
            ctx.progress = lambda msg, i=i, name=name: progress(Step(i, len(names), name, msg))
            ctx.progress("starting")
            try:
                items = _load(name).run(ctx)
            except AsprofError as e:
                kept = f"; finished probes kept in {path}" if run.finished else ""
                raise type(e)(f"{name} probe: {e}{kept}") from None
            records = [x for x in items if isinstance(x, Record)]
            skipped = [x for x in items if isinstance(x, Skip)]
            writer.add(records, skipped)
            run.finished.append(name)
            run.trace = writer.trace
            ctx.progress(f"done: {len(records)} records, {len(skipped)} skipped")
    except KeyboardInterrupt:
        raise ProbeInterrupted(run) from None
    return run



"""The cluster and run settings the simulator takes: nodes (with per-node hardware and
slow-downs) and the simulation's knobs. Plain validated dataclasses (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass

from asprof.errors import AsprofError
from asprof.simulate.hardware import HardwareModel

COLLAPSE = ("auto", "always", "never")


@dataclass(frozen=True)
class NodeSpec:
    """One node: its hardware model and slow-down factors (time multipliers, ≥ 1 is slower)
    for its accelerator lane, CPU lane and outbound link."""

    hardware: HardwareModel
    gpu: float = 1.0
    cpu: float = 1.0
    link: float = 1.0

    def __post_init__(self):
        for f in ("gpu", "cpu", "link"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or v == float("inf"):
                raise AsprofError(f"slow-down factor {f} must be a positive number, got {v!r}")


@dataclass(frozen=True)
class Cluster:
    """K data-parallel ranks in a ring; every node is ``hardware`` unless overridden."""

    nodes: int
    hardware: HardwareModel
    overrides: tuple = ()  # ((rank, NodeSpec), ...)
    backend: str = "ring"  # the all-reduce's algorithm: ring (also jaccl-ring, mpi) or jaccl's mesh

    def __post_init__(self):
        k = self.nodes
        if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
            raise AsprofError(f"nodes must be a positive integer, got {k!r}")
        for rank, spec in self.overrides:
            if not (isinstance(rank, int) and 0 <= rank < k):
                raise AsprofError(f"node {rank!r} does not exist in a cluster of {k} nodes (ranks 0..{k - 1})")
            if not isinstance(spec, NodeSpec):
                raise AsprofError(f"node {rank}: expected a NodeSpec")
        from asprof.simulate.collectives import MESH_MAX_RANKS

        if self.backend == "jaccl" and k > MESH_MAX_RANKS:
            raise AsprofError(f"JACCL's mesh joins at most {MESH_MAX_RANKS} Macs (one cable per pair), not {k}; "
                              "simulate jaccl-ring for more")

    def node(self, rank: int) -> NodeSpec:
        for r, spec in self.overrides:
            if r == rank:
                return spec
        return NodeSpec(self.hardware)

    @property
    def uniform(self) -> bool:
        return all(spec == NodeSpec(self.hardware) for _, spec in self.overrides)


@dataclass(frozen=True)
class SimConfig:
    steps: int = 100
    seed: int = 0
    variance: bool = True
    collapse: str = "auto"  # auto: collapse identical deterministic ranks; always / never
    timeline: bool = False  # keep every task's span for a timeline
    max_tasks: int = 3_000_000  # above this a full simulation falls back to collapsed ranks
    # Simulate the *instrumented* training pass (asprof train --instrument): an evaluation (sync)
    # closes every phase, so nothing overlaps across phases; the result then has per-step phase
    # times (OptimizerResult.phase_times_s) to compare with the measured ones.
    instrumented: bool = False
    # What-if: compile the optimizer update into one kernel (True) or run it as eager, unfused
    # kernels (False); None: as asprof's optimizers do (compiled on Metal only).
    compiled_update: bool | None = None

    def __post_init__(self):
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps <= 0:
            raise AsprofError(f"steps must be a positive integer, got {self.steps!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise AsprofError(f"seed must be an integer, got {self.seed!r}")
        if self.collapse not in COLLAPSE:
            raise AsprofError(f"collapse must be one of {', '.join(COLLAPSE)}, got {self.collapse!r}")

"""What every probe receives: the level, the harness, the backends, a progress callback.

A probe is a module exposing ``NAME`` and ``run(ctx) -> list[Record | Skip]`` (DESIGN §3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from asprof.probe.backends import Absent, Backend
from asprof.probe.harness import Harness
from asprof.traces.schema import Skip, Timing

LEVEL_NAMES = ("full", "quick", "tiny")

# Longest single call a probe will attempt, per level. Sizes are swept upwards and the next
# call's time is estimated from the rate measured on the smaller ones; a call estimated above
# this is skipped with the estimate in the reason. On this machine's reference BLAS an
# 8x2000x2000 float32 matmul takes ~30 s; on an M-series GPU it takes milliseconds.
MAX_CALL_S = {"full": 60.0, "quick": 0.25, "tiny": 0.5}


@dataclass
class ProbeContext:
    level: str
    harness: Harness
    backends: list[Backend]
    absent: list[Absent]
    progress: Callable[[str], None] = lambda msg: None
    nodes: int | None = None
    hostfile: Path | None = None
    backend: str | None = None  # mx.distributed backend of the cluster (None: as mlx.launch picks it)
    # Options a caller can narrow a probe with (read with ``option``): ``dtypes`` (blas),
    # ``cold`` (launch: fresh-process first calls; default True).
    extra: dict[str, Any] = field(default_factory=dict)
    # Ranks of a cluster probe (asprof.probe.cluster_worker) measure in lockstep: every decision
    # that changes which calls run (skip a size) must be the same on all of them, or their
    # collective stopping rules pair up different measurements and the ring hangs. ``agree_skip``
    # turns a local "skip" into the group's decision (skip if any rank would).
    agree_skip: Callable[[bool], bool] = lambda skip: skip

    @property
    def max_call_s(self) -> float:
        return MAX_CALL_S[self.level]

    def measure(self, backend: Backend, fn: Callable[[], Any], what: str) -> Timing:
        return self.harness.measure(fn, backend.sync, what=f"{backend.name} {what}")

    def absent_skips(self, probe: str, frameworks: tuple[str, ...] = ("mlx", "torch")) -> list[Skip]:
        return [Skip(probe, a.framework, a.device, a.reason) for a in self.absent if a.framework in frameworks]

    def pick(self, level_table: dict[str, Any]) -> Any:
        return level_table[self.level]

    def option(self, name: str, default: Any) -> Any:
        return self.extra.get(name, default)


def too_slow(estimate_s: float | None, last_call_s: float | None, ctx: ProbeContext) -> bool:
    """Skip a call estimated over the per-call limit, unless the estimate is extrapolated from a
    call so short (< 1/16 of the limit) that latency or noise dominated its rate: then measure
    (at worst a few times the limit, once)."""
    local = (estimate_s is not None and last_call_s is not None
             and estimate_s > ctx.max_call_s and last_call_s >= ctx.max_call_s / 16)
    return ctx.agree_skip(local)


def slow_reason(what: str, estimate_s: float, rate_text: str, ctx: ProbeContext) -> str:
    flag = {"quick": " (--quick; a full run includes it)", "full": "", "tiny": " (tiny test level)"}
    return (f"{what}: ~{estimate_s:.3g} s per call at {rate_text} (measured on smaller sizes) "
            f"> {ctx.max_call_s:g} s per-call limit{flag[ctx.level]}")

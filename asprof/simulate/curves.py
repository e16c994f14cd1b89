"""Fitted curves and the statistics of timed records that the hardware model
(asprof.simulate.hardware) is built from: a log-log interpolated :class:`Curve`, a record's time,
the spread of repeated samples, the typical value of a metric, and where the figures came from."""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from statistics import fmean, median

from asprof.traces.schema import Record

@dataclass(frozen=True)
class Curve:
    """Time as a function of size, interpolated log-log between measured points.

    Below the smallest measured size the time stays at the smallest measured time (a small op
    is overhead-bound, it does not get cheaper); above the largest it grows as size**power
    (1: constant throughput; 3: the n³ of a dense factorisation). The measured times are made
    non-decreasing first (a running max), so every cost is monotone in size.

    Several measurements of one size (a cluster probe's ranks and rounds) are averaged: each is
    already a median of back-to-back samples (hiccups removed), and repeats spread over minutes
    sample the machine's slow and fast spells, whose *mean* is what a long training run
    experiences (a shared VM here alternated between two speeds 1.6x apart, second by second).
    """

    xs: tuple[float, ...]
    ts: tuple[float, ...]
    power: float = 1.0

    @classmethod
    def fit(cls, points: list[tuple[float, float]], power: float = 1.0) -> "Curve":
        by_x: dict[float, list[float]] = {}
        for x, t in points:
            if x > 0 and t > 0 and math.isfinite(x) and math.isfinite(t):
                by_x.setdefault(float(x), []).append(float(t))
        if not by_x:
            raise ValueError("no positive points")
        xs = sorted(by_x)
        ts, run = [], 0.0
        for x in xs:
            run = max(run, fmean(by_x[x]))
            ts.append(run)
        return cls(tuple(xs), tuple(ts), power)

    def __call__(self, x: float) -> float:
        xs, ts = self.xs, self.ts
        if x <= xs[0]:
            return ts[0]
        if x >= xs[-1]:
            return ts[-1] * (x / xs[-1]) ** self.power
        i = bisect.bisect_right(xs, x)
        x0, x1, t0, t1 = xs[i - 1], xs[i], ts[i - 1], ts[i]
        w = math.log(x / x0) / math.log(x1 / x0)
        return math.exp(math.log(t0) + w * math.log(t1 / t0))


def time_of(r: Record) -> float | None:
    """A record's time: the timing median, else ``time_s``, else work / rate."""
    if r.timing is not None:
        return r.timing.median_s
    if "time_s" in r.metrics:
        return r.metrics["time_s"]
    if "flop" in r.metrics and r.metrics.get("flops_per_s"):
        return r.metrics["flop"] / r.metrics["flops_per_s"]
    if "bytes_moved" in r.metrics and r.metrics.get("bytes_per_s"):
        return r.metrics["bytes_moved"] / r.metrics["bytes_per_s"]
    return None


def rel_samples(records) -> tuple[tuple[float, tuple[float, ...]], ...]:
    """(median, samples / mean of samples) of each timed record, by increasing median: the
    measured spread of each measurement, kept apart so a task can take the spread of the
    measurement closest to it in duration (a 20 ms phase fluctuates like a 20 ms op, not like a
    20 us one). The factors have mean 1: they spread a task around the model's figure without
    moving its mean (a synced micro-benchmark's skew is mostly sync jitter that an op inside a
    training step's graph does not pay; the machine's slow spells enter as the "state" factor)."""
    out = []
    for r in records:
        if r.timing is not None and r.timing.median_s > 0 and len(r.timing.samples_s) > 1:
            mean = fmean(r.timing.samples_s)
            out.append((r.timing.median_s, tuple(s / mean for s in r.timing.samples_s)))
    return tuple(sorted(out))


def state_spread(records) -> tuple[float, ...]:
    """How fast the machine is at a random moment, relative to its average: every sample of
    every measurement of at least a millisecond, over the mean of all that measurement's samples
    (in all its repeats: a cluster probe's ranks and rounds, or the rounds measured between a
    run's training steps), pooled. The spread within repeats (back to back) and between them
    (minutes apart) together, at the millisecond scale of a step's kernels and hand-offs: on a
    shared VM a training step of 0.1-1.7 s varied from step to step (cv 0.07-0.26) like such a
    kernel does and far more than an equally long GEMM (cv 0.03-0.1), in spells longer than a
    step (docs/validate.md §6.2). A measurement measured once still counts with its samples (a
    probe between short runs may complete one round only). Mean 1 by construction; empty when
    no such measurement has two samples."""
    groups: dict = {}
    for r in records:
        if r.timing is not None and r.timing.median_s >= 1e-3 and r.timing.samples_s:
            key = (r.probe, r.op, r.dtype, r.framework, r.device,
                   tuple(sorted((k, str(v)) for k, v in r.params.items() if k not in ("rank", "ranks", "round"))))
            groups.setdefault(key, []).append(r.timing.samples_s)
    out = []
    for repeats in groups.values():
        samples = [s for rep in repeats for s in rep]
        if len(samples) >= 2:
            m = fmean(samples)
            out += [s / m for s in samples]
    return tuple(out)


def typical(records, metric: str) -> float:
    """The median over ops (add, mul, exp ...) of each op's mean over its repeats (ranks, rounds)."""
    by_op: dict = {}
    for r in records:
        by_op.setdefault(str(r.params.get("op")), []).append(r.metrics[metric])
    return median(fmean(v) for v in by_op.values())


def origin_note(records) -> str:
    origins = sorted({r.origin for r in records})
    return "/".join(origins) if origins else "measured"

"""`allreduce`: ``mx.distributed.all_sum`` bandwidth over a size sweep, and a ring α–β fit.

Ranks are started by :func:`asprof.cluster.launch.launch` (``--nodes N`` local ranks on MLX's
ring backend over loopback, or ``--hostfile`` for an ``mlx.launch`` cluster) and run
:mod:`asprof.probe.allreduce_worker`. Each rank times every call; a call is done when its
slowest rank is, so sample i of a size is the maximum over ranks of their i-th sample.

Bandwidths follow nccl-tests (``doc/PERFORMANCE.md``), for S bytes on K ranks and time t:

* algbw = S / t
* busbw = algbw · 2(K−1)/K — a ring all-reduce sends and receives 2(K−1)/K · S bytes per
  rank, so busbw is the per-link rate the ring achieved, comparable across K.

Fit (``op: "fit"``), the model the simulator replays link by link (DESIGN §4): a ring
all-reduce is 2(K−1) steps, each moving a chunk of S/K bytes over one link and costing
α + (S/K)/β, so

    t(S) = 2(K−1)·α + 2(K−1)/K · S/β

α (per-step latency, ``alpha_s``) and β (per-link bandwidth, ``beta_Bps``) come from a
non-negative least-squares fit on *relative* residuals (each size weighted by 1/t), so the
latency-bound small sizes count as much as the bandwidth-bound large ones. ``r2`` is the
ordinary coefficient of determination of the fitted times; ``max_rel_err`` the worst
relative error over the sweep.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls

from asprof.errors import DistributedError
from asprof.probe.context import ProbeContext
from asprof.probe.harness import summarize
from asprof.spec import ring_factor
from asprof.traces.schema import Record, Skip

NAME = "allreduce"
MODEL = "t = 2(K-1)*alpha + 2(K-1)/K * S / beta"
_SIZES = {
    "full": tuple(2**p for p in range(10, 27, 2)),  # 1 KiB .. 64 MiB
    "quick": (2**12, 2**16, 2**20, 2**24),  # 4 KiB .. 16 MiB
    "tiny": (2**10, 2**24),  # far apart: the fit needs time to grow with size even on a loaded machine
}
_TIMEOUT_S = {"full": 1800.0, "quick": 300.0, "tiny": 120.0}


@dataclass(frozen=True)
class RingFit:
    alpha_s: float
    beta_Bps: float
    r2: float
    max_rel_err: float

    def predict(self, nbytes: float, nodes: int) -> float:
        return ring_time(nbytes, nodes, self.alpha_s, self.beta_Bps)


def ring_time(nbytes: float, nodes: int, alpha_s: float, beta_Bps: float) -> float:
    """:data:`MODEL`: 2(K−1) steps of α each, and 2(K−1)/K of the payload over each link."""
    return 2 * (nodes - 1) * alpha_s + ring_factor(nodes) * nbytes / beta_Bps


def fit_ring(nbytes, times_s, nodes: int) -> RingFit:
    """Least-squares α (per step) and β (per link) of :data:`MODEL` from measured times."""
    s = np.asarray(nbytes, dtype=float)
    t = np.asarray(times_s, dtype=float)
    if nodes < 2 or s.size < 2 or np.any(t <= 0):
        raise ValueError("a ring fit needs >= 2 nodes and >= 2 sizes with positive times")
    design = np.column_stack([np.full_like(s, 2.0 * (nodes - 1)), ring_factor(nodes) * s])  # unknowns: α, 1/β
    w = 1.0 / t
    (alpha, inv_beta), _ = nnls(design * w[:, None], t * w)
    if inv_beta * design[:, 1].max() <= 1e-6 * t.max():
        raise ValueError("the fitted bandwidth is unbounded (time does not grow with size)")
    pred = design @ np.array([alpha, inv_beta])
    ss_res = float(np.sum((t - pred) ** 2))
    ss_tot = float(np.sum((t - t.mean()) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 0.0
    return RingFit(float(alpha), float(1.0 / inv_beta), r2, float(np.max(np.abs(pred - t) / t)))


def run(ctx: ProbeContext) -> list[Record | Skip]:
    if ctx.nodes is None and ctx.hostfile is None:
        return [Skip(NAME, "mlx", "link", "no cluster given: pass --nodes N (local ranks) or --hostfile FILE")]
    from asprof.cluster.launch import LaunchSpec, launch

    sizes = _SIZES[ctx.level]
    spec = LaunchSpec(
        module="asprof.probe.allreduce_worker",
        args=("--sizes", ",".join(map(str, sizes)), "--level", ctx.level),
        nodes=ctx.nodes, hostfile=str(ctx.hostfile) if ctx.hostfile else None, timeout_s=_TIMEOUT_S[ctx.level],
        backend=ctx.backend,
    )
    k = spec.world_size

    def on_event(msg):
        if msg.get("type") == "heartbeat" and msg.get("rank") == 0 and "bytes" in msg:
            ctx.progress(f"all_sum on {k} ranks: {msg['bytes']} B")

    results = launch(spec, on_event=on_event)
    return records_from_ranks(results, spec.backend, ctx)


def records_from_ranks(results: list[dict], backend: str, ctx: ProbeContext | None = None) -> list[Record | Skip]:
    """Per-size records (combined over ranks) plus the fit (or a Skip saying why it could not be
    fitted); raises if any rank got a wrong sum."""
    from asprof.cluster.hostfile import TOPOLOGY

    k = len(results)
    topology = TOPOLOGY.get(backend, backend)
    hosts = [str(r.get("host", "")) for r in results]
    config = ctx.harness.config if ctx else None
    out: list[Record | Skip] = []
    sizes, times = [], []
    for i, point in enumerate(results[0]["points"]):
        nbytes = int(point["bytes"])
        for rank, res in enumerate(results):
            p = res["points"][i]
            if not p["correct"]:
                raise DistributedError(
                    f"all_sum of {nbytes} bytes on {k} ranks returned wrong values on rank {rank} "
                    f"(max error {p['max_abs_err']:g}): the collective is broken; no all-reduce figures recorded"
                )
        per_rank = [res["points"][i]["timing"] for res in results]
        n = min(len(t["samples_s"]) for t in per_rank)
        samples = [max(t["samples_s"][j] for t in per_rank) for j in range(n)]
        first = max(t["first_s"] for t in per_rank)
        kw = {"config": config} if config else {}
        timing = summarize(samples, first_s=first, what=f"all_sum {nbytes} B on {k} ranks", **kw)
        t = timing.median_s
        algbw = nbytes / t
        out.append(Record(
            NAME, "all_sum", "mlx", "link", "float32",
            params={"bytes": nbytes, "nodes": k, "backend": backend, "topology": topology, "hosts": hosts},
            metrics={"time_s": t, "algbw_Bps": algbw, "busbw_Bps": algbw * ring_factor(k)},
            timing=timing,
        ))
        sizes.append(nbytes)
        times.append(t)
    try:
        fit = fit_ring(sizes, times, k)
    except ValueError as e:
        return out + [Skip(NAME, "mlx", "link", f"fit on {k} ranks: {e}; the sweep needs sizes where bandwidth matters")]
    out.append(Record(
        NAME, "fit", "mlx", "link", "float32",
        params={"nodes": k, "backend": backend, "topology": topology, "hosts": hosts, "model": MODEL,
                "min_bytes": min(sizes), "max_bytes": max(sizes), "points": len(sizes)},
        metrics={"alpha_s": fit.alpha_s, "beta_Bps": fit.beta_Bps, "r2": fit.r2, "max_rel_err": fit.max_rel_err},
    ))
    return out

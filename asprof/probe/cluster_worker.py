"""Rank side of a cluster probe: every rank runs the compute probes at the same time.

``python -m asprof.probe.cluster_worker --level quick --rounds 3 --probes blas,launch,membw,linalg``
run on every rank by :func:`asprof.probe.cluster.probe_cluster` (through
:func:`asprof.cluster.launch.launch`).

Why on every rank, concurrently: a training step runs its compute on all ranks at once. Ranks
that share a machine (``--nodes N`` on one host, or namespace hosts on one Linux box) share its
cores, caches and memory bandwidth — MLX's CPU ops run one thread per process, so four ranks on
two cores each get about half a core — and only a measurement taken under the same launch sees
that. On a real cluster (one Mac per rank) the same run gives each node's own figures.

Ranks measure in lockstep: the harness's stop rule and every skip decision are made collectively
(an ``all_sum`` over the group), so all ranks run the same calls at the same time and the ring
never pairs up different measurements. They agree after runs of samples (a third of the
harness budget), not after every sample: ranks that share a core and agreed after each
sample timed their short samples alone on it (the collective staggers them), at about half
the time the same work takes in a training step, where they compute at the same time.

The whole suite runs ``rounds`` times (the simulator takes the median over the repeated
records): a machine whose speed drifts for seconds at a time — a shared VM — then cannot bias
one size or one op.

Each record gets ``params.rank``, ``params.ranks`` and ``params.round``; rank 0 also sends this
machine's host description.
"""

from __future__ import annotations

import argparse
import math
import socket
from dataclasses import replace

from asprof.cluster.worker import emit_result, heartbeat, init_group

COMPUTE_PROBES = ("blas", "launch", "membw", "linalg")


def lockstep_records(group, level: str = "quick", names=COMPUTE_PROBES, dtypes=("float32",), rounds: int | None = 1,
                     skipped: list | None = None, agree_span: float | None = None):
    """Yield ``(round, record dict)`` for the compute probes ``names``, measured on every rank
    of ``group`` at once, round after round (``rounds=None``: without end). Every rank must pull
    the same number of records: each measurement's stop rule and every skip are decided
    collectively, after runs of samples lasting about ``agree_span`` seconds (None: a third of
    the level's budget; 0: after every sample, as before 2026-12-05). Skips of the first round
    are appended to ``skipped``."""
    import mlx.core as mx

    from asprof.probe.backends import discover
    from asprof.probe.context import ProbeContext
    from asprof.probe.harness import LEVELS, Harness
    from asprof.probe.runner import REGISTRY, _load
    from asprof.traces.schema import Record, Skip

    rank, k = group.rank(), group.size()
    one = mx.ones((1,))

    def total(x: float) -> float:
        """The sum of ``x`` over the ranks (a small all_sum; every rank must call it)."""
        heartbeat()
        return x if k == 1 else mx.distributed.all_sum(one * x, group=group).item()

    def count(flag: bool) -> float:
        """How many ranks raise ``flag``."""
        return total(float(flag))

    def samples_between(last_s: float, span_s: float) -> int:
        """Samples between two agreements: enough for about ``span_s`` (the ranks' mean); one
        rank alone decides after every sample."""
        if k == 1:
            return 1
        return max(1, math.ceil(total(max(1, math.ceil(span_s / max(last_s, 1e-9)))) / k))

    class LockstepHarness(Harness):
        def measure(self, fn, sync, what="", agree=None, every=None):
            # stop only when every rank wants to stop, asked after runs of samples (module docstring)
            return super().measure(fn, sync, what, agree=lambda stop: count(not stop) == 0,
                                   every=lambda last_s: samples_between(
                                       last_s, self.config.budget_s / 3 if agree_span is None else agree_span))

    for n in names:
        if n not in REGISTRY or n in ("memory", "allreduce"):
            raise SystemExit(f"cluster_worker: not a compute probe: {n!r}")
    backends, absent = discover(("mlx",))
    rnd = 0
    while rounds is None or rnd < rounds:
        ctx = ProbeContext(level=level, harness=LockstepHarness(LEVELS[level]), backends=backends,
                           absent=absent, extra={"dtypes": tuple(dtypes), "cold": False},
                           agree_skip=lambda skip: count(skip) > 0)
        for step, name in enumerate(names):
            heartbeat(rnd * len(names) + step, probe=name, round=rnd)
            for item in _load(name).run(ctx):
                if isinstance(item, Record):
                    params = {**item.params, "rank": rank, "ranks": k, "round": rnd}
                    yield rnd, replace(item, params=params).to_dict() | {"probe": item.probe}
                elif isinstance(item, Skip) and rnd == 0 and skipped is not None:
                    skipped.append(item.to_dict())
        yield rnd, None  # the round is complete
        rnd += 1


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m asprof.probe.cluster_worker")
    ap.add_argument("--level", default="quick", choices=("full", "quick", "tiny"))
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--probes", default=",".join(COMPUTE_PROBES))
    ap.add_argument("--dtypes", default="float32", help="blas dtypes (comma-separated)")
    ap.add_argument("--agree-span", type=float, default=None,
                    help="seconds of samples between two agreements (default: a third of the budget; 0: every sample)")
    args = ap.parse_args(argv)

    group = init_group()
    from asprof.probe.host import capture_host

    skipped: list = []
    records = [rec for _, rec in lockstep_records(group, args.level, [n for n in args.probes.split(",") if n],
                                                   args.dtypes.split(","), args.rounds, skipped, args.agree_span)
               if rec is not None]
    rank, k = group.rank(), group.size()
    host = capture_host(with_torch=False).to_dict() if rank == 0 else None
    emit_result({"rank": rank, "size": k, "hostname": socket.gethostname(), "host": host,
                 "records": records, "skipped": skipped})


if __name__ == "__main__":
    main()

"""Rank side of the `allreduce` probe: time ``mx.distributed.all_sum`` over a size sweep.

Run by :mod:`asprof.probe.allreduce` through :func:`asprof.cluster.launch.launch` (one process
per rank; ``python -m asprof.probe.allreduce_worker --sizes 1024,65536 --level quick``).

Every rank contributes ``(rank + 1) · p`` where ``p[i] = 1 + i mod 7``, so the all-reduced
result must be exactly ``K(K+1)/2 · p`` (small integers: exact in float32). Each rank checks
this before timing and on the last timed result (nccl-tests checks every run's data too).

All ranks must run the same number of collectives or the ring hangs, so the harness's
adaptive stopping decision is made collectively (stop when every rank wants to stop). Each
rank reports its raw per-call samples; the launcher side combines them call by call.
"""

from __future__ import annotations

import argparse
import socket

import mlx.core as mx

from asprof.cluster.worker import emit_result, heartbeat, init_group
from asprof.probe.harness import LEVELS, Harness


def pattern(n: int):
    return (mx.arange(n) % 7 + 1).astype(mx.float32)


def check(result, expected) -> tuple[bool, float]:
    """(exactly equal, max abs error)."""
    err = mx.max(mx.abs(result - expected)).item() if result.size else 0.0
    return bool(mx.array_equal(result, expected).item()), float(err)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", required=True, help="comma-separated payload sizes in bytes (float32)")
    ap.add_argument("--level", default="quick", choices=sorted(LEVELS))
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]

    group = init_group()
    k, rank = group.size(), group.rank()
    harness = Harness(LEVELS[args.level])
    ones = mx.ones((1,))

    def agree(stop: bool) -> bool:
        heartbeat()
        # The number of ranks that still want samples; zero means every rank is done.
        wanting = mx.distributed.all_sum(ones * (0.0 if stop else 1.0), group=group)
        return wanting.item() == 0

    points = []
    for step, nbytes in enumerate(sizes):
        heartbeat(step, bytes=nbytes)
        n = max(1, nbytes // 4)
        p = pattern(n)
        x = p * float(rank + 1)
        expected = p * float(k * (k + 1) // 2)
        mx.eval(x, expected)
        first = mx.distributed.all_sum(x, group=group)
        mx.eval(first)
        ok_first, err_first = check(first, expected)
        last = {}

        def call():
            last["out"] = mx.distributed.all_sum(x, group=group)
            return last["out"]

        timing = harness.measure(call, mx.eval, what=f"all_sum {nbytes} B", agree=agree)
        ok_last, err_last = check(last["out"], expected)
        points.append({"bytes": n * 4, "correct": ok_first and ok_last, "max_abs_err": max(err_first, err_last),
                       "timing": timing.to_dict()})
    emit_result({"rank": rank, "size": k, "host": socket.gethostname(), "points": points})


if __name__ == "__main__":
    main()

"""A minimal worker used by the launcher's tests and as a connectivity check: all-sums each
rank's id, optionally misbehaves (dies, hangs, never connects) on request."""

from __future__ import annotations

import argparse
import os
import time

from asprof.cluster.worker import emit_result, heartbeat, init_group


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--die-rank", type=int, default=-1, help="this rank exits with code 7 after one step")
    ap.add_argument("--hang-rank", type=int, default=-1, help="this rank stops sending heartbeats after one step")
    ap.add_argument("--bytes", type=int, default=4, help="payload of each all_sum")
    ap.add_argument("--step-s", type=float, default=0.0, help="each step also sleeps this long (slow steps)")
    ap.add_argument("--no-connect-rank", type=int, default=-1, help="this rank sleeps instead of joining")
    ap.add_argument("--pad", type=int, default=0, help="characters of padding in the result (a long message)")
    ap.add_argument("--show-env", default=None, metavar="NAME", help="report this environment variable's value")
    args = ap.parse_args(argv)
    rank = int(os.environ.get("MLX_RANK", "0"))
    if rank == args.no_connect_rank:
        time.sleep(3600)
    import mlx.core as mx

    group = init_group()
    total = None
    payload = mx.full((max(1, args.bytes // 4),), float(group.rank() + 1))
    times = []
    for step in range(args.steps):
        if step == 1 and group.rank() == args.die_rank:
            os._exit(7)
        if step == 1 and group.rank() == args.hang_rank:
            time.sleep(3600)
        t = time.perf_counter()
        time.sleep(args.step_s)
        total = mx.distributed.all_sum(payload, group=group)
        mx.eval(total)
        times.append(time.perf_counter() - t)
        heartbeat(step)
    emit_result({"rank": group.rank(), "size": group.size(), "sum": total[0].item(),
                 "correct": bool(mx.all(total == total[0]).item()), "times_s": times,
                 "cpus": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                 "pad": str(group.rank()) * args.pad,
                 "env": os.environ.get(args.show_env) if args.show_env else None})


if __name__ == "__main__":
    main()

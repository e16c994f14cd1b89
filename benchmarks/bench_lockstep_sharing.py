"""Do the cluster compute probes see the machine a training step sees, where ranks share cores?

The compute probes run on every rank at once (asprof.probe.cluster_worker) and the ranks agree
when to stop each measurement with a small collective. Up to 2026-12-05 they agreed after every
sample. A collective lets the ranks go at slightly different moments, and where two ranks share
a core (4 ranks on this 2-core VM) a short sample then often ran while its core's other rank was
still waiting in the collective: alone on the core. A training step's ranks compute at the same
time for the whole forward and backward pass, each on half a core. The probes now agree after
runs of samples lasting a third of the harness budget (docs/validate.md §6.1).

This measures, side by side in one run, the copy kernel's time inside a graph (membw's
``in_graph_s``; the launch probe's per-op ``graph`` dispatch too) four ways:

- ``1 rank``: the probe on one rank (no other work on the machine);
- ``K, each``: the probe on K ranks, agreeing after every sample (``--agree-span 0``, the old way);
- ``K, runs``: the probe on K ranks, as it is now;
- ``K, busy``: every rank timing the same chains back to back, no collective in between — as
  ranks compute during a training step. The reference the other columns are divided by.

    python benchmarks/bench_lockstep_sharing.py --nodes 4
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def busy_worker(seconds: float) -> None:
    """Rank side of ``K, busy``: after one barrier, time the membw chains back to back."""
    import mlx.core as mx

    from asprof.cluster.worker import emit_result, heartbeat, init_group
    from asprof.probe.backends import discover, repeat_op
    from asprof.probe.membw import _BYTES, chain_length

    group = init_group()
    backend = next(b for b in discover(("mlx",))[0])
    out = {}
    for nbytes in _BYTES["quick"]:
        x = backend.randn((nbytes // 4,), "float32", seed=1)
        length = chain_length(nbytes)
        fn = repeat_op(backend.copy, x, length)
        backend.sync(fn())
        mx.distributed.all_sum(mx.ones((1,)), group=group).item()  # start together
        heartbeat(bytes=nbytes)
        samples, end = [], time.perf_counter() + seconds
        while time.perf_counter() < end or len(samples) < 3:
            t0 = time.perf_counter()
            backend.sync(fn())
            samples.append((time.perf_counter() - t0) / length)
        out[str(nbytes)] = statistics.median(samples)
    emit_result({"rank": group.rank(), "copy": out})


def probe(nodes: int, span: float | None) -> dict:
    """Medians over ranks (and ops) of the membw copy ``in_graph_s`` per size, of the launch
    probe's per-op time in a graph and of its warm synced latency."""
    from asprof.cluster.launch import LaunchSpec, launch

    args = ("--level", "quick", "--rounds", "1", "--probes", "membw,launch")
    if span is not None:
        args += ("--agree-span", str(span))
    results = launch(LaunchSpec("asprof.probe.cluster_worker", args, nodes=nodes, timeout_s=1800,
                                env={"PYTHONPATH": str(HERE.parent)}))
    copy, graph, warm = {}, [], []
    for res in results:
        for d in res["records"]:
            if d["probe"] == "membw" and d.get("op") == "copy":
                copy.setdefault(str(d["params"]["bytes"]), []).append(d["metrics"]["in_graph_s"])
            elif d["probe"] == "launch" and d.get("op") in ("graph", "warm"):
                (graph if d["op"] == "graph" else warm).append(d["metrics"]["latency_s"])
    return {"copy": {b: statistics.median(v) for b, v in copy.items()},
            "graph": statistics.median(graph), "warm": statistics.median(warm)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=4, help="K: ranks on this machine")
    ap.add_argument("--seconds", type=float, default=0.5, help="K, busy: timing per size")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        busy_worker(args.seconds)
        return 0
    if args.nodes < 2:
        ap.error("--nodes must be at least 2")

    from asprof.cluster.launch import LaunchSpec, launch

    cols = {"1 rank": probe(1, None)}
    cols[f"{args.nodes}, each"] = probe(args.nodes, 0.0)
    cols[f"{args.nodes}, runs"] = probe(args.nodes, None)
    env = {"PYTHONPATH": f"{HERE}:{HERE.parent}"}
    busy = launch(LaunchSpec("bench_lockstep_sharing", ("--worker", "--seconds", str(args.seconds)),
                             nodes=args.nodes, env=env, timeout_s=1800))
    ref = {b: statistics.median(r["copy"][b] for r in busy) for b in busy[0]["copy"]}

    names = list(cols)
    print(f"copy kernel inside a graph, µs per kernel (median over ranks); {args.nodes} ranks on "
          f"{os.cpu_count()} cores; in brackets: ÷ '{args.nodes}, busy'")
    print(f"{'bytes':>9}  " + "  ".join(f"{n:>16}" for n in names) + f"  {args.nodes:>7}, busy")
    for b in sorted(ref, key=int):
        cells = [f"{cols[n]['copy'][b] * 1e6:8.2f} ({cols[n]['copy'][b] / ref[b]:4.2f})" for n in names]
        print(f"{int(b):>9}  " + "  ".join(f"{c:>16}" for c in cells) + f"  {ref[b] * 1e6:12.2f}")
    for key, what in (("graph", "per-op dispatch in a graph"), ("warm", "warm synced latency")):
        print(f"launch probe's {what}, µs: " + ", ".join(f"{n} {cols[n][key] * 1e6:.2f}" for n in names))
    return 0


if __name__ == "__main__":
    sys.exit(main())

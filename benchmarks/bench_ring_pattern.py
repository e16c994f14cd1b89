"""Does what the ranks did just before an ``mx.distributed.all_sum`` change how long it takes?

MLX's ring backend moves data with one thread per socket that polls its non-blocking socket
while it has work, so where threads outnumber cores a collective can lose scheduler ticks (4 ms
at HZ=250) to a poller with nothing to read. The allreduce probe times its calls back to back,
each after a 4-byte agreement collective; a training step's gradient all-reduce follows the
backward pass. This times the same payload on the same ring in four patterns, interleaved
round by round (docs/validate.md §6.1 has what it found):

- ``probe``: as the allreduce probe does: a 4-byte agreement all_sum before each timed call;
- ``back-to-back``: the timed calls alone;
- ``after compute``: --gap-ms of matmuls before each call (a training step's gradient
  all-reduce follows its backward pass);
- ``after idle``: --gap-ms asleep before each call.

It prints per payload and pattern the median, mean and p90 and the mean relative to the probe
pattern's median (what the simulator prices the all-reduce at, from the probe's curve); with
--trace, also that price itself.

    python benchmarks/bench_ring_pattern.py --nodes 2
    python benchmarks/bench_ring_pattern.py --nodes 2 --bytes 394496 --trace traces/vm-2r-loopback-….json
    sudo python benchmarks/bench_ring_pattern.py --nodes 2 --netns-rate 2000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

PATTERNS = ("probe", "back-to-back", "after compute", "after idle")


def worker(sizes: list[int], repeats: int, gap_s: float) -> None:
    """Rank side (run by the launcher as ``python -m bench_ring_pattern --worker``)."""
    import mlx.core as mx

    from asprof.cluster.worker import emit_result, heartbeat, init_group

    group = init_group()
    a = mx.random.normal((256, 256))
    tiny = mx.ones((1,))
    mx.eval(a, tiny)

    def before(pattern: str) -> None:
        if pattern == "probe":
            mx.distributed.all_sum(tiny, group=group).item()
        elif pattern == "after compute":
            # every rank starts its gap together, as the ranks of a training step start its backward
            mx.distributed.all_sum(tiny, group=group).item()
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < gap_s:
                mx.eval(a @ a)
        elif pattern == "after idle":
            mx.distributed.all_sum(tiny, group=group).item()
            time.sleep(gap_s)

    out = {}
    for nbytes in sizes:
        x = mx.ones((max(1, nbytes // 4),))
        mx.eval(mx.distributed.all_sum(x, group=group))
        times = {p: [] for p in PATTERNS}
        for i in range(repeats):
            heartbeat(i, bytes=nbytes)
            for p in PATTERNS:  # interleaved: a drift of the machine hits every pattern alike
                before(p)
                t0 = time.perf_counter()
                mx.eval(mx.distributed.all_sum(x, group=group))
                times[p].append(time.perf_counter() - t0)
        out[str(nbytes)] = times
    emit_result({"rank": group.rank(), "times": out})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--bytes", default="65536,394496,1048576,4194304",
                    help="comma-separated payloads (394496: the tiny model's gradients)")
    ap.add_argument("--repeats", type=int, default=40, help="timed calls per payload and pattern")
    ap.add_argument("--gap-ms", type=float, default=20.0, help="compute or sleep before each call")
    ap.add_argument("--netns-rate", type=float, default=None,
                    help="run the ranks in network namespaces, links shaped to this Mbit/s (root)")
    ap.add_argument("--trace", help="a trace of this ring: print the simulator's price too")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.bytes.split(",")]
    if args.worker:
        worker(sizes, args.repeats, args.gap_ms / 1e3)
        return 0

    from contextlib import nullcontext

    from asprof.cluster.launch import LaunchSpec, launch
    from asprof.cluster.netns import NetnsRing, namespace_ring

    wargs = ("--worker", "--bytes", args.bytes, "--repeats", str(args.repeats), "--gap-ms", str(args.gap_ms))
    env = {"PYTHONPATH": f"{HERE}:{HERE.parent}"}
    ring = (namespace_ring(NetnsRing(args.nodes, args.netns_rate)) if args.netns_rate
            else nullcontext(None))
    with ring as hosts:
        spec = (LaunchSpec("bench_ring_pattern", wargs, hosts=tuple(hosts), env=env, timeout_s=1800)
                if hosts else LaunchSpec("bench_ring_pattern", wargs, nodes=args.nodes, env=env, timeout_s=1800))
        results = launch(spec)
    link = f"netns {args.netns_rate:g} Mbit/s" if args.netns_rate else "loopback"
    print(f"all_sum on {args.nodes} ranks over {link}, {args.repeats} calls per pattern, gap {args.gap_ms:g} ms "
          "(ms; every rank's calls pooled)")

    price = None
    if args.trace:
        from asprof.simulate import HardwareModel
        from asprof.traces.io import load_trace
        price = HardwareModel.from_trace(load_trace(args.trace)).allreduce_time

    print(f"{'bytes':>9}  {'pattern':<14} {'median':>8} {'mean':>8} {'p90':>8}  mean / probe median")
    for nbytes in sizes:
        pooled = {p: [t for r in results for t in r["times"][str(nbytes)][p]] for p in PATTERNS}
        ref = statistics.median(pooled["probe"])
        for p in PATTERNS:
            xs = pooled[p]
            print(f"{nbytes:>9}  {p:<14} {statistics.median(xs) * 1e3:8.3f} {statistics.fmean(xs) * 1e3:8.3f} "
                  f"{np.percentile(xs, 90) * 1e3:8.3f}  {statistics.fmean(xs) / ref:6.2f}")
        if price is not None:
            t = price(nbytes, args.nodes)
            print(f"{'':>9}  {'trace price':<14} {t * 1e3:8.3f}" if t is not None else
                  f"{'':>9}  (the trace has no {args.nodes}-rank all_sum curve)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

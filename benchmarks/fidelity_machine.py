"""The machine under a fidelity benchmark: its load, other processes' CPU use, a speed canary
(benchmarks/bench_fidelity.py's grid and random modes; a busy machine skews every timing)."""

from __future__ import annotations

import os
import statistics
import time


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"


def other_cpu(seconds: float = 2.0) -> float:
    """CPU use of processes outside this benchmark's tree, in cores (a busy machine skews timings)."""
    import psutil

    me = psutil.Process()
    mine = {me.pid} | {c.pid for c in me.children(recursive=True)}
    procs = [p for p in psutil.process_iter() if p.pid not in mine]
    for p in procs:
        try:
            p.cpu_percent(None)
        except psutil.Error:
            pass
    time.sleep(seconds)
    total = 0.0
    for p in procs:
        try:
            total += p.cpu_percent(None)
        except psutil.Error:
            pass
    return total / 100.0


def canary() -> float:
    """Seconds of a fixed little workload (a chain of 32 GEMMs of 128³ and an exp over 2^16
    floats on MLX's CPU stream), best of 5: the machine's speed right now. This VM, with no
    other process visible, alternates second by second between two speeds ~1.6x apart (another
    tenant on the host, presumably); printed next to every cell for the record."""
    import mlx.core as mx

    a = mx.random.normal((128, 128), key=mx.random.key(1)) / 12.0
    x = mx.random.normal((2**16,), key=mx.random.key(2))
    mx.eval(a, x)

    def work():
        y = a
        for _ in range(32):
            y = y @ a
        return y, mx.exp(x)

    warm = time.perf_counter()
    while time.perf_counter() - warm < 0.5:  # after idle seconds the first runs are slow
        mx.eval(work())
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        mx.eval(work())
        best = min(best, time.perf_counter() - t)
    return best


class OtherLoad:
    """Samples, in a background thread, the CPU used by processes outside this benchmark's tree
    (cores, averaged over the block): a cell measured while others computed is not kept."""

    def __init__(self, every_s: float = 1.0):
        import threading

        self.every_s, self.samples, self.stop = every_s, [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.is_set():
            self.samples.append(other_cpu(self.every_s))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()

    @property
    def mean(self) -> float:
        return statistics.fmean(self.samples) if self.samples else 0.0


def wait_quiet(max_cores: float, patience_s: float) -> float:
    """Wait (up to patience_s) until other processes use less than max_cores; returns their use."""
    deadline = time.monotonic() + patience_s
    while True:
        busy = other_cpu()
        if busy < max_cores or time.monotonic() > deadline:
            return busy
        print(f"  (machine busy: other processes use {busy:.2f} cores; waiting)", flush=True)
        time.sleep(20)

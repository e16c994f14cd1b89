"""`launch`: per-op dispatch latency, cold and warm (profiling paper §4.3, Table 6).

A tiny op (16 elements, or an 8×8 matmul) does negligible work, so its synced time is the cost
of getting any op to run: graph building, kernel lookup/compilation, dispatch and the sync.

* ``warm`` (params op): the harness's median over repeated calls in this process, after
  warm-up. Metric ``latency_s``.
* ``cold`` (params op): the *first* call of that op in a fresh process (after the framework is
  initialised with an unrelated op, so the library's start-up is not blamed on the first op
  timed). The paper's cold launch is a first call; earlier probes in this process would have
  warmed the kernels, so each sample comes from a new child process. ``latency_s`` is the
  median over the children, with the samples in ``timing``.
* ``graph`` (params op, ops): a chain of ``ops`` dependent tiny ops built as one graph and
  synced once; ``latency_s`` is the per-op cost (median chain time / ops), ``timing`` holds the
  whole-chain samples. In MLX this is the cost of one more kernel inside a lazily evaluated
  step, which is how training steps run (one ``mx.eval`` per step); for eager PyTorch it is the
  per-op dispatch cost without a sync.

The child is this module run as ``python -m asprof.probe.launch FRAMEWORK DEVICE OPS``; it
prints one JSON object {op: first-call seconds}.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from asprof.probe.backends import CHAIN_OPS, TINY_OPS, make_backend
from asprof.probe.context import ProbeContext
from asprof.probe.harness import Harness, summarize
from asprof.traces.schema import Record, Skip

NAME = "launch"
_COLD_PROCESSES = {"full": 5, "quick": 2, "tiny": 1}
_CHILD_TIMEOUT_S = 120
_CHAIN = {"full": 256, "quick": 128, "tiny": 16}


def run(ctx: ProbeContext) -> list[Record | Skip]:
    out: list[Record | Skip] = list(ctx.absent_skips(NAME))
    for backend in ctx.backends:
        cold = _cold_samples(backend.framework, backend.device, ctx) if ctx.option("cold", True) else None
        if cold is None:
            pass  # not asked for (a cluster probe: the simulator needs warm and in-graph costs only)
        elif isinstance(cold, str):
            out.append(Skip(NAME, backend.framework, backend.device, f"cold launch: {cold}"))
        else:
            for op in TINY_OPS:
                timing = summarize(cold[op], config=ctx.harness.config, what=f"{backend.name} cold {op}")
                out.append(Record(NAME, "cold", backend.framework, backend.device, "float32",
                                  params={"op": op, "processes": len(cold[op])},
                                  metrics={"latency_s": timing.median_s}, timing=timing))
        for op in TINY_OPS:
            timing = ctx.measure(backend, backend.tiny_op(op), f"warm {op}")
            out.append(Record(NAME, "warm", backend.framework, backend.device, "float32", params={"op": op},
                              metrics={"latency_s": timing.median_s}, timing=timing))
            ctx.progress(f"{backend.name} {op}: warm {timing.median_s * 1e6:.3g} us")
        length = _CHAIN[ctx.level]
        for op in CHAIN_OPS:
            timing = ctx.measure(backend, backend.chain(op, length), f"graph of {length} {op}")
            out.append(Record(NAME, "graph", backend.framework, backend.device, "float32",
                              params={"op": op, "ops": length},
                              metrics={"latency_s": timing.median_s / length, "graph_s": timing.median_s},
                              timing=timing))
            ctx.progress(f"{backend.name} {op}: {timing.median_s / length * 1e6:.3g} us per op in a graph")
    return out


def _cold_samples(framework: str, device: str, ctx: ProbeContext) -> dict[str, list[float]] | str:
    """First-call times per op from fresh processes, or the reason they could not be taken."""
    samples: dict[str, list[float]] = {op: [] for op in TINY_OPS}
    for i in range(_COLD_PROCESSES[ctx.level]):
        ctx.progress(f"{framework}/{device} cold launch: fresh process {i + 1}")
        cmd = [sys.executable, "-m", "asprof.probe.launch", framework, device, ",".join(TINY_OPS)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_CHILD_TIMEOUT_S, env=dict(os.environ))
        except subprocess.TimeoutExpired:
            return f"the child process did not finish within {_CHILD_TIMEOUT_S} s"
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            return f"the child process failed (exit {proc.returncode}): {last[:200]}"
        try:
            got = json.loads(proc.stdout.strip().splitlines()[-1])
            for op in TINY_OPS:
                samples[op].append(float(got[op]))
        except (ValueError, KeyError, IndexError) as e:
            return f"unreadable child output ({type(e).__name__}: {e})"
    return samples


def _child(framework: str, device: str, ops: list[str]) -> dict[str, float]:
    backend = make_backend(framework, device)
    backend.warm_library()
    harness = Harness()
    return {op: harness.first_call(backend.tiny_op(op), backend.sync) for op in ops}


if __name__ == "__main__":
    fw, dev, names = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
    print(json.dumps(_child(fw, dev, names)))

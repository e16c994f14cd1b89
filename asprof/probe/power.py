"""`power`: the machine's power draw at idle, during GEMM-bound work and during bandwidth-bound work.

Each readable source (asprof.probe.power_sources: macOS IOReport through macmon, Linux RAPL,
NVIDIA NVML through nvidia-smi) gives the mean watts of each of its domains (cpu, gpu, dram,
package-0, gpu0 ...) over a few seconds of each load:

* ``idle``: sleeping;
* ``gemm``: float32 matmuls of 1024 x 1024 on MLX's default device, back to back (compute bound);
* ``membw``: copies of a 64 MiB array, back to back (memory-bandwidth bound).

Records: ``power/<load>``, device = the domain, ``metrics.watts``, ``params.source``. The simulator
prices energy from them (asprof.simulate.energy). Where no source is readable the probe records
one skip naming every reason, so a trace says why it has no power figures.
"""

from __future__ import annotations

import time

from asprof.probe.context import ProbeContext
from asprof.probe.power_sources import available_sources
from asprof.traces.schema import Record, Skip

NAME = "power"
SECONDS = {"full": 5.0, "quick": 2.0, "tiny": 0.5}
LOADS = ("idle", "gemm", "membw")


def _loads():
    import mlx.core as mx

    a = mx.random.normal((1024, 1024))
    x = mx.random.normal((16 * 2**20,))  # 64 MiB of float32
    mx.eval(a, x)
    return {
        "idle": lambda: time.sleep(0.02),
        "gemm": lambda: mx.eval(a @ a),
        "membw": lambda: mx.eval(x + 0.0),  # one read, one write per element
    }


def run(ctx: ProbeContext) -> list[Record | Skip]:
    sources, why = available_sources()
    if not sources:
        return [Skip(NAME, "host", "power", "no power source is readable here: " + "; ".join(why))]
    loads, seconds, out = _loads(), SECONDS.get(ctx.level, 2.0), []
    for src in sources:
        for load in LOADS:
            ctx.progress(f"{src.name}: {load} for {seconds:g} s")
            for domain, watts in sorted(src.measure(loads[load], seconds).items()):
                out.append(Record(NAME, load, "host", domain, None,
                                  params={"source": src.name, "seconds": seconds},
                                  metrics={"watts": float(watts)}))
    return out

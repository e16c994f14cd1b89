"""Memory pressure on unified memory (profiling paper §4.3; docs/simulator.md §8b).

On Apple silicon the GPU may keep only part of the RAM resident: Metal's
``recommendedMaxWorkingSetSize`` (the trace's ``memory`` record op ``working_set``; about 75 %
of the RAM by default). A training step whose memory is above that share but within the RAM
still runs, but the part beyond the share cannot stay resident: each step it is written out and
read back in (the paper saw RSS and page faults climb and step times turn unsteady near
capacity, Fig. 4). The model:

    need ≤ share:           no cost
    share < need ≤ RAM:     + 2 · (need − share) / page_in_Bps per step      (out and back in)
    need > RAM:             the run cannot fit (the CLI refuses it)

``page_in_Bps`` is the trace's ``memory`` record op ``paging`` (bundled profiles: a stated
assumption, asprof.traces.profile_sources.PAGING); a trace without it uses that figure too, with
a note. Hosts without unified memory (or without a GPU) have no such share: no cost.
Pure: no I/O.
"""

from __future__ import annotations

from asprof.traces.profile_sources import DEFAULT_GPU_SHARE as DEFAULT_SHARE  # gpustack issue #1375
from asprof.traces.profile_sources import PAGING
from asprof.traces.schema import Trace


def memory_figures(trace: Trace) -> tuple[float | None, float | None]:
    """(GPU working set bytes, paging bytes/s) from the trace's ``memory`` records, None where absent."""
    def metric(op, name):
        vals = [r.metrics[name] for r in trace.probe("memory", op=op) if name in r.metrics]
        return min(vals) if vals else None

    return metric("working_set", "gpu_working_set_bytes"), metric("paging", "page_in_Bps")


def gpu_share_bytes(memory_bytes: float, working_set_bytes: float | None) -> float:
    """What the GPU may keep resident: the trace's working set, else DEFAULT_SHARE of the RAM."""
    return working_set_bytes if working_set_bytes else DEFAULT_SHARE * memory_bytes


def paging_s(need_bytes: float, memory_bytes: float, unified: bool, working_set_bytes: float | None = None,
             page_in_Bps: float | None = None) -> float:
    """Seconds per step of paging for a step needing ``need_bytes`` (0 when it fits in the GPU's
    share or the host has no unified memory; the cost at the RAM's size when it exceeds the RAM,
    where the caller reports that it does not fit)."""
    if not unified:
        return 0.0
    share = gpu_share_bytes(memory_bytes, working_set_bytes)
    over = min(need_bytes, memory_bytes) - share
    if over <= 0:
        return 0.0
    return 2.0 * over / (page_in_Bps or PAGING.value)


def note(need_bytes: float, memory_bytes: float, unified: bool, working_set_bytes: float | None,
         page_in_Bps: float | None) -> str | None:
    """One line for the report when the step is above the GPU's share (None otherwise)."""
    extra = paging_s(need_bytes, memory_bytes, unified, working_set_bytes, page_in_Bps)
    if extra <= 0:
        return None
    share = gpu_share_bytes(memory_bytes, working_set_bytes)
    rate = page_in_Bps or PAGING.value
    how = "" if page_in_Bps else " (the trace has no paging figure: the default assumption)"
    return (f"memory pressure: {need_bytes / 2**30:.1f} GiB per node is above the GPU's resident share "
            f"({share / 2**30:.1f} GiB of {memory_bytes / 2**30:.0f} GiB): paging the excess out and back "
            f"costs {extra * 1e3:.0f} ms per step at {rate / 1e9:.1f} GB/s{how}")

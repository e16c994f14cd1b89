"""The link a backend's all-reduce runs on: α/β from the trace's own fit for that backend, else a
published figure (asprof.traces.links), reported as borrowed. No I/O."""

from __future__ import annotations

from dataclasses import replace

from asprof.simulate.hardware import HardwareModel
from asprof.traces.links import figure_for
from asprof.traces.schema import Trace


def _fits(trace: Trace) -> list:
    return [r for r in trace.probe("allreduce", op="fit") if {"alpha_s", "beta_Bps"} <= set(r.metrics)]


def trace_backend(trace: Trace) -> str:
    """The backend a trace's all-reduce was measured (or published) on: ring when it has ring's."""
    names = list(dict.fromkeys(str(r.params.get("backend", "ring")) for r in _fits(trace)))
    return "ring" if not names or "ring" in names else names[0]


def with_backend(hw: HardwareModel, trace: Trace, backend: str) -> HardwareModel:
    """``hw`` with the link of ``backend``: the trace's fit for it (the one of most ranks), else
    the published figure for it on the trace's cable, else ``hw`` unchanged (a note says so)."""
    own = [r for r in _fits(trace) if str(r.params.get("backend", "ring")) == backend]
    if own:
        best = max(own, key=lambda r: r.params.get("nodes", 0) if isinstance(r.params.get("nodes"), int) else 0)
        measured = best.origin == "measured"
        curves = hw.allreduce_curves if measured and all(
            r.params.get("backend", "ring") == backend for r in trace.probe("allreduce", op="all_sum")) else {}
        return replace(hw, alpha=best.metrics["alpha_s"], beta=best.metrics["beta_Bps"],
                       link_includes_reduction=measured, allreduce_curves=curves,
                       sources={**hw.sources, "link": f"{backend}: {best.origin} ({trace.name or trace.host.hostname})"})
    cables = {str(r.params.get("link")) for r in _fits(trace)}
    cable = next((c for c in cables if c.startswith("Thunderbolt")), None)
    fig = figure_for(backend, cable) or figure_for(backend)
    if fig is None:
        return replace(hw, notes=hw.notes + (f"no link figure for {backend}: its all-reduce uses the trace's link",))
    return replace(hw, alpha=fig.alpha_s, beta=fig.beta_Bps, link_includes_reduction=False, allreduce_curves={},
                   sources={**hw.sources, "link": f"{backend}: published ({fig.key})"},
                   notes=hw.notes + (f"{backend} link α {fig.alpha_s * 1e6:g} µs, β {fig.beta_Bps / 1e9:.3g} GB/s: "
                                     f"published figure {fig.key} ({fig.link}), not measured in this trace",))

"""`asprof show TRACE`: a readable summary of a trace (or a bundled profile by name)."""

from __future__ import annotations

import click


@click.command(help="""Print a readable summary of a trace: host (incl. the BLAS in use), one table
per probe, the all-reduce latency/bandwidth fit, timing warnings and what was skipped.

TRACE is a trace file, or the name of a bundled reference profile (e.g. m4-mini-x16-tb4).""")
@click.argument("trace", metavar="TRACE")
def command(trace):
    from asprof.probe.summary import render_summary

    loaded = _load(trace)
    click.echo(render_summary(loaded, source=trace), nl=False)
    if loaded.probe("power"):
        click.echo(_energy_line(trace, loaded.nodes or 1))


def _energy_line(spec: str, nodes: int) -> str:
    """What the trace's power means for training: Adam on the default model, simulated."""
    from asprof.errors import AsprofError
    from asprof.simulate.energy import energy
    from asprof.simulate.session import SimulateConfig, run_simulation
    from asprof.spec import RunChoices

    try:
        rep = run_simulation(SimulateConfig(nodes=(nodes,), run=RunChoices(optimizers=("adam",)), trace=spec, steps=5,
                                            variance=False))
    except AsprofError as e:
        return f"\nenergy: not predicted ({e})"
    if rep.power is None:
        return "\nenergy: the power records lack one of idle, gemm, membw for a source"
    p = rep.predictions[0]
    e = energy(rep.power, p.results[0], p.workload.tokens)
    return (f"\nenergy (simulated: adam, model {rep.model.name}, {p.workload.tokens} tokens per node, {nodes} node(s)): "
            f"{e['J_per_step_per_node']:.3g} J per step per node, {1e3 * e['J_per_token']:.3g} mJ per token "
            "(asprof simulate for other settings)")


def _load(spec: str):
    """A trace path, or a bundled profile's name when no such file exists."""
    from pathlib import Path

    from asprof.traces.io import load_trace
    from asprof.traces.profiles import load_profile, profile_names

    if not Path(spec).exists() and spec in profile_names():
        return load_profile(spec)
    return load_trace(spec)

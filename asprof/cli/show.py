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


def _load(spec: str):
    """A trace path, or a bundled profile's name when no such file exists."""
    from pathlib import Path

    from asprof.traces.io import load_trace
    from asprof.traces.profiles import load_profile, profile_names

    if not Path(spec).exists() and spec in profile_names():
        return load_profile(spec)
    return load_trace(spec)

"""The ``--backend`` option, defined once for probe, train, validate and simulate."""

from __future__ import annotations

import click

from asprof.cluster.hostfile import BACKENDS

_DEFAULT = ("Default: as mlx.launch picks it: the hostfile's own \"backend\", else nccl where CUDA is "
            "present, else ring.")


def _one(ctx, param, value):
    if value is not None and value not in BACKENDS:
        raise click.BadParameter(f"expected one of {', '.join(BACKENDS)}, got {value!r}")
    return value


def _many(ctx, param, value):
    names = tuple(dict.fromkeys(x.strip() for x in (value or "").split(",") if x.strip()))
    bad = [n for n in names if n not in BACKENDS]
    if bad:
        raise click.BadParameter(f"expected backends from {', '.join(BACKENDS)}, got {bad[0]!r}")
    return names


def backend_option(many: bool = False):
    """``--backend NAME`` for a run (probe, train, validate), or ``--backend LIST`` to compare
    backends in the simulator (``many``)."""
    if many:
        return click.option(
            "--backend", "backends", default=None, metavar="LIST", callback=_many,
            help=f"mx.distributed backend(s) whose all-reduce to simulate, comma-separated ({', '.join(BACKENDS)}): "
                 "ring (TCP ring), jaccl (RDMA full mesh over Thunderbolt 5), jaccl-ring, mpi; a list compares them in "
                 "one sweep. Default: the trace's backend (ring for the bundled profiles).")
    return click.option(
        "--backend", default=None, metavar="NAME", callback=_one,
        help=f"mx.distributed backend: {', '.join(BACKENDS)}. Local ranks (--nodes) run ring or mpi (mpirun, "
             f"OpenMPI); jaccl and nccl need a hostfile. {_DEFAULT}")

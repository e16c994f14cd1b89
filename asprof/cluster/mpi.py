"""Local ranks on MLX's MPI backend: the ``mpirun`` command that starts them.

MLX's MPI backend dlopens the MPI library at ``mx.distributed.init(backend="mpi")`` and takes its
rank from MPI, so the ranks must be started by ``mpirun`` (``mlx.launch --backend mpi`` does the
same through a hostfile). On Debian the library is OpenMPI (``apt-get install openmpi-bin
libopenmpi-dev``). mpirun refuses to run as root unless told to; the ranks float over the cores
(``--bind-to none``) and may outnumber them (``--oversubscribe``), as the ring's local ranks do.
"""

from __future__ import annotations

import ctypes.util
import os
import shutil

from asprof.errors import AsprofError

INSTALL_HINT = "install OpenMPI (Debian: apt-get install openmpi-bin libopenmpi-dev; macOS: brew install open-mpi)"


def why_unavailable() -> str | None:
    """None when ``mpirun`` can start MPI ranks here, else the reason (for skips and errors)."""
    if shutil.which("mpirun") is None:
        return f"no mpirun on PATH: {INSTALL_HINT}"
    if not mpi_env():
        return f"no MPI library (libmpi) for MLX to load: {INSTALL_HINT}"
    return None


def mpi_env() -> dict[str, str]:
    """``MLX_MPI_LIBNAME``: the MPI library MLX dlopens (it asks for plain ``libmpi.so``, which
    only the -dev package links; the versioned library is what every install has, as
    ``mlx.launch`` finds it through ``ompi_info``). Empty where none is found."""
    name = os.environ.get("MLX_MPI_LIBNAME") or ctypes.util.find_library("mpi")
    return {"MLX_MPI_LIBNAME": name} if name else {}


def mpirun_command(nodes: int, env_names: list[str]) -> list[str]:
    """``mpirun`` starting ``nodes`` local ranks, forwarding the variables ``env_names``."""
    reason = why_unavailable()
    if reason:
        raise AsprofError(f"the mpi backend needs mpirun: {reason}")
    cmd = [shutil.which("mpirun"), "-np", str(nodes), "--oversubscribe", "--bind-to", "none"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    for name in env_names:
        cmd += ["-x", name]
    return cmd + ["--"]


def mpi_rank() -> int | None:
    """This process's rank as mpirun set it (OpenMPI, MPICH/PMI), before MPI is initialised."""
    for name in ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return None

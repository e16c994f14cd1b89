"""Which fast BLAS the MLX ranks asprof launches are given (DESIGN §8).

MLX's Linux CPU wheel calls the netlib reference BLAS it bundles (~6 GFLOP/s for a float32
matmul here) unless another library defining ``cblas_sgemm`` is preloaded; Debian's OpenBLAS
then gives ~95 GFLOP/s and a ~13x faster ``eigh``. asprof.probe.host.mlx_blas says which one a
process really calls.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

# Fast BLAS + LAPACK pairs (Debian/Ubuntu packages libopenblas0-pthread, libopenblas0-openmp)
# that MLX's Linux CPU wheel picks up when preloaded (DESIGN §8); the first one installed wins.
_FAST_BLAS_DIRS = ("/usr/lib/{arch}-linux-gnu/openblas-pthread", "/usr/lib/{arch}-linux-gnu/openblas-openmp")


def fast_blas_preload(environ: dict[str, str] | None = None) -> str | None:
    """The ``LD_PRELOAD`` value that makes MLX call an installed fast BLAS and LAPACK in a process
    started with it, or None: not on Linux, ``LD_PRELOAD`` already set (the user's choice stands),
    ``ASPROF_BLAS=reference`` (opt out), or none installed. (OpenBLAS wheels from PyPI, such as
    numpy's or scipy-openblas32, rename their symbols, so MLX cannot use them.)"""
    env = os.environ if environ is None else environ
    if not sys.platform.startswith("linux") or env.get("LD_PRELOAD") or env.get("ASPROF_BLAS") == "reference":
        return None
    arch = platform.machine()
    for d in _FAST_BLAS_DIRS:
        blas, lapack = Path(d.format(arch=arch)) / "libblas.so.3", Path(d.format(arch=arch)) / "liblapack.so.3"
        if blas.exists() and lapack.exists():
            return f"{blas}:{lapack}"
    return None

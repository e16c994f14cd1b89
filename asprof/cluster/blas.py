"""Which fast BLAS the MLX ranks asprof launches are given (DESIGN §8).

MLX's Linux CPU wheel calls the netlib reference BLAS it bundles (~6 GFLOP/s for a float32
matmul here) unless another library defining ``cblas_sgemm`` is preloaded; Debian's OpenBLAS
then gives ~95 GFLOP/s and a ~13x faster ``eigh``. mlx_blas says which one a process really
calls.
"""

from __future__ import annotations

import ctypes
import os
import platform
import re
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


# The variables that set a fast BLAS's thread count (OpenBLAS, and its OpenMP build).
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")


def launched_blas_env(environ: dict[str, str] | None = None, ranks_here: int = 1,
                      cores: int | None = None) -> dict[str, str]:
    """What a rank launched on this machine gets added to its environment: the fast BLAS
    preloaded (:func:`fast_blas_preload`) and, unless the user set a thread count, its threads
    capped at this rank's share of the cores, max(1, cores // ranks_here). Left alone, every
    OpenBLAS rank starts a thread per core: two ranks on two cores run four threads that spin
    while they wait, and a step that mixes GEMMs with other work then ran 2-4x slower than its
    GEMMs measured (a 2-rank tiny validate here: -55/-72/-47 % with them, +3/+1/-17 % capped)."""
    env = os.environ if environ is None else environ
    preload = fast_blas_preload(env)
    if preload is None:
        return {}
    out = {"LD_PRELOAD": preload}
    if not any(env.get(v) for v in THREAD_VARS):
        if cores is None:
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        share = str(max(1, cores // max(1, ranks_here)))
        out.update({v: share for v in THREAD_VARS})
    return out


# Candidate BLAS implementations, recognised by library path.
_BLAS_NAMES = (("openblas", "openblas"), ("mkl", "mkl"), ("blis", "blis"), ("atlas", "atlas"),
               ("accelerate", "accelerate"), ("veclib", "accelerate"), ("flexiblas", "flexiblas"))


def mlx_blas() -> tuple[str, str | None]:
    """(name, library path) of the BLAS that MLX's matmul calls in *this* process.

    macOS: MLX links Accelerate. Linux: MLX calls ``cblas_sgemm``. A library preloaded with
    LD_PRELOAD (or linked into the executable) defines it in the global scope and wins over the
    copy the wheel bundles; otherwise the bundled one (netlib reference BLAS 3.x, shipped as
    ``mlx_cpu.libs/libblas-*.so``) is used. So: ask the dynamic linker which library the
    global ``cblas_sgemm`` comes from, and fall back to the bundled copy mapped into memory.
    """
    if sys.platform == "darwin":
        return "accelerate", None
    lib = _global_symbol_library("cblas_sgemm")
    if lib is None:
        lib = next((p for p in _mapped_libraries() if "mlx" in p and re.search(r"/libblas[^/]*\.so", p)), None)
        if lib is None:
            return "unknown", None
        return "reference", lib
    return _classify(lib), lib


def _classify(path: str) -> str:
    real = os.path.realpath(path).lower()
    for key, name in _BLAS_NAMES:
        if key in real or key in path.lower():
            return name
    # Debian's alternatives: a plain libblas.so.3 next to libopenblas* is OpenBLAS.
    sibling = Path(real).parent
    try:
        if any("openblas" in p.name for p in sibling.iterdir()):
            return "openblas"
    except OSError:
        pass
    return "reference" if re.search(r"libblas[^/]*\.so", real) else Path(real).name


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


def _global_symbol_library(symbol: str) -> str | None:
    """The file that defines ``symbol`` in the process's global scope, or None."""
    try:
        this = ctypes.CDLL(None)
        addr = ctypes.cast(getattr(this, symbol), ctypes.c_void_p).value
    except (AttributeError, OSError):
        return None
    try:
        dladdr = this.dladdr
    except AttributeError:
        return None
    dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
    info = _DlInfo()
    if not dladdr(ctypes.c_void_p(addr), ctypes.byref(info)) or not info.dli_fname:
        return None
    return info.dli_fname.decode(errors="replace")


def _mapped_libraries() -> list[str]:
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return []
    return sorted({ln.split()[-1] for ln in lines if ".so" in ln and "/" in ln})

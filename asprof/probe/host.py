"""Capture the `host` section of a trace: what the measurements were taken on (DESIGN §2).

Chip, cores, memory, OS, framework versions, the BLAS library MLX actually calls, thread
settings, and every environment variable known to change timings. The BLAS matters most on
Linux: the MLX CPU wheel bundles the netlib *reference* BLAS (~4 GFLOP/s here), and preloading
OpenBLAS makes the same matmul ~30x faster (DESIGN §8), so a trace without it is uninterpretable.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import os
import platform
import re
import socket
import subprocess
import sys
from pathlib import Path

import psutil

from asprof import __version__
from asprof.traces.schema import Host

# Environment variables that change how fast the probes run.
_ENV_PREFIXES = ("OMP_", "OPENBLAS_", "GOTO", "MKL_", "KMP_", "VECLIB_", "BLIS_", "MLX_", "PYTORCH_", "ASPROF_BLAS",
                 "CUDA_VISIBLE_DEVICES", "METAL_", "LD_PRELOAD", "LD_LIBRARY_PATH", "DYLD_")
# Candidate BLAS implementations, recognised by library path.
_BLAS_NAMES = (("openblas", "openblas"), ("mkl", "mkl"), ("blis", "blis"), ("atlas", "atlas"),
               ("accelerate", "accelerate"), ("veclib", "accelerate"), ("flexiblas", "flexiblas"))


def capture_host(with_torch: bool = True) -> Host:
    """Describe this machine. ``with_torch=False`` avoids importing torch (slow to import)."""
    system = platform.system()
    mx = _import_mlx()
    torch = _import_torch() if with_torch else None
    perf, eff = _apple_cores() if system == "Darwin" else (None, None)
    accelerator, gpu_name = _accelerator(mx)
    return Host(
        hostname=socket.gethostname() or "host",
        os=system,
        os_release=platform.release(),
        machine=platform.machine(),
        chip=_chip(system),
        cores_logical=psutil.cpu_count(logical=True) or os.cpu_count() or 1,
        cores_performance=perf,
        cores_efficiency=eff,
        memory_bytes=int(psutil.virtual_memory().total),
        gpu_name=gpu_name,
        gpu_cores=None,  # not exposed by MLX; `system_profiler SPDisplaysDataType` knows, slowly
        accelerator=accelerator,
        unified_memory=accelerator == "metal",
        versions=_versions(torch),
        blas=_blas(mx, torch),
        threads=_threads(torch),
        env=timing_env(),
    )


def _import_mlx():
    if importlib.util.find_spec("mlx") is None:
        return None
    import mlx.core as mx

    return mx


def _import_torch():
    if importlib.util.find_spec("torch") is None:
        return None
    try:
        import torch

        return torch
    except Exception:  # a broken torch install must not stop the probe
        return None


def _sysctl(name: str) -> str | None:
    try:
        out = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def _chip(system: str) -> str:
    if system == "Darwin":
        return _sysctl("machdep.cpu.brand_string") or platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _apple_cores() -> tuple[int | None, int | None]:
    def num(name):
        v = _sysctl(name)
        return int(v) if v and v.isdigit() else None

    return num("hw.perflevel0.physicalcpu"), num("hw.perflevel1.physicalcpu")


def _accelerator(mx) -> tuple[str, str | None]:
    if mx is None:
        return "none", None
    try:
        if mx.metal.is_available():
            info = mx.metal.device_info() if hasattr(mx.metal, "device_info") else mx.device_info()
            return "metal", str(info.get("device_name") or info.get("architecture") or "Apple GPU")
    except Exception:
        pass
    cuda = getattr(mx, "cuda", None)
    try:
        if cuda is not None and cuda.is_available():
            return "cuda", None
    except Exception:
        pass
    return "none", None


def _versions(torch) -> dict[str, str]:
    out = {"python": platform.python_version(), "asprof": __version__}
    for dist in ("mlx", "numpy", "scipy", "psutil"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    if torch is not None:
        out["torch"] = str(torch.__version__)
    return out


def _blas(mx, torch) -> dict[str, str]:
    out = {}
    if mx is not None:
        name, lib = mlx_blas()
        out["mlx"] = name
        if lib:
            out["mlx_library"] = lib
    try:
        import numpy as np

        deps = np.show_config(mode="dicts").get("Build Dependencies", {})
        blas = deps.get("blas", {})
        out["numpy"] = " ".join(x for x in (blas.get("name"), blas.get("version")) if x) or "unknown"
    except Exception:
        pass
    if torch is not None:
        m = re.search(r"BLAS_INFO=(\w+)", torch.__config__.show())
        out["torch"] = m.group(1) if m else "unknown"
    return out


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


def _threads(torch) -> dict[str, str]:
    out = {"cpu_count": str(os.cpu_count())}
    if hasattr(os, "sched_getaffinity"):
        out["affinity_cpus"] = str(len(os.sched_getaffinity(0)))
    if torch is not None:
        out["torch_threads"] = str(torch.get_num_threads())
        out["torch_interop_threads"] = str(torch.get_num_interop_threads())
    return out


def timing_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment variables that change timings (thread counts, BLAS, preloads)."""
    env = os.environ if environ is None else environ
    return {k: v for k, v in sorted(env.items()) if k.startswith(_ENV_PREFIXES)}

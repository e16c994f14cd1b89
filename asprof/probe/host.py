"""Capture the `host` section of a trace: what the measurements were taken on (DESIGN §2).

Chip, cores, memory, OS, framework versions, the BLAS library MLX actually calls, thread
settings, and every environment variable known to change timings. The BLAS matters most on
Linux: the MLX CPU wheel bundles the netlib *reference* BLAS (~4 GFLOP/s here), and preloading
OpenBLAS makes the same matmul ~30x faster (DESIGN §8), so a trace without it is uninterpretable.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import re
import socket
import subprocess
from pathlib import Path

import psutil

from asprof import __version__
from asprof.cluster.blas import _classify, launched_blas_env, mlx_blas  # noqa: F401  (re-exported)
from asprof.traces.schema import Host

# Environment variables that change how fast the probes run.
_ENV_PREFIXES = ("OMP_", "OPENBLAS_", "GOTO", "MKL_", "KMP_", "VECLIB_", "BLIS_", "MLX_", "PYTORCH_", "ASPROF_BLAS",
                 "CUDA_VISIBLE_DEVICES", "METAL_", "LD_PRELOAD", "LD_LIBRARY_PATH", "DYLD_")
def capture_host(with_torch: bool = True, launched_ranks: int | None = None) -> Host:
    """Describe this machine. ``with_torch=False`` avoids importing torch (slow to import).
    ``launched_ranks``: as each of that many ranks asprof launches here sees it, with the fast
    BLAS they get preloaded and its thread share (asprof.cluster.blas.launched_blas_env) in place
    of this process's."""
    system = platform.system()
    mx = _import_mlx()
    torch = _import_torch() if with_torch else None
    perf, eff = _apple_cores() if system == "Darwin" else (None, None)
    accelerator, gpu_name = _accelerator(mx)
    launched = launched_blas_env(ranks_here=launched_ranks) if launched_ranks else {}
    preload = launched.get("LD_PRELOAD")
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
        blas=_blas(mx, torch, preload),
        threads=_threads(torch),
        env=timing_env(dict(os.environ, **launched) if launched else None),
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


def _blas(mx, torch, preload: str | None = None) -> dict[str, str]:
    out = {}
    if mx is not None:
        name, lib = mlx_blas()
        if preload:  # what a process started with this LD_PRELOAD calls
            lib = preload.split(":")[0]
            name = _classify(lib)
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

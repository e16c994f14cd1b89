"""Bundled reference profiles: traces built from published figures (DESIGN §2).

They let `asprof simulate` run on a fresh machine with no probe data. Every number carries its
source. ``origin: published`` marks a figure printed in a paper or by the vendor; ``derived``
marks one computed from published figures by the formula given in its source (for example a
GEMM time curve from the published peak FLOP/s and memory bandwidth). Nothing here is measured
by asprof; a probed trace of your own machine is always better.

The JSON files under ``profiles/`` are generated from :data:`CHIPS` and :data:`CLUSTERS` by
``python scripts/build_profiles.py`` and a test checks they are current.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from asprof import __version__
from asprof.errors import TraceError
from asprof.traces.schema import SchemaError, Host, Record, Trace

KPOP = "van der Ouderaa et al., Towards Large-scale Training on Apple Silicon (KPOP paper)"
PROF = "Feng et al., Profiling Apple Silicon Performance for ML Training"
APPLE = "Apple newsroom / tech specs"

GB = 1e9
MS = 1e-3


@dataclass(frozen=True)
class Chip:
    key: str
    chip: str
    cpu_p: int
    cpu_e: int
    gpu_cores: int
    memory_bytes: int
    memory_src: str
    gpu_fp32_flops: float
    gpu_fp32_src: str
    origin_fp32: str  # "published" or "derived"
    membw_Bps: float
    membw_src: str
    launch_cold_s: float
    launch_warm_s: float
    launch_src: str
    launch_origin: str


# GPU FP32 rate per core per clock is taken from the M2 family (profiling paper Table 1:
# 27 TFLOPS for the 76-core M2 Ultra, 7 TFLOPS for the 19-core M2 Pro); for chips with no
# published figure we scale it by the GPU core count, which assumes the same clock.
_M2_PER_CORE_ULTRA = 27e12 / 76
_M2_PER_CORE_PRO = 7e12 / 19

CHIPS: dict[str, Chip] = {
    c.key: c
    for c in (
        Chip(
            "m2-pro", "Apple M2 Pro", 8, 4, 19, 32 * 2**30, f"{PROF}, Table 1 (32 GB)",
            7e12, f"{PROF}, Table 1 (7 TFLOPS single precision)", "published",
            200 * GB, f"{APPLE}: M2 Pro unified memory bandwidth 200 GB/s (Jan 2023)",
            0.5850 * MS, 0.2637 * MS, f"{PROF}, Table 6 (M2 Pro cold 0.5850 ms, follow-up 0.2637 ms)", "published",
        ),
        Chip(
            "m2-max", "Apple M2 Max", 8, 4, 38, 64 * 2**30, f"{PROF}, Table 1 (64 GB)",
            14e12, f"{PROF}, Table 1 (14 TFLOPS single precision)", "published",
            400 * GB, f"{APPLE}: M2 Max unified memory bandwidth 400 GB/s (Jan 2023)",
            0.9080 * MS, 0.1273 * MS, f"{PROF}, Table 6 (M2 Max cold 0.9080 ms, follow-up 0.1273 ms)", "published",
        ),
        Chip(
            "m2-ultra", "Apple M2 Ultra", 16, 8, 76, 192 * 2**30, f"{PROF}, Table 1 (192 GB)",
            27e12, f"{PROF}, Table 1 (27 TFLOPS single precision)", "published",
            800 * GB, f"{APPLE}: M2 Ultra unified memory bandwidth 800 GB/s (Jun 2023)",
            0.7859 * MS, 0.1480 * MS, f"{PROF}, Table 6 (M2 Ultra cold 0.7859 ms, follow-up 0.1480 ms)", "published",
        ),
        Chip(
            "m4", "Apple M4", 4, 6, 10, 16 * 2**30, f"{KPOP}, Table 3 (16 GB per Mac mini)",
            _M2_PER_CORE_PRO * 10,
            f"derived: M2 Pro FP32 rate per GPU core ({PROF}, Table 1: 7 TFLOPS / 19 cores) x 10 M4 GPU cores "
            f"({APPLE}: Mac mini M4, 10-core GPU); assumes the M2 clock",
            "derived",
            120 * GB, f"{APPLE}: M4 unified memory bandwidth 120 GB/s (Mac mini, Oct 2024)",
            0.5850 * MS, 0.2637 * MS,
            f"derived: no published M4 launch latency; M2 Pro figures from {PROF}, Table 6 (the closest chip class)",
            "derived",
        ),
        Chip(
            "m3-ultra", "Apple M3 Ultra", 24, 8, 80, 512 * 2**30, f"{KPOP}, Table 3 (512 GB per Mac Studio)",
            _M2_PER_CORE_ULTRA * 80,
            f"derived: M2 Ultra FP32 rate per GPU core ({PROF}, Table 1: 27 TFLOPS / 76 cores) x 80 GPU cores "
            f"(the M3 Ultra configuration that offers 512 GB, {APPLE}, Mar 2025); assumes the M2 clock",
            "derived",
            819 * GB, f"{APPLE}: M3 Ultra unified memory bandwidth 819 GB/s (Mac Studio, Mar 2025)",
            0.7859 * MS, 0.1480 * MS,
            f"derived: no published M3 Ultra launch latency; M2 Ultra figures from {PROF}, Table 6",
            "derived",
        ),
    )
}


@dataclass(frozen=True)
class Link:
    name: str
    gbps: float  # nominal line rate, Gb/s (decimal)
    src: str


LINKS = {
    "tb4": Link("Thunderbolt 4", 40.0, "Thunderbolt 4 specification: 40 Gb/s"),
    "tb5": Link(
        "Thunderbolt 5", 80.0,
        f"Thunderbolt 5 specification: 80 Gb/s symmetric ({KPOP} §2 quotes up to 120 Gb/s with bandwidth boost, one direction)",
    ),
}

# The ring's per-message latency over Thunderbolt networking is not published anywhere we know
# of. This is an explicit assumption, reported as such; probe a real cluster to replace it.
ASSUMED_ALPHA_S = 50e-6
ALPHA_SRC = "assumption: 50 us per ring step (TCP over Thunderbolt networking; no published figure)"

# Eigendecomposition on the CPU: no published figure for Apple CPUs either. eigh(n) with
# eigenvectors costs about 9 n^3 flop (Householder tridiagonalisation 4/3 n^3, divide and
# conquer and back-transformation ~ 8/3 n^3 each; Golub & Van Loan §8.3); we assume the
# CPU sustains 50 GFLOP/s FP32 in LAPACK (Accelerate) on these sizes.
ASSUMED_CPU_LAPACK_FLOPS = 50e9
EIGH_SRC = "derived: 9 n^3 flop (Golub & Van Loan §8.3) at an assumed 50 GFLOP/s CPU LAPACK rate"
QR_SRC = "derived: 4/3 n^3 flop (Householder QR with Q formed) at an assumed 50 GFLOP/s CPU LAPACK rate"


@dataclass(frozen=True)
class Cluster:
    key: str
    chip: str
    nodes: int | None  # None: a single machine with a nominal link for what-if runs
    link: str
    description: str


CLUSTERS = (
    Cluster("m4-mini-x16-tb4", "m4", 16, "tb4",
            f"16 x Mac mini (M4, 16 GB) in a Thunderbolt ring, the cluster of {KPOP}, Tables 2-3 "
            "(Table 3 lists Thunderbolt 4, which is what the M4 Mac mini has; the text says Thunderbolt 5)"),
    Cluster("m3-ultra-studio-x2-tb5", "m3-ultra", 2, "tb5",
            f"2 x Mac Studio (M3 Ultra, 512 GB) joined by Thunderbolt 5, the cluster of {KPOP}, Tables 2-3"),
    Cluster("m2-pro", "m2-pro", None, "tb4", f"one M2 Pro ({PROF}), Thunderbolt 4 for what-if clusters"),
    Cluster("m2-max", "m2-max", None, "tb4", f"one M2 Max ({PROF}), Thunderbolt 4 for what-if clusters"),
    Cluster("m2-ultra", "m2-ultra", None, "tb4", f"one M2 Ultra ({PROF}), Thunderbolt 4 for what-if clusters"),
)

DEFAULT_PROFILE = "m4-mini-x16-tb4"

# GEMM sizes for the derived roofline curve (square m = n = k, and the profiling paper's
# batched 8 x 2000 x 2000).
_GEMM_SIZES = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
_EIGH_SIZES = (64, 128, 256, 512, 1024, 2048, 4096)
_MEMBW_SIZES = (2**16, 2**20, 2**24, 2**28)


def _roofline_gemm_s(m, n, k, batch, itemsize, chip: Chip, flops):
    """Roofline time of a GEMM: max(compute, memory) + one warm launch."""
    compute = 2.0 * m * n * k * batch / flops
    memory = itemsize * batch * (m * k + k * n + m * n) / chip.membw_Bps
    return max(compute, memory) + chip.launch_warm_s


def build_profile(cluster: Cluster) -> Trace:
    chip = CHIPS[cluster.chip]
    link = LINKS[cluster.link]
    recs: list[Record] = []
    roof = (
        f"derived: roofline max(2mnk/peak, bytes/bandwidth) + warm launch, from the peak "
        f"({chip.gpu_fp32_src}) and the bandwidth ({chip.membw_src})"
    )
    fp16_src = (
        f"derived: FP32 peak x 1.25 ({PROF} §4.4: MLX gains only about 20-30% from FP16 in GEMM); " + roof
    )
    for dtype, itemsize, flops, src in (
        ("float32", 4, chip.gpu_fp32_flops, roof),
        ("float16", 2, chip.gpu_fp32_flops * 1.25, fp16_src),
        ("bfloat16", 2, chip.gpu_fp32_flops * 1.25, fp16_src),
    ):
        shapes = [(s, s, s, 1) for s in _GEMM_SIZES] + [(2000, 2000, 2000, 8)]
        for m, n, k, b in shapes:
            t = _roofline_gemm_s(m, n, k, b, itemsize, chip, flops)
            recs.append(Record(
                "blas", "matmul", "mlx", "gpu", dtype,
                params={"m": m, "n": n, "k": k, "batch": b},
                metrics={"flop": 2.0 * m * n * k * b, "flops_per_s": 2.0 * m * n * k * b / t, "time_s": t},
                origin="derived", source=src,
            ))
    recs.append(Record("blas", "peak", "mlx", "gpu", "float32",
                       metrics={"flops_per_s": chip.gpu_fp32_flops},
                       origin=chip.origin_fp32, source=chip.gpu_fp32_src))
    for op, lat in (("cold", chip.launch_cold_s), ("warm", chip.launch_warm_s)):
        recs.append(Record("launch", op, "mlx", "gpu", "float32", params={"op": "kernel"},
                           metrics={"latency_s": lat}, origin=chip.launch_origin, source=chip.launch_src))
    for op, arrays in (("copy", 2), ("triad", 3)):
        for nbytes in _MEMBW_SIZES:
            moved = arrays * nbytes
            t = moved / chip.membw_Bps + chip.launch_warm_s
            recs.append(Record(
                "membw", op, "mlx", "gpu", "float32", params={"bytes": nbytes},
                metrics={"bytes_moved": moved, "bytes_per_s": moved / t, "time_s": t},
                origin="derived",
                source=f"derived: bytes / peak bandwidth + warm launch ({chip.membw_src}; {chip.launch_src})",
            ))
    for n in _EIGH_SIZES:
        for op, flop, src in (("eigh", 9.0 * n**3, EIGH_SRC), ("qr", 4.0 / 3.0 * n**3, QR_SRC),
                              ("power_step", 2.0 * n**3 + 4.0 / 3.0 * n**3, QR_SRC + " plus the 2 n^3 M.Q product")):
            t = flop / ASSUMED_CPU_LAPACK_FLOPS
            recs.append(Record("linalg", op, "mlx", "cpu", "float32", params={"n": n},
                               metrics={"time_s": t, "flop": flop}, origin="derived", source=src))
    beta = link.gbps * 1e9 / 8.0
    recs.append(Record(
        "allreduce", "fit", "mlx", "link", "float32",
        params={"nodes": cluster.nodes or 2, "backend": "ring", "link": link.name},
        metrics={"alpha_s": ASSUMED_ALPHA_S, "beta_Bps": beta, "r2": 1.0},
        origin="derived", source=f"beta: {link.src}; alpha: {ALPHA_SRC}",
    ))
    host = Host(
        hostname=cluster.key, os="Darwin", os_release="", machine="arm64", chip=chip.chip,
        cores_logical=chip.cpu_p + chip.cpu_e, cores_performance=chip.cpu_p, cores_efficiency=chip.cpu_e,
        memory_bytes=chip.memory_bytes, gpu_name=f"{chip.chip} GPU", gpu_cores=chip.gpu_cores,
        accelerator="metal", unified_memory=True, versions={}, blas={"mlx": "Accelerate (assumed)"},
    )
    return Trace(
        host=host, records=tuple(recs), created_utc="", asprof_version=__version__,
        origin="published", name=cluster.key, description=cluster.description, nodes=cluster.nodes,
    )


def profile_names() -> list[str]:
    return [c.key for c in CLUSTERS]


def load_profile(name: str) -> Trace:
    """A bundled profile by name (see :func:`profile_names`)."""
    if name not in profile_names():
        raise TraceError(f"unknown bundled profile {name!r}; choose one of: {', '.join(profile_names())}")
    text = resources.files("asprof.traces").joinpath("profiles", f"{name}.json").read_text()
    try:
        return Trace.from_dict(json.loads(text))
    except (SchemaError, json.JSONDecodeError) as e:  # a packaging bug, not user input
        raise TraceError(f"bundled profile {name}: {e}") from None


def write_profiles(directory: Path) -> list[Path]:
    from asprof.traces.io import save_trace

    return [save_trace(build_profile(c), directory / f"{c.key}.json") for c in CLUSTERS]

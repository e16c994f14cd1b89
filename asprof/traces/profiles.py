"""Bundled reference profiles: traces built from published figures (DESIGN §2).

They let `asprof simulate` run on a fresh machine with no probe data. Every record carries its
source. ``origin: published`` marks a figure printed in a paper, by the vendor or by a public
benchmark (asprof.traces.profile_sources names each); ``derived`` marks one computed from
published figures by the formula and assumption given in its source (for example a GEMM time
curve from a measured GEMM rate and a measured bandwidth). The profile's own origin is
"published", "derived" or "mixed" after its records. No figure is set from a published
end-to-end training run: those are the check (benchmarks/bench_published.py). Nothing here is
measured by asprof; a probed trace of your own machine is always better.

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
from asprof.traces.links import link_records
from asprof.traces.schema import SchemaError, Host, Record, Trace

from asprof.traces.profile_sources import (
    CHIPS, CPU_LAPACK_FLOPS, FP16_GAIN, FP16_SRC, KPOP, LAPACK_SRC, PAGING, PROF, Chip, Fig,
)

__all__ = ["CHIPS", "CLUSTERS", "DEFAULT_PROFILE", "build_profile", "load_profile", "profile_names", "trace_origin"]


EIGH_FLOP = "9 n^3 flop (Golub & Van Loan §8.3)"
QR_FLOP = "4/3 n^3 flop (Householder QR with Q formed)"


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
    Cluster("m1-pro", "m1-pro", None, "tb4", "one M1 Pro (16-core GPU), Thunderbolt 4 for what-if clusters"),
    Cluster("m1-max", "m1-max", None, "tb4", "one M1 Max (32-core GPU, 64 GB), Thunderbolt 4 for what-if clusters"),
    Cluster("m1-ultra", "m1-ultra", None, "tb4", "one M1 Ultra (48-core GPU, 64 GB), Thunderbolt 4 for what-if clusters"),
    Cluster("m2-pro", "m2-pro", None, "tb4", f"one M2 Pro ({PROF}), Thunderbolt 4 for what-if clusters"),
    Cluster("m2-max", "m2-max", None, "tb4", f"one M2 Max ({PROF}), Thunderbolt 4 for what-if clusters"),
    Cluster("m2-ultra", "m2-ultra", None, "tb4", f"one M2 Ultra ({PROF}), Thunderbolt 4 for what-if clusters"),
    Cluster("m3-pro", "m3-pro", None, "tb4", "one M3 Pro (14-core GPU), Thunderbolt 4 for what-if clusters"),
    Cluster("m3-max", "m3-max", None, "tb4", "one M3 Max (40-core GPU), Thunderbolt 4 for what-if clusters"),
    Cluster("m4-pro", "m4-pro", None, "tb5", "one M4 Pro (20-core GPU, 24 GB), Thunderbolt 5 for what-if clusters"),
    Cluster("m4-max", "m4-max", None, "tb5", "one M4 Max (40-core GPU, 128 GB), Thunderbolt 5 for what-if clusters"),
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
    memory = itemsize * batch * (m * k + k * n + m * n) / chip.gpu_bw.value
    return max(compute, memory) + chip.launch_warm.value


def _fig_record(probe, op, device, dtype, fig: Fig, metric: str, params=None) -> Record:
    return Record(probe, op, "mlx", device, dtype, params=params or {}, metrics={metric: fig.value},
                  origin=fig.origin, source=fig.source)


def _gemm_records(chip: Chip) -> list[Record]:
    recs = []
    roof = (f"derived: roofline max(2mnk/rate, bytes/bandwidth) + warm launch, rate: {chip.gemm.source}; "
            f"bandwidth: {chip.gpu_bw.source}; launch: {chip.launch_warm.source}")
    for dtype, itemsize, gain, src in (("float32", 4, 1.0, roof), ("float16", 2, FP16_GAIN, f"derived: {FP16_SRC}; {roof}"),
                                       ("bfloat16", 2, FP16_GAIN, f"derived: {FP16_SRC}; {roof}")):
        swept = {n for n, _ in chip.gemm_sweep} if dtype == "float32" else set()
        for m, n, k, b in [(s, s, s, 1) for s in _GEMM_SIZES if s not in swept] + [(2000, 2000, 2000, 8)]:
            t = _roofline_gemm_s(m, n, k, b, itemsize, chip, chip.gemm.value * gain)
            recs.append(Record("blas", "matmul", "mlx", "gpu", dtype, params={"m": m, "n": n, "k": k, "batch": b},
                               metrics={"flop": 2.0 * m * n * k * b, "flops_per_s": 2.0 * m * n * k * b / t, "time_s": t},
                               origin="derived", source=src))
    for n, t in chip.gemm_sweep:  # published per-size times (torch mps; the MLX rate is not published per size)
        flop = 2.0 * n**3
        recs.append(Record("blas", "matmul", "mlx", "gpu", "float32", params={"m": n, "n": n, "k": n, "batch": 1},
                           metrics={"flop": flop, "flops_per_s": flop / t, "time_s": t},
                           origin="published", source=f"{chip.gemm_sweep_src}: n = {n}, {t * 1e3:.4g} ms"))
    recs.append(_fig_record("blas", "peak", "gpu", "float32", chip.peak, "flops_per_s"))
    # the sustained rate the curve is built from, as its own record with its citation
    recs.append(_fig_record("blas", "rate", "gpu", "float32", chip.gemm, "flops_per_s"))
    return recs


def _membw_records(chip: Chip) -> list[Record]:
    recs = []
    for device, fig in (("gpu", chip.gpu_bw), ("cpu", chip.cpu_bw)):
        if fig is None:
            continue
        recs.append(_fig_record("membw", "rate", device, "float32", fig, "bytes_per_s"))
        for op, arrays in (("copy", 2), ("triad", 3)):
            for nbytes in _MEMBW_SIZES:
                moved = arrays * nbytes
                t = moved / fig.value + chip.launch_warm.value
                recs.append(Record(
                    "membw", op, "mlx", device, "float32", params={"bytes": nbytes},
                    metrics={"bytes_moved": moved, "bytes_per_s": moved / t, "time_s": t}, origin="derived",
                    source=f"derived: bytes / measured bandwidth + warm launch ({fig.source}; {chip.launch_warm.source})"))
    return recs


def _linalg_records() -> list[Record]:
    recs = []
    for dtype, rate in CPU_LAPACK_FLOPS.items():
        for n in _EIGH_SIZES:
            for op, flop, what in (("eigh", 9.0 * n**3, EIGH_FLOP), ("qr", 4.0 / 3.0 * n**3, QR_FLOP),
                                   ("power_step", 2.0 * n**3 + 4.0 / 3.0 * n**3, QR_FLOP + " plus the 2 n^3 M.Q product")):
                src = "derived: " + LAPACK_SRC.format(flop=what, rate=rate / 1e9, dtype=dtype)
                recs.append(Record("linalg", op, "mlx", "cpu", dtype, params={"n": n},
                                   metrics={"time_s": flop / rate, "flop": flop}, origin="derived", source=src))
    return recs


def trace_origin(records) -> str:
    """A profile's origin after its records: "published" or "derived" when all are, else "mixed"."""
    origins = {r.origin for r in records}
    return origins.pop() if len(origins) == 1 else "mixed"


def build_profile(cluster: Cluster) -> Trace:
    chip = CHIPS[cluster.chip]
    recs: list[Record] = _gemm_records(chip)
    for op, fig in (("cold", chip.launch_cold), ("warm", chip.launch_warm)):
        recs.append(_fig_record("launch", op, "gpu", "float32", fig, "latency_s", {"op": "kernel"}))
    recs += _membw_records(chip)
    recs += _linalg_records()
    recs.append(_fig_record("memory", "working_set", "gpu", None, chip.working_set, "gpu_working_set_bytes"))
    recs.append(_fig_record("memory", "paging", "gpu", None, PAGING, "page_in_Bps"))
    recs += link_records(cluster.link, cluster.nodes or 2)  # published per-backend figures (links.py)
    host = Host(
        hostname=cluster.key, os="Darwin", os_release="", machine="arm64", chip=chip.chip,
        cores_logical=chip.cpu_p + chip.cpu_e, cores_performance=chip.cpu_p, cores_efficiency=chip.cpu_e,
        memory_bytes=int(chip.memory.value), gpu_name=f"{chip.chip} GPU", gpu_cores=chip.gpu_cores,
        accelerator="metal", unified_memory=True, versions={}, blas={"mlx": "Accelerate (assumed)"},
    )
    return Trace(
        host=host, records=tuple(recs), created_utc="", asprof_version=__version__,
        origin=trace_origin(recs), name=cluster.key, description=cluster.description, nodes=cluster.nodes,
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

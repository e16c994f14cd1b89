"""The figures behind the bundled profiles, each with its citation (asprof.traces.profiles).

A :class:`Fig` is one number with where it comes from: ``published`` when a paper, a vendor or
a public benchmark (repository at a commit, pull request, issue) printed that number for that
chip; ``derived`` when it is computed from published numbers, with the formula and the
assumption in its source. Nothing here was measured by asprof.

**The firewall.** No figure here is set, scaled or chosen from a published *end-to-end*
training run (the KPOP paper's Table 2, the profiling paper's Table 4, ...): those runs are what
``benchmarks/bench_published.py`` checks the simulator against (docs/simulator.md §9).
"""

from __future__ import annotations

from dataclasses import dataclass

KPOP = "van der Ouderaa et al., Towards Large-scale Training on Apple Silicon (KPOP paper)"
PROF = "Feng et al., Profiling Apple Silicon Performance for ML Training"
APPLE = "Apple newsroom / tech specs"
# public benchmark repositories, at the commit read
DEVBENCH = ("chsasank/device-benchmarks@7ccc883 README (torch fp32 matmul of n x n up to n = 6888, "
            "and a tensor copy, on the GPU or the CPU)")
DEVBENCH_M4MAX = "chsasank/device-benchmarks pull request #13 (M4 Max, torch mps float32 sweep)"
MLXBENCH = ("TristanBilot/mlx-benchmark@85c5376 benchmarks/detailed_benchmark.md, mlx_gpu column, "
            "Concat of two 1e6 x 64 float32 arrays on axis 0 (512 MB read + 512 MB written)")
CONCAT_BYTES = 2 * 2 * 1_000_000 * 64 * 4  # bytes moved by that Concat
MLXBENCH_HEAD = "TristanBilot/mlx-benchmark@85c5376 benchmarks/detailed_benchmark.md, the machine's heading"

GB = 1e9
GIB = 2**30
MS = 1e-3


@dataclass(frozen=True)
class Fig:
    value: float
    source: str
    origin: str = "published"  # or "derived"


def derived(value: float, how: str) -> Fig:
    return Fig(value, f"derived: {how}", "derived")


@dataclass(frozen=True)
class Chip:
    key: str
    chip: str
    cpu_p: int
    cpu_e: int
    gpu_cores: int
    memory: Fig  # bytes of unified memory
    peak: Fig  # the vendor's FP32 peak FLOP/s (MFU denominator)
    gemm: Fig  # sustained FP32 GEMM FLOP/s on large square matrices (the GEMM curve's rate)
    gpu_bw: Fig  # GPU copy bandwidth, bytes/s
    launch_cold: Fig
    launch_warm: Fig
    working_set: Fig  # bytes the GPU may keep resident (Metal's recommendedMaxWorkingSetSize)
    cpu_bw: Fig | None = None  # CPU copy bandwidth, bytes/s, where published
    gemm_sweep: tuple = ()  # published per-size FP32 GEMM times: ((n, seconds), ...)
    gemm_sweep_src: str = ""


def _t6(chip: str, cold: float, warm: float, origin_chip: str | None = None):
    """Launch latencies from the profiling paper's Table 6 (of ``origin_chip`` when the chip has none)."""
    src = f"{PROF}, Table 6 ({origin_chip or chip}: cold {cold} ms, follow-up {warm} ms)"
    if origin_chip is None:
        return Fig(cold * MS, src), Fig(warm * MS, src)
    how = f"no published {chip} launch latency; {src}, the closest chip class"
    return derived(cold * MS, how), derived(warm * MS, how)


# What the GPU may keep resident where no figure for the machine is published (also the
# simulator's default for traces without a working-set record: asprof.simulate.memory_pressure).
DEFAULT_GPU_SHARE = 0.75


def _share(ram: float, note: str) -> Fig:
    return derived(DEFAULT_GPU_SHARE * ram, f"{DEFAULT_GPU_SHARE:.0%} of RAM, the default GPU working set on Apple silicon (gpustack/gpustack "
                              f"issue #1375: 'the recommended max working set ... which is 75% of total RAM'); {note}")


def _per_core(cores_from: int, cores_to: int, what: str) -> str:
    return f"{what} x {cores_to}/{cores_from} GPU cores (same generation; assumes the same clock per core)"


_M2U_GEMM = 20e12  # DEVBENCH: Apple M2 Ultra GPU (76 core) 20 TFLOPs FP32
_M3MAX_GEMM = 11.4e12  # DEVBENCH: Apple M3 Max GPU (40 core) 11.4 TFLOPs FP32
_M4MAX_GEMM = 13.27e12  # DEVBENCH: Apple M4 Max GPU (16C,40C,128G) 13.27 TFLOPs FP32

# n, seconds: DEVBENCH_M4MAX (square float32 matmul on mps)
_M4MAX_SWEEP = ((256, 0.00045917), (512, 0.00036101), (1024, 0.00050261), (1448, 0.00091064),
                (2048, 0.00157416), (2896, 0.00408700), (4096, 0.01029778), (5792, 0.02914255))

CHIPS: dict[str, Chip] = {c.key: c for c in (
    Chip("m1-pro", "Apple M1 Pro", 8, 2, 16,
         memory=derived(32 * GIB, f"the 32 GB configuration ({APPLE}: M1 Pro offers 16 or 32 GB; the benchmark does not say)"),
         peak=derived(2.6e12 * 2, f"{APPLE}: M1 8-core GPU 2.6 TFLOPS (Nov 2020) x 16/8 GPU cores"),
         gemm=Fig(3.7e12, f"{DEVBENCH}: Apple M1 Pro GPU 16-core 3.7 TFLOPs FP32"),
         gpu_bw=Fig(176 * GB, f"{DEVBENCH}: Apple M1 Pro GPU 16-core 176 GB/s"),
         cpu_bw=Fig(96 * GB, f"{DEVBENCH}: Apple M1 Pro CPU 10-core 96 GB/s"),
         launch_cold=_t6("M1 Pro", 0.5850, 0.2637, "M2 Pro")[0], launch_warm=_t6("M1 Pro", 0.5850, 0.2637, "M2 Pro")[1],
         working_set=_share(32 * GIB, "32 GB")),
    Chip("m1-max", "Apple M1 Max", 8, 2, 32,
         memory=Fig(64 * GIB, f"{MLXBENCH_HEAD}: M1 Max (64GB)"),
         peak=derived(2.6e12 * 4, f"{APPLE}: M1 8-core GPU 2.6 TFLOPS (Nov 2020) x 32/8 GPU cores"),
         gemm=derived(3.7e12 * 2, _per_core(16, 32, f"M1 Pro measured 3.7 TFLOPs FP32 ({DEVBENCH})")),
         gpu_bw=Fig(CONCAT_BYTES / (3.02 * MS), f"{MLXBENCH}: M1 Max (64GB) 3.02 ms"),
         launch_cold=_t6("M1 Max", 0.9080, 0.1273, "M2 Max")[0], launch_warm=_t6("M1 Max", 0.9080, 0.1273, "M2 Max")[1],
         working_set=_share(64 * GIB, "64 GB")),
    Chip("m1-ultra", "Apple M1 Ultra", 16, 4, 48,
         memory=Fig(64 * GIB, f"{MLXBENCH_HEAD}: M1 Ultra (4E+16P+48GPU+64GB)"),
         peak=derived(2.6e12 * 6, f"{APPLE}: M1 8-core GPU 2.6 TFLOPS (Nov 2020) x 48/8 GPU cores"),
         gemm=derived(3.7e12 * 3, _per_core(16, 48, f"M1 Pro measured 3.7 TFLOPs FP32 ({DEVBENCH})")),
         gpu_bw=Fig(CONCAT_BYTES / (1.72 * MS), f"{MLXBENCH}: M1 Ultra (48-core GPU, 64GB) 1.72 ms"),
         launch_cold=_t6("M1 Ultra", 0.7859, 0.1480, "M2 Ultra")[0], launch_warm=_t6("M1 Ultra", 0.7859, 0.1480, "M2 Ultra")[1],
         working_set=_share(64 * GIB, "64 GB")),
    Chip("m2-pro", "Apple M2 Pro", 8, 4, 19,
         memory=Fig(32 * GIB, f"{PROF}, Table 1 (32 GB)"),
         peak=Fig(7e12, f"{PROF}, Table 1 (7 TFLOPS single precision)"),
         gemm=derived(_M2U_GEMM * 19 / 76, _per_core(76, 19, f"M2 Ultra measured 20 TFLOPs FP32 ({DEVBENCH})")),
         gpu_bw=Fig(CONCAT_BYTES / (5.75 * MS), f"{MLXBENCH}: M2 Pro 5.75 ms (a 16-core-GPU M2 Pro; every M2 Pro has "
                    "the same 200 GB/s memory system)"),
         launch_cold=_t6("M2 Pro", 0.5850, 0.2637)[0], launch_warm=_t6("M2 Pro", 0.5850, 0.2637)[1],
         working_set=_share(32 * GIB, "32 GB")),
    Chip("m2-max", "Apple M2 Max", 8, 4, 38,
         memory=Fig(64 * GIB, f"{PROF}, Table 1 (64 GB)"),
         peak=Fig(14e12, f"{PROF}, Table 1 (14 TFLOPS single precision)"),
         gemm=derived(_M2U_GEMM * 38 / 76, _per_core(76, 38, f"M2 Ultra measured 20 TFLOPs FP32 ({DEVBENCH})")),
         gpu_bw=Fig(CONCAT_BYTES / (2.99 * MS), f"{MLXBENCH}: M2 Max (38-core GPU) 2.99 ms"),
         launch_cold=_t6("M2 Max", 0.9080, 0.1273)[0], launch_warm=_t6("M2 Max", 0.9080, 0.1273)[1],
         working_set=_share(64 * GIB, "64 GB")),
    Chip("m2-ultra", "Apple M2 Ultra", 16, 8, 76,
         memory=Fig(192 * GIB, f"{PROF}, Table 1 (192 GB)"),
         peak=Fig(27e12, f"{PROF}, Table 1 (27 TFLOPS single precision)"),
         gemm=Fig(_M2U_GEMM, f"{DEVBENCH}: Apple M2 Ultra GPU (76 Core) 20 TFLOPs FP32"),
         gpu_bw=Fig(636 * GB, f"{DEVBENCH}: Apple M2 Ultra GPU 636 GB/s (and {MLXBENCH}: M2 Ultra 1.61 ms, the same rate)"),
         cpu_bw=Fig(311 * GB, f"{DEVBENCH}: Apple M2 Ultra CPU 311 GB/s"),
         launch_cold=_t6("M2 Ultra", 0.7859, 0.1480)[0], launch_warm=_t6("M2 Ultra", 0.7859, 0.1480)[1],
         working_set=_share(192 * GIB, "192 GB")),
    Chip("m3-pro", "Apple M3 Pro", 5, 6, 14,
         memory=derived(18 * GIB, f"the 18 GB configuration ({APPLE}: M3 Pro offers 18 or 36 GB; the benchmark does not say)"),
         peak=derived(27e12 / 76 * 14, f"M2 Ultra peak per GPU core ({PROF}, Table 1: 27 TFLOPS / 76) x 14 cores; "
                      "no published M3 Pro peak"),
         gemm=derived(_M3MAX_GEMM * 14 / 40, _per_core(40, 14, f"M3 Max measured 11.4 TFLOPs FP32 ({DEVBENCH})")),
         gpu_bw=Fig(CONCAT_BYTES / (7.75 * MS), f"{MLXBENCH}: M3 Pro (6E+5P+14GPU) 7.75 ms"),
         launch_cold=_t6("M3 Pro", 0.5850, 0.2637, "M2 Pro")[0], launch_warm=_t6("M3 Pro", 0.5850, 0.2637, "M2 Pro")[1],
         working_set=_share(18 * GIB, "18 GB")),
    Chip("m3-max", "Apple M3 Max", 12, 4, 40,
         memory=derived(48 * GIB, f"the 48 GB configuration, the smallest with the 40-core GPU ({APPLE}); the benchmarks do not say"),
         peak=derived(27e12 / 76 * 40, f"M2 Ultra peak per GPU core ({PROF}, Table 1: 27 TFLOPS / 76) x 40 cores; "
                      "no published M3 Max peak"),
         gemm=Fig(_M3MAX_GEMM, f"{DEVBENCH}: Apple M3 Max GPU (40 Core) 11.4 TFLOPs FP32"),
         gpu_bw=Fig(318 * GB, f"{DEVBENCH}: Apple M3 Max GPU (40 Core) 318 GB/s (and {MLXBENCH}: M3 Max 3.12 ms, 328 GB/s)"),
         launch_cold=_t6("M3 Max", 0.9080, 0.1273, "M2 Max")[0], launch_warm=_t6("M3 Max", 0.9080, 0.1273, "M2 Max")[1],
         working_set=_share(48 * GIB, "48 GB")),
    Chip("m3-ultra", "Apple M3 Ultra", 24, 8, 80,
         memory=Fig(512 * GIB, f"{KPOP}, Table 3 (512 GB per Mac Studio)"),
         peak=derived(27e12 / 76 * 80, f"M2 Ultra peak per GPU core ({PROF}, Table 1: 27 TFLOPS / 76) x 80 cores "
                      f"(the M3 Ultra that offers 512 GB, {APPLE}, Mar 2025); no published M3 Ultra peak"),
         gemm=derived(_M3MAX_GEMM * 2, f"M3 Max measured 11.4 TFLOPs FP32 ({DEVBENCH}) x 2: the M3 Ultra is two "
                      "M3 Max dies (80 = 2 x 40 GPU cores)"),
         gpu_bw=Fig(CONCAT_BYTES / (1.96 * MS), f"{MLXBENCH}: M3 Ultra 1.96 ms (a 60-core-GPU M3 Ultra; both "
                    "configurations have the same 819 GB/s memory system)"),
         launch_cold=_t6("M3 Ultra", 0.7859, 0.1480, "M2 Ultra")[0], launch_warm=_t6("M3 Ultra", 0.7859, 0.1480, "M2 Ultra")[1],
         working_set=_share(512 * GIB, "512 GB")),
    Chip("m4", "Apple M4", 4, 6, 10,
         memory=Fig(16 * GIB, f"{KPOP}, Table 3 (16 GB per Mac mini)"),
         peak=derived(4.6e12, "huggingface/huggingface.js pull request #1044 (hardware table: M4 4.6 TFLOPS FP32, "
                      "10 cores; 'a few benchmarks websites plus Apple references'); Apple publishes no M4 TFLOPS"),
         gemm=derived(_M4MAX_GEMM * 10 / 40, _per_core(40, 10, f"M4 Max measured 13.27 TFLOPs FP32 ({DEVBENCH})")),
         gpu_bw=Fig(CONCAT_BYTES / (11.59 * MS), f"{MLXBENCH}: M4 (10-core GPU, 16 GB) 11.59 ms"),
         launch_cold=_t6("M4", 0.5850, 0.2637, "M2 Pro")[0], launch_warm=_t6("M4", 0.5850, 0.2637, "M2 Pro")[1],
         working_set=Fig(10.67e9, "exo-explore/exo pull request #1672: max_recommended_working_set_size "
                         "'~10.67 GB on 16GB M4' (Mac mini M4, 16 GB)")),
    Chip("m4-pro", "Apple M4 Pro", 10, 4, 20,
         memory=Fig(24 * GIB, f"{MLXBENCH_HEAD}: M4 Pro (4E+10P+20GPU+24GB)"),
         peak=derived(4.6e12 * 2, "2 x the M4's 4.6 TFLOPS (huggingface/huggingface.js pull request #1044 lists "
                      "M4 Pro 9.2 TFLOPS FP32, 20 cores)"),
         gemm=derived(_M4MAX_GEMM * 20 / 40, _per_core(40, 20, f"M4 Max measured 13.27 TFLOPs FP32 ({DEVBENCH})")),
         gpu_bw=Fig(CONCAT_BYTES / (4.91 * MS), f"{MLXBENCH}: M4 Pro (4E+10P+20GPU+24GB) 4.91 ms"),
         launch_cold=_t6("M4 Pro", 0.5850, 0.2637, "M2 Pro")[0], launch_warm=_t6("M4 Pro", 0.5850, 0.2637, "M2 Pro")[1],
         working_set=Fig(17.76 * GIB, "sgl-project/sglang pull request #29949: recommendedMaxWorkingSetSize 17.76 GiB "
                         "on a 24 GB Mac (the chip is not named there)")),
    Chip("m4-max", "Apple M4 Max", 12, 4, 40,
         memory=Fig(128 * GIB, f"{DEVBENCH}: Apple M4 Max (16C,40C,128G)"),
         peak=derived(4.6e12 * 4, "4 x the M4's 4.6 TFLOPS (huggingface/huggingface.js pull request #1044 lists "
                      "M4 Max 18.4 TFLOPS FP32, 40 cores)"),
         gemm=Fig(_M4MAX_GEMM, f"{DEVBENCH}: Apple M4 Max GPU (16C,40C,128G) 13.27 TFLOPs FP32"),
         gpu_bw=Fig(396 * GB, f"{DEVBENCH}: Apple M4 Max GPU 396 GB/s"),
         cpu_bw=Fig(336 * GB, f"{DEVBENCH}: Apple M4 Max CPU 336 GB/s"),
         launch_cold=_t6("M4 Max", 0.9080, 0.1273, "M2 Max")[0], launch_warm=_t6("M4 Max", 0.9080, 0.1273, "M2 Max")[1],
         working_set=Fig(107.52 * GIB, "antirez/ds4 pull request #893: recommendedMaxWorkingSetSize 107.52 GiB on "
                         "128 GiB hosts, stock (measured on two machines, two chip generations)"),
         gemm_sweep=_M4MAX_SWEEP, gemm_sweep_src=DEVBENCH_M4MAX),
)}

# FP16/BF16 GEMMs: the profiling paper measured MLX gaining only 20-30% from FP16 (§4.4, Fig. 5).
FP16_GAIN = 1.25
FP16_SRC = f"{PROF} §4.4 (MLX gains only about 20-30% from FP16 in GEMM): FP32 rate x {FP16_GAIN}"

# CPU eigendecomposition: we found no published eigh/LAPACK timing on an Apple CPU. eigh(n) with
# eigenvectors costs about 9 n^3 flop (Householder tridiagonalisation 4/3 n^3, divide and conquer
# and back-transformation ~ 8/3 n^3 each; Golub & Van Loan §8.3); the rate is an assumption,
# stated as such, and float64 (two lanes per 128-bit NEON vector instead of four) runs at half it.
CPU_LAPACK_FLOPS = {"float32": 50e9, "float64": 25e9}
LAPACK_SRC = ("assumption (no published Apple-CPU eigh/LAPACK timing found): {flop} at {rate:g} GFLOP/s "
              "{dtype} in Accelerate LAPACK; float64 at half the float32 rate (NEON lanes)")

# Paging when the GPU's working set is exceeded (asprof.simulate.memory_pressure): the overflow is
# written out and read back every step, at the SSD rate Apple publishes.
PAGING = derived(7.4e9, f"assumption: overflow pages move at the SSD rate, {APPLE}: MacBook Pro (M1 Pro/Max, "
                 "Oct 2021) 'up to 7.4GB/s' SSD; no published per-chip paging rate")

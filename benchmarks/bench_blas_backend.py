"""Which BLAS does MLX use, and does the probe see the difference? (issue 2, acceptance 5)

Runs the blas probe (MLX only, float32 matmul, ``--level`` sweep) in two fresh processes: one
as the environment is (on Linux: the reference BLAS bundled with the MLX wheel) and one with
Debian's OpenBLAS preloaded (``LD_PRELOAD``, DESIGN §8). Prints the BLAS each trace recorded
and the matmul GFLOP/s side by side.

    python benchmarks/bench_blas_backend.py [--level quick|full] [--openblas DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import sys
from pathlib import Path
from asprof.probe.runner import ProbeConfig, run_probes
run_probes(ProbeConfig(level=sys.argv[1], only=("blas",), out=Path(sys.argv[2]), frameworks=("mlx",)))
"""


def probe(level: str, out: Path, preload: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    if preload:
        env["LD_PRELOAD"] = preload
    subprocess.run([sys.executable, "-c", CHILD, level, str(out)], env=env, check=True)
    from asprof.traces.io import load_trace

    t = load_trace(out)
    rates = {}
    for r in t.probe("blas", op="matmul", framework="mlx", dtype="float32"):
        p = r.params
        rates[(p["batch"], p["m"])] = r.metrics["flops_per_s"]
    return {"blas": t.host.blas.get("mlx", "?"), "lib": t.host.blas.get("mlx_library", ""), "rates": rates}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--level", default="quick", choices=("quick", "full"))
    ap.add_argument("--openblas", default="/usr/lib/x86_64-linux-gnu/openblas-pthread")
    args = ap.parse_args()
    lib = Path(args.openblas)
    if not (lib / "libblas.so.3").exists():
        sys.exit(f"no OpenBLAS at {lib} (Debian: apt-get install libopenblas0-pthread); nothing to compare")
    preload = f"{lib}/libblas.so.3:{lib}/liblapack.so.3"
    with tempfile.TemporaryDirectory() as d:
        base = probe(args.level, Path(d) / "base.json", None)
        fast = probe(args.level, Path(d) / "openblas.json", preload)
    print(f"as installed : MLX BLAS = {base['blas']} ({base['lib']})")
    print(f"LD_PRELOAD   : MLX BLAS = {fast['blas']} ({fast['lib']})")
    print(f"{'matmul (float32)':>22} {'as installed':>14} {'OpenBLAS':>12} {'speed-up':>9}")
    for key in sorted(set(base["rates"]) | set(fast["rates"])):
        b, f = base["rates"].get(key), fast["rates"].get(key)
        batch, n = key
        shape = f"{batch}x {n}^3" if batch > 1 else f"{n}^3"
        cell = lambda v: f"{v / 1e9:9.2f} GF/s" if v else "   (skipped)"  # noqa: E731
        ratio = f"{f / b:8.1f}x" if b and f else ""
        print(f"{shape:>22} {cell(b):>14} {cell(f):>12} {ratio:>9}")


if __name__ == "__main__":
    main()

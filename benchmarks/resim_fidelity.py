"""Re-simulate a recorded fidelity grid (benchmarks/bench_fidelity.py --out DIR) with today's
simulator: every cell's prediction computed again from the probe records that cell's runs took
(its `validate.json` names the trace, in bench-traces/), against the steps it measured. Nothing
is re-measured, so model variants compare on exactly the same runs.

Variants: --square-gemms prices GEMMs from the square sweep at the same flop count even where
the trace has a shape grid (HardwareModel.from_trace gemm_shapes=False; before 2026-12-04 the
default); --pool-rounds predicts each run from the probe rounds of all the cell's runs instead
of its own; --own-spread takes the machine's speed pool from each run's own rounds as well
(before: from all the cell's runs, docs/validate.md §6.2). Prints the summary bench_fidelity
prints (median and max |error| of the mean step, the pooled p5-p95 band fraction), split by rank
count.

    python benchmarks/resim_fidelity.py bench-fidelity-9                   # the recorded cells, today's code
    python benchmarks/resim_fidelity.py bench-fidelity-9 --square-gemms    # docs/validate.md §6.3
    python benchmarks/resim_fidelity.py bench-fidelity-9 --cells           # and every cell
    python benchmarks/resim_fidelity.py --together bench-fidelity-10/*-[12]n-* bench-fidelity-11   # cells of two grids
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from asprof.traces.io import load_trace  # noqa: E402
from asprof.validate.config import ValidateConfig  # noqa: E402
from fidelity_records import resimulate  # noqa: E402


def cell_results(path: Path, gemm_shapes: bool | None, pool: bool, spread_all: bool = True):
    """Each run of a grid cell's ``validate.json`` re-simulated (fidelity_records.resimulate, the
    function --resim uses on committed records) from the trace it names."""
    doc = json.loads(path.read_text())
    cfg = ValidateConfig.from_dict(doc["config"])
    trace = load_trace(doc["trace"]["path"])
    for i, spec in enumerate(cfg.specs()):
        label = spec.optimizer.label
        measured = doc["optimizers"][label]["training"]["step_time_s"]
        c = resimulate(cfg, trace, spec, i, measured, pool=pool, spread_all=spread_all, gemm_shapes=gemm_shapes)
        m = np.asarray(c.measured_s)
        inside = int(((m >= np.asarray(c.band_lo_s)) & (m <= np.asarray(c.band_hi_s))).sum())
        yield cfg, label, c, inside


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("grids", nargs="+", metavar="DIR",
                    help="directories written by bench_fidelity.py --out, or single cells of one")
    ap.add_argument("--together", action="store_true", help="one summary over all the DIRs given")
    ap.add_argument("--square-gemms", action="store_true",
                    help="price GEMMs from the square sweep even where the trace has a shape grid")
    ap.add_argument("--pool-rounds", action="store_true", help="predict each run from all the cell's probe rounds")
    ap.add_argument("--own-spread", action="store_true",
                    help="the machine's speed pool from each run's own rounds too (asprof before the pooled spread)")
    ap.add_argument("--cells", action="store_true", help="print every cell")
    args = ap.parse_args(argv)
    groups = []
    for grid in args.grids:
        cells = [Path(grid) / "validate.json"] if (Path(grid) / "validate.json").exists() else \
            sorted(Path(grid).glob("*/validate.json"))
        if not cells:
            print(f"{grid}: neither a cell nor a bench_fidelity.py --out directory", file=sys.stderr)
            return 2
        groups.append((grid, cells))
    if args.together:
        groups = [(" ".join(args.grids) if len(args.grids) < 4 else f"{len(args.grids)} cells or grids",
                   [c for _, cells in groups for c in cells])]
    variant = " + ".join(v for v, on in (("square GEMMs", args.square_gemms),
                                         ("rounds pooled", args.pool_rounds),
                                         ("speed pool of each run's own rounds", args.own_spread)) if on) or "as the code predicts today"
    for grid, cells in groups:
        rows = []
        for path in cells:
            for cfg, label, c, inside in cell_results(path, False if args.square_gemms else None, args.pool_rounds,
                                                         not args.own_spread):
                rows.append((cfg.world_size, c.mean_error_pct, inside, len(c.measured_s)))
                if args.cells:
                    print(f"{path.parent.name:18s} {label:14s} meas {c.measured_mean_s * 1e3:8.1f} ms  "
                          f"pred {c.predicted_mean_s * 1e3:8.1f} ms  err {c.mean_error_pct:+6.1f}%  "
                          f"band {inside}/{len(c.measured_s)}")

        def line(sel):
            errs = [e for _, e, _, _ in sel]
            band = sum(i for *_, i, _ in sel) / sum(n for *_, n in sel)
            return (f"median |error| {statistics.median(map(abs, errs)):.1f}%, max {max(map(abs, errs)):.1f}%, "
                    f"in p5-p95 {band:.0%}, mean signed {statistics.fmean(errs):+.1f}% ({len(sel)} cells)")

        print(f"{grid} ({variant}): {line(rows)}")
        for k in sorted({r[0] for r in rows}):
            print(f"  {k} rank(s): {line([r for r in rows if r[0] == k])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The GEMM shape grid: the blas probe's ``matmul_shape`` records and the simulator's
interpolation between them (asprof.probe.blas_shapes, asprof.simulate.gemm_grid)."""

import json
import math

import pytest

from asprof.errors import MissingProbeError
from asprof.probe import blas_shapes
from asprof.probe.backends import MLXBackend, discover
from asprof.probe.context import ProbeContext
from asprof.probe.harness import LEVELS, Harness
from asprof.simulate.gemm_grid import ShapeGrid
from asprof.simulate.hardware import HardwareModel
from asprof.traces import Record, Trace

from test_sim_hardware import make_trace


def power_law(m, n, k):
    """A time with different exponents per dimension: log-linear in (log m, log n, log k), so
    trilinear interpolation in log space reproduces it exactly between grid points."""
    return 3e-9 * m**0.9 * n**1.1 * k**0.7


DIMS = (16, 64, 256, 1024)


def grid_points(f=power_law, dims=DIMS, skip=()):
    return [(m, n, k, f(m, n, k)) for m in dims for n in dims for k in dims if (m, n, k) not in skip]


def test_the_grid_is_exact_at_measured_shapes_and_log_linear_between():
    g = ShapeGrid.fit(grid_points())
    assert g.dims == DIMS
    for shape in ((16, 16, 16), (1024, 64, 256), (64, 1024, 16)):
        assert g(*shape) == pytest.approx(power_law(*shape), rel=1e-12)
    for shape in ((512, 64, 64), (100, 30, 700), (17, 1000, 200)):
        assert g(*shape) == pytest.approx(power_law(*shape), rel=1e-9)


def test_outside_the_grid_time_scales_with_the_excess_above_and_stays_below():
    g = ShapeGrid.fit(grid_points())
    assert g(4096, 64, 64) == pytest.approx(4 * power_law(1024, 64, 64), rel=1e-12)
    assert g(2048, 2048, 3072) == pytest.approx(2 * 2 * 3 * power_law(1024, 1024, 1024), rel=1e-12)
    assert g(4, 64, 64) == pytest.approx(power_law(16, 64, 64), rel=1e-12)


def test_repeats_are_averaged_and_a_skipped_corner_takes_the_rate_of_the_shape_below_it():
    pts = grid_points(skip={(1024, 1024, 1024)})
    pts += [(16, 16, 16, 3 * power_law(16, 16, 16))]  # a second, slower round of one point
    g = ShapeGrid.fit(pts)
    assert g(16, 16, 16) == pytest.approx(2 * power_law(16, 16, 16), rel=1e-12)
    # the largest measured shapes it dominates: the three with one dimension 256
    below = ((1024, 1024, 256), (1024, 256, 1024), (256, 1024, 1024))
    per_flop = math.prod(power_law(*s) / math.prod(s) for s in below) ** (1 / 3)
    assert g(1024, 1024, 1024) == pytest.approx(per_flop * 1024**3, rel=1e-12)
    assert ShapeGrid.fit([(16, 16, 16, 1e-6)]) is None  # one dimension: nothing to interpolate


def shape_records(f, layouts=("nn", "nt", "tn"), dev="gpu"):
    return tuple(Record("blas", "matmul_shape", "mlx", dev, "float32",
                        params={"m": m, "n": n, "k": k, "layout": lay, "count": 1},
                        metrics={"flop": 2.0 * m * n * k, "in_graph_s": t * (2 if lay == "nt" else 1),
                                 "flops_per_s": 2.0 * m * n * k / t})
                 for lay in layouts for m, n, k, t in grid_points(f))


def test_the_hardware_model_prices_a_gemm_from_its_layouts_grid():
    base = make_trace()
    plain = HardwareModel.from_trace(base)
    asked = HardwareModel.from_trace(base, gemm_shapes=True)
    assert not plain.gemm_shapes and not any("matmul_shape" in n for n in plain.notes)
    assert not asked.gemm_shapes and any("matmul_shape" in n for n in asked.notes)
    with_grid = Trace(host=base.host, records=base.records + shape_records(power_law, ("nn", "nt")))
    # gemm_shapes=False: the square sweep prices every GEMM, grid or not
    assert HardwareModel.from_trace(with_grid, gemm_shapes=False).gemm_work(512, 64, 128) == plain.gemm_work(512, 64, 128)
    hw = HardwareModel.from_trace(with_grid)  # by default the grid, where the trace has one
    assert hw.gemm_shapes.keys() == HardwareModel.from_trace(with_grid, gemm_shapes=True).gemm_shapes.keys()
    assert set(hw.gemm_shapes) == {"nn", "nt"} and not any("matmul_shape" in n for n in hw.notes)
    # big enough that the memory floor does not bind
    assert hw.gemm_work(512, 64, 128) == pytest.approx(power_law(512, 64, 128), rel=1e-9)
    assert hw.gemm_work(512, 64, 128, layout="nt") == pytest.approx(2 * power_law(512, 64, 128), rel=1e-9)
    assert hw.gemm_work(64, 64, 16, batch=32) == pytest.approx(32 * power_law(64, 64, 16), rel=1e-9)
    # "tn" not in the grid, other dtypes never: the square sweep's flop curve as before
    assert hw.gemm_work(512, 64, 128, layout="tn") == plain.gemm_work(512, 64, 128, layout="tn")
    with pytest.raises(MissingProbeError):  # the grid is float32 only: no float16 cost from it
        hw.gemm_work(512, 64, 128, dtype="float16")


def test_the_probe_times_every_shape_of_the_grid_in_each_layout_on_mlx():
    _, absent = discover(("mlx",))
    ctx = ProbeContext(level="tiny", harness=Harness(LEVELS["tiny"]), backends=[MLXBackend("cpu")], absent=absent)
    out = blas_shapes.run(ctx, MLXBackend("cpu"))
    recs = [r for r in out if isinstance(r, Record)]
    seen = {(r.params["layout"], r.params["m"], r.params["n"], r.params["k"]) for r in recs}
    assert seen == {(lay, *s) for lay in blas_shapes.LAYOUTS for s in blas_shapes.grid("tiny")}
    for r in recs:
        m, n, k, count = (r.params[x] for x in ("m", "n", "k", "count"))
        assert (r.op, r.dtype, r.device) == ("matmul_shape", "float32", "cpu")
        assert count == blas_shapes.count_for(m, n, k) and count * 2 * m * n * k >= min(blas_shapes.WORK_FLOP, 2 * m * n * k)
        assert r.metrics["flop"] == 2.0 * m * n * k
        assert r.metrics["in_graph_s"] == pytest.approx(r.timing.median_s / count)
    g = ShapeGrid.fit([(r.params["m"], r.params["n"], r.params["k"], r.metrics["in_graph_s"])
                       for r in recs if r.params["layout"] == "tn"])
    assert g.dims == blas_shapes.DIMS["tiny"]


def test_the_products_have_each_layouts_operands_and_give_the_right_result():
    import mlx.core as mx
    import numpy as np

    be = MLXBackend("cpu")
    m, n, k = 5, 3, 4
    for layout in blas_shapes.LAYOUTS:
        outs = blas_shapes._products(be, layout, m, n, k, 2)()
        mx.eval(outs)
        for i, out in enumerate(outs):
            a = np.array(be.randn((k, m) if layout == "tn" else (m, k), seed=2 * i + 1), dtype=np.float64)
            b = np.array(be.randn((n, k) if layout == "nt" else (k, n), seed=2 * i + 2), dtype=np.float64)
            want = (a.T if layout == "tn" else a) @ (b.T if layout == "nt" else b)
            np.testing.assert_allclose(np.array(out), want, rtol=1e-5, atol=1e-5)
        assert not np.allclose(np.array(outs[0]), np.array(outs[1]))  # distinct operands: nothing merged


def test_simulate_uses_the_grid_where_the_trace_has_one(fresh, capsys):
    """`asprof simulate` prices GEMMs from the trace's grid (here 10× the power law, far from the
    square sweep) where it has one; --square-gemms ignores it; --gemm-shapes without a grid: a note."""
    from helpers import run_simulate

    from asprof.traces import save_trace

    base = make_trace()
    slow = lambda m, n, k: 10 * power_law(m, n, k)  # noqa: E731
    save_trace(Trace(host=base.host, records=base.records + shape_records(slow)), fresh / "grid.json")
    save_trace(base, fresh / "plain.json")
    args = ("--nodes", "1", "--model", "tiny", "--batch", "2", "--steps", "3", "--no-variance", "--optimizer", "adam",
            "--json")

    def compute(trace, *flag):
        rc, out, err = run_simulate(capsys, "--trace", trace, *args, *flag)
        assert rc == 0, err
        (run,) = json.loads(out)["runs"]
        return run["results"][0]["breakdown_s"]["compute"], run["notes"]

    square, notes = compute("plain.json")
    assert not any("matmul_shape" in n for n in notes)  # no grid, not asked: no note
    assert compute("grid.json", "--square-gemms")[0] == square
    shaped, notes = compute("grid.json")
    assert shaped > 2 * square and not any("matmul_shape" in n for n in notes)
    assert compute("grid.json", "--gemm-shapes")[0] == shaped
    assert any("matmul_shape" in n for n in compute("plain.json", "--gemm-shapes")[1])

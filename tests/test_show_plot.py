"""`asprof show` and `asprof plot`: every probe rendered; bad traces get one line, no traceback."""

import json

import pytest

from asprof.cli import main
from asprof.probe.allreduce import MODEL, ring_time
from asprof.probe.harness import summarize
from asprof.traces.io import save_trace
from asprof.probe.plots import plot_trace
from asprof.traces.schema import Host, Record, Skip, Trace
from asprof.probe.summary import render_summary, si


def synthetic_trace() -> Trace:
    host = Host(hostname="box", os="Linux", os_release="6", machine="x86_64", chip="Test CPU", cores_logical=2,
                memory_bytes=8 * 2**30, versions={"mlx": "0.32.4"},
                blas={"mlx": "reference", "mlx_library": "/x/libblas.so.3"}, env={"LD_PRELOAD": "y.so"})
    t = summarize([1e-3, 1.1e-3, 5e-3], first_s=0.5)  # high variance + cold start
    recs = []
    for dtype in ("float32", "float16"):
        for n in (64, 256):
            f = 2.0 * n**3
            recs.append(Record("blas", "matmul", "mlx", "cpu", dtype, {"m": n, "n": n, "k": n, "batch": 1},
                               {"flop": f, "flops_per_s": f / 1e-3, "time_s": 1e-3}, timing=t))
        recs.append(Record("blas", "matmul", "mlx", "cpu", dtype, {"m": 2000, "n": 2000, "k": 2000, "batch": 8},
                           {"flop": 1.28e11, "flops_per_s": 4.2e9, "time_s": 30.0}, timing=t))
        recs.append(Record("blas", "matvec", "mlx", "cpu", dtype, {"m": 256, "n": 256},
                           {"flop": 131072.0, "flops_per_s": 5e8, "time_s": 2.6e-4}))
        recs.append(Record("blas", "vjp", "mlx", "cpu", dtype, {"m": 256, "n": 256},
                           {"flop": 262144.0, "flops_per_s": 5e8, "time_s": 5.2e-4}))
    for kind, lat in (("cold", 7e-5), ("warm", 2.4e-5)):
        for op in ("add", "matmul"):
            recs.append(Record("launch", kind, "mlx", "cpu", "float32", {"op": op}, {"latency_s": lat}, timing=t))
    recs.append(Record("launch", "graph", "mlx", "cpu", "float32", {"op": "add", "ops": 128},
                       {"latency_s": 2e-6, "graph_s": 2.56e-4}))
    for op, k in (("copy", 2), ("triad", 3)):
        for b in (2**20, 2**24):
            recs.append(Record("membw", op, "mlx", "cpu", "float32", {"bytes": b},
                               {"bytes_moved": float(k * b), "bytes_per_s": 5e9, "time_s": k * b / 5e9}))
    for op in ("eigh", "qr", "power_step"):
        for n in (64, 128):
            recs.append(Record("linalg", op, "mlx", "cpu", "float32", {"n": n}, {"time_s": 1e-3 * n / 64, "flop": 1.0}))
    rss = tuple(4e8 + 1e6 * i for i in range(50))
    recs.append(Record("memory", "training_loop", "mlx", "cpu", "float32",
                       {"model": "mlp", "parameters": 1000, "batch": 8, "steps": 50},
                       {"steps": 50.0, "rss_start_bytes": rss[0], "rss_end_bytes": rss[-1], "rss_peak_bytes": rss[-1],
                        "rss_growth_bytes": rss[-1] - rss[0], "minor_faults_per_step": 3.0,
                        "major_faults_per_step": 0.0, "median_step_s": 0.05},
                       series={"rss_bytes": rss, "minor_faults": (100.0,) + (3.0,) * 49, "major_faults": (0.0,) * 50,
                               "step_s": (0.2,) + (0.05,) * 49}))
    for k, alpha, beta in ((2, 60e-6, 4.5e8), (4, 4e-3, 2e8)):
        sizes = [2**12, 2**16, 2**20, 2**24]
        for s in sizes:
            tt = ring_time(s, k, alpha, beta)
            recs.append(Record("allreduce", "all_sum", "mlx", "link", "float32",
                               {"bytes": s, "nodes": k, "backend": "ring", "hosts": ["box"] * k},
                               {"time_s": tt, "algbw_Bps": s / tt, "busbw_Bps": s / tt * 2 * (k - 1) / k}))
        recs.append(Record("allreduce", "fit", "mlx", "link", "float32",
                           {"nodes": k, "backend": "ring", "model": MODEL, "min_bytes": sizes[0], "max_bytes": sizes[-1]},
                           {"alpha_s": alpha, "beta_Bps": beta, "r2": 0.987, "max_rel_err": 0.12}))
    skipped = (Skip("blas", "mlx", "gpu", "this MLX build has no GPU backend"),
               Skip("launch", "mlx", "gpu", "this MLX build has no GPU backend"))
    return Trace(host=host, records=tuple(recs), skipped=skipped, created_utc="2026-01-01T00:00:00Z",
                 asprof_version="0.1.0")


def test_summary_shows_every_section():
    text = render_summary(synthetic_trace(), source="t.json")
    for needle in ("Host box: Test CPU", "BLAS      mlx reference", "/x/libblas.so.3", "LD_PRELOAD=y.so",
                   "matmul", "8x 2000x2000@2000x2000", "4.2 GFLOP/s", "launch:", "70 us", "24 us", "mlx/cpu graph", "2 us",
                   "membw:", "5 GB/s", "linalg:", "eigh", "memory:", "+46.7 MiB", "allreduce:", "busbw",
                   "alpha 60 us per step", "beta 450 MB/s per link", "R^2 0.987", "alpha 4 ms per step",
                   "high variance", "cold start", "skipped: 2", "blas, launch on mlx/gpu"):
        assert needle in text, needle


def test_summary_shows_the_layouts_and_the_shape_grids_spread():
    from dataclasses import replace

    base = synthetic_trace()
    grid = [Record("blas", "matmul_shape", "mlx", "cpu", "float32", {"m": m, "n": n, "k": k, "layout": "tn", "count": 1},
                   {"flop": 2.0 * m * n * k, "in_graph_s": 2.0 * m * n * k / rate, "flops_per_s": rate})
            for (m, n, k), rate in (((16, 16, 16), 1e9), ((16, 64, 16), 2e9), ((64, 64, 16), 3e9))]
    text = render_summary(replace(base, records=base.records + tuple(grid)))
    assert "GEMMs inside a graph" in text and "grid of 3 shapes" in text
    row = next(line for line in text.splitlines() if "grid of 3 shapes" in line).split()
    assert row[:2] == ["tn", "mlx/cpu"]
    assert " ".join(row[6:]) == "1 GFLOP/s (16x16x16) 2 GFLOP/s (16x64x16) 3 GFLOP/s (64x64x16)"
    assert "GEMMs inside a graph" not in render_summary(base)  # nothing timed in a graph: no section


def test_si_units_are_decimal():
    assert si(4.2e9, "FLOP/s") == "4.2 GFLOP/s" and si(1.5e12, "B/s") == "1.5 TB/s" and si(12, "B/s") == "12 B/s"
    # the prefix is the rounded value's: 999.97 M is shown as 1 G, not "1e+03 M"
    assert si(999.97e6, "FLOP/s") == "1 GFLOP/s" and si(999.4e6, "FLOP/s") == "999 MFLOP/s"
    from asprof.units import seconds

    assert seconds(0.99997) == "1 s" and seconds(0.0009999) == "1 ms" and seconds(0.25) == "250 ms"


def test_plots_are_written_for_every_probe(tmp_path):
    paths = plot_trace(synthetic_trace(), tmp_path, stem="t")
    assert [p.name for p in paths] == [f"t-{n}.png" for n in ("blas", "launch", "membw", "linalg", "memory", "allreduce")]
    for p in paths:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_show_and_plot_from_the_cli(capsys, tmp_path):
    path = save_trace(synthetic_trace(), tmp_path / "t.json")
    assert main(["show", str(path)]) == 0
    assert "allreduce:" in capsys.readouterr().out
    assert main(["plot", str(path), "--out", str(tmp_path / "png")]) == 0
    assert len(list((tmp_path / "png").glob("t-*.png"))) == 6
    assert main(["show", "m4-mini-x16-tb4"]) == 0  # a bundled profile by name
    out = capsys.readouterr().out  # the truthful label and the count of published and derived records (issue 17)
    # (issue 19: the link record is the published TB4 measurement, no longer derived from the line rate)
    assert "origin mixed" in out and "records: 3 published, 85 derived" in out


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize("cmd", ["show", "plot"])
def test_bad_traces_get_one_line(capsys, tmp_path, cmd):
    good = synthetic_trace().to_dict()
    v2 = dict(good, version=2)
    cases = {
        str(tmp_path / "missing.json"): "no such trace file",
        _write(tmp_path, "corrupt.json", json.dumps(good)[:300]): "not valid JSON",
        _write(tmp_path, "v2.json", json.dumps(v2)): "field version: expected 1",
        _write(tmp_path, "empty.json", ""): "not valid JSON",
        _write(tmp_path, "list.json", "[1, 2]"): "not a valid asprof trace",
        str(tmp_path): "is a directory",
    }
    for arg, expect in cases.items():
        code = main([cmd, arg, *(["--out", str(tmp_path / "o")] if cmd == "plot" else [])])
        out, err = capsys.readouterr()
        lines = [x for x in err.splitlines() if x.strip()]
        assert code != 0 and len(lines) == 1, (arg, err)
        assert lines[0].startswith(f"asprof {cmd}: error:") and expect in lines[0] and "Traceback" not in err


def test_plot_into_an_unwritable_place_is_one_line(capsys, tmp_path):
    path = save_trace(synthetic_trace(), tmp_path / "t.json")
    blocker = tmp_path / "f"
    blocker.write_text("")
    code = main(["plot", str(path), "--out", str(blocker / "png")])
    err = capsys.readouterr().err
    assert code != 0 and len(err.strip().splitlines()) == 1 and "cannot write plots" in err

"""The randomized fidelity benchmark's pure parts (issue 16): the draw (same seed, same cells;
ranges respected; a fresh seed draws others), the step-time budget, the bootstrap intervals and
the records (written, read back, re-simulated from the record alone)."""

import gzip
import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from fidelity_draw import MODELS, RANGES, Draw, draw_split  # noqa: E402
from fidelity_random import size_cell  # noqa: E402
from fidelity_stats import abs_bounds, block_means, cell_figures, ranking_correct, summarise  # noqa: E402

from asprof.presets import ModelConfig  # noqa: E402
from asprof.spec import OPTIMIZERS, RunChoices  # noqa: E402


def test_the_same_seed_draws_the_same_cells_and_a_fresh_seed_others():
    a, b = draw_split(11, 24), draw_split(11, 24)
    assert a == b
    assert [d.to_dict() for d in a] == [Draw.from_dict(json.loads(json.dumps(d.to_dict()))).to_dict() for d in a]
    assert draw_split(12, 24) != a
    assert sum(len(d.optimizers) for d in a) == 24  # cells = configurations x optimizers
    assert sum(len(d.optimizers) for d in draw_split(5, 7)) == 7


def test_every_draw_is_inside_the_ranges_and_runnable():
    draws = [d for seed in range(40) for d in draw_split(seed, 12)]
    lo, hi = RANGES["nodes"]
    assert {d.nodes for d in draws} == set(range(lo, hi + 1))  # odd counts included
    for d in draws:
        assert RANGES["seq"][0] <= d.seq <= RANGES["seq"][1] and RANGES["batch"][0] <= d.batch <= RANGES["batch"][1]
        assert RANGES["sparsity"][0] <= d.sparsity <= RANGES["sparsity"][1]
        assert RANGES["frequency"][0] <= d.frequency <= RANGES["frequency"][1]
        assert RANGES["warmup"][0] <= d.warmup <= RANGES["warmup"][1]
        assert 1 <= len(d.optimizers) <= 3 and len(set(d.optimizers)) == len(d.optimizers)
        assert set(d.optimizers) <= set(OPTIMIZERS) and d.model in MODELS
        if d.rate_mbit is not None:
            assert d.nodes > 1 and RANGES["rate_mbit"][0] <= d.rate_mbit <= RANGES["rate_mbit"][1]
        if d.model == "random":
            mc = ModelConfig(**d.model_config)  # checks heads divide hidden with an even head dimension
            assert RANGES["layers"][0] <= mc.layers <= RANGES["layers"][1]
            assert RANGES["hidden"][0] <= mc.hidden <= RANGES["hidden"][1] and mc.seq_len == d.seq
        else:
            assert d.model_config is None
    assert {o for d in draws for o in d.optimizers} == set(OPTIMIZERS)
    assert {d.model for d in draws} == set(MODELS)
    shaped = [d for d in draws if d.rate_mbit is not None]
    assert shaped and any(d.rate_mbit < 100 for d in shaped) and any(d.rate_mbit > 1000 for d in shaped)
    assert any(d.nodes > 1 and d.rate_mbit is None for d in draws)  # unshaped loopback too
    d = draws[0]  # a draw is a run the spec accepts
    RunChoices(model="tiny", batch=d.batch, seq=d.seq, optimizers=d.optimizers, sparsity=(d.sparsity,),
               frequency=d.frequency, warmup=d.warmup)


def test_without_namespaces_only_the_links_change():
    shaped, plain = draw_split(3, 30), draw_split(3, 30, shaped=False)
    assert all(d.rate_mbit is None for d in plain)
    assert any(d.rate_mbit is not None for d in shaped)
    assert [replace(d, rate_mbit=None) for d in shaped] == list(plain)


def test_the_budget_sizes_steps_and_batch():
    d = replace(draw_split(1, 2)[0], warmup=4, batch=8)
    # a step of 10 ms per sequence: 8 sequences = 80 ms; 10 s fill 125 steps
    got = size_cell(d, lambda b: 0.01 * b, budget_s=10.0, min_compared=8, max_steps=400)
    assert got["batch"] == 8 and got["steps"] == 125 and got["predicted_step_s"] == pytest.approx(0.08)
    # 1 s per sequence: 13 steps (warm-up 4 + 1 + 8) must fit 10 s -> the batch falls to 1 step/0.77 s
    got = size_cell(d, lambda b: 1.0 * b, budget_s=10.0, min_compared=8)
    assert got["batch"] == 1 and got["steps"] == 13 and got["drawn_batch"] == 8
    got = size_cell(d, lambda b: 0.1 * b, budget_s=10.0, min_compared=8)
    assert got["batch"] == 7 and got["steps"] == 14  # 13 x 0.7 s fit; then 14 fill the budget
    assert size_cell(d, lambda b: 1e-4, budget_s=10.0, max_steps=50)["steps"] == 50


def test_block_means_and_an_exact_error():
    assert list(block_means([1, 2, 3, 4, 5, 6, 7, 8])) == [1.5, 3.5, 5.5, 7.5]  # blocks of ceil(8^(1/3)) = 2
    assert list(block_means([1, 2, 3])) == [1, 2, 3]  # three steps: still two blocks or more
    f = cell_figures([0.1] * 27, 0.11, [True] * 27)
    assert f["mean_error_pct"] == pytest.approx(10.0)
    assert f["mean_error_ci"] == pytest.approx([10.0, 10.0])  # no spread, no width
    assert f["band_fraction"] == 1.0 and f["compared"] == 27 and not f["noise_limited"]


def test_the_interval_holds_the_error_and_grows_with_the_spread():
    rng = np.random.default_rng(0)
    calm = 0.1 * (1 + 0.02 * rng.standard_normal(64))
    wild = 0.1 * (1 + 0.2 * rng.standard_normal(64))
    a, b = cell_figures(calm, 0.1, calm > 0.099), cell_figures(wild, 0.1, wild > 0.099)
    for f in (a, b):
        lo, hi = f["mean_error_ci"]
        assert lo <= f["mean_error_pct"] <= hi
    assert np.diff(b["mean_error_ci"])[0] > 3 * np.diff(a["mean_error_ci"])[0]
    # a run whose passes disagree by more than its interval's half-width is noise-limited
    assert cell_figures(calm, 0.1, calm > 0, passes_disagree_pct=5.0)["noise_limited"]
    assert not cell_figures(calm, 0.1, calm > 0, passes_disagree_pct=0.0)["noise_limited"]
    # without an instrumented pass the two halves judge: a 10 % jump half-way is noise
    jump = np.r_[np.full(32, 0.1), np.full(32, 0.11)] * (1 + 0.001 * rng.standard_normal(64))
    assert cell_figures(jump, 0.105, jump > 0)["noise_limited"]


def test_the_summary_and_its_intervals():
    def cell(group, label, meas, pred, err_ci, inside, n, band_ci):
        return {"group": group, "label": label, "measured_mean_s": meas, "predicted_mean_s": pred,
                "mean_error_pct": 100 * (pred - meas) / meas, "mean_error_ci": err_ci, "inside": inside,
                "compared": n, "band_fraction": inside / n, "band_ci": band_ci, "noise_limited": label == "kpop"}

    cells = [cell("a", "adam", 0.10, 0.101, [0.5, 1.5], 9, 10, [0.7, 1.0]),
             cell("a", "kpop", 0.20, 0.19, [-7.0, -3.0], 18, 20, [0.8, 1.0]),
             cell("b", "adam", 0.30, 0.33, [8.0, 12.0], 5, 10, [0.2, 0.8]),
             cell("b", "soap", 0.25, 0.36, [40.0, 48.0], 10, 10, [1.0, 1.0])]
    s = summarise(cells)
    errs = [1.0, 5.0, 10.0, 44.0]
    assert s["cells"] == 4 and s["median_abs_error_pct"] == pytest.approx(np.median(errs))
    lo, hi = s["median_abs_error_ci"]
    assert min(errs) <= lo <= s["median_abs_error_pct"] <= hi <= max(errs)
    assert s["max_abs_error_pct"] == pytest.approx(44.0) and s["max_abs_error_ci"] == [40.0, 48.0]
    assert s["band_fraction"] == pytest.approx(42 / 50) and s["min_cell_band_fraction"] == 0.5
    assert s["min_cell_band_ci"] == [0.2, 0.8]
    assert s["band_ci"][0] <= 42 / 50 <= s["band_ci"][1]
    # group a ranks adam < kpop on both sides; group b measured soap < adam, predicted adam < soap
    assert s["ranking_groups"] == 2 and s["ranking_correct_groups"] == 1 and s["noise_limited_cells"] == 1
    assert abs_bounds([-2.0, 3.0]) == (0.0, 3.0) and abs_bounds([-7.0, -3.0]) == (3.0, 7.0)
    assert ranking_correct([("x", 1.0, 2.0), ("y", 2.0, 3.0)]) and not ranking_correct([("x", 1, 3), ("y", 2, 2)])
    assert math.isnan(summarise(cells[:1])["median_abs_error_ci"][0])  # one cell: no interval


@pytest.fixture
def probe_trace(tmp_path):
    """A real trace of this machine, tiny level (the compute probes a cluster probe runs)."""
    from asprof.probe.runner import ProbeConfig, run_probes

    return run_probes(ProbeConfig(level="tiny", only=("blas", "launch", "membw", "linalg"), frameworks=("mlx",),
                                  out=tmp_path / "probe.json")).trace


def test_a_record_is_small_and_resimulates_alone(tmp_path, monkeypatch, probe_trace):
    """Write a record (a real trace, a random model; measured steps as data), read it back in a
    fresh directory and re-simulate it: the same figures twice, the compacted trace still valid."""
    from fidelity_records import (cell_files, compact_trace, failure_record, pack_trace, read_cell, resim_directory,
                                  resim_record, write_cell)

    from asprof.traces.schema import Trace
    from asprof.validate.config import ValidateConfig

    monkeypatch.chdir(tmp_path)
    d = next(x for s in range(50) for x in draw_split(s, 3) if x.model == "random")
    d = replace(d, nodes=1, rate_mbit=None, optimizers=("adam", "kpop"), warmup=1, seq=16, batch=2,
                model_config={**d.model_config, "layers": 1, "hidden": 32, "heads": 2, "ffn": 64, "seq_len": 16})
    (tmp_path / "m.json").write_text(json.dumps(d.model_config))
    cfg = ValidateConfig(nodes=1, run=RunChoices(model=str(tmp_path / "m.json"), batch=2, seq=16,
                                                 optimizers=d.optimizers, warmup=1), steps=8, replicas=3)
    compact = compact_trace(probe_trace)
    assert isinstance(Trace.from_dict(compact.to_dict()), Trace)
    for full, kept in zip(probe_trace.records, compact.records):  # what the simulator reads, to 4 / 3 digits
        assert (full.probe, full.op, full.params) == (kept.probe, kept.op, kept.params)
        assert kept.metrics == pytest.approx(full.metrics, rel=5e-4)
        if full.timing:
            assert kept.timing.median_s == pytest.approx(full.timing.median_s, rel=5e-4)
            assert kept.timing.samples_s == pytest.approx(full.timing.samples_s, rel=5e-3)  # every sample
    steps = [0.02 + 0.001 * i for i in range(8)]
    runs = [{"label": s.optimizer.label, "index": i, "step_time_s": steps, "phases_s": [],
             "live": {"mean_error_pct": 0.0}} for i, s in enumerate(cfg.specs())]
    record = {"schema": "asprof.fidelity-cell", "version": 1, "split": "dev", "seed": 0, "draw": d.to_dict(),
              "sizing": {}, "config": cfg.to_dict(), "model_config": d.model_config, "hostfile": None,
              "trace": pack_trace(probe_trace), "runs": runs, "recorded": {}}
    path = write_cell(tmp_path / "records", record)
    assert path.name == f"cell-{d.index:02d}.json.gz" and path.stat().st_size < 200_000
    assert write_cell(tmp_path / "again", record).read_bytes() == path.read_bytes()  # reproducible bytes
    (tmp_path / "m.json").unlink()  # the record alone
    back = read_cell(path)
    assert back["draw"] == d.to_dict() and cell_files(tmp_path / "records") == [path]
    first, second = resim_record(back), resim_record(back)
    assert first == second and [c["label"] for c in first] == ["adam", "kpop"]
    # the packed trace predicts what the full one does (every sample kept, 3-4 digits)
    from fidelity_records import record_config, resimulate

    full_cfg = record_config(back, tmp_path)
    for i, (spec, c) in enumerate(zip(full_cfg.specs(), first)):
        full = resimulate(full_cfg, probe_trace, spec, i, steps)
        assert c["predicted_mean_s"] == pytest.approx(full.predicted_mean_s, rel=1e-3)
    assert all(c["compared"] == 8 - 2 and c["measured_mean_s"] == pytest.approx(np.mean(steps[2:])) for c in first)
    # a configuration whose run failed is recorded and counted, not dropped
    write_cell(tmp_path / "records", failure_record("dev", 0, replace(d, index=d.index + 1), {}, cfg, None,
                                                    {"failed": "rank 1 was killed by signal 9"}))
    cells, summary = resim_directory(tmp_path / "records")
    assert summary["cells"] == 2 and summary["groups"] == 1
    assert summary["failed_configurations"] == 1 and summary["failures"] == ["rank 1 was killed by signal 9"]
    assert summary["median_abs_error_pct"] == pytest.approx(np.median([abs(c["mean_error_pct"]) for c in first]))
    bad = tmp_path / "bad" / "cell-00.json.gz"
    bad.parent.mkdir()
    bad.write_bytes(gzip.compress(b'{"schema": "other"}'))
    with pytest.raises(ValueError, match="not a asprof.fidelity-cell"):
        read_cell(bad)


SMOKE = Path(__file__).resolve().parents[1] / "benchmarks" / "records" / "smoke-dev-263"


def test_committed_records_resimulate_from_the_repo_alone():
    """`bench_fidelity.py --resim DIR --json` on records in the repo (a smoke split, labelled so):
    the summary's figures and intervals and every cell, with today's simulator (so no figure is
    pinned: a model change moves them)."""
    import subprocess

    out = subprocess.run([sys.executable, str(SMOKE.parents[1] / "bench_fidelity.py"), "--resim", str(SMOKE), "--json"],
                         capture_output=True, text=True, timeout=600, cwd="/")
    assert out.returncode == 0, out.stderr[-2000:]
    doc = json.loads(out.stdout)
    for key in ("median_abs_error_pct", "max_abs_error_pct", "band_fraction", "min_cell_band_fraction", "cells",
                "median_abs_error_ci", "max_abs_error_ci", "band_ci", "min_cell_band_ci", "noise_limited_cells"):
        assert key in doc, key
    assert doc["cells"] == len(doc["per_cell"]) == 4
    errs = sorted(abs(c["mean_error_pct"]) for c in doc["per_cell"])
    assert doc["max_abs_error_pct"] == pytest.approx(errs[-1])
    assert doc["median_abs_error_ci"][0] <= doc["median_abs_error_pct"] <= doc["median_abs_error_ci"][1]
    for c in doc["per_cell"]:
        lo, hi = c["mean_error_ci"]
        assert lo <= c["mean_error_pct"] <= hi and 0.0 <= c["band_fraction"] <= 1.0, c

"""benchmarks/bench_published.py: the published-runs check runs, and its JSON is what it says."""

import importlib.util
import json
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from asprof.simulate import HardwareModel
from asprof.traces import load_profile

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_published.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_published", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_json_has_every_row_and_the_median_of_their_errors(bench, capsys):
    assert bench.main(["--json", "--no-what-if"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = out["rows"]
    assert len(rows) >= 7 and {r["source"].split(",")[0] for r in rows} == {"KPOP paper", "profiling paper"}
    for r in rows:
        assert r["error_pct"] == pytest.approx(100 * (r["predicted_s"] - r["published_s"]) / r["published_s"])
    assert out["median_abs_error_pct"] == pytest.approx(statistics.median(abs(r["error_pct"]) for r in rows))
    assert out["not_simulated"] and all(x["why"] for x in out["not_simulated"])


def test_the_schedule_count_equals_a_full_length_simulation(bench):
    run = replace(next(r for r in bench.RUNS if r.name == "16x M4, KPOP"), steps=57)
    fast = bench.simulate(run, frequency=5, warmup=3)
    from asprof.simulate import Cluster, OptimizerSpec, SimConfig, Workload, predict

    hw = HardwareModel.from_trace(load_profile(run.profile))
    full = predict(Workload(run.model, batch=run.batch_per_node, seq=run.seq), [OptimizerSpec("kpop", frequency=5, warmup=3)],
                   Cluster(run.nodes, hw), SimConfig(steps=57, variance=False)).results[0].mean_s
    assert fast == pytest.approx(full, rel=1e-9)


def test_the_m2_pro_row_is_priced_with_memory_pressure(bench):
    run = next(r for r in bench.RUNS if r.profile == "m2-pro")
    from asprof.simulate import Cluster, OptimizerSpec, SimConfig, Workload, predict

    hw = HardwareModel.from_trace(load_profile("m2-pro"))
    roomy = replace(hw, working_set_bytes=float(hw.memory_bytes))
    w = Workload(run.model, batch=run.batch_per_node, seq=run.seq)
    base = predict(w, [OptimizerSpec("adam")], Cluster(1, roomy), SimConfig(steps=3, variance=False)).results[0].mean_s
    assert bench.simulate(run) > base

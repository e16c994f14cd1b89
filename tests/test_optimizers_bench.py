"""The optimizer benchmark scripts run end to end at toy sizes (so they cannot rot)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def run(script, *args):
    out = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_speed_benchmark_prints_ratios_and_state_bytes():
    out = run("bench_optimizers_speed.py", "--models", "tiny", "--seq", "16", "--batch", "2", "--warmup", "2",
              "--window10", "10", "--window100", "10", "--block", "5", "--instrument-steps", "2", "--refreshes", "2",
              "--json")
    for label in ("adam", "kpop f=10", "kpop f=100", "topkpop s=0.1 f=10", "topkpop s=0.1 f=100"):
        assert label in out
    assert "MISMATCH" not in out and "goal KPOP <= 1.10x Adam at f = 10" in out
    assert "mx.compile" in out
    ratios = json.loads(out.strip().splitlines()[-1])
    assert set(ratios["kpop_over_adam"]) == {"tiny"} and ratios["kpop_over_adam"]["tiny"] > 0
    assert 0 < ratios["topkpop_refresh_over_kpop"] < 10 and ratios["blas"]


def test_loss_benchmark_prints_the_table(tmp_path):
    out = run("bench_optimizers_loss.py", "--model", "tiny", "--seq", "16", "--batch", "2", "--steps", "4",
              "--sweep-steps", "2", "--lrs", "1e-3,1e-2", "--eval-batches", "1", "--out", str(tmp_path / "r.json"))
    assert "| topkpop s=0.1 |" in out and "picked: adam" in out
    assert (tmp_path / "r.json").exists()

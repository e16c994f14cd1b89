"""`asprof simulate` end to end: a fresh directory, a local trace, JSON, sweeps with a plot,
the timeline, and one-line errors for bad input."""

import json

import pytest
from test_sim_hardware import make_trace

from asprof.traces import save_trace
from helpers import run_simulate as run_cli


def test_fresh_machine_uses_the_bundled_profile(fresh, capsys):
    rc, out, err = run_cli(capsys, "--nodes", "16", "--sparsity", "0.1")
    assert rc == 0, err
    assert "bundled profile m4-mini-x16-tb4" in out and "published/derived" in out
    for label in ("adam", "kpop", "topkpop s=0.1"):
        assert f"\n{label}" in out
    assert "breakdown per step" in out and "MFU against" in out and "factor sync" in out
    assert not list(fresh.iterdir())  # no sweep: nothing written


def test_newest_local_trace_is_used(fresh, capsys):
    save_trace(make_trace(name="mybox"), fresh / "traces" / "mybox.json")
    rc, out, err = run_cli(capsys, "--nodes", "2", "--model", "tiny", "--batch", "2", "--steps", "5")
    assert rc == 0, err
    assert "traces/mybox.json" in out and "measured figures" in out and "newest trace" in out


def test_json_output(fresh, capsys):
    rc, out, _ = run_cli(capsys, "--nodes", "4", "--json", "--steps", "12", "--optimizer", "adam,topkpop",
                         "--sparsity", "0.5")
    assert rc == 0
    doc = json.loads(out)
    assert doc["schema"] == "asprof.simulate" and doc["trace"]["bundled"]
    (run,) = doc["runs"]
    assert run["nodes"] == 4 and [r["label"] for r in run["results"]] == ["adam", "topkpop s=0.5"]
    r = run["results"][1]
    assert len(r["step_times_s"]) == 12 and set(r["breakdown_s"]) == {
        "compute", "exposed_comm", "optimizer_accel", "optimizer_cpu", "refresh"}
    assert sum(r["breakdown_s"].values()) == pytest.approx(r["mean_s"])


def test_sweep_writes_a_plot(fresh, capsys):
    rc, out, _ = run_cli(capsys, "--nodes", "1,2,4", "--sparsity", "1,0.1", "--steps", "20")
    assert rc == 0
    png = fresh / "simulate_sweep.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "plot: simulate_sweep.png" in out
    assert out.count("topkpop s=0.1") == 3
    rc, out, _ = run_cli(capsys, "--nodes", "1", "--sparsity", "1,0.5,0.1", "--plot", "s.png", "--steps", "20")
    assert rc == 0 and (fresh / "s.png").exists()
    png.unlink()
    rc, _, _ = run_cli(capsys, "--nodes", "1,2", "--no-plot", "--steps", "5")
    assert rc == 0 and not png.exists()


def test_timeline_file(fresh, capsys):
    rc, out, _ = run_cli(capsys, "--nodes", "3", "--steps", "4", "--timeline", "tl.json", "--model", "tiny")
    assert rc == 0 and "timeline: tl.json" in out
    events = json.loads((fresh / "tl.json").read_text())["traceEvents"]
    assert all({"name", "ph", "ts", "dur", "pid", "tid"} <= set(e) for e in events)


def test_slow_node_and_link_borrowing(fresh, capsys):
    rc, out, _ = run_cli(capsys, "--nodes", "4", "--steps", "5", "--optimizer", "adam", "--json")
    base = json.loads(out)["runs"][0]["results"][0]["mean_s"]
    rc, out, _ = run_cli(capsys, "--nodes", "4", "--steps", "5", "--optimizer", "adam", "--json", "--slow", "2.link=4")
    assert rc == 0 and json.loads(out)["runs"][0]["results"][0]["mean_s"] > base
    save_trace(make_trace(probes=("blas", "launch", "membw", "linalg")), fresh / "nolink.json")
    rc, out, err = run_cli(capsys, "--trace", "nolink.json", "--nodes", "2", "--model", "tiny", "--steps", "3",
                           "--link", "m4-mini-x16-tb4")
    assert rc == 0, err
    assert "borrowed from m4-mini-x16-tb4" in out


def test_memory_that_does_not_fit_is_refused_and_pressure_is_reported(fresh, capsys):
    # above the node's RAM (16 GiB): refused, one line, exit 2 (issue 17)
    rc, out, err = run_cli(capsys, "--nodes", "2", "--model", "gpt2-125m", "--steps", "2", "--optimizer", "adam")
    assert rc == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("asprof simulate: error: adam on 2 nodes needs") and "cannot run" in err
    # between the GPU's resident share (10.67 GB published for a 16 GB M4) and the RAM: runs, slower, said so
    rc, out, err = run_cli(capsys, "--nodes", "2", "--model", "gpt2-125m", "--batch", "4", "--steps", "2",
                           "--optimizer", "adam")
    assert rc == 0, err
    assert "memory pressure" in out and "above the GPU's resident share" in out


@pytest.mark.parametrize("args, expect", [
    (["--nodes", "0"], "nodes"),
    (["--nodes", "-2"], "nodes"),
    (["--nodes", "two"], "--nodes"),
    (["--sparsity", "0"], "sparsity"),
    (["--sparsity", "1.01"], "sparsity"),
    (["--frequency", "0"], "frequency"),
    (["-f", "-3"], "frequency"),
    (["--optimizer", "sgd"], "unknown optimizer"),
    (["--model", "gpt-5"], "unknown model preset"),
    (["--model", "missing.json"], "cannot read model config"),
    (["--trace", "missing.json"], "no such trace"),
    (["--trace", "nonsense"], "no such trace file or bundled profile"),
    (["--steps", "0"], "steps"),
    (["--slow", "40=2"], "node 40"),
    (["--nodes", "3", "--global-batch", "16"], "not a multiple of 3 node(s)"),
    (["--global-batch", "0"], "--global-batch must be a positive integer"),
    (["--nodes", "1,2", "--timeline", "t.json"], "--timeline"),
])
def test_bad_input_is_one_line_and_nonzero(fresh, capsys, args, expect):
    rc, out, err = run_cli(capsys, *args)
    assert rc != 0 and out == ""
    assert err.count("\n") == 1 and err.startswith("asprof simulate: error:") and expect in err
    assert "Traceback" not in err


def test_unreadable_trace_and_missing_probes(fresh, capsys):
    (fresh / "bad.json").write_text("{not json")
    rc, _, err = run_cli(capsys, "--trace", "bad.json")
    assert rc == 2 and "not valid JSON" in err and err.count("\n") == 1
    save_trace(make_trace(probes=("blas", "launch", "membw", "allreduce")), fresh / "nolinalg.json")
    rc, _, err = run_cli(capsys, "--trace", "nolinalg.json", "--optimizer", "kpop", "--model", "tiny")
    assert rc == 2 and "linalg" in err and err.count("\n") == 1
    rc, _, err = run_cli(capsys, "--trace", "nolinalg.json", "--optimizer", "adam", "--model", "tiny", "--steps", "3")
    assert rc == 0
    save_trace(make_trace(probes=("blas", "launch", "membw", "linalg")), fresh / "nolink.json")
    rc, _, err = run_cli(capsys, "--trace", "nolink.json", "--nodes", "2", "--model", "tiny")
    assert rc == 2 and "asprof probe --nodes" in err


def test_global_batch_is_split_over_the_nodes_like_train(fresh, capsys):
    rc, out, _ = run_cli(capsys, "--nodes", "1,2,4", "--global-batch", "8", "--json", "--no-plot", "--steps", "3",
                         "--optimizer", "adam")
    assert rc == 0
    runs = json.loads(out)["runs"]
    assert [r["workload"]["batch_per_node"] for r in runs] == [8, 4, 2]
    assert [r["results"][0]["tokens_per_s"] * r["results"][0]["mean_s"] for r in runs] == pytest.approx([8 * 1024] * 3)


"""The simulator's Eigen-Adam, SOAP, RACS, Alice, Alice-0: memory against the optimizers' own
accounting (paper 004, Table 1) and the ranking of Table 3, the refresh schedule and where the
refresh sits in the step, and effective throughput (App. F.5) from a speed-up or loss curves."""

import json

import pytest

from asprof.errors import AsprofError
from asprof.optimizers.accounting import closed_form_state_bytes
from asprof.presets import PRESETS
from asprof.simulate import Cluster, HardwareModel, OptimizerSpec, SimConfig, Workload, predict
from asprof.simulate.costs import plan_step
from asprof.simulate.effective import smoothed, speedup_from_curves, steps_to_reach
from asprof.simulate.session import SimulateConfig
from asprof.spec import RunChoices
from asprof.traces import load_profile
from helpers import run_simulate as run_cli

NAMES = ["eigen-adam", "soap", "racs", "alice", "alice-0"]


@pytest.mark.parametrize("cfg", [PRESETS[n] for n in ("tiny", "kpop-1.7m", "small")], ids=lambda c: c.name)
@pytest.mark.parametrize("name", NAMES)
def test_memory_is_the_optimizers_state_and_only_gradients_are_sent(cfg, name):
    plan = plan_step(Workload(cfg, 2, 16), OptimizerSpec(name), nodes=4)
    assert plan.memory["optimizer_state"] + plan.memory["preconditioner"] == closed_form_state_bytes(cfg, name)
    assert plan.grad_payload == 4 * cfg.n_params() and plan.factor_payload == 0 and not plan.factors
    rank_plan = plan_step(Workload(cfg, 2, 16), OptimizerSpec(name, rank=0.5), nodes=4)
    if name.startswith("alice"):
        assert rank_plan.memory["preconditioner"] > plan.memory["preconditioner"]
        assert rank_plan.memory["optimizer_state"] + rank_plan.memory["preconditioner"] == \
            closed_form_state_bytes(cfg, name, rank=0.5)


def test_refresh_schedule():
    assert OptimizerSpec("soap").refresh_steps(25) == [0, 9, 19]  # t = 1, 10, 20
    assert OptimizerSpec("eigen-adam", interval=4).refresh_steps(10) == [0, 3, 7]
    assert OptimizerSpec("alice").refresh_steps(400) == [0, 199, 399]
    assert OptimizerSpec("racs").refresh_steps(50) == []
    with pytest.raises(AsprofError, match="interval"):
        OptimizerSpec("soap", interval=0)
    with pytest.raises(AsprofError, match="rank"):
        OptimizerSpec("alice", rank=1.5)


def test_cli_memory_ranks_like_table3(fresh, capsys):
    """Table 3 (last layer by Adam): RACS < Alice-0 ≤ Alice < Adam; Table 1: Adam < Eigen-Adam < SOAP."""
    rc, out, err = run_cli(capsys, "--optimizer", "racs,alice,soap", "--nodes", "2", "--steps", "20")
    assert rc == 0, err
    for name in ("racs", "alice", "soap"):
        assert f"\n{name} " in out
    rc, out, err = run_cli(capsys, "--optimizer", "soap,adam,alice,eigen-adam,racs,alice-0", "--nodes", "2",
                           "--steps", "20", "--json")
    assert rc == 0, err
    results = json.loads(out)["runs"][0]["results"]
    total = {r["name"]: r["memory_bytes"]["total"] for r in results}
    assert sorted(total, key=total.get) == ["racs", "alice-0", "alice", "adam", "eigen-adam", "soap"]


def test_refresh_follows_the_gradient_allreduce_and_costs_on_refresh_steps():
    hw = HardwareModel.from_trace(load_profile("m4-mini-x16-tb4"))
    w = Workload(PRESETS["kpop-1.7m"], 4, 256)
    p = predict(w, [OptimizerSpec("soap", interval=5)], Cluster(2, hw),
                SimConfig(steps=12, variance=False, timeline=True, collapse="never"))
    r = p.result("soap")
    assert r.refreshes == 3 and r.breakdown_s["refresh"] > 0
    times = r.step_times_s
    assert min(times[i] for i in (4, 9)) > max(times[i] for i in (1, 2, 3, 5, 6, 7, 8))  # refresh steps
    spans = [s for s in r.spans if s[0] == 0 and s[4] == 4]  # rank 0, step 4 (t = 5)
    ring_end = max(s[5] + s[6] for s in spans if "gradient all-reduce" in s[2])
    eigh = [s for s in spans if s[2] == "eigh / QR (CPU stream)"]
    assert len(eigh) == 1 and eigh[0][5] >= ring_end  # needs the averaged gradient
    assert not [s for s in r.spans if "factor" in s[2]]


def test_alice_later_refreshes_iterate_instead_of_a_full_eigh():
    hw = HardwareModel.from_trace(load_profile("m4-mini-x16-tb4"))
    p = predict(Workload(PRESETS["small"], 2, 128), [OptimizerSpec("alice", interval=3)], Cluster(1, hw),
                SimConfig(steps=6, variance=False, timeline=True))
    cpu = {s[4]: s[6] for s in p.result("alice").spans if s[2] == "eigh / QR (CPU stream)"}
    assert sorted(cpu) == [0, 2, 5]
    assert cpu[2] == cpu[5] < cpu[0]  # subspace iteration (QR of m×r, eigh r×r) < eigh m×m


def test_effective_throughput_from_a_given_speedup(fresh, capsys):
    rc, out, err = run_cli(capsys, "--optimizer", "adam,alice,racs", "--nodes", "2", "--steps", "10",
                           "--speedup", "alice=2.5", "--json")
    assert rc == 0, err
    d = json.loads(out)
    res = {r["name"]: r for r in d["runs"][0]["results"]}
    assert res["alice"]["effective_tokens_per_s"] == pytest.approx(2.5 * res["alice"]["tokens_per_s"])
    assert res["adam"]["effective_tokens_per_s"] == res["adam"]["tokens_per_s"]
    assert "effective_tokens_per_s" not in res["racs"]
    rc, out, err = run_cli(capsys, "--optimizer", "adam,alice", "--nodes", "2", "--steps", "10",
                           "--speedup", "alice=2.5")
    assert rc == 0 and "effective tokens/s" in out and "×2.5" in out


@pytest.mark.parametrize("args,msg", [
    (["--speedup", "soap=2"], "not simulated"),
    (["--speedup", "alice=-1"], "positive"),
    (["--speedup", "alice"], "OPTIMIZER=SPEEDUP"),
    (["--interval", "0"], "interval"),
    (["--rank", "2.5"], "rank"),
    (["--loss-curve", "alice=nope.json"], "adam"),
    (["--loss-curve", "adam=nope.json", "--loss-curve", "alice=nope.json"], "nope.json"),
])
def test_bad_flags_are_one_line_errors(fresh, capsys, args, msg):
    rc, out, err = run_cli(capsys, "--optimizer", "adam,alice", "--steps", "5", *args)
    assert rc == 2 and msg in err and "Traceback" not in err


def test_speedup_from_curves_is_steps_to_reach_the_reference_final_loss():
    ref = [(s, 5.0 - 0.02 * s) for s in range(1, 101)]  # reaches its final 3.0 at step 100
    fast = [(s, 5.0 - 0.05 * s) for s in range(1, 101)]  # 3.0 at step 40
    assert steps_to_reach(ref, 3.0) == 100 and steps_to_reach(fast, 3.0) == 40
    assert speedup_from_curves(ref, fast) == pytest.approx(2.5)
    assert speedup_from_curves(ref, [(s, 4.0) for s in range(1, 50)]) == 0.0  # never gets there
    assert smoothed([4.0, 2.0, 3.0], window=2) == [(1, 4.0), (2, 3.0), (3, 2.5)]


def test_effective_throughput_from_training_results(fresh, capsys):
    def result(path, losses):
        path.write_text(json.dumps({"schema": "asprof.train_result", "losses": losses, "val_losses": [[len(losses), 0]]}))
        return str(path)

    adam = result(fresh / "adam.json", [5.0 - 0.02 * s for s in range(1, 101)])
    alice = result(fresh / "alice.json", [5.0 - 0.04 * s for s in range(1, 101)])
    rc, out, err = run_cli(capsys, "--optimizer", "adam,alice", "--nodes", "2", "--steps", "10", "--json",
                           "--loss-curve", f"adam={adam}", "--loss-curve", f"alice={alice}")
    assert rc == 0, err
    d = json.loads(out)
    # smoothed over 10 steps: adam's final trailing mean is 3.09 (step 100), alice's reaches it at step 53
    assert d["speedups"]["alice"]["speedup"] == pytest.approx(100 / 53)
    assert "training loss" in d["speedups"]["alice"]["source"]


def test_simulate_config_validates_speedups():
    with pytest.raises(AsprofError, match="not both"):
        SimulateConfig(run=RunChoices(optimizers=("adam", "alice")), speedups=(("alice", 2.0),),
                       loss_curves=(("adam", "a.json"), ("alice", "b.json")))

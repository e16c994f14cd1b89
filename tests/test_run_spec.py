"""One run spec for every command (asprof/spec.py, asprof/cli/options.py): the same flags resolve
to the same runs in `asprof simulate`, `train` and `validate`; the defaults and checks are the
spec's; simulating never imports MLX."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import pytest

from asprof import spec as S
from asprof.cli import main
from asprof.errors import AsprofError
from asprof.presets import PRESETS

COMMANDS = ("simulate", "train", "validate")
# sets of the shared flags, each with one node count (simulate's --nodes, train's and validate's
# --nodes mean the same cluster)
FLAG_SETS = [
    [],
    ["--model", "tiny", "--batch", "3", "--seq", "32", "--optimizer", "adam,kpop,topkpop", "--sparsity", "0.25",
     "-f", "7", "--warmup", "2", "--alpha", "0.9", "--eig-method", "power"],
    ["--model", "kpop-1.7m", "--global-batch", "16", "--optimizer", "topkpop,soap,alice", "--sparsity", "0.1,0.5",
     "--lr", "0.002", "--interval", "4", "--rank", "3", "--vocab", "512"],
    ["--model", "small", "--optimizer", "racs,eigen-adam", "--frequency", "3", "--warmup", "0"],
]


def _specs(capsys, tmp_path, command: str, flags: list[str], nodes: int = 2) -> dict:
    code = main([command, "--nodes", str(nodes), *flags, "--print-spec"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "traces").exists()  # nothing ran
    return json.loads(out)


@pytest.mark.parametrize("flags", FLAG_SETS, ids=["defaults", "kpop-knobs", "global-batch", "structured"])
def test_every_pair_of_commands_resolves_the_same_specs(capsys, tmp_path, monkeypatch, flags):
    monkeypatch.chdir(tmp_path)
    resolved = {c: _specs(capsys, tmp_path, c, flags) for c in COMMANDS}
    for a, b in itertools.combinations(COMMANDS, 2):
        assert resolved[a] == resolved[b], f"{a} and {b} resolve {flags} differently"
    specs = resolved["simulate"]["specs"]
    assert specs and all(set(s) >= {"model", "batch", "seq", "vocab", "optimizer", "resolved"} for s in specs)


def test_resolved_specs_follow_the_flags_and_the_vocabulary_rule(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    got = _specs(capsys, tmp_path, "train", FLAG_SETS[2], nodes=4)["specs"]
    assert [(s["optimizer"]["name"], s["optimizer"]["sparsity"]) for s in got] == \
        [("topkpop", 0.1), ("topkpop", 0.5), ("soap", 1.0), ("alice", 1.0)]
    assert {s["batch"] for s in got} == {16 // 4}  # the global batch split over 4 nodes
    assert {s["resolved"]["vocab"] for s in got} == {512} and {s["resolved"]["seq"] for s in got} == {1024}
    assert {s["optimizer"]["lr"] for s in got} == {0.002} and {s["optimizer"]["rank"] for s in got} == {3}
    assert got[2]["resolved"]["refresh_interval"] == 4
    # without --vocab, a preset keeps its own vocabulary in every command: one name, one workload
    d = _specs(capsys, tmp_path, "validate", ["--model", "kpop-1.7m"])["specs"][0]
    assert d["resolved"]["vocab"] == PRESETS["kpop-1.7m"].vocab == 8192
    d = _specs(capsys, tmp_path, "simulate", [])["specs"][0]
    assert (d["model"], d["batch"], d["optimizer"]["warmup"], d["optimizer"]["frequency"]) == \
        (S.MODEL, S.BATCH, S.WARMUP, S.FREQUENCY)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_offers_the_shared_flags_with_the_same_defaults(capsys, command):
    assert main([command, "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--batch", "--global-batch", "--seq", "--model", "--optimizer", "--sparsity", "--frequency", "-f,",
                 "--warmup", "--lr", "--eig-method", "--print-spec"):
        assert flag in text, f"{command} --help lacks {flag}"
    for default in (f"[default: {S.MODEL}]", f"[default: {S.BATCH}]", f"[default: {S.SPARSITY}]",
                    f"[default: {S.FREQUENCY}]", f"[default: {','.join(S.OPTIMIZER_LIST)}]"):
        assert default in text, f"{command} --help lacks {default}"


@pytest.mark.parametrize("command", COMMANDS)
def test_old_warmup_flag_works_with_a_one_line_notice(capsys, tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    code = main([command, "--model", "tiny", "--warmup-steps", "3", "--print-spec"])
    out, err = capsys.readouterr()
    assert code == 0
    assert {s["optimizer"]["warmup"] for s in json.loads(out)["specs"]} == {3}
    assert err.count("\n") == 1 and "--warmup-steps is deprecated" in err and "use --warmup" in err


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("argv, expect", [
    (["--sparsity", "0"], "--sparsity must be in (0, 1]"),
    (["--optimizer", "lion"], "unknown optimizer 'lion'"),
    (["--frequency", "0"], "--frequency must be a positive integer"),
    (["--global-batch", "15"], "--global-batch 15 is not a multiple of 2 node(s)"),
    (["--model", "nope"], "unknown model preset 'nope'"),
])
def test_bad_run_flags_are_one_line_in_every_command(capsys, tmp_path, monkeypatch, command, argv, expect):
    monkeypatch.chdir(tmp_path)
    code = main([command, "--nodes", "2", *argv, "--print-spec"])
    _, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and expect in err, err


def test_each_range_check_is_the_spec_s():
    with pytest.raises(AsprofError, match=r"--sparsity must be in \(0, 1\], got 1.5"):
        S.OptimizerSpec("topkpop", sparsity=1.5)
    with pytest.raises(AsprofError, match="--warmup must be a non-negative integer"):
        S.RunChoices(warmup=-1)
    with pytest.raises(AsprofError, match="training reads bytes"):
        S.RunSpec("tiny", vocab=100).check_trainable()
    assert S.RunSpec("tiny", vocab=100).model_config().vocab == 100  # a small vocabulary can still be simulated
    assert S.per_node_batch(8, None, 4) == 8 and S.per_node_batch(8, 32, 4) == 8


def test_reduced_dim_and_ring_factor_against_their_definitions():
    import math

    for n in (1, 7, 64, 128, 1000):
        for s in (0.01, 0.1, 0.25, 0.5, 1.0):
            k = S.reduced_dim(n, s)
            assert 1 <= k <= n and (k == 1 or k - 1 < math.sqrt(s) * n + 1e-9) and (k == n or k >= math.sqrt(s) * n - 1e-9)
    assert S.reduced_dim(100, 0.25) == 50
    # a ring all-reduce of S bytes over K nodes: 2(K-1) steps of S/K bytes sent by each node
    for k in (1, 2, 3, 16):
        assert S.ring_factor(k) == pytest.approx(2 * (k - 1) * (1 / k))


SIMULATE_ALL = """
import sys
from asprof.simulate.session import SimulateConfig, run_simulation
from asprof.spec import OPTIMIZERS, RunChoices
rep = run_simulation(SimulateConfig(nodes=(2,), run=RunChoices(optimizers=OPTIMIZERS, model="tiny"), steps=5,
                                    trace="m2-max", traces_dir="/nonexistent"))
names = {r.name for p in rep.predictions for r in p.results}
assert names == set(OPTIMIZERS), names
print("mlx" in sys.modules, sorted(m for m in sys.modules if m.split(".")[0] in ("mlx", "torch")))
"""


def test_simulating_every_optimizer_never_imports_mlx():
    proc = subprocess.run([sys.executable, "-c", SIMULATE_ALL], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == "False", proc.stdout

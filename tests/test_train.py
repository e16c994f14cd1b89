"""The single-process training loop, its result, and `asprof train`."""

import json

import pytest

from asprof.cli import main
from asprof.errors import AsprofError
from asprof.optimizers.accounting import closed_form_state_bytes
from asprof.train.config import TrainConfig
from asprof.train.result import TrainResult, summarize
from asprof.train.runner import run_training

TINY = TrainConfig.build(model="tiny", steps=25, batch=4, seq=32, lr=3e-3, warmup=3, frequency=5, eval_batches=2)


@pytest.fixture(scope="module")
def results():
    return {opt: run_training(TINY.evolve(optimizer=opt, instrument=(opt == "kpop"), eval_every=10))
            for opt in ("adam", "kpop", "topkpop")}


@pytest.mark.parametrize("opt", ["adam", "kpop", "topkpop"])
def test_loss_decreases(results, opt):
    r = results[opt]
    assert len(r.losses) == 25
    assert sum(r.losses[-5:]) / 5 < r.losses[0] - 1.0  # from ~ln 256 = 5.5
    assert [s for s, _ in r.val_losses] == [10, 20, 25]
    assert r.val_losses[-1][1] < r.val_losses[0][1]


def test_result_fields_and_json_round_trip(results, tmp_path):
    r = results["kpop"]
    assert r.refresh_steps == [0, 1, 2, 5, 10, 15, 20]
    assert r.world_size == 1 and r.bytes_per_step == [{}] * 25  # one process sends nothing
    assert r.state_bytes == r.closed_form_state_bytes == closed_form_state_bytes(TINY.model_config(), "kpop")
    s = r.summary
    assert s["skipped_steps"] == 4 and s["steps_timed"] == 21
    assert s["tokens_per_s"] == pytest.approx(4 * 32 / s["step_time_mean_s"])
    path = r.save(tmp_path / "r.json")
    back = TrainResult.from_dict(json.loads(path.read_text()))
    assert back.losses == r.losses and back.config["optimizer"] == "kpop"


def test_instrumented_pass_times_every_phase_and_repeats_the_run(results):
    r = results["kpop"]
    assert len(r.phases_s) == 25
    for i, ph in enumerate(r.phases_s):
        expected = {"fwd_bwd", "factor_ema", "grad_allreduce", "optimizer"} | ({"refresh"} if i in r.refresh_steps else set())
        assert set(ph) == expected and all(v >= 0 for v in ph.values())
    # Same seed, same batches: the instrumented pass retraces the timed one.
    assert r.instrumented_loss_max_abs_diff < 1e-4
    assert "refresh" in r.summary["instrumented"]["phase_mean_s"]
    assert results["adam"].phases_s is None


def test_summarize_skips_warmup_steps():
    s = summarize([9.0, 9.0, 1.0, 2.0, 3.0], skip=2, tokens_per_step=10)
    assert s["step_time_mean_s"] == 2.0 and s["step_time_median_s"] == 2.0 and s["step_time_min_s"] == 1.0
    assert s["tokens_per_s"] == 5.0


@pytest.mark.parametrize("kw,flag", [
    (dict(optimizer="sgd"), "--optimizer"), (dict(steps=0), "--steps"), (dict(sparsity=0.0), "--sparsity"),
    (dict(alpha=1.0), "--alpha"), (dict(frequency=0), "--frequency"), (dict(warmup=-1), "--warmup"),
    (dict(lr=-1.0), "--lr"), (dict(batch=0), "--batch"), (dict(seq=1), "--seq"),
    (dict(model="nope"), "unknown model preset"), (dict(nodes=2, hostfile="h.json"), "not both"),
])
def test_config_errors_are_one_line(kw, flag):
    with pytest.raises(AsprofError, match=flag):
        TrainConfig.build(**kw)


def test_cli_train_json_and_plot(tmp_path, capsys):
    rc = main(["train", "--model", "tiny", "--steps", "3", "--batch", "2", "--seq", "16", "--optimizer", "topkpop",
               "--sparsity", "0.5", "--out", str(tmp_path), "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["config"]["optimizer"] == "topkpop" and len(out["losses"]) == 3
    files = sorted(p.suffix for p in tmp_path.iterdir())
    assert files == [".json", ".png"]


@pytest.mark.parametrize("args,msg", [
    (["--sparsity", "0"], "--sparsity must be in (0, 1]"),
    (["--steps", "-2"], "--steps must be a positive integer"),
    (["--data", "/nonexistent/file.txt", "--steps", "1"], "cannot read"),
    (["--optimizer", "lion"], "unknown optimizer 'lion' in --optimizer"),
])
def test_cli_bad_flags_give_one_line_and_exit_2(args, msg, capsys, tmp_path):
    rc = main(["train", "--model", "tiny", "--out", str(tmp_path), *args])
    captured = capsys.readouterr()
    assert rc == 2 and captured.out == ""
    assert msg in captured.err and "Traceback" not in captured.err
    assert len(captured.err.strip().splitlines()) == 1


def test_the_instrumented_pass_is_interleaved_step_by_step():
    seen = []
    run_training(TINY.evolve(steps=3, instrument=True),
                 on_progress=lambda phase, step, steps, loss, dt: seen.append((phase, step)))
    assert seen == [("train", 0), ("instrumented", 0), ("train", 1), ("instrumented", 1),
                    ("train", 2), ("instrumented", 2)]

"""Data-parallel training over MLX's ring backend (2 local ranks) ≡ single-process training on the
same global batch; identical bases on every rank; the byte counter's payloads.

The equivalence runs use a small model on uniformly random bytes so that every KFAC factor is
well-conditioned (many more tokens than dimensions, no repeated-token null spaces). On real text
with the tiny preset, early factors are rank-deficient (the embedding input spans only the bytes
present in the batch): eigenvectors in a (near-)null space are fixed by rounding alone, and Adam's
normalisation turns the ~0 gradient components there into ±lr updates, so 1-process and 2-process
runs differ by O(lr) though every rank of the 2-process run agrees exactly (docs/optimizers.md).
"""

import json

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from asprof.optimizers.accounting import factor_payload_bytes, gradient_payload_bytes, reduced_dim
from asprof.presets import PRESETS
from asprof.train.config import TrainConfig
from asprof.train.model import build_model
from asprof.train.runner import run_training

pytestmark = pytest.mark.distributed

MICRO = {"name": "micro", "layers": 2, "hidden": 16, "ffn": 32, "heads": 2, "vocab": 256, "seq_len": 32}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    (d / "micro.json").write_text(json.dumps(MICRO))
    (d / "random.bin").write_bytes(np.random.default_rng(0).integers(0, 256, 100_000).astype(np.uint8).tobytes())
    return TrainConfig.build(optimizer="adam", steps=5, model=str(d / "micro.json"), data=str(d / "random.bin"), batch=8,
                       lr=1e-3, sparsity=0.25, warmup=2, frequency=2, eval_batches=1, timeout_s=120)


def params(directory, rank):
    return mx.load(str(directory / f"rank{rank}.npz"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, base):
    out = {}
    for opt in ("adam", "kpop", "topkpop"):
        d = tmp_path_factory.mktemp(opt)
        cfg = base.evolve(optimizer=opt)
        one = run_training(cfg, save_params=str(d / "one"))
        # the same global batch: 8 sequences on one rank, 4 on each of two
        two = run_training(cfg.evolve(nodes=2, batch=cfg.batch // 2), save_params=str(d / "two"))
        out[opt] = (one, two, d)
    return out


@pytest.mark.parametrize("opt", ["adam", "kpop", "topkpop"])
def test_two_ranks_equal_one_process_on_the_same_global_batch(runs, base, opt):
    one, two, d = runs[opt]
    p1, r0, r1 = params(d / "one", 0), params(d / "two", 0), params(d / "two", 1)
    assert p1.keys() == r0.keys() == r1.keys()
    worst = max(float(mx.max(mx.abs(p1[k] - r0[k])).item()) for k in p1)
    assert worst <= 1e-5, f"{opt}: 2-rank params differ from 1-process by {worst:.2e}"
    assert all(mx.array_equal(r0[k], r1[k]).item() for k in r0)  # ranks hold identical weights
    # The run moved the weights (by up to 5·lr per element), so 1e-5 is a real constraint.
    init = dict(tree_flatten(build_model(base.model_config(), seed=base.seed).parameters()))
    assert max(float(mx.max(mx.abs(p1[k] - init[k])).item()) for k in p1) > 100 * 1e-5
    assert two.world_size == 2 and one.world_size == 1
    assert max(abs(a - b) for a, b in zip(one.losses, two.losses)) < 1e-4


@pytest.mark.parametrize("opt", ["kpop", "topkpop"])
def test_every_rank_holds_the_identical_eigenbasis(runs, opt):
    _, two, _ = runs[opt]
    assert len(two.basis_digests) == 2 and two.basis_digests[0] is not None
    assert two.basis_digests[0] == two.basis_digests[1]


def test_byte_counter_payloads(runs, base):
    cfg = base.model_config()
    adam, kpop, top = (runs[o][1] for o in ("adam", "kpop", "topkpop"))
    n = cfg.n_params()
    for r in (adam, kpop):
        assert all(b["gradients"] == 4 * n for b in r.bytes_per_step)
    assert all("factors" not in b for b in adam.bytes_per_step)
    # KPOP: factor all-reduce only at refresh steps (t < warmup = 2, then every f = 2 steps).
    assert kpop.refresh_steps == [0, 1, 2, 4]
    for i, b in enumerate(kpop.bytes_per_step):
        assert b.get("factors", 0) == (factor_payload_bytes(cfg) if i in kpop.refresh_steps else 0)
    # TopKPOP sends the projected gradients: ≈ s of KPOP's payload for the KFAC layers.
    top_bytes = top.bytes_per_step[-1]["gradients"]
    assert top_bytes == gradient_payload_bytes(cfg, "topkpop", 0.25)
    adam_routed = 4 * (n - sum(r * c for _, r, c in cfg.linear_shapes()))
    kfac_ratio = (top_bytes - adam_routed) / (4 * n - adam_routed)
    assert kfac_ratio == pytest.approx(0.25, rel=1e-9)  # √0.25·R and √0.25·C are exact here
    assert all(b["gradients"] == top_bytes for b in top.bytes_per_step)
    assert reduced_dim(32, 0.25) == 16


def test_sparsity_point_one_payload_is_about_s():
    cfg = PRESETS["small"]
    linear = sum(r * c for _, r, c in cfg.linear_shapes())
    adam_routed = 4 * (cfg.n_params() - linear)
    ratio = (gradient_payload_bytes(cfg, "topkpop", 0.1) - adam_routed) / (4 * linear)
    assert 0.1 <= ratio < 0.12  # ceilings make it a little more than s


def test_instrumented_distributed_run_keeps_every_ranks_phases(base):
    r = run_training(base.evolve(optimizer="topkpop", steps=3, nodes=2, batch=base.batch // 2, instrument=True))
    assert len(r.phases_s) == 3 and len(r.phases_s_by_rank) == 2
    assert r.phases_s == r.phases_s_by_rank[0]
    for ranks_phases in r.phases_s_by_rank:
        assert all({"fwd_bwd", "refresh", "grad_allreduce", "optimizer"} <= set(p) for p in ranks_phases)
    assert r.instrumented_loss_max_abs_diff < 1e-5


def test_any_batch_per_node_runs_on_any_rank_count(base):
    # --batch is per node: 3 ranks of 1 sequence each (a global batch of 3) is a valid run
    r = run_training(base.evolve(steps=2, nodes=3, batch=1))
    assert r.world_size == 3 and len(r.losses) == 2 and all(np.isfinite(r.losses))

"""The structured-Fisher optimizers data parallel over MLX's ring backend (2 local ranks): the
gradients are averaged before the update, so every rank holds bit-identical weights and optimizer
state (bases, statistics, Alice's switching draws), and 2 ranks follow 1 process on the same
global batch. Nothing but the gradients is all-reduced."""

import json

import mlx.core as mx
import numpy as np
import pytest

from asprof.optimizers.accounting import gradient_payload_bytes
from asprof.presets import resolve_model
from asprof.train.config import TrainConfig
from asprof.train.runner import run_training

pytestmark = pytest.mark.distributed

MICRO = {"name": "micro", "layers": 1, "hidden": 16, "ffn": 32, "heads": 2, "vocab": 256, "seq_len": 32}
NAMES = ["eigen-adam", "soap", "racs", "alice", "alice-0"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    (d / "micro.json").write_text(json.dumps(MICRO))
    (d / "random.bin").write_bytes(np.random.default_rng(0).integers(0, 256, 100_000).astype(np.uint8).tobytes())
    base = TrainConfig.build(steps=4, model=str(d / "micro.json"), data=str(d / "random.bin"), batch=8, lr=1e-3,
                       interval=2, eval_batches=1, timeout_s=120)
    out = {}
    for name in NAMES:
        cfg = base.evolve(optimizer=name)
        one = run_training(cfg, save_params=str(d / name / "one"))
        two = run_training(cfg.evolve(nodes=2, batch=cfg.batch // 2), save_params=str(d / name / "two"))
        out[name] = (one, two, d / name)
    return out


@pytest.mark.parametrize("name", NAMES)
def test_ranks_hold_identical_state_and_only_gradients_are_sent(runs, name):
    one, two, d = runs[name]
    r0, r1 = (mx.load(str(d / "two" / f"rank{r}.npz")) for r in (0, 1))
    assert all(mx.array_equal(r0[k], r1[k]).item() for k in r0)
    assert len(two.basis_digests) == 2 and two.basis_digests[0] is not None
    assert two.basis_digests[0] == two.basis_digests[1]  # every matrix state array, bit for bit
    mc = resolve_model(str(d.parent / "micro.json")).with_overrides(vocab=256)
    assert all(b == {"gradients": gradient_payload_bytes(mc, "adam")} for b in two.bytes_per_step)
    assert two.refresh_steps == ([] if name == "racs" else [0, 1, 3])  # t = 1, 2, 4 with K = 2


# Not SOAP: at t = 1 Algorithm 6's rotated gradient U_Lᵀ G U_R is exactly diagonal (the bases are
# G's own singular vectors), so its off-diagonal entries are rounding noise that m/√v turns into
# ±0.22·λ steps, and v is not rotated when the bases change, so later refreshes amplify such
# differences: 1 process and 2 ranks (different summation order) differ by up to 0.14 here
# (measured; docs/optimizers.md). The 2 ranks still agree bit for bit (test above).
@pytest.mark.parametrize("name", [n for n in NAMES if n != "soap"])
def test_two_ranks_follow_one_process(runs, name):
    one, two, d = runs[name]
    p1, p2 = mx.load(str(d / "one" / "rank0.npz")), mx.load(str(d / "two" / "rank0.npz"))
    worst = max(float(mx.max(mx.abs(p1[k] - p2[k])).item()) for k in p1)
    assert worst <= 1e-5, f"{name}: 2-rank params differ from 1-process by {worst:.2e}"
    assert max(abs(a - b) for a, b in zip(one.losses, two.losses)) < 1e-4

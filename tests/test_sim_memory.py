"""Memory pressure on unified memory (asprof.simulate.memory_pressure; issue 17)."""

from dataclasses import replace

import pytest

from asprof.presets import PRESETS
from asprof.simulate import Cluster, HardwareModel, OptimizerSpec, SimConfig, Workload, predict
from asprof.simulate.memory_pressure import DEFAULT_SHARE, paging_s
from asprof.traces import load_profile

GIB = 2**30


def test_paging_cost_is_zero_within_the_share_and_grows_with_the_excess():
    ram = 32 * GIB
    assert paging_s(20 * GIB, ram, True, 24 * GIB, 8e9) == 0.0
    assert paging_s(26 * GIB, ram, True, 24 * GIB, 8e9) == pytest.approx(2 * 2 * GIB / 8e9)
    # no working-set record: DEFAULT_SHARE of the RAM; no unified memory: no such share
    assert paging_s(26 * GIB, ram, True, None, 8e9) == pytest.approx(2 * (26 * GIB - DEFAULT_SHARE * ram) / 8e9)
    assert paging_s(26 * GIB, ram, False, 24 * GIB, 8e9) == 0.0


def _step(hw, batch):
    w = Workload(PRESETS["gpt2-125m"], batch=batch, seq=1024)
    return predict(w, [OptimizerSpec("adam")], Cluster(1, hw), SimConfig(steps=2, variance=False)).results[0]


def test_a_workload_above_the_gpu_share_predicts_a_slower_step_and_above_ram_does_not_fit():
    hw = HardwareModel.from_trace(load_profile("m4-mini-x16-tb4"))
    # the same hardware with a working set large enough for everything: the step without pressure
    roomy = replace(hw, working_set_bytes=float(hw.memory_bytes))
    r, base = _step(hw, 5), _step(roomy, 5)
    need = r.memory_bytes["total"]
    assert hw.working_set_bytes < need <= hw.memory_bytes and r.fits
    # independent of the model's code path: the excess out and back in at the trace's paging rate
    assert r.mean_s - base.mean_s == pytest.approx(2 * (need - hw.working_set_bytes) / hw.page_in_Bps, rel=1e-9)
    # within the share: no cost
    assert _step(hw, 1).mean_s == pytest.approx(_step(roomy, 1).mean_s, rel=1e-12)
    # above the RAM: the result says it does not fit (the CLI refuses it: test_sim_cli)
    assert not _step(hw, 12).fits

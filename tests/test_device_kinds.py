"""Every branch on the device kind — Metal / MPS present, CUDA present, CPU only — without a Mac
or a GPU: the device that MLX and PyTorch report is faked at the narrowest point (the
``is_available`` call each branch reads), everything else is real (issue 17)."""

from types import SimpleNamespace

import mlx.core as mx
import pytest

from asprof.presets import PRESETS
from asprof.probe import backends
from asprof.simulate import Cluster, HardwareModel, OptimizerSpec, SimConfig, Workload, predict
from asprof.simulate.memory_pressure import paging_s
from asprof.probe.host import _accelerator
from test_sim_hardware import make_trace

KINDS = ("metal", "cuda", "none")


def fake_mlx(kind, metal_raises=False):
    """An object with the two calls host._accelerator reads (mx is its parameter)."""
    def metal_available():
        if metal_raises:
            raise RuntimeError("no Metal device")
        return kind == "metal"

    metal = SimpleNamespace(is_available=metal_available, device_info=lambda: {"device_name": "Apple M4 Max"})
    return SimpleNamespace(metal=metal, cuda=SimpleNamespace(is_available=lambda: kind == "cuda"))


@pytest.mark.parametrize("kind, expect", [("metal", ("metal", "Apple M4 Max")), ("cuda", ("cuda", None)),
                                          ("none", ("none", None))])
def test_host_names_the_accelerator_mlx_reports(kind, expect):
    assert _accelerator(fake_mlx(kind)) == expect
    assert _accelerator(None) == ("none", None)  # MLX not installed
    # a Metal query that fails falls through to CUDA, then to none
    assert _accelerator(fake_mlx(kind, metal_raises=True))[0] == ("cuda" if kind == "cuda" else "none")


@pytest.fixture
def device_kind(monkeypatch):
    """Set the device kind MLX and PyTorch report: patch only their is_available calls."""
    def set_kind(kind):
        monkeypatch.setattr(mx.metal, "is_available", lambda: kind == "metal")
        if getattr(mx, "cuda", None) is not None:
            monkeypatch.setattr(mx.cuda, "is_available", lambda: kind == "cuda")
        else:
            monkeypatch.setattr(mx, "cuda", SimpleNamespace(is_available=lambda: kind == "cuda"), raising=False)
        try:
            import torch
        except ImportError:
            return None
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: kind == "metal")
        monkeypatch.setattr(torch.cuda, "is_available", lambda: kind == "cuda")
        return torch
    return set_kind


@pytest.mark.parametrize("kind", KINDS)
def test_probe_discovery_follows_the_device_kind(device_kind, kind):
    torch = device_kind(kind)
    have, absent = backends.discover()
    names = {b.name for b in have}
    missing = {f"{a.framework}/{a.device}": a.reason for a in absent}
    assert "mlx/cpu" in names  # always
    assert ("mlx/gpu" in names) == (kind != "none")
    if kind == "none":
        assert "no GPU backend" in missing["mlx/gpu"]
    if torch is not None:
        assert "torch/cpu" in names
        assert ("torch/mps" in names) == (kind == "metal") and ("torch/cuda" in names) == (kind == "cuda")
        if kind != "metal":
            assert "needs macOS" in missing["torch/mps"]
        if kind != "cuda":
            assert "no CUDA device" in missing["torch/cuda"]


@pytest.mark.parametrize("kind", KINDS)
def test_optimizers_compile_on_metal_only(device_kind, kind):
    from asprof.optimizers.base import Adam

    device_kind(kind)
    assert Adam(learning_rate=1e-3).compile == (kind == "metal")
    assert Adam(learning_rate=1e-3, compile=False).compile is False


@pytest.mark.parametrize("kind", KINDS)
def test_the_simulator_branches_on_the_traces_accelerator(kind):
    hw = HardwareModel.from_trace(make_trace(accelerator=kind))
    assert hw.accel_device == ("cpu" if kind == "none" else "gpu")
    assert hw.shared_lanes == (kind == "none")
    w = Workload(PRESETS["tiny"], batch=4, seq=64)

    def step(**sim):
        return predict(w, [OptimizerSpec("adam")], Cluster(1, hw), SimConfig(steps=2, variance=False, **sim)).results[0].mean_s

    # the Adam update is compiled on Metal only (as asprof's optimizers do): forcing the other
    # choice changes the step on Metal and nowhere else, and forcing the default changes nothing
    native = step()
    assert step(compiled_update=(kind == "metal")) == pytest.approx(native, rel=1e-12)
    assert step(compiled_update=(kind != "metal")) != pytest.approx(native, rel=1e-6)
    # the GPU's resident share of unified memory exists on Metal only
    ram = hw.memory_bytes
    assert (paging_s(0.9 * ram, ram, hw.accelerator == "metal") > 0) == (kind == "metal")
    # rms_norm and rope are fused kernels on Metal; elsewhere their CPU fallbacks dispatch extra primitives
    from asprof.simulate.workload import op_time

    fallbacks = [op for op in w.forward_ops() + w.backward_ops() if op.cpu_fallback]
    assert fallbacks and (sum(op_time(hw, op) for op in fallbacks) == 0) == (kind == "metal")

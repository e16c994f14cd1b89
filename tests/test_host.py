"""Host capture, including which BLAS MLX really calls."""

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from asprof.cluster.blas import fast_blas_preload
from asprof.probe.host import _classify, capture_host, mlx_blas, timing_env
from asprof.traces.schema import Host

OPENBLAS = Path("/usr/lib/x86_64-linux-gnu/openblas-pthread")


def test_capture_host_round_trips_and_describes_this_machine():
    h = capture_host(with_torch=False)
    assert Host.from_dict(h.to_dict()) == h
    assert h.os == platform.system() and h.cores_logical == os.cpu_count()
    assert h.memory_bytes > 2**28 and h.chip
    assert h.versions["mlx"] and h.versions["python"] == platform.python_version()
    assert "mlx" in h.blas
    import mlx.core as mx

    assert h.accelerator == ("metal" if mx.metal.is_available() else h.accelerator)
    if sys.platform == "linux" and not mx.metal.is_available():
        assert h.accelerator in ("none", "cuda") and not h.unified_memory


@pytest.mark.skipif(sys.platform != "linux", reason="the Linux MLX wheel bundles the reference BLAS")
def test_mlx_uses_the_bundled_reference_blas_without_a_preload():
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    code = "from asprof.probe.host import mlx_blas; import mlx.core; print(*mlx_blas())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    name, lib = out.split()
    assert name == "reference" and "libblas" in lib


@pytest.mark.skipif(not (OPENBLAS / "libblas.so.3").exists(), reason="Debian OpenBLAS not installed")
def test_a_preloaded_openblas_is_detected():
    env = dict(os.environ, LD_PRELOAD=f"{OPENBLAS}/libblas.so.3:{OPENBLAS}/liblapack.so.3")
    code = ("from asprof.probe.host import capture_host; h = capture_host(with_torch=False); "
            "print(h.blas['mlx'], h.env.get('LD_PRELOAD', ''))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    name, preload = out.split()
    assert name == "openblas" and "openblas" in preload


def test_blas_classification_by_path(tmp_path):
    assert _classify("/opt/intel/mkl/lib/libmkl_rt.so") == "mkl"
    assert _classify("/usr/lib/libopenblasp-r0.3.21.so") == "openblas"
    assert _classify("/usr/lib/blis/libblis.so.4") == "blis"
    d = tmp_path / "alt"
    d.mkdir()
    (d / "libblas.so.3").write_text("")
    assert _classify(str(d / "libblas.so.3")) == "reference"
    (d / "libopenblas.so.0").write_text("")
    assert _classify(str(d / "libblas.so.3")) == "openblas"  # Debian alternatives layout


def test_timing_env_keeps_only_variables_that_change_timings():
    env = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "2", "MLX_METAL_FAST_SYNCH": "1", "HOME": "/root",
           "LD_PRELOAD": "x.so", "PATH": "/bin", "VECLIB_MAXIMUM_THREADS": "4"}
    assert timing_env(env) == {"LD_PRELOAD": "x.so", "MLX_METAL_FAST_SYNCH": "1", "OMP_NUM_THREADS": "1",
                               "OPENBLAS_NUM_THREADS": "2", "VECLIB_MAXIMUM_THREADS": "4"}


def test_mlx_blas_in_this_process_names_a_library():
    name, lib = mlx_blas()
    assert name in ("reference", "openblas", "accelerate", "mkl", "blis", "flexiblas", "atlas") or lib


def test_fast_blas_preload_finds_debians_openblas_and_leaves_a_users_choice():
    assert fast_blas_preload({"LD_PRELOAD": "/opt/my/libblas.so"}) is None
    assert fast_blas_preload({"ASPROF_BLAS": "reference"}) is None
    got = fast_blas_preload({})
    if sys.platform.startswith("linux") and platform.machine() == "x86_64" and (OPENBLAS / "libblas.so.3").exists():
        assert got == f"{OPENBLAS}/libblas.so.3:{OPENBLAS}/liblapack.so.3"
    elif not sys.platform.startswith("linux"):
        assert got is None


@pytest.mark.skipif(fast_blas_preload({}) is None, reason="no fast BLAS installed to preload")
def test_launched_ranks_share_the_cores_among_their_blas_threads():
    from asprof.cluster.blas import launched_blas_env

    for cores, ranks, share in ((2, 1, "2"), (2, 2, "1"), (2, 4, "1"), (16, 3, "5"), (8, 8, "1")):
        env = launched_blas_env({}, ranks_here=ranks, cores=cores)
        assert env["LD_PRELOAD"] == fast_blas_preload({})
        assert env["OPENBLAS_NUM_THREADS"] == env["OMP_NUM_THREADS"] == share
        assert int(share) * ranks <= max(cores, ranks)  # never more BLAS threads than cores (one each at least)
    # a user's thread count stands; a user's own preload (or none wanted) means nothing is added
    assert "OPENBLAS_NUM_THREADS" not in launched_blas_env({"OMP_NUM_THREADS": "3"}, ranks_here=2, cores=2)
    assert launched_blas_env({"LD_PRELOAD": "/opt/my/libblas.so"}, ranks_here=2) == {}
    assert launched_blas_env({"ASPROF_BLAS": "reference"}, ranks_here=2) == {}


@pytest.mark.skipif(not (OPENBLAS / "libblas.so.3").exists(), reason="Debian OpenBLAS not installed")
def test_launched_ranks_run_on_the_preloaded_openblas():
    """asprof.cluster.launch preloads it: the rank's MLX calls OpenBLAS though this process's
    environment has no LD_PRELOAD."""
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    code = ("import mlx.core; from asprof.probe.host import mlx_blas; "
            "print(mlx_blas()[0])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "reference"  # the premise: without the preload, the bundled one
    saved = os.environ.pop("LD_PRELOAD", None)
    try:
        from asprof.train.config import TrainConfig
        from asprof.train.runner import run_training

        result = run_training(TrainConfig.build("adam", model="tiny", steps=2, batch=2, seq=16, eval_batches=1))
    finally:
        if saved is not None:
            os.environ["LD_PRELOAD"] = saved
    assert result.host["blas"] == ["openblas"]

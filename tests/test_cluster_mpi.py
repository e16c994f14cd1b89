"""MLX's MPI backend for real: local ranks started by mpirun (OpenMPI), through the launcher,
the probe and the trace. Skips with the reason where mpirun is missing."""

import json

import pytest

from asprof.cli import main
from asprof.cluster.launch import LaunchSpec, launch
from asprof.cluster.mpi import why_unavailable
from asprof.errors import DistributedError

pytestmark = [pytest.mark.distributed,
              pytest.mark.skipif(why_unavailable() is not None, reason=f"MPI backend: {why_unavailable()}")]
WORKER = "asprof.cluster.echo_worker"


def test_mpi_ranks_all_sum():
    results = launch(LaunchSpec(module=WORKER, nodes=3, backend="mpi"))
    assert [r["rank"] for r in results] == [0, 1, 2]
    assert all(r["size"] == 3 and r["sum"] == 6.0 for r in results)


def test_a_dying_mpi_rank_stops_the_run():
    with pytest.raises(DistributedError, match="mpirun exited with code|rank 1"):
        launch(LaunchSpec(module=WORKER, args=("--die-rank", "1", "--steps", "1000"), nodes=2, backend="mpi",
                          timeout_s=60))


def test_probe_allreduce_on_mpi_records_backend_and_topology(tmp_path, capsys):
    out = tmp_path / "mpi.json"
    rc = main(["probe", "--nodes", "2", "--backend", "mpi", "--only", "allreduce", "--level", "tiny", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    recs = json.loads(out.read_text())["probes"]["allreduce"]
    sums = [r for r in recs if r["op"] == "all_sum"]
    assert sums and all(r["params"]["backend"] == "mpi" and r["params"]["topology"] == "mpi" and
                        r["params"]["nodes"] == 2 for r in sums)


def test_long_results_survive_mpiruns_interleaving():
    # 3 ranks each send a ~300 KB result at once: mpirun splits them into tagged pieces that
    # interleave; every rank's result must come back whole
    results = launch(LaunchSpec(module=WORKER, args=("--pad", "300000"), nodes=3, backend="mpi"))
    assert [r["pad"] for r in results] == [str(r) * 300000 for r in range(3)]


def test_an_mpi_hostfile_runs_through_mpirun_with_its_envs(tmp_path):
    # two ranks on this machine named by an mlx.launch hostfile (mpi needs only ssh names); the
    # hostfile's "envs" reach every rank
    hf = tmp_path / "hosts.json"
    hf.write_text(json.dumps({"backend": "mpi", "envs": ["ASPROF_TEST_ENV=42"],
                              "hosts": [{"ssh": "127.0.0.1"}, {"ssh": "127.0.0.1"}]}))
    spec = LaunchSpec(module=WORKER, args=("--show-env", "ASPROF_TEST_ENV"), hostfile=str(hf))
    assert spec.backend == "mpi"  # the hostfile's own backend
    results = launch(spec)
    assert [(r["sum"], r["env"]) for r in results] == [(3.0, "42"), (3.0, "42")]

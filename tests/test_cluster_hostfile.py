"""MLX's hostfile format for every backend, mlx.launch's default backend, and the command that
starts a JACCL run (no RDMA here: the narrowest fake is the process start itself)."""

import json

import pytest

from asprof.cli import main
from asprof.cluster import hostfile as hfmod
from asprof.cluster import launch as launchmod
from asprof.cluster.hostfile import check_run, load_hostfile, read_hostfile, resolve_backend
from asprof.errors import AsprofError

# The 4-node mesh of MLX's docs (docs/src/usage/distributed.rst, "Getting Started with JACCL"):
# only rank 0 has an IP (the coordinator); every host lists one RDMA device per rank, null at its own.
JACCL_DOC = [
    {"ssh": "m3-ultra-1", "ips": ["123.123.123.1"], "rdma": [None, "rdma_en5", "rdma_en4", "rdma_en3"]},
    {"ssh": "m3-ultra-2", "ips": [], "rdma": ["rdma_en5", None, "rdma_en3", "rdma_en4"]},
    {"ssh": "m3-ultra-3", "ips": [], "rdma": ["rdma_en4", "rdma_en3", None, "rdma_en5"]},
    {"ssh": "m3-ultra-4", "ips": [], "rdma": ["rdma_en3", "rdma_en4", "rdma_en5", None]},
]


def _write(tmp_path, data, name="hosts.json"):
    p = tmp_path / name
    p.write_text(json.dumps(data))
    return p


def test_mlx_documented_jaccl_hostfile_parses(tmp_path):
    p = _write(tmp_path, {"backend": "jaccl", "envs": ["MLX_METAL_FAST_SYNCH=1"], "hosts": JACCL_DOC})
    hf = load_hostfile(p)
    assert hf.backend == "jaccl" and hf.envs == ("MLX_METAL_FAST_SYNCH=1",)
    assert [h.ssh for h in hf.hosts] == ["m3-ultra-1", "m3-ultra-2", "m3-ultra-3", "m3-ultra-4"]
    assert hf.hosts[1].ips == () and hf.hosts[1].rdma[0] == "rdma_en5"
    assert resolve_backend(None, p) == "jaccl"  # the hostfile's own backend is the default
    assert len(read_hostfile(p)) == 4
    # the same hosts as a plain list (no "backend"): still valid for jaccl when asked for it
    plain = _write(tmp_path, JACCL_DOC, "plain.json")
    assert resolve_backend("jaccl", plain) == "jaccl"
    # ... but not for the ring, which needs every host's IP
    with pytest.raises(AsprofError, match=r"host 1 \(m3-ultra-2\) needs \"ips\""):
        resolve_backend("ring", plain)


@pytest.mark.parametrize("hosts, backend, message", [
    ([dict(h) for h in JACCL_DOC[:3]], "jaccl", r"host 0 \(m3-ultra-1\) lists 4 \"rdma\" devices; jaccl needs one per rank \(3\)"),
    ([{**JACCL_DOC[0], "ips": []}] + JACCL_DOC[1:], "jaccl", r"host 0 .* rank 0's address is the JACCL coordinator"),
    ([JACCL_DOC[0], {**JACCL_DOC[1], "rdma": ["rdma_en5", "rdma_en2", "rdma_en3", "rdma_en4"]}] + JACCL_DOC[2:],
     "jaccl", r"own \"rdma\" entry \(index 1\) must be null"),
    ([JACCL_DOC[0], {**JACCL_DOC[1], "rdma": ["rdma_en5", None, None, "rdma_en4"]}] + JACCL_DOC[2:],
     "jaccl", r"host 1 \(m3-ultra-2\) has no RDMA device to host 2 .* full mesh"),
    ([{"ssh": "a", "ips": ["10.0.0.1"]}, {"ssh": "b"}], "nccl", None),  # nccl only needs rank 0's IP
    ([{"ssh": "a"}, {"ssh": "b"}], "mpi", None),  # mpi only needs ssh names
    ([{"ssh": "a", "rdma": "en2"}], "jaccl", r"\"rdma\" must list one RDMA device"),
])
def test_each_backend_needs_what_mlx_launch_checks(tmp_path, hosts, backend, message):
    p = _write(tmp_path, hosts)
    if message is None:
        assert resolve_backend(backend, p) == backend
    else:
        with pytest.raises(AsprofError, match=message):
            resolve_backend(backend, p)


def test_jaccl_ring_needs_only_the_neighbours(tmp_path):
    # 4 Macs in a ring: 1-3 and 2-4 are not cabled; jaccl-ring accepts it, jaccl's mesh does not
    ring = [{**h, "rdma": [d if abs(i - j) % 2 == 1 else None for j, d in enumerate(h["rdma"])]}
            for i, h in enumerate(JACCL_DOC)]
    p = _write(tmp_path, ring)
    assert resolve_backend("jaccl-ring", p) == "jaccl-ring"
    with pytest.raises(AsprofError, match="full mesh"):
        resolve_backend("jaccl", p)


def test_default_backend_is_mlx_launchs(tmp_path, monkeypatch):
    p = _write(tmp_path, [{"ssh": "a", "ips": ["10.0.0.1"]}, {"ssh": "b", "ips": ["10.0.0.2"]}])
    assert resolve_backend(None, p) == "ring"
    assert resolve_backend(None) == "ring"  # no CUDA on this machine's MLX
    monkeypatch.setattr(hfmod, "cuda_available", lambda: True)
    assert resolve_backend(None, p) == "nccl"
    q = _write(tmp_path, {"backend": "mpi", "hosts": [{"ssh": "a"}]}, "mpi.json")
    assert resolve_backend(None, q) == "mpi"  # the hostfile's own backend wins over CUDA


def test_local_ranks_take_ring_or_mpi_only():
    assert check_run("mpi", None) == "mpi"
    with pytest.raises(AsprofError, match="the jaccl backend runs on the hosts of a hostfile"):
        check_run("jaccl", None)


@pytest.mark.parametrize("data, fragment", [
    ({"backend": "rdma", "hosts": [{"ssh": "a", "ips": ["1.2.3.4"]}]}, "\"backend\" must be one of"),
    ({"envs": "X=1", "hosts": [{"ssh": "a", "ips": ["1.2.3.4"]}]}, "\"envs\" must be a list"),
    ({"hosts": []}, "hostfile must list hosts"),
    ({"backend": "jaccl", "hosts": JACCL_DOC[:2]}, "lists 4 \"rdma\" devices"),
])
def test_a_malformed_hostfile_is_one_line_from_the_cli(tmp_path, capsys, data, fragment):
    p = _write(tmp_path, data)
    rc = main(["probe", "--only", "allreduce", "--hostfile", str(p), "--out", str(tmp_path / "t.json")])
    err = capsys.readouterr().err
    assert rc != 0 and err.count("\n") == 1 and err.startswith("asprof probe: error: ") and fragment in err


def test_a_jaccl_hostfile_is_launched_by_mlx_launch_with_its_backend(tmp_path, monkeypatch):
    p = _write(tmp_path, {"backend": "jaccl", "hosts": JACCL_DOC})
    started = []
    monkeypatch.setattr(launchmod, "_popen", lambda rank, cmd, env, cpus=None: started.append((rank, cmd, env)))
    monkeypatch.setattr(launchmod, "require_hosts", lambda *a, **k: None)  # the Macs' ssh check: no Macs here
    spec = launchmod.LaunchSpec(module="asprof.cluster.echo_worker", hostfile=str(p))
    assert spec.backend == "jaccl" and spec.world_size == 4
    launchmod._start(spec, spec.world_size, str(tmp_path))
    [(rank, cmd, env)] = started
    assert rank is None and cmd[cmd.index("--backend") + 1] == "jaccl"
    assert "ASPROF_BACKEND=jaccl" in cmd and env["ASPROF_BACKEND"] == "jaccl"
    assert cmd[cmd.index("--hostfile") + 1] == str(p)


def test_a_jaccl_rank_joins_mlx_with_its_backend(tmp_path):
    # A rank started by mlx.launch for jaccl-ring: no MLX_HOSTFILE (JACCL reads MLX_IBV_DEVICES),
    # MLX_RANK set. The narrowest fake: mx.distributed.init itself, which needs RDMA.
    import os
    import subprocess
    import sys

    script = (
        "import json, mlx.core as mx\n"
        "calls = []\n"
        "class G:\n"
        "    def rank(self): return 2\n"
        "    def size(self): return 4\n"
        "mx.distributed.init = lambda **kw: calls.append(kw) or G()\n"
        "from asprof.cluster.worker import init_group\n"
        "init_group()\n"
        "print('CALLS', json.dumps(calls))\n"
    )
    env = {**os.environ, "ASPROF_LAUNCHED": "1", "ASPROF_BACKEND": "jaccl-ring", "MLX_RANK": "2",
           "MLX_JACCL_RING": "1"}
    env.pop("MLX_HOSTFILE", None)
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60).stdout
    lines = out.splitlines()
    assert json.loads(lines[-1].split(" ", 1)[1]) == [{"strict": True, "backend": "jaccl"}]
    msgs = [json.loads(x.split(" ", 1)[1]) for x in lines if x.startswith("@@asprof ")]
    assert [(m["type"], m["rank"]) for m in msgs] == [("hello", 2), ("ready", 2)] and msgs[1]["size"] == 4

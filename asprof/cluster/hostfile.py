"""MLX's hostfile format and distributed backends, read and checked the way ``mlx.launch`` does.

A hostfile is JSON: a list of hosts, or an object ``{"backend": ..., "envs": [...], "hosts": [...]}``
(MLX ``python/mlx/_distributed_utils/common.py``, ``Hostfile.from_file``). Each host has an ``ssh``
name, ``ips`` (the addresses ring peers connect to) and, for JACCL, ``rdma``: one RDMA device per
rank, ``null`` at its own index. What a backend needs is what ``mlx.launch`` checks before it starts
anything (``launch.py``: ``launch_ring``, ``launch_jaccl``, ``launch_nccl``, ``launch_mpi``):

- ring: every host lists ``ips``;
- jaccl / jaccl-ring: rank 0 lists an IP (the coordinator), every host an ``rdma`` list with one
  entry per rank, ``null`` at its own index and a device for every peer (jaccl: all of them, a full
  mesh; jaccl-ring: the two ring neighbours);
- nccl: rank 0 lists an IP (the NCCL master);
- mpi: only ``ssh`` names (mpirun's own hostfile is built from them).

The default backend is ``mlx.launch``'s: the hostfile's own ``"backend"``, else ``nccl`` where
CUDA is present, else ``ring``. Every malformed hostfile is one line naming the file and the host.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from asprof.errors import AsprofError

BACKENDS = ("ring", "mpi", "jaccl", "jaccl-ring", "nccl")

# How each backend joins the ranks (recorded in traces; the simulator models each one).
TOPOLOGY = {
    "ring": "ring",  # TCP ring, reduce on the CPU (MLX ring backend)
    "jaccl": "mesh",  # RDMA full mesh: every pair of Macs cabled directly
    "jaccl-ring": "ring",  # RDMA ring over the neighbours' cables
    "mpi": "mpi",  # whatever algorithm the MPI library picks
    "nccl": "nccl",
}


@dataclass(frozen=True)
class Host:
    ssh: str
    ips: tuple[str, ...] = ()
    rdma: tuple = ()  # per rank: a device name, a list of names (several cables), or None

    def as_dict(self) -> dict:
        return {"ssh": self.ssh, "ips": list(self.ips), "rdma": list(self.rdma)}


@dataclass(frozen=True)
class Hostfile:
    path: str
    hosts: tuple[Host, ...]
    backend: str | None = None  # the hostfile's own "backend", if it names one
    envs: tuple[str, ...] = ()  # "NAME=VALUE" for every rank


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise AsprofError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    return backend


def load_hostfile(path: str | os.PathLike) -> Hostfile:
    """Parse an ``mlx.launch`` hostfile (structure only; :func:`check_hostfile` checks a backend's needs)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise AsprofError(f"{p}: no such hostfile") from None
    except OSError as e:
        raise AsprofError(f"{p}: cannot read hostfile ({e.strerror or e})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        where = f" (line {e.lineno}: {e.msg})" if isinstance(e, json.JSONDecodeError) else ""
        raise AsprofError(f"{p}: hostfile is not valid JSON{where}") from None
    backend, envs, hosts = None, [], data
    if isinstance(data, dict):
        hosts, backend, envs = data.get("hosts"), data.get("backend") or None, data.get("envs", [])
        if backend is not None and (not isinstance(backend, str) or backend not in BACKENDS):
            raise AsprofError(f"{p}: \"backend\" must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if not isinstance(envs, list) or not all(isinstance(e, str) and "=" in e for e in envs):
            raise AsprofError(f"{p}: \"envs\" must be a list of \"NAME=VALUE\" strings")
    if not isinstance(hosts, list) or not hosts:
        raise AsprofError(f"{p}: hostfile must list hosts (mlx.launch format: [{{\"ssh\": ..., \"ips\": [...]}}, ...] "
                          "or {\"backend\": ..., \"hosts\": [...]})")
    out = []
    for i, h in enumerate(hosts):
        if not isinstance(h, dict) or not isinstance(h.get("ssh"), str) or not h["ssh"]:
            raise AsprofError(f"{p}: host {i} needs an \"ssh\" name (mlx.launch hostfile format)")
        ips, rdma = h.get("ips") or [], h.get("rdma") or []
        if not isinstance(ips, list) or not all(isinstance(x, str) for x in ips):
            raise AsprofError(f"{p}: host {i} ({h['ssh']}): \"ips\" must be a list of addresses")
        if not isinstance(rdma, list) or not all(_device(x) for x in rdma):
            raise AsprofError(f"{p}: host {i} ({h['ssh']}): \"rdma\" must list one RDMA device (or null) per rank")
        out.append(Host(h["ssh"], tuple(ips), tuple(tuple(x) if isinstance(x, list) else x for x in rdma)))
    return Hostfile(str(p), tuple(out), backend, tuple(envs))


def _device(x) -> bool:
    return x is None or (isinstance(x, str) and bool(x)) or (
        isinstance(x, list) and bool(x) and all(isinstance(y, str) and y for y in x))


def check_hostfile(hf: Hostfile, backend: str) -> Hostfile:
    """``hf`` if it has what ``backend`` needs (as ``mlx.launch`` checks it), else one line why not."""
    check_backend(backend)
    p, hosts, n = hf.path, hf.hosts, len(hf.hosts)
    if backend == "ring":
        for i, h in enumerate(hosts):
            if not h.ips:
                raise AsprofError(f"{p}: host {i} ({h.ssh}) needs \"ips\": the ring backend connects to IP addresses")
    if backend in ("jaccl", "jaccl-ring", "nccl") and not hosts[0].ips:
        role = "the JACCL coordinator" if backend.startswith("jaccl") else "the NCCL master"
        raise AsprofError(f"{p}: host 0 ({hosts[0].ssh}) needs \"ips\": rank 0's address is {role}")
    if backend.startswith("jaccl"):
        for i, h in enumerate(hosts):
            if len(h.rdma) != n:
                raise AsprofError(f"{p}: host {i} ({h.ssh}) lists {len(h.rdma)} \"rdma\" devices; {backend} needs one "
                                  f"per rank ({n}), null at its own index")
            if h.rdma[i] is not None:
                raise AsprofError(f"{p}: host {i} ({h.ssh}): its own \"rdma\" entry (index {i}) must be null")
            peers = ((i - 1) % n, (i + 1) % n) if backend == "jaccl-ring" else range(n)
            missing = [j for j in peers if j != i and h.rdma[j] is None]
            if missing:
                what = "a full mesh: a cable to every other Mac" if backend == "jaccl" else "a cable to both ring neighbours"
                raise AsprofError(f"{p}: host {i} ({h.ssh}) has no RDMA device to host {missing[0]} "
                                  f"({hosts[missing[0]].ssh}); {backend} needs {what}")
    return hf


def read_hostfile(path: str | os.PathLike, backend: str | None = None) -> list[dict]:
    """The hosts of an ``mlx.launch`` hostfile, checked for ``backend`` (default: as mlx.launch picks it)."""
    hf = load_hostfile(path)
    check_hostfile(hf, backend or default_backend(hf))
    return [h.as_dict() for h in hf.hosts]


def default_backend(hostfile: Hostfile | None = None) -> str:
    """``mlx.launch``'s choice: the hostfile's own backend, else nccl with CUDA, else ring."""
    if hostfile is not None and hostfile.backend:
        return hostfile.backend
    return "nccl" if cuda_available() else "ring"


def resolve_backend(backend: str | None, hostfile: str | os.PathLike | None = None) -> str:
    """The backend a run uses: the one given, else :func:`default_backend` of the hostfile; the
    hostfile is checked for it (one line if it lacks what the backend needs)."""
    hf = load_hostfile(hostfile) if hostfile is not None else None
    chosen = check_backend(backend) if backend else default_backend(hf)
    if hf is not None:
        check_hostfile(hf, chosen)
    return chosen


LOCAL_BACKENDS = ("ring", "mpi")  # what ranks on this one machine (--nodes) can join


def check_run(backend: str | None, hostfile: str | os.PathLike | None) -> str:
    """The backend of a run placed by ``--nodes`` or ``--hostfile``: :func:`resolve_backend`, and
    without a hostfile one of :data:`LOCAL_BACKENDS` (one line otherwise)."""
    chosen = resolve_backend(backend, hostfile)
    if hostfile is None and chosen not in LOCAL_BACKENDS:
        raise AsprofError(f"the {chosen} backend runs on the hosts of a hostfile (--hostfile); "
                          f"local ranks (--nodes) use {' or '.join(LOCAL_BACKENDS)}")
    return chosen


def cuda_available() -> bool:
    try:
        import mlx.core as mx
    except ImportError:
        return False
    cuda = getattr(mx, "cuda", None)
    return bool(cuda is not None and cuda.is_available())

"""Local ranks on MLX's MPI backend: the ``mpirun`` command that starts them.

MLX's MPI backend dlopens the MPI library at ``mx.distributed.init(backend="mpi")`` and takes its
rank from MPI, so the ranks must be started by ``mpirun`` (``mlx.launch --backend mpi`` does the
same through a hostfile). On Debian the library is OpenMPI (``apt-get install openmpi-bin
libopenmpi-dev``). mpirun refuses to run as root unless told to; the ranks float over the cores
(``--bind-to none``) and may outnumber them (``--oversubscribe``), as the ring's local ranks do.
"""

from __future__ import annotations

import ctypes.util
import os
import re
import shutil

from asprof.errors import AsprofError

INSTALL_HINT = "install OpenMPI (Debian: apt-get install openmpi-bin libopenmpi-dev; macOS: brew install open-mpi)"


def why_unavailable() -> str | None:
    """None when ``mpirun`` can start MPI ranks here, else the reason (for skips and errors)."""
    if shutil.which("mpirun") is None:
        return f"no mpirun on PATH: {INSTALL_HINT}"
    if not mpi_env():
        return f"no MPI library (libmpi) for MLX to load: {INSTALL_HINT}"
    return None


def mpi_env() -> dict[str, str]:
    """``MLX_MPI_LIBNAME``: the MPI library MLX dlopens (it asks for plain ``libmpi.so``, which
    only the -dev package links; the versioned library is what every install has, as
    ``mlx.launch`` finds it through ``ompi_info``). Empty where none is found."""
    name = os.environ.get("MLX_MPI_LIBNAME") or ctypes.util.find_library("mpi")
    return {"MLX_MPI_LIBNAME": name} if name else {}


def mpirun_command(nodes: int, env_names: list[str], hostfile: str | None = None) -> list[str]:
    """``mpirun`` starting ``nodes`` ranks, forwarding the variables ``env_names``: on this
    machine, or on the hosts of an mpirun ``hostfile`` (:func:`mpi_hostfile`)."""
    reason = why_unavailable()
    if reason:
        raise AsprofError(f"the mpi backend needs mpirun: {reason}")
    cmd = [shutil.which("mpirun"), "-np", str(nodes), "--oversubscribe", "--bind-to", "none", "--tag-output"]
    if hostfile is not None:
        cmd += ["--hostfile", hostfile]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    for name in env_names:
        cmd += ["-x", name]
    return cmd + ["--"]


def mpi_hostfile(ssh_names: list[str]) -> str:
    """mpirun's hostfile for an mlx.launch hostfile's hosts: one line per host, a slot per rank
    (as mlx.launch writes it). asprof runs mpirun itself rather than ``mlx.launch --backend mpi``,
    whose ``--output :raw`` only OpenMPI 5 knows (Debian 12 ships 4.1)."""
    counts: dict[str, int] = {}
    for name in ssh_names:
        counts[name] = counts.get(name, 0) + 1
    return "".join(f"{h} slots={n}\n" for h, n in counts.items())


def mpirun_for(nodes: int, hostfile: str | None, tmpdir: str, env: dict, env_names: list[str]) -> tuple[list, dict]:
    """(mpirun command, environment) for ``nodes`` ranks here, or on the hosts of an mlx.launch
    ``hostfile`` (whose own ``"envs"`` are set, as mlx.launch sets them)."""
    from pathlib import Path

    from asprof.cluster.hostfile import load_hostfile

    env, names, hosts = {**env, **mpi_env()}, [*env_names, *mpi_env()], None
    if hostfile is not None:
        hf = load_hostfile(hostfile)
        extra = dict(e.split("=", 1) for e in hf.envs)
        env, names = {**env, **extra}, names + list(extra)
        hosts = str(Path(tmpdir) / "mpi-hosts")
        Path(hosts).write_text(mpi_hostfile([h.ssh for h in hf.hosts]))
    return mpirun_command(nodes, names, hosts), env


_TAG = re.compile(r"\[\d+,(\d+)\]<(?:stdout|stderr)>:")
_PARTIAL_TAG = re.compile(r"\[[\d,]*(\](<[a-z]*>?)?)?$")  # a tag cut off by the end of a read


class TaggedOutput:
    """Each rank's lines out of one of mpirun's streams under ``--tag-output``.

    mpirun forwards each rank's output in pieces as it reads them and starts every piece, and
    every line within one, with ``[job,rank]<stdout>:`` — but it does not end a piece that stops
    mid-line, so a long line (a result of tens of KiB) arrives cut into pieces, each tagged,
    with other ranks' pieces between them on the same physical line (seen with OpenMPI 4.1).
    Reading the stream as tagged pieces, not as lines, gives every rank its own lines back.
    Text after a line break that carries no tag is mpirun's own (rank None).
    """

    def __init__(self):
        import codecs

        self.decode = codecs.getincrementaldecoder("utf-8")("replace").decode
        self.raw = ""
        self.cur: int | None = None  # the rank whose piece is being read
        self.bufs: dict[int | None, str] = {}

    def feed(self, data: bytes, final: bool = False) -> list[tuple[int | None, str]]:
        """(rank, line) of every line that ``data`` completes (all that is left when ``final``)."""
        self.raw += self.decode(data, final)
        out: list[tuple[int | None, str]] = []
        pos = 0
        while True:
            m = _TAG.search(self.raw, pos)
            end = m.start() if m else len(self.raw)
            if m is None and not final:
                k = self.raw.rfind("[", max(pos, len(self.raw) - 40))
                if k != -1 and _PARTIAL_TAG.match(self.raw, k):
                    end = k
            self._text(self.raw[pos:end], out)
            if m is None:
                self.raw = self.raw[end:]
                break
            self.cur, pos = int(m.group(1)), m.end()
        if final:
            out += [(r, t) for r, t in self.bufs.items() if t]
            self.bufs.clear()
        return out

    def _text(self, text: str, out: list) -> None:
        *lines, rest = text.split("\n")
        for line in lines:
            out.append((self.cur, (self.bufs.pop(self.cur, "") + line).rstrip("\r")))
            self.cur = None  # until the next tag: mpirun's own text
        if rest:
            self.bufs[self.cur] = self.bufs.get(self.cur, "") + rest


def mpi_rank() -> int | None:
    """This process's rank as mpirun set it (OpenMPI, MPICH/PMI), before MPI is initialised."""
    for name in ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return None

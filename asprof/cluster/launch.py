"""Launch N ranks of an asprof worker on MLX's distributed backends, with a watchdog.

Three ways to place ranks, all running the same worker module:

- ``nodes=N``: N local processes joined by MLX's ring backend over loopback. We start them
  ourselves exactly as ``mlx.launch`` does (``MLX_HOSTFILE`` listing ``ip:port`` per rank,
  ``MLX_RANK``), which lets the watchdog see each rank separately. Where these ranks outnumber
  the cores, each is held to one core (:func:`rank_cpus`).
- ``hosts=[RankHost(ip, prefix), ...]``: the same, with an address and a command prefix per
  rank (``ip netns exec NS`` for the namespace ring of :mod:`asprof.cluster.netns`).
- ``hostfile=PATH``: an ``mlx.launch`` hostfile (on Macs: the Thunderbolt ring). Every host is
  checked over ssh first (:mod:`asprof.cluster.remote`). The ring backend's ranks are then
  started as ``mlx.launch`` starts them, one ``ssh -tt`` each, but by us, so each rank's output
  has its own pipe; other backends run ``mlx.launch --hostfile PATH`` itself, whose stdout
  carries every rank's messages (docs/cluster.md).
- ``nodes=N`` with ``backend="mpi"``: ``mpirun`` starts the N local ranks (asprof.cluster.mpi);
  their messages arrive on its stdout in tagged pieces, which give each rank its lines back.

The backend is ``mlx.launch``'s default unless given (asprof.cluster.hostfile.check_run).

The watchdog (DESIGN §7) ends the whole run — every rank killed, one message naming the rank —
when a rank exits with an error, or when :class:`asprof.cluster.watchdog.Watchdog` says so: a
rank never connects within ``connect_s``, goes silent (stopped, frozen, cut off) for longer than
max(15 s, 5 × the run's median step), stops making progress (a deadlocked ring), or the run
exceeds ``timeout_s``. Ranks run in their own process groups and also die with the launcher.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from asprof.cluster.blas import launched_blas_env
from asprof.cluster.hostfile import check_run, read_hostfile  # noqa: F401  (read_hostfile: re-exported)
from asprof.cluster.placement import free_ports, rank_cpus  # noqa: F401  (re-exported)
from asprof.cluster.remote import (LOCAL, RING_PORT, SSH_CONNECT_S, node_exit, node_exit_message, remote_python,
                                   require_hosts, ring_hosts, ssh_rank_command)
from asprof.cluster.watchdog import Watchdog
from asprof.cluster.worker import ENV_LAUNCHED, ENV_RING, TAG
from asprof.errors import AsprofError, DistributedError


@dataclass(frozen=True)
class RankHost:
    """Where one rank runs: the address its ring peers connect to, and a command prefix."""

    ip: str
    prefix: tuple[str, ...] = ()


@dataclass(frozen=True)
class LaunchSpec:
    module: str  # worker module, run as `python -m module args...`
    args: tuple[str, ...] = ()
    nodes: int | None = None
    hostfile: str | None = None
    hosts: tuple[RankHost, ...] | None = None
    env: dict[str, str] = field(default_factory=dict)
    backend: str | None = None  # None: as mlx.launch picks it (hostfile.default_backend)
    timeout_s: float = 3600.0  # the whole run
    connect_s: float = 25.0  # every rank must join the group within this (+ kill grace < 30 s)
    stall_s: float = 60.0  # longest stretch without a heartbeat from a rank that is alive (watchdog.py)
    kill_grace_s: float = 3.0  # SIGTERM, then SIGKILL after this
    python: str = sys.executable
    base_port: int | None = None

    def __post_init__(self):
        chosen = sum(x is not None for x in (self.nodes, self.hostfile, self.hosts))
        if chosen != 1:
            raise AsprofError("give exactly one of --nodes or --hostfile")
        if self.nodes is not None and (not isinstance(self.nodes, int) or self.nodes < 1):
            raise AsprofError(f"--nodes must be a positive integer, got {self.nodes!r}")
        # the backend a run uses, and a hostfile checked for it: fail early with one line
        object.__setattr__(self, "backend", check_run(self.backend, self.hostfile))
        if self.hosts is not None and self.backend != "ring":
            raise AsprofError(f"namespace hosts are joined by the ring backend, not {self.backend}")
        for name in ("timeout_s", "connect_s", "stall_s"):
            if getattr(self, name) <= 0:
                raise AsprofError(f"{name} must be positive")

    @property
    def world_size(self) -> int:
        if self.nodes is not None:
            return self.nodes
        if self.hosts is not None:
            return len(self.hosts)
        return len(read_hostfile(self.hostfile, self.backend))


@dataclass
class _Rank:
    rank: int | None  # None for the single mlx.launch process that multiplexes all ranks
    proc: subprocess.Popen
    buf: dict = field(default_factory=lambda: {"out": b"", "err": b""})
    tail: list = field(default_factory=list)  # last stderr lines, for error messages
    host: str | None = None  # the ssh host it runs on (stdout and stderr arrive together)
    demux: dict | None = None  # mpirun: stream -> asprof.cluster.mpi.TaggedOutput (each rank's lines)


class _Watch:
    """Per-rank state seen through the protocol lines."""

    def __init__(self, size: int, start: float, spec: LaunchSpec):
        self.size = size
        self.dog = Watchdog(size, start, spec.timeout_s, spec.connect_s, spec.stall_s)
        self.hello: set[int] = set()
        self.ready: set[int] = set()
        self.results: dict[int, dict] = {}
        self.tails: dict[int, list[str]] = {r: [] for r in range(size)}
        self.remote_exit: tuple[int, int] | None = None  # (rank, code): mlx.launch saw a rank fail


def launch(spec: LaunchSpec, on_event: Callable[[dict], None] | None = None,
           echo: Callable[[str], None] | None = None) -> list[dict]:
    """Run the worker on every rank; return each rank's emitted result, ordered by rank.

    ``on_event`` receives every protocol message (ready / heartbeat / result) as it arrives, for
    progress display; ``echo`` receives the ranks' other output lines (default: our stderr,
    prefixed with the rank).
    """
    echo = echo or (lambda line: print(line, file=sys.stderr, flush=True))
    size = spec.world_size
    tmpdir = tempfile.mkdtemp(prefix="asprof-launch-")
    procs = _start(spec, size, tmpdir)
    try:
        return _supervise(spec, procs, size, on_event, echo)
    finally:
        _kill_all(procs, spec.kill_grace_s)
        for f in Path(tmpdir).iterdir():
            f.unlink()
        os.rmdir(tmpdir)


def _start(spec: LaunchSpec, size: int, tmpdir: str) -> list[_Rank]:
    base_env = {**os.environ, **spec.env, ENV_LAUNCHED: "1", "ASPROF_BACKEND": spec.backend,
                "PYTHONUNBUFFERED": "1"}
    # MLX's Linux wheel calls the reference BLAS otherwise (~15x slower matmul); ranks on this
    # machine share its cores (a hostfile's ranks each have a host of their own)
    base_env.update(launched_blas_env(base_env, ranks_here=1 if spec.hostfile is not None else size))
    worker = [spec.python, "-m", spec.module, *spec.args]
    if spec.backend == "mpi":  # mpirun starts the ranks (here, or on the hostfile's hosts)
        from asprof.cluster.mpi import TaggedOutput, mpirun_for

        cmd, env = mpirun_for(size, spec.hostfile, tmpdir, base_env,
                              [ENV_LAUNCHED, "ASPROF_BACKEND", "PYTHONUNBUFFERED", *spec.env])
        proc = _popen(None, [*cmd, *worker], env)
        proc.demux = {"out": TaggedOutput(), "err": TaggedOutput()}  # every rank's output, tagged
        return [proc]
    if spec.hostfile is not None:
        # Every host is checked first, so a host we cannot use is one line naming it. Only the
        # variables named here cross ssh; the interpreter is asprof.cluster.remote's choice.
        hosts, python = read_hostfile(spec.hostfile), remote_python(spec.python)
        require_hosts([h["ssh"] for h in hosts], python, spec.module, min(SSH_CONNECT_S, spec.connect_s))
        if spec.backend == "ring":
            return _start_ssh(spec, hosts, python, base_env)
        cmd = [*_mlx_launch(spec.python), "--hostfile", str(spec.hostfile), "--backend", spec.backend, "--env", f"{ENV_LAUNCHED}=1", "--env", "PYTHONUNBUFFERED=1"]
        for k, v in {"ASPROF_BACKEND": spec.backend, **spec.env}.items():
            cmd += ["--env", f"{k}={v}"]
        cmd += ["--python", python, "--", "-m", spec.module, *spec.args]
        return [_popen(None, cmd, base_env)]

    hosts = spec.hosts or tuple(RankHost("127.0.0.1") for _ in range(size))
    if spec.base_port is not None:
        ports = [spec.base_port + i for i in range(size)]
    elif spec.hosts is None:
        ports = free_ports(size)
    else:
        ports = [45000 + i for i in range(size)]  # each namespace has its own port space
    ring = [[f"{h.ip}:{p}"] for h, p in zip(hosts, ports)]
    hostfile = Path(tmpdir) / "ring.json"
    hostfile.write_text(json.dumps(ring))
    out = []
    for r, (h, cpus) in enumerate(zip(hosts, rank_cpus(size))):
        env = {**base_env, "MLX_RANK": str(r), "MLX_WORLD_SIZE": str(size)}
        if size > 1:
            env["MLX_HOSTFILE"] = str(hostfile)
        out.append(_popen(r, [*h.prefix, *worker], env, cpus))
    return out


def _start_ssh(spec: LaunchSpec, hosts: list[dict], python: str, base_env: dict) -> list[_Rank]:
    """One ssh per rank, as mlx.launch starts the ring backend, but each rank's output on a pipe
    of its own: mlx.launch copies its ranks' outputs onto one stdout in pieces, and a long
    result line of one rank comes out cut by another rank's lines (seen at 3 hosts)."""
    env = {ENV_LAUNCHED: "1", "PYTHONUNBUFFERED": "1", "ASPROF_BACKEND": spec.backend, **spec.env,
           "MLX_WORLD_SIZE": str(len(hosts))}
    if len(hosts) > 1:
        n = sum(len(h["ips"]) for h in hosts)
        if spec.base_port is not None:
            ports = list(range(spec.base_port, spec.base_port + n))
        elif all(h["ssh"] == LOCAL for h in hosts):
            ports = free_ports(n)  # all on this machine: beside any other run here
        else:
            ports = list(range(RING_PORT, RING_PORT + n))
        env[ENV_RING] = json.dumps(ring_hosts(hosts, ports))
    out = []
    for r, h in enumerate(hosts):
        cmd = ssh_rank_command(h["ssh"], python, ["-m", spec.module, *spec.args], {**env, "MLX_RANK": str(r)},
                               os.getcwd(), min(SSH_CONNECT_S, spec.connect_s))
        out.append(_popen(r, cmd, base_env))
        out[-1].host = h["ssh"]
    return out


def _mlx_launch(python: str) -> list[str]:
    """The `mlx.launch` command of the environment `python` belongs to."""
    script = Path(python).parent / "mlx.launch"
    if script.exists():
        return [str(script)]
    return [python, "-c", "import sys; from mlx._distributed_utils.launch import main; sys.exit(main())"]


def _popen(rank, cmd, env, cpus: set[int] | None = None) -> _Rank:
    pin = None if cpus is None else (lambda: os.sched_setaffinity(0, cpus))  # before exec: every thread inherits it
    try:
        p = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, start_new_session=True, preexec_fn=pin)
    except OSError as e:
        raise DistributedError(f"cannot start rank {rank if rank is not None else ''}: {e}") from None
    return _Rank(rank, p)


def _supervise(spec, procs: list[_Rank], size: int, on_event, echo) -> list[dict]:
    start = time.monotonic()
    watch = _Watch(size, start, spec)
    sel = selectors.DefaultSelector()
    for pr in procs:
        os.set_blocking(pr.proc.stdout.fileno(), False)
        os.set_blocking(pr.proc.stderr.fileno(), False)
        sel.register(pr.proc.stdout, selectors.EVENT_READ, (pr, "out"))
        sel.register(pr.proc.stderr, selectors.EVENT_READ, (pr, "err"))
    open_streams = 2 * len(procs)
    held = _Held(echo)
    try:
        while True:
            for key, _ in sel.select(timeout=0.2):
                pr, stream = key.data
                chunk = key.fileobj.read()
                if not chunk:
                    sel.unregister(key.fileobj)
                    open_streams -= 1
                    _flush(pr, stream, watch, on_event, held.hold(pr), final=True)
                    continue
                pr.buf[stream] += chunk
                _flush(pr, stream, watch, on_event, held.hold(pr))
            now = time.monotonic()
            held.release(now, [p for p in procs if p.proc.poll() not in (None, 0)])
            _check_exits(procs, watch, size)
            if watch.remote_exit is not None:  # stop now: mlx.launch's own teardown fails over ssh
                r, code = watch.remote_exit
                raise DistributedError(node_exit_message(read_hostfile(spec.hostfile)[r]["ssh"], r, code, size))
            # one look at the exits for both tests: a rank can exit between two looks, and then
            # "not all results yet" and "all exited" were both true though every result was in
            exited = all(p.proc.poll() is not None for p in procs)
            if len(watch.results) == size and exited:
                break
            if open_streams == 0 and exited:
                missing = sorted(set(range(size)) - set(watch.results))
                raise DistributedError(f"rank {missing[0]} exited without a result{_tail(watch, missing[0])}")
            watch.dog.check(now, watch.hello, watch.ready, set(watch.results))
    finally:
        held.release_all()
    return [watch.results[r] for r in range(size)]


class _Held:
    """The ranks' output lines, echoed half a second late. A rank that dies makes its peers
    complain (MLX's "socket closed by the peer", "too many send/recv errors") a moment before
    its exit can be seen; once a rank has failed only the failed ranks' own lines are shown, so
    the failure reads as one line and not as the survivors' noise."""

    DELAY_S = 0.5

    def __init__(self, echo):
        self.echo = echo
        self.lines: list = []  # (time read, rank, text)
        self.failed: list | None = None  # None: every rank's lines may be shown

    def hold(self, pr: _Rank):
        return lambda text: self.lines.append((time.monotonic(), pr, text))

    def release(self, now: float, failed: list) -> None:
        """Echo the lines held long enough; once a rank failed, all held lines of failed ranks."""
        if failed:
            self.failed = failed
        due = [x for x in self.lines if self.failed is not None or x[0] <= now - self.DELAY_S]
        self.lines = self.lines[len(due):] if self.failed is None else []
        for _, pr, text in due:
            if self.failed is None or pr in self.failed:
                self.echo(text)

    def release_all(self) -> None:
        """At the end of the run: whatever is still held (the failed ranks' only, after a failure)."""
        self.release(float("inf"), [])


def _flush(pr: _Rank, stream, watch: _Watch, on_event, echo, final=False):
    if pr.demux is not None:  # mpirun: every rank's output in tagged pieces (asprof.cluster.mpi)
        items = pr.demux[stream].feed(pr.buf[stream], final)
        pr.buf[stream] = b""
    else:
        *lines, rest = pr.buf[stream].split(b"\n")
        if final and rest:
            lines, rest = lines + [rest], b""
        pr.buf[stream] = rest
        items = [(pr.rank, raw.decode("utf-8", "replace").rstrip("\r")) for raw in lines]
    for rank, line in items:
        if stream == "out" and TAG in line:
            try:
                msg = json.loads(line[line.index(TAG) + len(TAG):])
            except json.JSONDecodeError:
                echo(line)
                continue
            r = msg.get("rank")
            if not isinstance(r, int) or not 0 <= r < watch.size:
                continue
            watch.dog.heard(r, msg.get("type"), time.monotonic(), msg.get("step"))
            watch.hello.add(r)
            if msg.get("type") == "ready":
                watch.ready.add(r)
            elif msg.get("type") == "result":
                watch.results[r] = msg.get("result")
            if on_event is not None and msg.get("type") != "alive":
                on_event(msg)
        else:
            who = f"rank {rank}" if rank is not None else _launcher(pr)
            if rank is None and watch.remote_exit is None:
                watch.remote_exit = node_exit(line)
            if rank is not None and (stream == "err" or pr.host is not None):
                watch.tails[rank] = (watch.tails[rank] + [line])[-5:]
            if line.strip():
                echo(f"[{who}] {line}")


def _launcher(pr: _Rank) -> str:
    """The one process that started every rank: mpirun, or mlx.launch for a hostfile."""
    return "mpirun" if Path(str(pr.proc.args[0])).name == "mpirun" else "mlx.launch"


def _tail(watch: _Watch, rank: int) -> str:
    lines = [x.strip() for x in watch.tails.get(rank, []) if x.strip()]
    return f": {lines[-1]}" if lines else ""


def _check_exits(procs: list[_Rank], watch: _Watch, size: int) -> None:
    # A rank killed (by a signal, or its ssh lost: 255) comes first: ranks that exited with an
    # error at the same moment are most likely its peers, whose connection to it broke.
    failed = [p for p in procs if p.proc.poll() not in (None, 0)]
    for pr in sorted(failed, key=lambda p: not (p.proc.returncode < 0 or (p.host and p.proc.returncode == 255))):
        code = pr.proc.returncode
        if pr.host is not None:
            raise DistributedError(node_exit_message(pr.host, pr.rank, code, size, _tail(watch, pr.rank)))
        if pr.rank is None:
            raise DistributedError(f"{_launcher(pr)} exited with code {code} (a rank failed; see its output above)")
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        raise DistributedError(f"rank {pr.rank} {how}{_tail(watch, pr.rank)}; stopped all {size} ranks")


def _kill_all(procs: list[_Rank], grace_s: float) -> None:
    alive = [p for p in procs if p.proc.poll() is None]
    for p in alive:
        _signal_group(p.proc, signal.SIGTERM)
        _signal_group(p.proc, signal.SIGCONT)  # a stopped rank (watchdog: silent) can act on it now
    deadline = time.monotonic() + grace_s
    for p in alive:
        try:
            p.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(p.proc, signal.SIGKILL)
            p.proc.wait()
    for p in procs:
        for s in (p.proc.stdout, p.proc.stderr):
            if s is not None:
                s.close()


def _signal_group(proc: subprocess.Popen, sig) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass

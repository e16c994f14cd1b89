"""The rank side of a distributed asprof run.

A rank talks to its launcher through tagged lines on stdout (``@@asprof {json}``), so the same
protocol works for local ranks, ranks in network namespaces and remote ranks started by
``mlx.launch`` over ssh (whose outputs arrive multiplexed: every message carries its rank).

- ``init_group()`` says ``hello`` (the process started), joins the MLX distributed group and
  announces ``ready``: a rank that never says hello never started or is unreachable; ranks
  that said hello but never got ready could not form the ring.
- ``heartbeat(step)`` tells the watchdog the rank is making progress; a rank that stops
  sending them is hung (the MLX ring backend can deadlock at >= 3 ranks).
- from ``hello`` on, a daemon thread says ``alive`` every second, also while the main thread
  computes or waits in a collective (MLX releases the GIL there): a rank that falls silent is
  stopped, frozen or cut off, and the watchdog can name it rather than its waiting peers
  (asprof.cluster.watchdog).
- ``emit_result(obj)`` hands a JSON-serialisable result back to ``launch()``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time

TAG = "@@asprof "
ENV_LAUNCHED = "ASPROF_LAUNCHED"
ENV_RING = "ASPROF_RING"  # a rank started over ssh: its MLX_HOSTFILE's contents (asprof.cluster.remote)

_rank = 0
_last_beat = 0.0
_lock = threading.Lock()  # the main thread and the alive thread each write whole lines


def _send(kind: str, **payload) -> None:
    msg = {"type": kind, "rank": _rank, **payload}
    # One write of one line, flushed: lines from several ranks may interleave but never split.
    line = TAG + json.dumps(msg, separators=(",", ":")) + "\n"
    with _lock:
        sys.stdout.write(line)
        sys.stdout.flush()


def launched() -> bool:
    """True when this process was started by asprof's launcher (or mlx.launch under it)."""
    return os.environ.get(ENV_LAUNCHED) == "1"


def init_group(backend: str | None = None):
    """Join the distributed group on ``ASPROF_BACKEND`` (ring by default) and announce readiness.

    Outside a launch this returns MLX's singleton group (size 1), so worker code also runs
    as a plain single process.
    """
    import mlx.core as mx

    global _rank
    _watch_parent()
    backend = backend or os.environ.get("ASPROF_BACKEND") or "ring"
    if launched():
        from asprof.cluster.mpi import mpi_rank

        rank = os.environ.get("MLX_RANK") or os.environ.get("JACCL_RANK")
        _rank = int(rank) if rank else (mpi_rank() or 0)
        _send("hello", pid=os.getpid())  # started; joining the group may still block
        _start_alive()
    ring_file = _ring_file()
    try:
        # the ring joins ranks listed in MLX_HOSTFILE (none for a single rank); the other backends
        # learn the group from mpirun (mpi) or from mlx.launch's variables (jaccl, nccl)
        if launched() and (os.environ.get("MLX_HOSTFILE") or backend != "ring"):
            group = mx.distributed.init(strict=True, backend=backend.replace("jaccl-ring", "jaccl"))
        else:
            group = mx.distributed.init()
    finally:
        if ring_file:
            os.unlink(ring_file)
    _rank = group.rank()
    if launched():
        _send("ready", size=group.size(), pid=os.getpid())
    return group


def _ring_file() -> str | None:
    """MLX reads the ring's hosts from a file (``MLX_HOSTFILE``); a rank started over ssh gets
    them in ``$ASPROF_RING`` and writes that file itself, removed once the group is formed."""
    text = os.environ.get(ENV_RING) if launched() else None
    if not text:
        return None
    fd, path = tempfile.mkstemp(prefix="asprof-ring-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.environ["MLX_HOSTFILE"] = path
    return path


def heartbeat(step: int | None = None, **info) -> None:
    """Report progress (rate-limited to a few per second)."""
    global _last_beat
    if not launched():
        return
    now = time.monotonic()
    if now - _last_beat < 0.2 and not info:
        return
    _last_beat = now
    _send("heartbeat", step=step, **info)


def emit_result(result: dict) -> None:
    """Hand this rank's result to the launcher (printed as JSON when not launched)."""
    if launched():
        _send("result", result=result)
    else:
        print(json.dumps(result, indent=1))


def _start_alive() -> None:
    from asprof.cluster.watchdog import ALIVE_EVERY_S

    def speak():
        while True:
            time.sleep(ALIVE_EVERY_S)
            try:
                _send("alive")
            except (OSError, ValueError):  # the launcher's pipe is gone: the process ends anyway
                return

    threading.Thread(target=speak, name="asprof-alive", daemon=True).start()


def _watch_parent() -> None:
    """Exit if the launcher disappears, so no rank outlives it (no orphans)."""
    if not launched():
        return
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:  # ask the kernel to SIGKILL us when the launcher dies
            import ctypes
            import signal

            libc = ctypes.CDLL(None, use_errno=True)
            PR_SET_PDEATHSIG = 1
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass

    def watch():
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(70)

    threading.Thread(target=watch, name="asprof-parent-watch", daemon=True).start()

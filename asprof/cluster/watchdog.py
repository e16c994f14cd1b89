"""When a distributed run counts as failed in time: the one rule for train, validate and probe.

Every launched rank has two voices (asprof.cluster.worker): its main thread's heartbeats, sent
as it finishes a step (a training step, a probe, an all-reduce size), and a small thread that
says ``alive`` every second whatever the main thread is doing (MLX releases the GIL while it
computes or waits in a collective). The supervisor of :func:`asprof.cluster.launch.launch` feeds
every message to a :class:`Watchdog` and asks it, several times a second, whether to end the run:

- **connect**: a rank that is not ``ready`` (in the group) ``connect_s`` after the start;
- **silence**: a ready rank that sent nothing at all, not even ``alive``, for longer than
  ``max(SILENCE_FLOOR_S, STEPS_K × the run's median step so far)`` — a stopped process
  (SIGSTOP), a frozen host, a cut link to the launcher. Until the run has timed a step (a step
  is the interval between two heartbeats of one rank with different step numbers) the connect
  limit stands in for the median. The message names the rank, its last step and the limit
  with how it was reached;
- **no progress**: a rank that still says ``alive`` but whose main thread sent no heartbeat
  for longer than ``max(stall_s, STEPS_K × median step)`` — a collective that never completes (a
  link between ranks down for good; MLX's ring can deadlock at 3 or more ranks). ``stall_s`` is
  the caller's floor for its longest silent stretch of work (a K-FAC refresh, one probe). A rank
  waiting in MLX's ring is not idle (it polls: 1.6 s of CPU in 5 s measured), so its CPU time
  cannot tell waiting from working, and this floor stays long;
- **timeout**: the run as a whole exceeds ``timeout_s``.
"""

from __future__ import annotations

import bisect

from asprof.errors import DistributedError

SILENCE_FLOOR_S = 15.0  # a rank may be silent this long whatever its steps take
STEPS_K = 5  # ... or this many of the run's median steps, if longer
ALIVE_EVERY_S = 1.0  # how often a rank's alive thread speaks (asprof.cluster.worker)


def fmt_s(x: float) -> str:
    return f"{round(x, 1):g}"


class Watchdog:
    """The time each rank was last heard from and its steps; :meth:`check` raises on a failure."""

    def __init__(self, size: int, start: float, timeout_s: float, connect_s: float, stall_s: float,
                 floor_s: float = SILENCE_FLOOR_S, k: float = STEPS_K):
        self.size, self.start = size, start
        self.timeout_s, self.connect_s, self.stall_s = timeout_s, connect_s, stall_s
        self.floor_s, self.k = floor_s, k
        self.last_heard = {r: start for r in range(size)}  # any message
        self.last_progress = {r: start for r in range(size)}  # the main thread's messages
        self.step: dict[int, object] = {}  # the last step number each rank reported
        self.step_began: dict[int, float] = {}
        self.steps_s: list[float] = []  # every rank's timed steps, kept sorted

    def heard(self, rank: int, kind: str, now: float, step=None) -> None:
        """Rank ``rank`` sent a message of type ``kind`` (hello, ready, heartbeat, alive, result)."""
        self.last_heard[rank] = now
        if kind == "alive":
            return
        self.last_progress[rank] = now
        if kind == "heartbeat" and step is not None and step != self.step.get(rank):
            if rank in self.step_began:
                bisect.insort(self.steps_s, now - self.step_began[rank])
            self.step_began[rank] = now
            self.step[rank] = step

    def median_step_s(self) -> float | None:
        n = len(self.steps_s)
        if n == 0:
            return None
        return self.steps_s[n // 2] if n % 2 else 0.5 * (self.steps_s[n // 2 - 1] + self.steps_s[n // 2])

    def silence_limit(self) -> tuple[float, str]:
        """The longest silence allowed now, and how it was reached (for the message)."""
        med = self.median_step_s()
        if med is None:
            limit = max(self.floor_s, self.connect_s)
            return limit, f"limit {fmt_s(limit)} s: no step timed yet, so the connect limit"
        limit = max(self.floor_s, self.k * med)
        return limit, (f"limit {fmt_s(limit)} s = max({fmt_s(self.floor_s)} s, {self.k:g} × the median "
                       f"step {med:.3g} s)")

    def progress_limit(self) -> float:
        med = self.median_step_s()
        return self.stall_s if med is None else max(self.stall_s, self.k * med)

    def _at(self, r: int) -> str:
        step = self.step.get(r)
        return f"at step {step}" if step is not None else "before its first step"

    def check(self, now: float, hello: set, ready: set, done: set) -> None:
        """Raise DistributedError (one line, naming the ranks) if the run must end now."""
        size = self.size
        stopped = f"stopped all {size} ranks"
        if now - self.start > self.timeout_s:
            raise DistributedError(f"the run exceeded its {fmt_s(self.timeout_s)} s limit; {stopped}")
        not_ready = sorted(set(range(size)) - ready)
        if not_ready and now - self.start > self.connect_s:
            silent = sorted(set(range(size)) - hello)
            if silent:
                raise DistributedError(
                    f"rank {_ranks(silent)} never connected within {fmt_s(self.connect_s)} s (it did not start "
                    f"or cannot be reached; check the host and that asprof is installed there); {stopped}")
            raise DistributedError(
                f"rank {_ranks(not_ready)} never connected within {fmt_s(self.connect_s)} s (the ring could not "
                f"form: check the IP addresses and that nothing blocks the ring ports); {stopped}")
        running = [r for r in range(size) if r not in done and r not in not_ready]
        limit, how = self.silence_limit()
        silent = [r for r in running if now - self.last_heard[r] > limit]
        if silent:
            at = ", ".join(f"rank {r} {self._at(r)}" for r in silent)
            longest = max(now - self.last_heard[r] for r in silent)
            raise DistributedError(
                f"rank {_ranks(silent)} went silent ({at}): nothing from it for {fmt_s(longest)} s ({how}); "
                f"the process is stopped, its host froze or it is cut off from the launcher; {stopped}")
        plimit = self.progress_limit()
        stalled = [r for r in running if now - self.last_progress[r] > plimit]
        if stalled:
            steps = ", ".join(f"rank {r} {self._at(r)}" for r in stalled)
            who = "every running rank" if len(stalled) == len(running) else f"rank {_ranks(stalled)}"
            raise DistributedError(
                f"{who} made no progress for {fmt_s(plimit)} s ({steps}) though still alive: the run hung "
                f"in a collective (a link between ranks down for good, or MLX's ring backend deadlocked, "
                f"which it can at 3 or more ranks); {stopped}")


def _ranks(ranks: list[int]) -> str:
    return ", ".join(map(str, ranks))

"""A small discrete-event engine: tasks on lanes, one time-ordered event heap (DESIGN §4).

A *lane* is a resource that runs one task at a time (a node's accelerator stream, its CPU
stream, its outbound ring link). A *task* has a duration, a lane (or none: a pure delay that
needs no resource) and dependencies. A task becomes *ready* when its last dependency finishes;
a ready task waits in its lane's FIFO queue (in the order tasks became ready) and starts as soon
as the lane is free. The only events are task completions, kept in a heap of
``(time, seq, task)``; ``seq`` increases with every push, so simultaneous events are processed
in the order they were scheduled and every run of the same graph gives the same times, bit for
bit (SimPy's ``(time, priority, seq, event)`` heap, without the priority).

No I/O and no clock: :meth:`Engine.run` is a pure function of the graph.

Each task also records its *cause*: the task whose completion let it start (its last
dependency, or the task that freed its lane). Since a task starts exactly when its cause ends,
following causes back from the last task gives a critical path whose durations add up to the
makespan exactly; :meth:`Engine.critical_path` returns it, and the simulator's step-time
breakdown is that path's time per task category.
"""

from __future__ import annotations

from collections import deque
from heapq import heappop, heappush
from typing import Any, Iterable

NO_LANE = -1


class Engine:
    """Build a task graph with :meth:`lane` and :meth:`task`, then :meth:`run` it once."""

    def __init__(self):
        self.lanes: list[tuple[Any, str]] = []  # (process, thread) names, for timelines
        self._dur: list[float] = []
        self._lane: list[int] = []
        self._succ: list[list[int]] = []
        self._npred: list[int] = []
        self.tags: list[Any] = []
        self.start: list[float] | None = None
        self.end: list[float] | None = None
        self.cause: list[int] | None = None

    # -- building -----------------------------------------------------------------------------
    def lane(self, process: Any, thread: str) -> int:
        """A new lane; ``process``/``thread`` only name it (timeline pid / tid)."""
        self.lanes.append((process, thread))
        return len(self.lanes) - 1

    def task(self, lane: int, duration: float, deps: Iterable[int] = (), tag: Any = None) -> int:
        """Add a task and return its id. ``deps`` are ids of tasks already added (so the graph
        is acyclic by construction); ``lane`` is a lane id or :data:`NO_LANE`."""
        if self.end is not None:
            raise RuntimeError("this engine has already run; build a new one")
        if not duration >= 0.0:  # also rejects NaN
            raise ValueError(f"task duration must be >= 0, got {duration!r}")
        if lane != NO_LANE and not 0 <= lane < len(self.lanes):
            raise ValueError(f"unknown lane {lane!r}")
        tid = len(self._dur)
        n = 0
        succ = self._succ
        for d in deps:
            if not 0 <= d < tid:
                raise ValueError(f"dependency {d!r} is not an earlier task")
            succ[d].append(tid)
            n += 1
        self._dur.append(float(duration))
        self._lane.append(lane)
        self._succ.append([])
        self._npred.append(n)
        self.tags.append(tag)
        return tid

    def add(self, lane: int, duration: float, deps: list[int], tag: Any = None) -> int:
        """:meth:`task` without the argument checks, for graph builders whose lanes, durations
        and dependencies are known to be valid (they come from :meth:`lane` / :meth:`task` /
        :meth:`add` and the cost model). About twice as fast; the simulator builds ~10⁵ tasks."""
        tid = len(self._dur)
        succ = self._succ
        for d in deps:
            succ[d].append(tid)
        self._dur.append(duration)
        self._lane.append(lane)
        succ.append([])
        self._npred.append(len(deps))
        self.tags.append(tag)
        return tid

    def __len__(self) -> int:
        return len(self._dur)

    def duration(self, tid: int) -> float:
        return self._dur[tid]

    def lane_of(self, tid: int) -> int:
        return self._lane[tid]

    # -- running ------------------------------------------------------------------------------
    def run(self) -> float:
        """Simulate; fills :attr:`start`, :attr:`end`, :attr:`cause`; returns the makespan."""
        if self.end is not None:
            raise RuntimeError("this engine has already run")
        dur, lane_of, succ = self._dur, self._lane, self._succ
        n = len(dur)
        rem = list(self._npred)
        start = [0.0] * n
        end = [0.0] * n
        cause = [-1] * n
        busy = [False] * len(self.lanes)
        queues = [deque() for _ in self.lanes]
        heap: list[tuple[float, int, int]] = []
        seq = 0

        # Tasks with no dependencies are ready at t = 0, in the order they were added.
        for tid in range(n):
            if rem[tid] == 0:
                ln = lane_of[tid]
                if ln == NO_LANE or not busy[ln]:
                    if ln != NO_LANE:
                        busy[ln] = True
                    heappush(heap, (dur[tid], seq, tid))
                    seq += 1
                else:
                    queues[ln].append(tid)

        now = 0.0
        while heap:
            now, _, tid = heappop(heap)
            end[tid] = now
            ln = lane_of[tid]
            if ln != NO_LANE:
                q = queues[ln]
                if q:  # the lane passes straight to the next task waiting for it
                    nxt = q.popleft()
                    start[nxt] = now
                    cause[nxt] = tid
                    heappush(heap, (now + dur[nxt], seq, nxt))
                    seq += 1
                else:
                    busy[ln] = False
            for s in succ[tid]:
                r = rem[s] - 1
                rem[s] = r
                if r == 0:
                    sl = lane_of[s]
                    if sl == NO_LANE or not busy[sl]:
                        if sl != NO_LANE:
                            busy[sl] = True
                        start[s] = now
                        cause[s] = tid
                        heappush(heap, (now + dur[s], seq, s))
                        seq += 1
                    else:
                        queues[sl].append(s)
        if any(rem):
            raise RuntimeError("the task graph has tasks that never became ready")  # cannot happen: deps precede
        self.start, self.end, self.cause = start, end, cause
        return max(end) if end else 0.0

    @property
    def events(self) -> int:
        """Events processed by the last run (one completion per task)."""
        return len(self._dur) if self.end is not None else 0

    def critical_path(self, last: int | None = None) -> list[int]:
        """Task ids from a task that started at 0 to ``last`` (default: the task that ended
        last; the lowest id on ties), each starting when the previous one ended."""
        if self.end is None:
            raise RuntimeError("run() first")
        if not self._dur:
            return []
        if last is None:
            last = self.end.index(max(self.end))  # the lowest id among the last to end
        path = []
        tid = last
        while tid != -1:
            path.append(tid)
            tid = self.cause[tid]
        path.reverse()
        return path

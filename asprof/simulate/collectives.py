"""Ring all-reduce, simulated link by link on the engine (DESIGN §4 "Collectives").

The payload S is cut into K chunks of S/K bytes. In the reduce-scatter half (K−1 steps) every
node sends one chunk to its successor, which adds it to its own copy on its CPU lane (MLX's ring
backend sums on the CPU) before forwarding it in the next step; in the all-gather half (K−1 more
steps) the fully reduced chunks travel round the ring once more and are only copied. Step j of
node i therefore starts when

* node i's link has finished step j−1 (one outbound link, sends in order), and
* the chunk it forwards is ready: for j ≤ K−1 the reduction of what arrived from node i−1 at
  step j−1, for j ≥ K the arrival itself,

and costs α + (S/K)/β on node i's link (α per ring step and β per link, the all-reduce probe's
fit). For identical nodes this gives exactly

    T(S) = 2(K−1)·α + 2(K−1)/K · S/β + (K−1)·r(S/K)                       (1)

the bandwidth-optimal ring cost (Patarasuk & Yuan 2009; nccl-tests doc/PERFORMANCE.md) plus the
reductions r on the critical path. A slow link or CPU anywhere delays every chunk that passes it,
so the whole ring slows down, as a real ring does. Bytes sent per node: 2(K−1)/K · S.

With identical nodes all ranks follow the same schedule, so the ring can be *collapsed* onto one
representative node whose predecessor is itself (``len(nodes) == 1`` with ``ring_size = K``):
O(K) tasks instead of O(K²), with the same times (tests/test_sim_collectives.py checks it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from asprof.simulate.engine import Engine
from asprof.spec import ring_factor


@dataclass(frozen=True)
class RingNode:
    """One rank's part in a ring: its lanes and the cost of one step on them (seconds)."""

    link_lane: int
    cpu_lane: int
    step_s: float  # α + chunk/β on this node's outbound link
    reduce_s: float  # adding one received chunk on this node's CPU lane
    send_tag: object = None
    reduce_tag: object = None


def ring_allreduce(
    eng: Engine,
    nodes: Sequence[RingNode],
    ring_size: int,
    start: Sequence[Sequence[int]],
    link_factor: Callable[[int], float] | None = None,
    cpu_factor: Callable[[int], float] | None = None,
) -> list[list[int]]:
    """Add one all-reduce over a ring of ``ring_size`` ranks to ``eng``.

    ``nodes`` are all K ranks in ring order, or one representative (collapsed ring).
    ``start[i]``: tasks after which rank i enters the collective. ``link_factor(i)`` /
    ``cpu_factor(i)``: a multiplier for rank i's steps in this collective (sampled variance),
    or None. Returns, per rank, the tasks after which it holds the whole reduced result.
    """
    K, P = ring_size, len(nodes)
    if K < 2:
        raise ValueError("a ring all-reduce needs at least 2 ranks")
    if P not in (1, K) or len(start) != P:
        raise ValueError("give all K ranks or one representative, and a start list per rank")
    steps = 2 * (K - 1)
    send_s = [n.step_s * (link_factor(i) if link_factor else 1.0) for i, n in enumerate(nodes)]
    red_s = [n.reduce_s * (cpu_factor(i) if cpu_factor else 1.0) for i, n in enumerate(nodes)]
    if not all(x >= 0.0 for x in send_s + red_s):  # also catches NaN
        raise ValueError("ring step and reduction times must be >= 0")
    task = eng.add  # deps below are ids just returned by the engine
    prev_send: list[int] = [-1] * P  # each rank's last send
    prev_red: list[int] = [-1] * P  # each rank's last reduction
    for s in range(steps):
        sends = [0] * P
        for i, nd in enumerate(nodes):
            if s == 0:
                deps = list(start[i])
            elif s <= K - 1:  # forward the chunk reduced after the previous step
                deps = [prev_send[i], prev_red[i]]
            else:  # all-gather: forward what arrived from the predecessor
                deps = [prev_send[i], prev_send[i - 1] if P > 1 else prev_send[i]]
            sends[i] = task(nd.link_lane, send_s[i], deps, nd.send_tag)
        if s < K - 1:  # every rank adds the chunk it just received from its predecessor
            reds = [0] * P
            for i, nd in enumerate(nodes):
                arrived = sends[i - 1] if P > 1 else sends[i]
                deps = [arrived, prev_red[i]] if s > 0 else [arrived, *start[i]]
                reds[i] = task(nd.cpu_lane, red_s[i], deps, nd.reduce_tag)
            prev_red = reds
        prev_send = sends
    return [[prev_send[i - 1] if P > 1 else prev_send[i], prev_send[i]] for i in range(P)]


def ring_time(ring_size: int, nbytes: float, alpha_s: float, beta_Bps: float, reduce_s: float = 0.0) -> float:
    """Equation (1): the all-reduce time of identical nodes, ``reduce_s`` per chunk reduction."""
    K = ring_size
    if K < 2:
        return 0.0
    return 2 * (K - 1) * alpha_s + ring_factor(K) * nbytes / beta_Bps + (K - 1) * reduce_s

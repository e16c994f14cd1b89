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


# -- JACCL's full mesh --------------------------------------------------------------------------
# MLX's JACCL backend over RDMA (mlx/distributed/jaccl/lib/jaccl/mesh.cpp, MeshGroup::all_reduce)
# joins every pair of Macs by its own Thunderbolt cable and picks one of two algorithms:
#
# * small payloads (S <= 32 KiB) or K = 2: one fully connected phase. Every rank sends its whole
#   input to each of the K-1 peers at once (one cable each) and adds the K-1 inputs it receives:
#       T = α + S/β + (K-1)·r(S)                                                   (2)
# * larger payloads with K > 2: reduce-scatter then all-gather (mesh_impl.h,
#   all_reduce_scatter_gather). Rank i sends chunk j (S/K bytes) to peer j and adds the K-1 chunks
#   it receives; then it sends its reduced chunk to every peer:
#       T = 2α + 2·(S/K)/β + (K-1)·r(S/K)                                          (3)
#
# The cables work in parallel, so a rank's sends of one phase cost one α + bytes/β on its link
# lane. The mesh holds at most MESH_MAX_PEERS = 8 ranks (mesh_impl.h).
MESH_SMALL_BYTES = 32 * 1024
MESH_MAX_RANKS = 8


def mesh_phases(ring_size: int, nbytes: float) -> tuple[tuple[float, bool], ...]:
    """JACCL's algorithm for ``nbytes`` on ``ring_size`` ranks: per phase (bytes sent to each peer,
    whether the receiver reduces what it got)."""
    K = ring_size
    if K <= 2 or nbytes <= MESH_SMALL_BYTES:
        return ((nbytes, True),)
    return ((nbytes / K, True), (nbytes / K, False))


def mesh_time(ring_size: int, nbytes: float, alpha_s: float, beta_Bps: float,
              reduce_s=lambda nbytes: 0.0) -> float:
    """Equations (2)/(3): JACCL's all-reduce time on identical nodes, ``reduce_s(b)`` to add one
    received message of b bytes."""
    K = ring_size
    if K < 2:
        return 0.0
    return sum(alpha_s + b / beta_Bps + ((K - 1) * reduce_s(b) if red else 0.0) for b, red in mesh_phases(K, nbytes))


def mesh_bytes_sent(ring_size: int, nbytes: float) -> float:
    """Bytes one rank sends in JACCL's mesh all-reduce: (K-1)·S in the one-phase algorithm, the
    ring's 2(K-1)/K·S with reduce-scatter + all-gather."""
    return sum((ring_size - 1) * b for b, _ in mesh_phases(ring_size, nbytes)) if ring_size > 1 else 0.0


def mesh_allreduce(
    eng: Engine,
    nodes: Sequence[RingNode],
    ring_size: int,
    start: Sequence[Sequence[int]],
    phases: Sequence[Sequence[tuple[float, float]]],
) -> list[list[int]]:
    """Add one JACCL mesh all-reduce to ``eng``. ``nodes``: all K ranks or one representative;
    ``phases[i]``: rank i's (send seconds, reduce seconds) per phase (:func:`mesh_phases`).
    A rank's reduction of a phase waits for every peer's sends of that phase (it receives from
    all of them). Returns, per rank, the tasks after which it holds the result."""
    K, P = ring_size, len(nodes)
    if P not in (1, K) or len(start) != P or len(phases) != P:
        raise ValueError("give all K ranks or one representative, with a start and phases per rank")
    prev = [list(s) for s in start]
    for ph in range(len(phases[0])):
        sends = [eng.add(nd.link_lane, phases[i][ph][0], prev[i], nd.send_tag) for i, nd in enumerate(nodes)]
        prev = []
        for i, nd in enumerate(nodes):
            arrived = sends if P > 1 else [sends[0]]
            red = phases[i][ph][1]
            prev.append([eng.add(nd.cpu_lane, red, arrived, nd.reduce_tag)] if red > 0 else list(arrived))
    return prev

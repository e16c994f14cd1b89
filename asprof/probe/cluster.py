"""Probe a cluster as it will train: compute probes on every rank at once, then the all-reduce.

:func:`probe_cluster` launches :mod:`asprof.probe.cluster_worker` on every rank of a
:class:`Placement` (local ranks, namespace hosts, or an ``mlx.launch`` hostfile), collects each
rank's records (tagged ``rank``/``ranks``/``round``), then — with more than one rank — runs the
all-reduce sweep (:mod:`asprof.probe.allreduce_worker`) on the same placement and fits the ring
(:func:`asprof.probe.allreduce.records_from_ranks`). Every all-reduce record carries the
placement's ``link`` label ("loopback", "netns 100 Mbit/s", "hostfile h1,h2"), so a later run can
tell whether a trace describes *this* cluster (asprof.validate.match).

The trace is written atomically once everything is measured; its ``nodes`` is the rank count and
its ``host`` is what rank 0 reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from asprof import __version__
from asprof.cluster.launch import LaunchSpec, RankHost, launch, read_hostfile
from asprof.errors import AsprofError
from asprof.probe.cluster_worker import COMPUTE_PROBES
from asprof.traces.io import save_trace, utc_now
from asprof.traces.schema import Host, Record, Skip, Trace

# payload sizes ×4 apart: the simulator interpolates the measured times of the cluster's own ring.
# "tiny" (tests) is three sizes spanning ×16384: with two close ones a hiccup of the smallest on
# a loaded 2-core machine made time fall with size, and the α-β fit was refused (a CI failure).
ALLREDUCE_SIZES = {"quick": (2**12, 2**14, 2**16, 2**18, 2**20, 2**22, 2**24), "tiny": (2**10, 2**17, 2**24),
                   "full": tuple(2**p for p in range(10, 27, 2))}


@dataclass(frozen=True)
class Placement:
    """Where the ranks run: exactly one of ``nodes`` (local, loopback ring), ``hosts`` (one
    address and command prefix per rank, e.g. namespace hosts) or ``hostfile``; ``link`` names
    the network between them."""

    nodes: int | None = None
    hosts: tuple[RankHost, ...] | None = None
    hostfile: str | None = None
    link: str = "loopback"

    def __post_init__(self):
        if sum(x is not None for x in (self.nodes, self.hosts, self.hostfile)) != 1:
            raise AsprofError("give exactly one of --nodes or --hostfile")

    @property
    def size(self) -> int:
        if self.nodes is not None:
            return self.nodes
        if self.hosts is not None:
            return len(self.hosts)
        return len(read_hostfile(self.hostfile))

    def spec(self, module: str, args=(), **kw) -> LaunchSpec:
        return LaunchSpec(module=module, args=tuple(args), nodes=self.nodes, hosts=self.hosts,
                          hostfile=self.hostfile, **kw)


def _progress_events(k: int, rounds: int, progress: Callable[[str], None]):
    def on_event(msg):
        if msg.get("type") == "heartbeat" and msg.get("rank") == 0 and "probe" in msg:
            progress(f"compute probes on {k} rank{'s' if k > 1 else ''} at once: {msg['probe']} "
                     f"(round {msg.get('round', 0) + 1}/{rounds})")
        elif msg.get("type") == "heartbeat" and msg.get("rank") == 0 and "bytes" in msg:
            progress(f"all_sum on {k} ranks: {msg['bytes']} B")
    return on_event


def probe_compute(place: Placement, level: str = "quick", rounds: int = 3,
                  progress: Callable[[str], None] = lambda msg: None) -> tuple[list[Record], list[Skip], Host]:
    """The compute probes on every rank of ``place`` at once, ``rounds`` times: (records tagged
    ``rank``/``ranks``/``round``, skips, rank 0's host)."""
    args = ("--level", level, "--rounds", str(rounds), "--probes", ",".join(COMPUTE_PROBES))
    results = launch(place.spec("asprof.probe.cluster_worker", args, timeout_s=1800.0, stall_s=300.0),
                     on_event=_progress_events(place.size, rounds, progress))
    records = [Record.from_dict(d, d["probe"]) for res in results for d in res["records"]]
    return records, [Skip(**s) for s in results[0]["skipped"]], Host.from_dict(results[0]["host"])


def probe_ring(place: Placement, level: str = "quick",
               progress: Callable[[str], None] = lambda msg: None) -> tuple[list[Record], list[Skip]]:
    """The all-reduce sweep on ``place`` and its α-β fit, every record labelled with the link."""
    from dataclasses import replace

    from asprof.probe.allreduce import records_from_ranks

    sizes = ALLREDUCE_SIZES[level]
    ar = launch(place.spec("asprof.probe.allreduce_worker", ("--sizes", ",".join(map(str, sizes)), "--level", level),
                           timeout_s=1800.0, stall_s=300.0), on_event=_progress_events(place.size, 1, progress))
    records, skipped = [], []
    for item in records_from_ranks(ar, "ring"):
        if isinstance(item, Record):
            records.append(replace(item, params={**item.params, "link": place.link}))
        else:
            skipped.append(item)
    return records, skipped


def cluster_trace(place: Placement, host: Host, records, skipped, how: str) -> Trace:
    k = place.size
    return Trace(host=host, records=tuple(records), skipped=tuple(skipped), created_utc=utc_now(),
                 asprof_version=__version__, nodes=k,
                 description=f"cluster probe: {k} rank{'s' if k > 1 else ''}, link {place.link}, "
                             f"compute measured on every rank at once ({how})")


def probe_cluster(place: Placement, out: str | Path, level: str = "quick", rounds: int = 3,
                  progress: Callable[[str], None] = lambda msg: None) -> Trace:
    """Measure ``place`` (compute on every rank, then the ring) and write the trace to ``out``."""
    records, skipped, host = probe_compute(place, level, rounds, progress=progress)
    if place.size > 1:
        ring, ring_skipped = probe_ring(place, level, progress)
        records, skipped = records + ring, skipped + ring_skipped
    trace = cluster_trace(place, host, records, skipped, f"{rounds} rounds, level {level}")
    save_trace(trace, out)
    return trace

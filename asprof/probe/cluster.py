"""Probe a cluster as it will train: compute probes on every rank at once, then the all-reduce.

:func:`probe_cluster` launches :mod:`asprof.probe.cluster_worker` on every rank of a
:class:`Placement` (local ranks, namespace hosts, or an ``mlx.launch`` hostfile), collects each
rank's records (tagged ``rank``/``ranks``/``round``), then — with more than one rank — runs the
all-reduce sweep (:mod:`asprof.probe.allreduce_worker`) on the same placement and fits the ring
(:func:`asprof.probe.allreduce.records_from_ranks`). Every all-reduce record carries the
placement's ``link`` label ("loopback", "netns 100 Mbit/s", "hostfile h1,h2"), so a later run can
tell whether a trace describes *this* cluster (asprof.validate.match).

The trace is written atomically once everything is measured; its ``nodes`` is the rank count and
its ``host`` is what rank 0 reported. `asprof probe --nodes N` / `--hostfile` and `asprof validate`
both write it through :func:`probe_cluster`, with the same rounds (:func:`cluster_rounds`), link
label and file name (:func:`cluster_trace_path`): one trace for both paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from asprof import __version__
from asprof.cluster.hostfile import resolve_backend
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


# every compute measurement repeated at least this often over ranks and rounds: the hardware model
# averages repeats, and a shared machine's speed changes from minute to minute (one rank: 6 rounds)
MIN_REPEATS = 6


def cluster_rounds(nodes: int, rounds: int = 3) -> int:
    """Rounds of the cluster probe on ``nodes`` ranks: ``rounds``, and at least MIN_REPEATS / nodes."""
    return max(rounds, -(-MIN_REPEATS // nodes))


def hostfile_link(hostfile) -> str:
    """The link label of an ``mlx.launch`` hostfile's ring: "hostfile a,b"."""
    return "hostfile " + ",".join(h["ssh"] for h in read_hostfile(hostfile))


def cluster_trace_path(directory, hostname: str | None, nodes: int, link: str) -> Path:
    """``<directory>/<host>-<K>r-<link>-<UTC time>.json``: where a cluster probe is saved."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    slug = "".join(c if c.isalnum() else "-" for c in link).strip("-")
    return Path(directory) / f"{hostname or 'cluster'}-{nodes}r-{slug}-{stamp}.json"


@dataclass(frozen=True)
class Placement:
    """Where the ranks run: exactly one of ``nodes`` (local, loopback ring), ``hosts`` (one
    address and command prefix per rank, e.g. namespace hosts) or ``hostfile``; ``link`` names
    the network between them."""

    nodes: int | None = None
    hosts: tuple[RankHost, ...] | None = None
    hostfile: str | None = None
    link: str = "loopback"
    backend: str | None = None  # mx.distributed backend (None: as mlx.launch picks it)

    def __post_init__(self):
        if sum(x is not None for x in (self.nodes, self.hosts, self.hostfile)) != 1:
            raise AsprofError("give exactly one of --nodes or --hostfile")

    @property
    def size(self) -> int:
        if self.nodes is not None:
            return self.nodes
        if self.hosts is not None:
            return len(self.hosts)
        return len(read_hostfile(self.hostfile, self.backend))

    def spec(self, module: str, args=(), **kw) -> LaunchSpec:
        return LaunchSpec(module=module, args=tuple(args), nodes=self.nodes, hosts=self.hosts,
                          hostfile=self.hostfile, backend=self.backend, **kw)


def _progress_events(k: int, rounds: int, progress: Callable[[str], None]):
    def on_event(msg):
        if msg.get("type") == "heartbeat" and msg.get("rank") == 0 and "probe" in msg:
            progress(f"compute probes on {k} rank{'s' if k > 1 else ''} at once: {msg['probe']} "
                     f"(round {msg.get('round', 0) + 1}/{rounds})")
        elif msg.get("type") == "heartbeat" and msg.get("rank") == 0 and "bytes" in msg:
            progress(f"all_sum on {k} ranks: {msg['bytes']} B")
    return on_event


def probe_compute(place: Placement, level: str = "quick", rounds: int = 3,
                  progress: Callable[[str], None] = lambda msg: None,
                  names=COMPUTE_PROBES) -> tuple[list[Record], list[Skip], Host]:
    """The compute probes ``names`` on every rank of ``place`` at once, ``rounds`` times: (records
    tagged ``rank``/``ranks``/``round``, skips, rank 0's host)."""
    args = ("--level", level, "--rounds", str(rounds), "--probes", ",".join(names))
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
    for item in records_from_ranks(ar, resolve_backend(place.backend, place.hostfile)):
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
                  progress: Callable[[str], None] = lambda msg: None, names=COMPUTE_PROBES + ("allreduce",)) -> Trace:
    """Measure ``place`` (the compute probes among ``names`` on every rank, then the ring) and
    write the trace to ``out``."""
    compute = tuple(n for n in names if n in COMPUTE_PROBES)
    records, skipped, host = probe_compute(place, level, rounds, progress=progress, names=compute) if compute \
        else ([], [], None)
    if host is None:  # the ring alone: this machine describes the cluster's rank 0
        from asprof.probe.host import capture_host

        host = capture_host(with_torch=False)
    if place.size > 1 and "allreduce" in names:
        ring, ring_skipped = probe_ring(place, level, progress)
        records, skipped = records + ring, skipped + ring_skipped
    trace = cluster_trace(place, host, records, skipped, f"{rounds} rounds, level {level}")
    save_trace(trace, out)
    return trace


def with_backend_label(link: str, backend: str | None) -> str:
    """The link label a trace is matched by, naming a backend other than the ring (validate's too)."""
    return link if backend in (None, "ring") else f"{link} ({backend})"


def run_cluster_probe(config, progress=lambda step: None):
    """`asprof probe` with ``--nodes N`` / ``--hostfile`` (a runner.ProbeConfig; progress gets
    runner.Step; returns a runner.ProbeRun): the cluster probe `asprof validate` calibrates from
    (asprof.probe.cluster) — the compute probes on every rank at once, as many rounds as
    validate's, then the ring — saved where validate looks for it (``traces/<host>-<K>r-<link>-<UTC>.json``
    unless ``--out``). Probe, simulate and validate then read the same trace."""
    from asprof.probe.runner import ProbeRun, Step
    from asprof.probe.host import capture_host
    from asprof.traces.io import check_writable

    if config.hostfile is not None:
        place, hostname = Placement(hostfile=str(config.hostfile), backend=config.backend,
                                    link=with_backend_label(hostfile_link(config.hostfile), config.backend)), None
    else:
        place, hostname = (Placement(nodes=config.nodes, link=with_backend_label("loopback", config.backend),
                                     backend=config.backend), capture_host(with_torch=False).hostname)
    path = config.out or cluster_trace_path("traces", hostname, place.size, place.link)
    check_writable(path)
    names = config.probes
    rounds = cluster_rounds(place.size)
    progress(Step(0, 1, "cluster", f"{place.size} ranks, link {place.link}: compute probes on every rank at once "
                                   f"({rounds} rounds), then the ring"))
    trace = probe_cluster(place, path, level=config.level, rounds=rounds, names=names,
                          progress=lambda msg: progress(Step(1, 1, "cluster", msg)))
    return ProbeRun(path=Path(path), trace=trace, finished=list(names))

"""Which probe trace describes *this* cluster (the only calibration validation may use).

A trace matches a cluster when it was taken

* on this host: same hostname and chip (``--hostfile``: the same hosts, see below),
* with the same MLX version, the same BLAS library under MLX (``host.blas``: on Linux the
  reference BLAS and a preloaded OpenBLAS differ ~30x) and the same thread settings (thread-count
  environment variables, the CPUs this process may use),
* for the same number of ranks, measured together (records tagged ``ranks`` = K by
  :mod:`asprof.probe.cluster`; a plain one-process ``asprof probe`` counts as K = 1), and
* over the same link (the all-reduce fit's ``link`` label: "loopback", "netns 100 Mbit/s",
  "hostfile a,b"), for K > 1.

:func:`mismatches` lists what differs (empty: a match); :func:`find_matching` scans a directory,
newest first. For a ``--hostfile`` cluster the host fields are those rank 0 reported when the
trace was probed; they are not re-checked (that needs the cluster), only the hosts, ranks and link.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from asprof.errors import TraceError
from asprof.traces.io import load_trace
from asprof.traces.schema import Host, Trace

# Environment variables that set thread counts or swap the BLAS (asprof.probe.host.timing_env
# records them); the launcher's own per-rank variables are not settings.
_THREAD_ENV_PREFIXES = ("OMP_", "OPENBLAS_", "GOTO", "MKL_", "KMP_", "VECLIB_", "BLIS_", "MLX_", "LD_PRELOAD")
_LAUNCH_ENV = ("MLX_RANK", "MLX_HOSTFILE", "MLX_WORLD_SIZE")
COMPUTE_PROBES = ("blas", "launch", "membw", "linalg")


@dataclass(frozen=True)
class ClusterIdentity:
    """What a matching trace must share with the cluster being validated."""

    nodes: int
    link: str  # Placement.link
    host: Host | None = None  # this machine (None for a hostfile cluster: not checked here)


def thread_settings(host: Host) -> dict[str, str]:
    env = {k: v for k, v in host.env.items() if k.startswith(_THREAD_ENV_PREFIXES) and k not in _LAUNCH_ENV}
    cpus = {k: v for k, v in host.threads.items() if k in ("cpu_count", "affinity_cpus")}
    return {**env, **cpus}


def trace_ranks(trace: Trace) -> int | None:
    """How many ranks measured the compute probes together (None: no compute records)."""
    ranks = {int(r.params.get("ranks", 1)) for r in trace.records if r.probe in COMPUTE_PROBES}
    if not ranks:
        return None
    return ranks.pop() if len(ranks) == 1 else -1  # -1: mixed (not one cluster's measurement)


def trace_link(trace: Trace, nodes: int) -> str | None:
    """The link label of the trace's all-reduce fit on ``nodes`` ranks (old traces probed with
    ``asprof probe --nodes`` on one machine have no label: loopback)."""
    for r in trace.probe("allreduce", op="fit"):
        if r.params.get("nodes") == nodes:
            hosts = r.params.get("hosts") or []
            default = "loopback" if len(set(hosts)) <= 1 else None
            return r.params.get("link", default)
    return None


def mismatches(trace: Trace, want: ClusterIdentity) -> list[str]:
    """Why ``trace`` does not describe the cluster ``want`` (empty list: it does)."""
    why = []
    if trace.origin != "measured":
        return [f"it is a {trace.origin} profile, not a measurement of this cluster"]
    if want.host is not None:
        h, t = want.host, trace.host
        if (t.hostname, t.chip) != (h.hostname, h.chip):
            why.append(f"taken on {t.hostname} ({t.chip}), this is {h.hostname} ({h.chip})")
        if t.versions.get("mlx") != h.versions.get("mlx"):
            why.append(f"MLX {t.versions.get('mlx')} there, {h.versions.get('mlx')} here")
        tb, hb = (t.blas.get("mlx"), t.blas.get("mlx_library")), (h.blas.get("mlx"), h.blas.get("mlx_library"))
        if tb != hb:
            why.append(f"MLX used the {tb[0]} BLAS ({tb[1]}) there, {hb[0]} ({hb[1]}) here")
        ts, hs = thread_settings(t), thread_settings(h)
        if ts != hs:
            diff = sorted(k for k in set(ts) | set(hs) if ts.get(k) != hs.get(k))
            why.append("different thread settings (" + ", ".join(f"{k}={ts.get(k, '-')} vs {hs.get(k, '-')}" for k in diff) + ")")
    ranks = trace_ranks(trace)
    if ranks is None:
        why.append("it has no compute probes (blas, launch, membw, linalg)")
    elif ranks != want.nodes:
        why.append(f"its compute figures were measured with {ranks if ranks > 0 else 'mixed'} rank(s) "
                   f"running at once, this cluster has {want.nodes}")
    if want.nodes > 1:
        link = trace_link(trace, want.nodes)
        if link is None:
            why.append(f"it has no all-reduce fit on {want.nodes} ranks")
        elif link != want.link:
            why.append(f"its link is {link!r}, this cluster's is {want.link!r}")
    return why


def find_matching(directory: str | Path, want: ClusterIdentity) -> tuple[Path | None, list[tuple[Path, list[str]]]]:
    """The newest trace in ``directory`` matching ``want``, and why each newer one did not."""
    d = Path(directory)
    if not d.is_dir():
        return None, []
    files = sorted((p for p in d.glob("*.json") if p.is_file() and not p.name.startswith(".")),
                   key=lambda p: p.stat().st_mtime, reverse=True)
    rejected = []
    for p in files:
        try:
            trace = load_trace(p)
        except TraceError as e:
            rejected.append((p, [str(e)]))
            continue
        why = mismatches(trace, want)
        if not why:
            return p, rejected
        rejected.append((p, why))
    return None, rejected

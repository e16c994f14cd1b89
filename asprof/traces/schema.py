"""The trace: the one contract between `probe`, `simulate` and `validate` (DESIGN §2).

A trace is one JSON document::

    {"schema": "asprof.trace", "version": 1, "created_utc": ..., "asprof_version": ...,
     "origin": "measured" | "published" | "derived" | "mixed",
     "host": {...},
     "probes": {"blas": [record, ...], "allreduce": [...], ...},
     "skipped": [{"probe": ..., "framework": ..., "device": ..., "reason": ...}]}

Every record names its operation, framework, device and dtype, keeps the parameters needed to
reproduce it, the metrics it produced (units in the names: ``flops_per_s``, ``bytes``,
``latency_s``) and, when timed, the raw samples next to their summary. Bundled reference
profiles use the same format with ``origin: published`` (a figure from a paper or a vendor)
or ``derived`` (computed from published figures by a stated formula), each with a ``source``.

Every reader and writer goes through :meth:`Trace.from_dict` / :meth:`Trace.to_dict`; a
malformed document fails with the path, the field and what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Iterable

from asprof.traces.reader import At, SchemaError  # noqa: F401  (SchemaError: part of this module's API)

SCHEMA = "asprof.trace"
VERSION = 1
ORIGINS = ("measured", "published", "derived")
# a whole trace: a bundled profile whose records are partly published and partly derived is "mixed"
TRACE_ORIGINS = ORIGINS + ("mixed",)
PROBES = ("blas", "launch", "membw", "linalg", "memory", "allreduce", "power")


@dataclass(frozen=True)
class Timing:
    """Raw timed samples (seconds) and their summary, as produced by the timing harness."""

    samples_s: tuple[float, ...]
    median_s: float
    iqr_s: float
    min_s: float
    mean_s: float
    cv: float
    first_s: float | None = None  # the first (cold) call, excluded from the samples
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {
            "samples_s": list(self.samples_s),
            "median_s": self.median_s,
            "iqr_s": self.iqr_s,
            "min_s": self.min_s,
            "mean_s": self.mean_s,
            "cv": self.cv,
            "first_s": self.first_s,
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Timing":
        return cls._read(At(d, "timing"))

    @classmethod
    def _read(cls, at: At) -> "Timing":
        samples = tuple(x.num(min_value=0) for x in at.get("samples_s").list())
        if not samples:
            raise SchemaError(at.get("samples_s").path, "at least one sample", [])
        return cls(
            samples_s=samples,
            median_s=at.get("median_s").num(min_value=0),
            iqr_s=at.get("iqr_s").num(min_value=0),
            min_s=at.get("min_s").num(min_value=0),
            mean_s=at.get("mean_s").num(min_value=0),
            cv=at.get("cv").num(min_value=0),
            first_s=at.get("first_s", required=False).num(optional=True, min_value=0),
            warnings=tuple(w.str() for w in at.get("warnings", required=False).list())
            if at.get("warnings", required=False).data is not None
            else (),
        )


@dataclass(frozen=True)
class Record:
    """One measurement (or one published figure).

    ``op`` names what was measured within the probe (``matmul``, ``warm``, ``eigh``,
    ``all_sum``, ``fit``...). ``params`` reproduce it (shape, bytes, nodes...); ``metrics`` are
    the numbers it produced, with units in their names.
    """

    probe: str
    op: str
    framework: str
    device: str
    dtype: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    timing: Timing | None = None
    series: dict[str, tuple[float, ...]] = field(default_factory=dict)
    origin: str = "measured"
    source: str | None = None

    def __post_init__(self):
        if self.origin not in ORIGINS:
            raise SchemaError("origin", "one of " + ", ".join(ORIGINS), self.origin)
        if self.origin != "measured" and not self.source:
            raise SchemaError("source", f"a citation for an origin={self.origin} figure", None)

    def to_dict(self) -> dict:
        d = {
            "op": self.op,
            "framework": self.framework,
            "device": self.device,
            "dtype": self.dtype,
            "params": dict(self.params),
            "metrics": dict(self.metrics),
            "origin": self.origin,
        }
        if self.timing is not None:
            d["timing"] = self.timing.to_dict()
        if self.series:
            d["series"] = {k: list(v) for k, v in self.series.items()}
        if self.source is not None:
            d["source"] = self.source
        return d

    @classmethod
    def from_dict(cls, d: dict, probe: str) -> "Record":
        return cls._read(At(d, f"probes.{probe}[]"), probe)

    @classmethod
    def _read(cls, at: At, probe: str) -> "Record":
        timing_at = at.get("timing", required=False)
        series_at = at.get("series", required=False)
        metrics = {k: v.num() for k, v in at.get("metrics").items()}
        series = {}
        if series_at.data is not None:
            series = {k: tuple(x.num() for x in v.list()) for k, v in series_at.items()}
        origin = at.get("origin").str(choices=ORIGINS)
        source = at.get("source", required=False).str(optional=True)
        if origin != "measured" and not source:
            raise SchemaError(at.get("source", required=False).path, f"a citation (origin is {origin})", source)
        return cls(
            probe=probe,
            op=at.get("op").str(),
            framework=at.get("framework").str(),
            device=at.get("device").str(),
            dtype=at.get("dtype", required=False).str(optional=True),
            params=at.get("params").json_scalar_map(),
            metrics=metrics,
            timing=Timing._read(timing_at) if timing_at.data is not None else None,
            series=series,
            origin=origin,
            source=source,
        )


@dataclass(frozen=True)
class Skip:
    """A probe/framework/device combination that could not run here, and why."""

    probe: str
    framework: str
    device: str
    reason: str

    def to_dict(self) -> dict:
        return {"probe": self.probe, "framework": self.framework, "device": self.device, "reason": self.reason}

    @classmethod
    def _read(cls, at: At) -> "Skip":
        return cls(*(at.get(k).str() for k in ("probe", "framework", "device", "reason")))


@dataclass(frozen=True)
class Host:
    """What the measurements were taken on (DESIGN §2 `host`)."""

    hostname: str
    os: str  # "Darwin", "Linux", ...
    os_release: str
    machine: str  # "arm64", "x86_64"
    chip: str  # "Apple M4", or the CPU model on Linux
    cores_logical: int
    memory_bytes: int
    cores_performance: int | None = None
    cores_efficiency: int | None = None
    gpu_name: str | None = None
    gpu_cores: int | None = None
    # "metal" (Apple GPU), "cuda", or "none". With "none" MLX runs everything on the CPU, so
    # the simulator's accelerator and CPU lanes are the same cores.
    accelerator: str = "none"
    unified_memory: bool = False
    versions: dict[str, str] = field(default_factory=dict)  # python, mlx, numpy, torch, ...
    blas: dict[str, str] = field(default_factory=dict)  # framework -> BLAS library in use
    threads: dict[str, str] = field(default_factory=dict)  # thread settings in effect
    env: dict[str, str] = field(default_factory=dict)  # environment variables that change timings

    def to_dict(self) -> dict:
        return {
            "hostname": self.hostname,
            "os": self.os,
            "os_release": self.os_release,
            "machine": self.machine,
            "chip": self.chip,
            "cores_logical": self.cores_logical,
            "cores_performance": self.cores_performance,
            "cores_efficiency": self.cores_efficiency,
            "memory_bytes": self.memory_bytes,
            "gpu_name": self.gpu_name,
            "gpu_cores": self.gpu_cores,
            "accelerator": self.accelerator,
            "unified_memory": self.unified_memory,
            "versions": dict(self.versions),
            "blas": dict(self.blas),
            "threads": dict(self.threads),
            "env": dict(self.env),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Host":
        return cls._read(At(d, "host"))

    @classmethod
    def _read(cls, at: At) -> "Host":
        def opt_map(key):
            sub = at.get(key, required=False)
            return sub.str_map() if sub.data is not None else {}

        return cls(
            hostname=at.get("hostname").str(),
            os=at.get("os").str(),
            os_release=at.get("os_release").str(),
            machine=at.get("machine").str(),
            chip=at.get("chip").str(),
            cores_logical=at.get("cores_logical").int(min_value=1),
            memory_bytes=at.get("memory_bytes").int(min_value=1),
            cores_performance=at.get("cores_performance", required=False).int(optional=True, min_value=0),
            cores_efficiency=at.get("cores_efficiency", required=False).int(optional=True, min_value=0),
            gpu_name=at.get("gpu_name", required=False).str(optional=True),
            gpu_cores=at.get("gpu_cores", required=False).int(optional=True, min_value=0),
            accelerator=at.get("accelerator").str(choices=("metal", "cuda", "none")),
            unified_memory=at.get("unified_memory").bool(),
            versions=opt_map("versions"),
            blas=opt_map("blas"),
            threads=opt_map("threads"),
            env=opt_map("env"),
        )


@dataclass(frozen=True)
class Trace:
    """A whole trace: the host, its records (grouped by probe on disk) and what was skipped."""

    host: Host
    records: tuple[Record, ...] = ()
    skipped: tuple[Skip, ...] = ()
    created_utc: str = ""
    asprof_version: str = ""
    origin: str = "measured"  # a bundled reference profile: "published", "derived" or "mixed"
    name: str | None = None  # a short name for bundled profiles ("m4-mini-x16-tb")
    description: str | None = None
    # For a cluster: how many identical nodes the figures describe (bundled cluster profiles;
    # a probed trace learns it from its all-reduce records).
    nodes: int | None = None

    def __post_init__(self):
        if self.origin not in TRACE_ORIGINS:
            raise SchemaError("origin", "one of " + ", ".join(TRACE_ORIGINS), self.origin)

    # -- queries ------------------------------------------------------------------------------
    def probe(self, name: str, **match: Any) -> list[Record]:
        """Records of probe ``name`` whose attributes (op, framework, device, dtype) match."""
        out = []
        for r in self.records:
            if r.probe != name:
                continue
            if all(getattr(r, k) == v for k, v in match.items()):
                out.append(r)
        return out

    def has(self, name: str) -> bool:
        return any(r.probe == name for r in self.records)

    def with_records(self, records: Iterable[Record], skipped: Iterable[Skip] = ()) -> "Trace":
        return replace(self, records=self.records + tuple(records), skipped=self.skipped + tuple(skipped))

    # -- (de)serialisation -----------------------------------------------------------------------
    def to_dict(self) -> dict:
        probes: dict[str, list] = {}
        for r in self.records:
            probes.setdefault(r.probe, []).append(r.to_dict())
        d = {
            "schema": SCHEMA,
            "version": VERSION,
            "created_utc": self.created_utc,
            "asprof_version": self.asprof_version,
            "origin": self.origin,
        }
        for key in ("name", "description", "nodes"):
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        d["host"] = self.host.to_dict()
        d["probes"] = probes
        d["skipped"] = [s.to_dict() for s in self.skipped]
        return d

    @classmethod
    def from_dict(cls, d: Any) -> "Trace":
        at = At(d, "")
        schema = at.get("schema").str()
        if schema != SCHEMA:
            raise SchemaError("schema", f"'{SCHEMA}'", schema)
        version = at.get("version").int()
        if version != VERSION:
            raise SchemaError(
                "version", f"{VERSION} (this asprof reads trace version {VERSION}; re-run `asprof probe`)", version
            )
        records = []
        for probe, recs in at.get("probes").items():
            for rec in recs.list():
                records.append(Record._read(rec, probe))
        skipped_at = at.get("skipped", required=False)
        skipped = [Skip._read(s) for s in skipped_at.list()] if skipped_at.data is not None else []
        return cls(
            host=Host._read(at.get("host")),
            records=tuple(records),
            skipped=tuple(skipped),
            created_utc=at.get("created_utc").str(),
            asprof_version=at.get("asprof_version").str(),
            origin=at.get("origin").str(choices=TRACE_ORIGINS),
            name=at.get("name", required=False).str(optional=True),
            description=at.get("description", required=False).str(optional=True),
            nodes=at.get("nodes", required=False).int(optional=True, min_value=1),
        )

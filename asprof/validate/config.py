"""`asprof validate`'s configuration: the run (asprof.spec.RunChoices, the flags shared with
simulate and train) and validate's own; frozen, checked on construction so bad input is one line
before anything starts (DESIGN §7)."""

from __future__ import annotations

from dataclasses import dataclass, field

from asprof.errors import AsprofError
from asprof.spec import BYTE_VOCAB, RunChoices, RunSpec, check_int, timed_from


@dataclass(frozen=True)
class ValidateConfig:
    nodes: int | None = None  # local ranks (ring over loopback, or namespace hosts with netns_rate)
    hostfile: str | None = None  # an mlx.launch hostfile
    netns_rate: float | None = None  # Mbit/s: build a namespace ring with tbf-shaped links (root)
    run: RunChoices = field(default_factory=RunChoices)  # what is trained and simulated, per optimizer
    backend: str | None = None  # mx.distributed backend; None: as mlx.launch picks it
    steps: int = 30
    trace: str | None = None  # None: the newest matching trace in traces_dir, else probe
    tolerance: float = 10.0  # percent; exit 1 when a step-time error is larger
    out: str = "validate-out"
    seed: int = 0
    traces_dir: str = "traces"
    probe_level: str = "quick"
    probe_rounds: int = 3
    replicas: int = 20  # simulated repetitions for the p5-p95 band
    # True: every rank measures the compute probes between its training steps (half the time),
    # and each run is predicted from the records taken during it (asprof.probe.during)
    probe_during: bool = False
    timeout_s: float = 1800.0

    def __post_init__(self):
        if self.nodes is not None and self.hostfile is not None:
            raise AsprofError("give --nodes or --hostfile, not both")
        if self.nodes is not None:
            check_int("--nodes", self.nodes)
        if self.hostfile is not None or self.backend is not None:
            from asprof.cluster.hostfile import check_run

            check_run(self.backend, self.hostfile)  # unreadable / malformed / wrong backend: one line now
        if self.netns_rate is not None and self.backend not in (None, "ring"):
            raise AsprofError(f"--netns-rate joins namespace hosts by the ring backend, not {self.backend}")
        if self.netns_rate is not None:
            if self.hostfile is not None:
                raise AsprofError("--netns-rate builds a namespace ring on this machine: use it with --nodes, not --hostfile")
            if not (isinstance(self.netns_rate, (int, float)) and self.netns_rate > 0):
                raise AsprofError(f"--netns-rate must be a positive rate in Mbit/s, got {self.netns_rate!r}")
            from asprof.cluster.netns import why_unavailable

            reason = why_unavailable()
            if reason:
                raise AsprofError(f"--netns-rate: {reason} (run as root, or drop --netns-rate for a loopback ring)")
        check_int("--steps", self.steps)
        if self.steps < self.skip + 2:
            raise AsprofError(f"--steps ({self.steps}) must exceed --warmup + 1 ({self.skip}) by at least 2: "
                              "the comparison needs steps after the warm-up")
        if isinstance(self.tolerance, bool) or not isinstance(self.tolerance, (int, float)) or not self.tolerance >= 0:
            raise AsprofError(f"--tolerance must be a percentage >= 0, got {self.tolerance!r}")
        if self.probe_level not in ("full", "quick", "tiny"):
            raise AsprofError(f"probe level must be full, quick or tiny, got {self.probe_level!r}")
        check_int("--probe-rounds", self.probe_rounds)
        check_int("--replicas", self.replicas, 2)
        if self.probe_during and self.trace is not None:
            raise AsprofError("--probe-during probes the cluster during every run itself: drop --trace")
        if not self.timeout_s > 0:
            raise AsprofError("--timeout must be positive")
        self.specs()  # every run trainable here (bytes fit the vocabulary, float32): one line now

    @property
    def world_size(self) -> int:
        if self.hostfile is not None:
            from asprof.cluster.launch import read_hostfile

            return len(read_hostfile(self.hostfile, self.backend))
        return self.nodes or 1

    @property
    def skip(self) -> int:
        """Steps left out of the comparison (the warm-up and the step after it)."""
        return timed_from(self.run.warmup)

    def specs(self) -> tuple[RunSpec, ...]:
        """The runs trained and simulated, one per optimizer (TopKPOP once per sparsity)."""
        return tuple(s.check_trainable() for s in self.run.specs(self.world_size))

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "run"}
        return {**d, "run": self.run.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "ValidateConfig":
        """A config from ``to_dict``, or from a result written before the shared run spec (flat
        run fields, ``warmup_steps``; those runs trained the byte vocabulary)."""
        own = {k: v for k, v in d.items() if k in cls.__dataclass_fields__ and k != "run"}
        if "run" in d:
            r = dict(d["run"])
            r["optimizers"], r["sparsity"] = tuple(r["optimizers"]), tuple(r["sparsity"])
            return cls(run=RunChoices(**r), **own)
        legacy = RunChoices(model=d.get("model", "tiny"), vocab=BYTE_VOCAB, batch=d.get("batch", 8), seq=d.get("seq"),
                            optimizers=tuple(d.get("optimizers", ("adam", "kpop", "topkpop"))),
                            sparsity=(d.get("sparsity", 0.1),), frequency=d.get("frequency", 10),
                            warmup=d.get("warmup_steps", 5))
        return cls(run=legacy, **own)

"""`asprof validate`'s configuration: one frozen dataclass, flags one-to-one, checked on
construction so bad input is one line before anything starts (DESIGN §7)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from asprof.errors import AsprofError


def known_optimizers() -> tuple[str, ...]:
    """Optimizers that can be both trained (asprof.train) and simulated (asprof.simulate)."""
    from asprof.simulate.costs import OPTIMIZERS as SIMULATED
    from asprof.train.config import OPTIMIZERS as TRAINED

    return tuple(o for o in TRAINED if o in SIMULATED)


DEFAULT_OPTIMIZERS = ("adam", "kpop", "topkpop")


@dataclass(frozen=True)
class ValidateConfig:
    nodes: int | None = None  # local ranks (ring over loopback, or namespace hosts with netns_rate)
    hostfile: str | None = None  # an mlx.launch hostfile
    netns_rate: float | None = None  # Mbit/s: build a namespace ring with tbf-shaped links (root)
    optimizers: tuple[str, ...] = DEFAULT_OPTIMIZERS
    sparsity: float = 0.1  # TopKPOP s
    model: str = "tiny"  # preset or JSON model config (trained with the corpus's 256-byte vocabulary)
    steps: int = 30
    warmup_steps: int = 5  # excluded from the comparison; also KPOP's refresh-every-step warm-up
    batch: int = 8  # sequences per node
    seq: int | None = None  # None: the model's seq_len
    frequency: int = 10  # KPOP refresh every f steps after warm-up
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
        def positive_int(name, v, minimum=1):
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                raise AsprofError(f"--{name.replace('_', '-')} must be an integer >= {minimum}, got {v!r}")

        if self.nodes is not None and self.hostfile is not None:
            raise AsprofError("give --nodes or --hostfile, not both")
        if self.nodes is not None and (isinstance(self.nodes, bool) or not isinstance(self.nodes, int) or self.nodes <= 0):
            raise AsprofError(f"--nodes must be a positive integer, got {self.nodes!r}")
        if self.hostfile is not None:
            from asprof.cluster.launch import read_hostfile

            read_hostfile(self.hostfile)  # unreadable / malformed: one line now
        if self.netns_rate is not None:
            if self.hostfile is not None:
                raise AsprofError("--netns-rate builds a namespace ring on this machine: use it with --nodes, not --hostfile")
            if not (isinstance(self.netns_rate, (int, float)) and self.netns_rate > 0):
                raise AsprofError(f"--netns-rate must be a positive rate in Mbit/s, got {self.netns_rate!r}")
            from asprof.cluster.netns import why_unavailable

            reason = why_unavailable()
            if reason:
                raise AsprofError(f"--netns-rate: {reason} (run as root, or drop --netns-rate for a loopback ring)")
        if not self.optimizers:
            raise AsprofError("--optimizer needs at least one optimizer")
        known = known_optimizers()
        for o in self.optimizers:
            if o not in known:
                raise AsprofError(f"unknown optimizer {o!r} in --optimizer; choose from: {', '.join(known)}")
        if isinstance(self.sparsity, bool) or not isinstance(self.sparsity, (int, float)) or not 0.0 < self.sparsity <= 1.0:
            raise AsprofError(f"--sparsity must be in (0, 1], got {self.sparsity!r}")
        positive_int("steps", self.steps)
        positive_int("warmup_steps", self.warmup_steps, 0)
        if self.steps < self.warmup_steps + 2:
            raise AsprofError(f"--steps ({self.steps}) must exceed --warmup-steps ({self.warmup_steps}) by at least 2: "
                              "the comparison needs steps after the warm-up")
        positive_int("batch", self.batch)
        if self.seq is not None:
            positive_int("seq", self.seq, 2)
        positive_int("frequency", self.frequency)
        if isinstance(self.tolerance, bool) or not isinstance(self.tolerance, (int, float)) or not self.tolerance >= 0:
            raise AsprofError(f"--tolerance must be a percentage >= 0, got {self.tolerance!r}")
        if self.probe_level not in ("full", "quick", "tiny"):
            raise AsprofError(f"probe level must be full, quick or tiny, got {self.probe_level!r}")
        positive_int("probe_rounds", self.probe_rounds)
        positive_int("replicas", self.replicas, 2)
        if self.probe_during and self.trace is not None:
            raise AsprofError("--probe-during probes the cluster during every run itself: drop --trace")
        if not self.timeout_s > 0:
            raise AsprofError("--timeout must be positive")
        self.model_config()  # unknown preset / bad JSON: one line now

    @property
    def world_size(self) -> int:
        if self.hostfile is not None:
            from asprof.cluster.launch import read_hostfile

            return len(read_hostfile(self.hostfile))
        return self.nodes or 1

    def model_config(self):
        """The trained model: the preset with the corpus vocabulary (bytes) and this run's seq."""
        from asprof.presets import resolve_model
        from asprof.train.data import VOCAB

        return resolve_model(self.model).with_overrides(vocab=VOCAB, seq_len=self.seq)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["optimizers"] = list(self.optimizers)
        return d

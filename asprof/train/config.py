"""The training run's configuration: one frozen dataclass, validated on construction; the CLI's
flags map one-to-one onto its fields (STYLE §2)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from asprof.errors import AsprofError
from asprof.presets import ModelConfig, resolve_model
from asprof.train.data import VOCAB

# The structured-Fisher paper's optimizers (paper 004) need no KFAC factors.
STRUCTURED = ("eigen-adam", "soap", "racs", "alice", "alice-0")
OPTIMIZERS = ("adam", "kpop", "topkpop") + STRUCTURED
DEFAULT_MODEL = "small"
# Learning rates picked by the sweep recorded in docs/optimizers.md (small model, stdlib corpus,
# batch 8 x 128, 80 steps, rates 3e-4 .. 1e-2): TopKPOP takes KPOP's. The structured optimizers:
# the paper's λ for RACS and Alice (Tables 9, 11; their α scales it), SOAP's reference 3e-3 for
# SOAP and Eigen-Adam (docs/optimizers.md, "Structured-Fisher optimizers").
DEFAULT_LR = {"adam": 1e-3, "kpop": 3e-3, "topkpop": 3e-3, "eigen-adam": 3e-3, "soap": 3e-3, "racs": 0.02,
              "alice": 0.02, "alice-0": 0.02}


@dataclass(frozen=True)
class TrainConfig:
    optimizer: str = "adam"
    steps: int = 100
    lr: float | None = None           # None: DEFAULT_LR[optimizer]
    model: str = DEFAULT_MODEL        # preset name or JSON model config; vocab is set to 256 (bytes)
    batch: int = 8                    # global batch, sequences (split over the ranks)
    seq: int | None = None            # None: the preset's seq_len
    vocab: int = VOCAB                # bytes use ids < 256; a larger vocab only reproduces a head's cost
    sparsity: float = 0.1             # TopKPOP s
    frequency: int = 10               # refresh every f steps after warm-up
    warmup: int = 10                  # refresh every step while t < warmup
    alpha: float = 0.95               # factor EMA decay
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    eig_method: str = "eigh"
    interval: int | None = None       # Eigen-Adam/SOAP/Alice basis refresh interval K; None: the optimizer's
    rank: float = 0.25                # Alice/Alice-0 rank r: a fraction of the smaller side (<= 1) or a count
    seed: int = 0
    data: str | None = None           # None: the Python standard library's sources
    eval_every: int = 0               # 0: evaluate only at the end
    eval_batches: int = 4
    instrument: bool = False          # also run an instrumented pass timing the phases
    timing_skip: int | None = None    # steps excluded from the timing summary; None: warmup + 1
    nodes: int = 1                    # local ranks (ring backend over loopback)
    hostfile: str | None = None       # mlx.launch hostfile: ranks on other machines
    timeout_s: float = 600.0          # distributed watchdog

    def __post_init__(self):
        def bad(name, what):
            raise AsprofError(f"--{name.replace('_', '-')} {what}")

        if self.optimizer not in OPTIMIZERS:
            bad("optimizer", f"must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        for name in ("steps", "batch", "frequency", "nodes", "eval_batches"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                bad(name, f"must be a positive integer, got {v!r}")
        for name in ("warmup", "eval_every", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                bad(name, f"must be a non-negative integer, got {v!r}")
        if self.seq is not None and (not isinstance(self.seq, int) or self.seq <= 1):
            bad("seq", f"must be an integer > 1, got {self.seq!r}")
        if isinstance(self.vocab, bool) or not isinstance(self.vocab, int) or self.vocab < VOCAB:
            bad("vocab", f"must be an integer >= {VOCAB} (byte-level tokens), got {self.vocab!r}")
        if self.lr is not None and not self.lr > 0:
            bad("lr", f"must be > 0, got {self.lr!r}")
        if not 0.0 < self.sparsity <= 1.0:
            bad("sparsity", f"must be in (0, 1], got {self.sparsity!r}")
        if not 0.0 <= self.alpha < 1.0:
            bad("alpha", f"must be in [0, 1), got {self.alpha!r}")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                bad(name, f"must be in [0, 1), got {getattr(self, name)!r}")
        if self.eps < 0 or self.weight_decay < 0:
            bad("eps" if self.eps < 0 else "weight-decay", "must be non-negative")
        if self.interval is not None and (isinstance(self.interval, bool) or not isinstance(self.interval, int)
                                          or self.interval <= 0):
            bad("interval", f"must be a positive integer, got {self.interval!r}")
        if isinstance(self.rank, bool) or not isinstance(self.rank, (int, float)) or not self.rank > 0 or \
                (self.rank > 1 and self.rank != int(self.rank)):
            bad("rank", f"must be a fraction in (0, 1] or a whole number of directions, got {self.rank!r}")
        if self.eig_method not in ("eigh", "power"):
            bad("eig-method", f"must be eigh or power, got {self.eig_method!r}")
        if self.timing_skip is not None and self.timing_skip < 0:
            bad("timing-skip", "must be non-negative")
        if self.hostfile is not None and self.nodes != 1:
            raise AsprofError("give either --nodes or --hostfile, not both")
        if self.batch % self.nodes:
            bad("batch", f"({self.batch}) must be a multiple of --nodes ({self.nodes}): each rank takes an equal shard")
        if not self.timeout_s > 0:
            bad("timeout", "must be > 0")
        self.model_config()  # unknown presets / bad JSON fail here, as one line

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]

    @property
    def distributed(self) -> bool:
        return self.nodes > 1 or self.hostfile is not None

    def model_config(self) -> ModelConfig:
        """The model: the preset with this run's vocabulary (256: bytes) and sequence length."""
        base = resolve_model(self.model)
        return base.with_overrides(vocab=self.vocab, seq_len=self.seq)

    @property
    def seq_len(self) -> int:
        return self.model_config().seq_len

    def summary_skip(self) -> int:
        skip = self.timing_skip if self.timing_skip is not None else self.warmup + 1
        return min(skip, self.steps - 1)

    @property
    def alice_rank(self) -> int | float:
        """``rank`` as the optimizers take it: a fraction (<= 1) or an int count."""
        return float(self.rank) if self.rank <= 1 else int(self.rank)

    def optimizer_kwargs(self) -> dict:
        kw = dict(eps=self.eps, weight_decay=self.weight_decay)
        if self.optimizer in STRUCTURED:
            # betas, alpha, warm-up, f, eig-method are Adam's/KPOP's; these take the paper's settings
            if self.interval is not None and self.optimizer != "racs":
                kw["frequency"] = self.interval
            if self.optimizer in ("alice", "alice-0"):
                kw["rank"] = self.alice_rank
            return kw
        kw["betas"] = (self.beta1, self.beta2)
        if self.optimizer != "adam":
            kw.update(alpha=self.alpha, warmup=self.warmup, frequency=self.frequency, eig_method=self.eig_method)
        return kw

    def to_dict(self) -> dict:
        d = asdict(self)
        d["learning_rate"] = self.learning_rate
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


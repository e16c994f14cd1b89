"""A run's description, one for every command (DESIGN §1): the model with its vocabulary, the
batch per node, the sequence length and dtype, the optimizer with its hyper-parameters and its
refresh schedule. `asprof simulate`, `asprof train` and `asprof validate` all resolve their flags
into :class:`RunSpec` (asprof/cli/options.py declares the flags once), train and the simulator
read it, and validate simulates exactly the spec it trained.

Every default and every range check of these fields is written here and nowhere else. Pure
Python: the simulator imports it, and it never imports MLX.

**The vocabulary rule.** A preset's vocabulary is its own in every command: `--model kpop-1.7m`
is the KPOP paper's tied 8 192-token vocabulary whether it is simulated, trained or validated,
so one name is one workload. Training reads bytes, so its tokens use ids below 256 of that
vocabulary (the embedding and head still cost what the preset's do); ``--vocab N`` overrides the
vocabulary everywhere alike (at least 256 where the run trains).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from asprof.errors import AsprofError

OPTIMIZERS = ("adam", "kpop", "topkpop", "eigen-adam", "soap", "racs", "alice", "alice-0")
KFAC_OPTIMIZERS = ("kpop", "topkpop")
# The structured-Fisher paper's optimizers (paper 004) need no KFAC factors.
STRUCTURED = ("eigen-adam", "soap", "racs", "alice", "alice-0")
# "auto": "subspace" for a basis that keeps fewer vectors than its factor's size (TopKPOP, s < 1),
# "eigh" for a full one (KPOP), where a partial solver has nothing to save (asprof.optimizers.kpop).
EIG_METHODS = ("auto", "eigh", "power", "subspace")
FACTOR_DTYPES = ("float32", "bfloat16", "float16")  # the KFAC factor GEMMs' precision (kfac.py)
DTYPES = ("float32", "float16", "bfloat16")
TRAINED_DTYPES = ("float32",)  # what asprof train runs today
BYTE_VOCAB = 256  # training reads bytes: token ids < 256

# ---- defaults: the same in every command ----
MODEL = "kpop-1.7m"  # the KPOP paper's Mac mini model
BATCH = 16  # sequences per node per step (the KPOP paper's 16 x 1024 tokens)
DTYPE = "float32"
OPTIMIZER_LIST = ("adam", "kpop", "topkpop")
SPARSITY = 0.1  # TopKPOP s
FREQUENCY = 10  # refresh every f steps after warm-up
WARMUP = 10  # refresh every step while t < warm-up; the timing summaries start after it
ALPHA = 0.95  # factor EMA decay
BETAS = (0.9, 0.999)
EPS = 1e-8
EIG_METHOD = "auto"
# Block power steps per "subspace" refresh (eigenbasis.subspace_basis): one reached TopKPOP's
# eigh loss within noise at s = 0.1 (docs/optimizers.md, "Partial eigensolver").
SUBSPACE_ITERATIONS = 1
RANK = 0.25  # Alice/Alice-0 rank: a fraction (<= 1) of each matrix's smaller side, or a count
BUCKET_BYTES = 32 * 1024**2  # mlx.nn.average_gradients' all_reduce_size, and our Communicator's
# Learning rates picked by the sweep recorded in docs/optimizers.md (small model, stdlib corpus,
# batch 8 x 128, 80 steps, rates 3e-4 .. 1e-2): TopKPOP takes KPOP's. The structured optimizers:
# the paper's λ for RACS and Alice (Tables 9, 11; their α scales it), SOAP's reference 3e-3 for
# SOAP and Eigen-Adam (docs/optimizers.md, "Structured-Fisher optimizers").
DEFAULT_LR = {"adam": 1e-3, "kpop": 3e-3, "topkpop": 3e-3, "eigen-adam": 3e-3, "soap": 3e-3, "racs": 0.02,
              "alice": 0.02, "alice-0": 0.02}
# Eigen-Adam/SOAP/Alice refresh their basis every K steps (the papers'); RACS has no basis.
DEFAULT_INTERVAL = {"eigen-adam": 10, "soap": 10, "alice": 200, "alice-0": 200}


# ---- range checks, each written once; `what` names the flag or field in the message ----

def check_int(what: str, v, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        kind = {0: "a non-negative integer", 1: "a positive integer"}.get(minimum, f"an integer >= {minimum}")
        raise AsprofError(f"{what} must be {kind}, got {v!r}")
    return v


def check_sparsity(v, what: str = "--sparsity") -> float:
    """TopKPOP's s ∈ (0, 1]."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 < v <= 1.0:
        raise AsprofError(f"{what} must be in (0, 1], got {v!r}")
    return float(v)


def check_decay(v, what: str) -> float:
    """An EMA decay or Adam β ∈ [0, 1)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v < 1.0:
        raise AsprofError(f"{what} must be in [0, 1), got {v!r}")
    return float(v)


def check_rank(v, what: str = "--rank") -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or (v > 1 and v != int(v)):
        raise AsprofError(f"{what} must be a fraction in (0, 1] or a whole number of directions, got {v!r}")
    return v


def check_optimizer(name: str, what: str = "--optimizer") -> str:
    if name not in OPTIMIZERS:
        raise AsprofError(f"unknown optimizer {name!r} in {what}; choose from: {', '.join(OPTIMIZERS)}")
    return name


# ---- formulas shared by the optimizers, the simulator and the probes ----

def reduced_dim(n: int, sparsity: float) -> int:
    """TopKPOP's kept eigenvectors of an n-sided factor: ⌈√s·n⌉ clamped to [1, n] (KPOP §3.1.1)."""
    return max(1, min(n, math.ceil(math.sqrt(sparsity) * n - 1e-9)))


def ring_factor(nodes: int) -> float:
    """Bytes each node sends in a ring all-reduce per byte of payload: 2(K−1)/K (also
    nccl-tests' busbw / algbw)."""
    return 2 * (nodes - 1) / nodes


def timed_from(warmup: int) -> int:
    """The first step counted in a timing summary: the warm-up's refreshes and the first step
    after it (compilation) are left out — in train's summary and in validate's comparison."""
    return warmup + 1


def per_node_batch(batch: int, global_batch: int | None, nodes: int) -> int:
    """Sequences per node: ``batch``, or ``global_batch`` split evenly over ``nodes``."""
    if global_batch is None:
        return batch
    check_int("--global-batch", global_batch)
    if global_batch % nodes:
        raise AsprofError(f"--global-batch {global_batch} is not a multiple of {nodes} node(s): each node takes "
                          "an equal share")
    return global_batch // nodes


@dataclass(frozen=True)
class OptimizerSpec:
    """An optimizer, its hyper-parameters and its refresh schedule."""

    name: str
    lr: float | None = None  # None: DEFAULT_LR[name]
    sparsity: float = 1.0  # TopKPOP's s ∈ (0, 1]; ignored by the others (RunSpec passes --sparsity to topkpop)
    frequency: int = FREQUENCY
    warmup: int = WARMUP
    alpha: float = ALPHA
    beta1: float = BETAS[0]
    beta2: float = BETAS[1]
    eps: float = EPS
    weight_decay: float = 0.0
    eig_method: str = EIG_METHOD
    interval: int | None = None  # Eigen-Adam/SOAP/Alice refresh interval K; None: DEFAULT_INTERVAL
    rank: float = RANK
    bucket_bytes: int = BUCKET_BYTES
    subspace_iterations: int = SUBSPACE_ITERATIONS  # KPOP/TopKPOP "subspace" refreshes
    factor_token_stride: int = 1  # KPOP/TopKPOP factors from every k-th token (approximate if > 1)
    factor_dtype: str = "float32"  # KPOP/TopKPOP factor GEMMs' precision (approximate if lower)

    def __post_init__(self):
        check_optimizer(self.name)
        if self.lr is not None and (isinstance(self.lr, bool) or not isinstance(self.lr, (int, float))
                                    or not self.lr > 0):
            raise AsprofError(f"--lr must be > 0, got {self.lr!r}")
        check_sparsity(self.sparsity)
        check_int("--frequency", self.frequency)
        check_int("--warmup", self.warmup, 0)
        check_decay(self.alpha, "--alpha")
        check_decay(self.beta1, "beta1")
        check_decay(self.beta2, "beta2")
        if isinstance(self.eps, bool) or not isinstance(self.eps, (int, float)) or self.eps < 0:
            raise AsprofError(f"eps must be non-negative, got {self.eps!r}")
        if isinstance(self.weight_decay, bool) or not isinstance(self.weight_decay, (int, float)) or \
                self.weight_decay < 0:
            raise AsprofError(f"weight decay must be non-negative, got {self.weight_decay!r}")
        if self.eig_method not in EIG_METHODS:
            raise AsprofError(f"--eig-method must be one of {', '.join(EIG_METHODS)}, got {self.eig_method!r}")
        if self.interval is not None:
            check_int("--interval", self.interval)
        check_rank(self.rank)
        check_int("bucket bytes", self.bucket_bytes)
        check_int("subspace iterations", self.subspace_iterations)
        check_int("factor token stride", self.factor_token_stride)
        if self.factor_dtype not in FACTOR_DTYPES:
            raise AsprofError(f"factor dtype must be one of {', '.join(FACTOR_DTYPES)}, got {self.factor_dtype!r}")

    @property
    def kfac(self) -> bool:
        return self.name in KFAC_OPTIMIZERS

    @property
    def structured(self) -> bool:
        return self.name in STRUCTURED

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.name]

    @property
    def refresh_interval(self) -> int | None:
        """K of Eigen-Adam/SOAP/Alice (None for the others and for RACS, which has no basis)."""
        if self.name not in DEFAULT_INTERVAL:
            return None
        return self.interval if self.interval is not None else DEFAULT_INTERVAL[self.name]

    @property
    def alice_rank(self) -> int | float:
        """``rank`` as the optimizers take it: a fraction (<= 1) or an int count."""
        return float(self.rank) if self.rank <= 1 else int(self.rank)

    @property
    def effective_sparsity(self) -> float:
        return self.sparsity if self.name == "topkpop" else 1.0

    @property
    def label(self) -> str:
        return f"topkpop s={self.sparsity:g}" if self.name == "topkpop" else self.name

    def basis_method(self, n: int, k: int) -> str:
        """How a refresh after the first updates an n×k basis (KPOP._basis): eigh, power or subspace."""
        if self.eig_method == "auto":
            return "subspace" if k < n else "eigh"
        return self.eig_method

    @property
    def iterative_refresh(self) -> bool:
        """Whether KPOP/TopKPOP refreshes after the first iterate from the previous bases."""
        return self.kfac and (self.eig_method in ("power", "subspace") or
                              (self.eig_method == "auto" and self.name == "topkpop" and self.sparsity < 1))

    def refresh_due(self, t: int) -> bool:
        """KPOP.refresh_due: every step during warm-up, then when t mod f == 0. Eigen-Adam, SOAP,
        Alice (StructuredOptimizer.refresh_due): t + 1 = 1 or (t + 1) mod K = 0."""
        if self.structured:
            k = self.refresh_interval
            return k is not None and (t == 0 or (t + 1) % k == 0)
        return self.kfac and (t < self.warmup or t % self.frequency == 0)

    def refresh_steps(self, steps: int) -> list[int]:
        return [t for t in range(steps) if self.refresh_due(t)]

    def kwargs(self) -> dict:
        """Keyword arguments of the MLX optimizer's constructor (asprof.optimizers), besides the
        learning rate and TopKPOP's sparsity (make_optimizer's own arguments)."""
        kw = dict(eps=self.eps, weight_decay=self.weight_decay)
        if self.structured:
            # betas, alpha, warm-up, f, eig-method are Adam's/KPOP's; these take the paper's settings
            if self.interval is not None and self.name != "racs":
                kw["frequency"] = self.interval
            if self.name in ("alice", "alice-0"):
                kw["rank"] = self.alice_rank
            return kw
        kw["betas"] = (self.beta1, self.beta2)
        if self.kfac:
            kw.update(alpha=self.alpha, warmup=self.warmup, frequency=self.frequency, eig_method=self.eig_method,
                      subspace_iterations=self.subspace_iterations)
        return kw


@dataclass(frozen=True)
class RunSpec:
    """One training run as every command describes it: what is trained, simulated or compared."""

    model: str = MODEL  # a preset name or a JSON model config file
    optimizer: OptimizerSpec = field(default_factory=lambda: OptimizerSpec(OPTIMIZER_LIST[0]))
    batch: int = BATCH  # sequences per node per step
    seq: int | None = None  # None: the model's own sequence length
    vocab: int | None = None  # None: the model's own vocabulary (the vocabulary rule above)
    dtype: str = DTYPE

    def __post_init__(self):
        check_int("--batch", self.batch)
        if self.seq is not None:
            check_int("--seq", self.seq, 2)
        if self.vocab is not None:
            check_int("--vocab", self.vocab)
        if self.dtype not in DTYPES:
            raise AsprofError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        self.model_config()  # an unknown preset or a bad JSON config: one line now

    def model_config(self):
        """The model with this run's vocabulary and sequence length (asprof.presets.ModelConfig)."""
        from asprof.presets import resolve_model

        return resolve_model(self.model).with_overrides(vocab=self.vocab, seq_len=self.seq)

    @property
    def seq_len(self) -> int:
        return self.model_config().seq_len

    def check_trainable(self) -> "RunSpec":
        """What `asprof train` (and so validate) can run: bytes fit the vocabulary, float32."""
        v = self.model_config().vocab
        if v < BYTE_VOCAB:
            raise AsprofError(f"model {self.model!r} has a {v}-token vocabulary; training reads bytes and needs "
                              f"at least {BYTE_VOCAB} (--vocab {BYTE_VOCAB})")
        if self.dtype not in TRAINED_DTYPES:
            raise AsprofError(f"--dtype {self.dtype}: asprof train runs {', '.join(TRAINED_DTYPES)} only "
                              "(other dtypes can be simulated)")
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        d["resolved"] = {"vocab": self.model_config().vocab, "seq": self.seq_len,
                         "learning_rate": self.optimizer.learning_rate,
                         "refresh_interval": self.optimizer.refresh_interval}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunSpec":
        opt = dict(d.get("optimizer") or {})
        fields_ = {k: d[k] for k in ("model", "batch", "seq", "vocab", "dtype") if k in d}
        return cls(optimizer=OptimizerSpec(**{k: v for k, v in opt.items() if k in OptimizerSpec.__dataclass_fields__}),
                   **fields_)


@dataclass(frozen=True)
class RunChoices:
    """The shared flags as a command receives them (asprof/cli/options.py): one model, and lists
    of optimizers and TopKPOP sparsities. :meth:`specs` resolves them into one :class:`RunSpec`
    per run on a cluster of ``nodes`` — the same specs in every command."""

    model: str = MODEL
    vocab: int | None = None
    batch: int = BATCH  # per node
    global_batch: int | None = None  # over the cluster, split over the nodes; overrides batch
    seq: int | None = None
    dtype: str = DTYPE
    optimizers: tuple[str, ...] = OPTIMIZER_LIST
    sparsity: tuple[float, ...] = (SPARSITY,)
    lr: float | None = None
    frequency: int = FREQUENCY
    warmup: int = WARMUP
    alpha: float = ALPHA
    eig_method: str = EIG_METHOD
    interval: int | None = None
    rank: float = RANK

    def __post_init__(self):
        if not self.optimizers:
            raise AsprofError("--optimizer needs at least one optimizer")
        for name in self.optimizers:
            check_optimizer(name)
        if not self.sparsity:
            raise AsprofError("--sparsity needs at least one value")
        for s in self.sparsity:
            check_sparsity(s)
        self.specs(1)  # every field checked once, by the spec itself (--global-batch: per_node_batch)

    def specs(self, nodes: int) -> tuple[RunSpec, ...]:
        """One spec per optimizer (TopKPOP once per sparsity), in the order given."""
        batch = per_node_batch(self.batch, self.global_batch, nodes)
        knobs = dict(lr=self.lr, frequency=self.frequency, warmup=self.warmup, alpha=self.alpha,
                     eig_method=self.eig_method, interval=self.interval, rank=self.rank)
        out = []
        for name in dict.fromkeys(self.optimizers):
            for s in (self.sparsity if name == "topkpop" else (1.0,)):
                out.append(RunSpec(self.model, OptimizerSpec(name, sparsity=float(s), **knobs), batch, self.seq,
                                   self.vocab, self.dtype))
        return tuple(out)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["optimizers"], d["sparsity"] = list(self.optimizers), list(self.sparsity)
        return d

"""The training run's configuration: the run spec (asprof/spec.py: model, vocabulary, batch per
node, seq, optimizer and its schedule) plus what only training has (steps, data, ranks,
evaluation); frozen, checked on construction."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

from asprof.errors import AsprofError
from asprof.presets import ModelConfig
from asprof.spec import OptimizerSpec, RunSpec, check_int, timed_from


@dataclass(frozen=True)
class TrainConfig:
    spec: RunSpec = field(default_factory=RunSpec)  # what is trained; spec.batch is per rank
    steps: int = 100
    seed: int = 0
    data: str | None = None           # None: the Python standard library's sources
    eval_every: int = 0               # 0: evaluate only at the end
    eval_batches: int = 4
    instrument: bool = False          # also run an instrumented pass timing the phases
    timing_skip: int | None = None    # steps excluded from the timing summary; None: spec.timed_from
    nodes: int = 1                    # local ranks (ring backend over loopback)
    hostfile: str | None = None       # mlx.launch hostfile: ranks on other machines
    backend: str | None = None        # mx.distributed backend; None: as mlx.launch picks it
    timeout_s: float = 600.0          # distributed watchdog

    def __post_init__(self):
        if not isinstance(self.spec, RunSpec):
            raise AsprofError(f"a training run needs a RunSpec, got {type(self.spec).__name__}")
        self.spec.check_trainable()
        for name in ("steps", "nodes", "eval_batches"):
            check_int(f"--{name.replace('_', '-')}", getattr(self, name))
        for name in ("eval_every", "seed"):
            check_int(f"--{name.replace('_', '-')}", getattr(self, name), 0)
        if self.timing_skip is not None:
            check_int("timing skip", self.timing_skip, 0)
        if self.hostfile is not None and self.nodes != 1:
            raise AsprofError("give either --nodes or --hostfile, not both")
        if self.backend is not None or self.hostfile is not None:
            from asprof.cluster.hostfile import check_run

            check_run(self.backend, self.hostfile)
        if not self.timeout_s > 0:
            raise AsprofError("--timeout must be > 0")

    @classmethod
    def build(cls, optimizer: str = "adam", **kw) -> "TrainConfig":
        """A config from flat keywords: the spec's (optimizer name, model, batch per rank, seq,
        vocab, dtype, and any OptimizerSpec field: lr, sparsity, warmup, ...) and the run's."""
        return cls(spec=RunSpec(optimizer=OptimizerSpec(optimizer))).evolve(**kw)

    def evolve(self, **kw) -> "TrainConfig":
        """A copy with changes given flat, as to :meth:`build` (``optimizer="kpop", nodes=2``)."""
        mine = {k: kw.pop(k) for k in list(kw) if k in {f.name for f in fields(self)} - {"spec"}}
        top = {k: kw.pop(k) for k in list(kw) if k in {f.name for f in fields(RunSpec)} - {"optimizer"}}
        if "optimizer" in kw:
            kw["name"] = kw.pop("optimizer")
        spec = replace(self.spec, optimizer=replace(self.spec.optimizer, **kw), **top)
        return replace(self, spec=spec, **mine)

    # the spec's fields under the names the training code reads
    @property
    def optimizer(self) -> str:
        return self.spec.optimizer.name

    @property
    def sparsity(self) -> float:
        return self.spec.optimizer.sparsity

    @property
    def learning_rate(self) -> float:
        return self.spec.optimizer.learning_rate

    @property
    def batch(self) -> int:
        """Sequences per rank per step."""
        return self.spec.batch

    @property
    def distributed(self) -> bool:
        return self.nodes > 1 or self.hostfile is not None

    def model_config(self) -> ModelConfig:
        return self.spec.model_config()

    @property
    def seq_len(self) -> int:
        return self.spec.seq_len

    def summary_skip(self) -> int:
        skip = self.timing_skip if self.timing_skip is not None else timed_from(self.spec.optimizer.warmup)
        return min(skip, self.steps - 1)

    def optimizer_kwargs(self) -> dict:
        return self.spec.optimizer.kwargs()

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "spec"}
        # the spec, and its fields flat for readers of results (render, validate)
        o = self.spec.optimizer
        return {**d, "spec": self.spec.to_dict(), "optimizer": o.name, "sparsity": o.sparsity,
                "learning_rate": o.learning_rate, "batch": self.spec.batch, "model": self.spec.model}

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)} - {"spec"}
        return cls(spec=RunSpec.from_dict(d["spec"]), **{k: v for k, v in d.items() if k in known})


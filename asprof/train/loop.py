"""The training loop of one process (a single-process run, or one rank of a data-parallel run).

One step is the phase sequence of kpop_contract.md:

    fwd_bwd (1) | factor_ema (2) | refresh (3, refresh steps only) | grad_allreduce (4) | optimizer (5)

Un-instrumented, phases 2, 4 and 5 form one lazy graph evaluated once at the end of the step
(the refresh is always evaluated on its own, before the step uses the new basis). Instrumented,
an ``mx.eval`` closes every phase so each can be timed; because those syncs change the timing,
:func:`train_process` runs the instrumented steps as a *second pass* from the same seed
(identical batches and initial weights) and reports both. The two passes are interleaved step
by step (plain step i, then instrumented step i, on two trainers): a shared machine's slow and
fast spells, seconds long, then fall on both alike, where two passes run one after the other
could each land in a different spell.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import mlx.core as mx
import mlx.nn as nn

from asprof.optimizers import Communicator, attach_kfac, kfac_value_and_grad, make_optimizer, state_bytes
from asprof.cluster.blas import mlx_blas
from asprof.train.config import TrainConfig
from asprof.train.data import Corpus, check_fits, load_corpus, train_batch, val_batches
from asprof.train.model import build_model, loss_fn

PHASES = ("fwd_bwd", "factor_ema", "refresh", "grad_allreduce", "optimizer")


@dataclass
class ProcessRecord:
    """What one process measured (combined over ranks by asprof.train.runner)."""

    rank: int
    world: int
    losses: list[float] = field(default_factory=list)
    step_time_s: list[float] = field(default_factory=list)
    refresh_steps: list[int] = field(default_factory=list)
    bytes_per_step: list[dict] = field(default_factory=list)
    val_losses: list[list] = field(default_factory=list)  # [step, loss]
    phases_s: list[dict] | None = None
    instrumented_step_time_s: list[float] | None = None
    instrumented_losses: list[float] | None = None
    state_bytes: int = 0
    basis_digest: str | None = None
    blas: str | None = None  # the BLAS MLX called in this process (asprof.cluster.blas.mlx_blas)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _factor_dtype(spec) -> str | None:
    """kfac.py's factor_dtype: None for the exact float32 factors."""
    return None if spec.factor_dtype == "float32" else spec.factor_dtype


class Trainer:
    """Model, optimizer and gradient function of one process, built identically on every rank."""

    def __init__(self, config: TrainConfig, corpus: Corpus, group: mx.distributed.Group | None = None):
        self.config, self.corpus = config, corpus
        self.cfg = config.model_config()
        check_fits(corpus, self.cfg.seq_len)
        self.comm = Communicator(group) if group is not None and group.size() > 1 else None
        self.rank = group.rank() if group is not None else 0
        self.world = group.size() if group is not None else 1
        self.model = build_model(self.cfg, seed=config.seed)
        self.opt = make_optimizer(config.optimizer, config.learning_rate, sparsity=config.sparsity,
                                  comm=self.comm, **config.optimizer_kwargs())
        # KPOP/TopKPOP need KFAC factors; Adam and the structured-Fisher optimizers do not.
        self.uses_factors = getattr(self.opt, "needs_factors", config.optimizer != "adam")
        model = self.model
        if self.uses_factors:
            attach_kfac(model)
            self.value_and_grad = kfac_value_and_grad(model, lambda x, y: loss_fn(model, x, y),
                                                      token_stride=config.spec.optimizer.factor_token_stride,
                                                      factor_dtype=_factor_dtype(config.spec.optimizer))
        else:
            plain = nn.value_and_grad(model, lambda x, y: loss_fn(model, x, y))
            self.value_and_grad = lambda x, y: (*plain(x, y), None)

    def batch(self, step: int):
        c = self.config
        x, y = train_batch(self.corpus, step, c.seed, c.batch * self.world, self.cfg.seq_len, self.rank, self.world)
        return mx.array(x), mx.array(y)

    def step(self, x: mx.array, y: mx.array, instrument: bool = False) -> tuple[mx.array, dict, bool]:
        """One training step. Returns (loss, phase seconds or {}, whether it refreshed)."""
        phases, t = {}, time.perf_counter()

        def mark(name, *arrays):
            nonlocal t
            if instrument:
                mx.eval(*arrays)
                now = time.perf_counter()
                phases[name] = now - t
                t = now

        opt, model = self.opt, self.model
        loss, grads, factors = self.value_and_grad(x, y)
        mark("fwd_bwd", loss, grads, factors)
        if self.uses_factors and not opt._initialized:
            opt.init(model.trainable_parameters(), factors)
        opt.accumulate_factors(factors)
        mark("factor_ema", opt.state)
        refreshed = opt.refresh_due()
        if refreshed:
            opt.refresh()
        mark("refresh")
        if not refreshed:
            phases.pop("refresh", None)
        g = opt.communicate(grads)
        mark("grad_allreduce", g)
        model.update(opt.apply_gradients(g, model, communicated=True))
        mx.eval(loss, model.parameters(), opt.state)
        mark("optimizer")
        return loss, phases, refreshed

    def evaluate(self) -> float:
        """Mean loss over this rank's shard of the fixed validation set."""
        c = self.config
        losses = [loss_fn(self.model, mx.array(x), mx.array(y))
                  for x, y in val_batches(self.corpus, c.eval_batches, c.batch * self.world, self.cfg.seq_len, self.rank, self.world)]
        return float(mx.mean(mx.stack(losses)).item())

    def basis_digest(self) -> str | None:
        """A hash of every eigenbasis this rank holds (equal digests = identical bases); for the
        structured-Fisher optimizers, of their whole matrix state."""
        if hasattr(self.opt, "state_digest"):
            return self.opt.state_digest()
        if not self.uses_factors:
            return None
        import hashlib

        import numpy as np

        h = hashlib.sha256()
        for p in self.opt.kfac_paths:
            st = self.opt._state_at(p)
            for k in ("Q_R", "Q_C"):
                h.update(np.asarray(st[k]).tobytes())
        return h.hexdigest()[:16]


class Pass:
    """One timed series of steps (the plain or the instrumented one) of one trainer."""

    def __init__(self, trainer: Trainer, record: ProcessRecord, instrument: bool,
                 on_step: Callable[[int, float, float], None] | None = None):
        self.trainer, self.record, self.instrument, self.on_step = trainer, record, instrument, on_step
        if instrument:
            record.phases_s, record.instrumented_step_time_s, record.instrumented_losses = [], [], []

    def step(self, i: int) -> None:
        trainer, record, c = self.trainer, self.record, self.trainer.config
        x, y = trainer.batch(i)
        mx.eval(x, y)
        t0 = time.perf_counter()
        loss, phases, refreshed = trainer.step(x, y, instrument=self.instrument)
        dt = time.perf_counter() - t0
        value = float(loss.item())
        counts = trainer.comm.take_counts() if trainer.comm is not None else {}
        if self.instrument:
            record.phases_s.append(phases)
            record.instrumented_step_time_s.append(dt)
            record.instrumented_losses.append(value)
        else:
            record.losses.append(value)
            record.step_time_s.append(dt)
            record.bytes_per_step.append(counts)
            if refreshed:
                record.refresh_steps.append(i)
            if c.eval_every and (i + 1) % c.eval_every == 0 and i + 1 < c.steps:
                record.val_losses.append([i + 1, trainer.evaluate()])
        if self.on_step is not None:
            self.on_step(i, value, dt)

    def finish(self) -> None:
        if not self.instrument:
            trainer = self.trainer
            self.record.val_losses.append([trainer.config.steps, trainer.evaluate()])
            self.record.state_bytes = state_bytes(trainer.opt)
            self.record.basis_digest = trainer.basis_digest()


def train_process(config: TrainConfig, group: mx.distributed.Group | None = None, corpus: Corpus | None = None,
                  on_step: Callable[[str, int, float, float], None] | None = None,
                  keep_trainer: list | None = None,
                  between: Callable[[int], None] | None = None) -> ProcessRecord:
    """Train in this process (as rank ``group.rank()`` of ``group`` when given). ``on_step(pass,
    step, loss, seconds)`` is called after every step. ``keep_trainer`` (a list) receives the
    trained :class:`Trainer` of the timed pass, for callers that need the weights. ``between(step)``
    runs after every step (both passes), outside the timed regions: the worker measures probe
    records there (asprof.probe.during)."""
    corpus = corpus if corpus is not None else load_corpus(config.data)
    trainer = Trainer(config, corpus, group)
    record = ProcessRecord(rank=trainer.rank, world=trainer.world, blas=mlx_blas()[0])
    passes = [Pass(trainer, record, False, None if on_step is None else lambda i, l, dt: on_step("train", i, l, dt))]
    if config.instrument:
        passes.append(Pass(Trainer(config, corpus, group), record, True,
                           None if on_step is None else lambda i, l, dt: on_step("instrumented", i, l, dt)))
    for i in range(config.steps):
        for p in passes:
            p.step(i)
        if between is not None:
            between(i)
    for p in passes:
        p.finish()
    if keep_trainer is not None:
        keep_trainer.append(trainer)
    return record

"""One rank of a data-parallel training run: ``python -m asprof.train.worker --config JSON``.

Started by :func:`asprof.train.runner.run_training` through :func:`asprof.cluster.launch.launch`
(or by ``mlx.launch`` from a hostfile). Every rank builds the same model from the same seed, trains
on its shard of each global batch, and emits its :class:`~asprof.train.loop.ProcessRecord`.
``--save-params DIR`` also writes the final parameters to ``DIR/rank{r}.npz`` (used by the
equivalence tests). A worker that does more between the steps (asprof.validate.probing_worker)
is built from :func:`arguments`, :func:`train_rank` and :func:`finish_rank`.
"""

from __future__ import annotations

import argparse
import json

from asprof.cluster.worker import emit_result, heartbeat, init_group


def arguments(prog: str = "python -m asprof.train.worker") -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog)
    ap.add_argument("--config", required=True, help="TrainConfig as JSON")
    ap.add_argument("--save-params", default=None, metavar="DIR")
    return ap


def load(args):
    """(TrainConfig, corpus) of the parsed ``args``."""
    from asprof.train.config import TrainConfig
    from asprof.train.data import load_corpus

    config = TrainConfig.from_dict(json.loads(args.config))
    return config, load_corpus(config.data)


def train_rank(config, group, corpus, between=None):
    """Train this rank; ``between(step)`` runs after every training step. Returns (record, trainer)."""
    from asprof.train.loop import train_process

    trainers: list = []
    record = train_process(config, group, corpus, on_step=lambda phase, i, loss, dt: heartbeat(i, phase=phase, loss=loss, step_s=dt),
                           keep_trainer=trainers, between=between)
    return record, trainers[0]


def finish_rank(args, group, record, corpus, trainer, **extra) -> None:
    """Save the parameters if asked, and emit this rank's result (with ``extra``'s keys)."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from asprof.train.model import n_params

    if args.save_params:
        from pathlib import Path

        Path(args.save_params).mkdir(parents=True, exist_ok=True)
        mx.savez(str(Path(args.save_params) / f"rank{group.rank()}.npz"),
                 **dict(tree_flatten(trainer.model.parameters())))
    emit_result({"record": record.to_dict(), "corpus": corpus.describe(), "n_params": n_params(trainer.model), **extra})


def main(argv=None) -> None:
    args = arguments().parse_args(argv)
    group = init_group()
    config, corpus = load(args)
    record, trainer = train_rank(config, group, corpus)
    finish_rank(args, group, record, corpus, trainer)


if __name__ == "__main__":
    main()

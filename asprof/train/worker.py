"""One rank of a data-parallel training run: ``python -m asprof.train.worker --config JSON``.

Started by :func:`asprof.train.runner.run_training` through :func:`asprof.cluster.launch.launch`
(or by ``mlx.launch`` from a hostfile). Every rank builds the same model from the same seed, trains
on its shard of each global batch, and emits its :class:`~asprof.train.loop.ProcessRecord`.
``--save-params DIR`` also writes the final parameters to ``DIR/rank{r}.npz`` (used by the
equivalence tests).
"""

from __future__ import annotations

import argparse
import json

from asprof.cluster.worker import emit_result, heartbeat, init_group


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m asprof.train.worker")
    ap.add_argument("--config", required=True, help="TrainConfig as JSON")
    ap.add_argument("--save-params", default=None, metavar="DIR")
    ap.add_argument("--probe-level", default=None, choices=("full", "quick", "tiny"),
                    help="measure the compute probes between the steps (asprof.probe.during)")
    args = ap.parse_args(argv)

    group = init_group()
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from asprof.train.config import TrainConfig
    from asprof.train.data import load_corpus
    from asprof.train.loop import train_process
    from asprof.train.model import n_params

    config = TrainConfig.from_dict(json.loads(args.config))
    corpus = load_corpus(config.data)
    trainers: list = []
    probe = None
    if args.probe_level:
        from asprof.probe.during import ProbeDuringTraining

        probe = ProbeDuringTraining(group, args.probe_level)
    record = train_process(config, group, corpus, on_step=lambda phase, i, loss, dt: heartbeat(i, phase=phase, loss=loss, step_s=dt),
                           keep_trainer=trainers, between=probe.between if probe else None)
    probed = None
    if probe is not None:
        from asprof.traces.host import capture_host

        probe.finish()
        probed = {"records": probe.records, "skipped": probe.skipped, "train_s": probe.train_s, "probe_s": probe.probe_s,
                  "host": capture_host(with_torch=False).to_dict() if group.rank() == 0 else None}
    if args.save_params:
        from pathlib import Path

        Path(args.save_params).mkdir(parents=True, exist_ok=True)
        mx.savez(str(Path(args.save_params) / f"rank{group.rank()}.npz"),
                 **dict(tree_flatten(trainers[0].model.parameters())))
    emit_result({"record": record.to_dict(), "corpus": corpus.describe(), "n_params": n_params(trainers[0].model),
                 "probed": probed})


if __name__ == "__main__":
    main()

"""Run a training configuration: in this process, or as N ranks through asprof.cluster."""

from __future__ import annotations

import json
from typing import Callable

from asprof.errors import AsprofError
from asprof.train.config import TrainConfig
from asprof.train.result import TrainResult, combine

WORKER = "asprof.train.worker"

# on_progress(pass_name, step, steps, loss, seconds) — rank 0's view of the run.
Progress = Callable[[str, int, int, float, float], None]


def run_training(config: TrainConfig, on_progress: Progress | None = None,
                 save_params: str | None = None, hosts: tuple | None = None,
                 worker: str = WORKER, worker_args: tuple = (), rank_results: list | None = None) -> TrainResult:
    """Train as ``config`` says and return the combined result (raises AsprofError /
    DistributedError with one line on anything a user can cause). ``hosts`` (one
    :class:`asprof.cluster.launch.RankHost` per rank, e.g. namespace hosts; ``config.nodes`` must
    equal their number) launches the ranks there instead of on local loopback — even a single
    rank, which then runs as its own process (as does a single-process run where that gets it a
    fast BLAS: :func:`_faster_as_a_rank`). ``worker``: another worker module for the ranks
    (built on asprof.train.worker; it always runs as processes), with ``worker_args`` added to its
    command line; ``rank_results``, a list, receives every rank's whole result, with what such a
    worker added (e.g. asprof.validate.probing_worker's ``probed``)."""
    if hosts is not None:
        if len(hosts) != config.nodes:
            raise AsprofError(f"{len(hosts)} hosts given for a {config.nodes}-rank configuration")
        return _run_distributed(config, on_progress, save_params, hosts=tuple(hosts), worker=worker,
                                worker_args=worker_args, rank_results=rank_results)
    if config.distributed or worker != WORKER:
        return _run_distributed(config, on_progress, save_params, worker=worker, worker_args=worker_args,
                                rank_results=rank_results)
    from asprof.train.data import load_corpus
    from asprof.train.loop import train_process
    from asprof.train.model import n_params

    corpus = load_corpus(config.data)  # here first: a bad --data is one line from this process
    if _faster_as_a_rank():
        return _run_distributed(config, on_progress, save_params)
    trainers: list = []
    cb = None
    if on_progress is not None:
        def cb(phase, i, loss, dt):
            on_progress(phase, i, config.steps, loss, dt)
    record = train_process(config, None, corpus, on_step=cb, keep_trainer=trainers)
    if save_params:
        _save_params(trainers[0].model, save_params)
    return combine(config, [record.to_dict()], corpus.describe(), n_params(trainers[0].model))


def _faster_as_a_rank() -> bool:
    """Whether this process's MLX calls the reference BLAS while a fast one is installed: then a
    single-process run goes to one launched rank, which gets it preloaded (asprof.cluster.launch)."""
    import mlx.core  # noqa: F401  (loads the BLAS that mlx_blas looks for)

    from asprof.cluster.blas import fast_blas_preload, mlx_blas

    return mlx_blas()[0] == "reference" and fast_blas_preload() is not None


def _save_params(model, directory: str) -> None:
    from pathlib import Path

    import mlx.core as mx
    from mlx.utils import tree_flatten

    Path(directory).mkdir(parents=True, exist_ok=True)
    mx.savez(str(Path(directory) / "rank0.npz"), **dict(tree_flatten(model.parameters())))


def _run_distributed(config: TrainConfig, on_progress: Progress | None, save_params: str | None,
                     hosts: tuple | None = None, worker: str = WORKER, worker_args: tuple = (),
                     rank_results: list | None = None) -> TrainResult:
    from asprof.cluster.launch import LaunchSpec, launch

    args = ["--config", json.dumps(config.to_dict())]
    if save_params:
        args += ["--save-params", save_params]
    args += list(worker_args)
    # A refresh of a large model (eigh of every factor on the CPU) can take a while: allow a long
    # stretch without a heartbeat, bounded by the run's own limit (the no-progress rule; a rank
    # that stops altogether is caught sooner by the silence rule, asprof/cluster/watchdog.py).
    spec = LaunchSpec(module=worker, args=tuple(args), nodes=None if config.hostfile or hosts else config.nodes,
                      hostfile=config.hostfile, hosts=hosts, timeout_s=config.timeout_s, backend=config.backend,
                      stall_s=max(60.0, config.timeout_s / 10))

    def on_event(msg):
        if on_progress is not None and msg.get("type") == "heartbeat" and msg.get("rank") == 0:
            step = msg.get("step")
            # the probes measured between the steps (--probe-during) send heartbeats of their own
            if isinstance(step, int) and "loss" in msg:
                on_progress(msg.get("phase", "train"), step, config.steps, float(msg.get("loss", "nan")),
                            float(msg.get("step_s", "nan")))

    results = launch(spec, on_event=on_event)
    records = [r["record"] for r in results]
    if rank_results is not None:
        rank_results.extend(results)
    return combine(config, records, results[0]["corpus"], results[0]["n_params"])

"""Real MLX training for asprof: a small LLaMA (``model``), byte-level text (``data``), a
phase-separated single/multi-process loop (``loop``, ``worker``), results (``result``) and
``run_training`` (``runner``), which `asprof train` and `asprof validate` call.

    from asprof.train.config import TrainConfig
    from asprof.train.runner import run_training
    result = run_training(TrainConfig(optimizer="kpop", steps=50, nodes=2))
"""

"""Optimizers by name: the one place a name (``--optimizer``) becomes an optimizer object."""

from __future__ import annotations

from asprof.optimizers.alice import Alice, Alice0
from asprof.optimizers.base import Adam, PhasedOptimizer, check_positive
from asprof.optimizers.eigen_adam import EigenAdam
from asprof.optimizers.kpop import KPOP, TopKPOP
from asprof.optimizers.racs import RACS
from asprof.optimizers.soap import SOAP


def make_optimizer(name: str, learning_rate, sparsity: float = 1.0, **kwargs) -> PhasedOptimizer:
    """``adam`` | ``kpop`` | ``topkpop`` | ``eigen-adam`` | ``soap`` | ``racs`` | ``alice`` |
    ``alice-0`` by name; ``kwargs`` go to the class (KFAC keyword arguments are ignored for Adam)."""
    check_positive("learning_rate", learning_rate, allow_callable=True)
    if name == "adam":
        for k in ("alpha", "warmup", "frequency", "eig_method"):
            kwargs.pop(k, None)
        return Adam(learning_rate, **kwargs)
    if name == "kpop":
        return KPOP(learning_rate, **kwargs)
    if name == "topkpop":
        return TopKPOP(learning_rate, sparsity=sparsity, **kwargs)
    structured = {"eigen-adam": EigenAdam, "soap": SOAP, "racs": RACS, "alice": Alice, "alice-0": Alice0}
    if name in structured:
        return structured[name](learning_rate, **kwargs)
    raise ValueError(f"unknown optimizer {name!r}; choose adam, kpop, topkpop, {', '.join(structured)}")

"""MLX optimizers: data-parallel Adam, KPOP and TopKPOP (KPOP paper §3), the structured-Fisher
paper's Eigen-Adam, SOAP, RACS, Alice and Alice-0 (paper 004), KFAC factor capture for ``mlx.nn``
models, and the byte-counted all-reduce helper they communicate through.

Quick use::

    from asprof.optimizers import KPOP, attach_kfac, kfac_value_and_grad
    attach_kfac(model)                                  # nn.Linear -> KFACLinear (same params)
    loss_and_grad = kfac_value_and_grad(model, loss_fn)
    opt = KPOP(learning_rate=1e-3)
    loss, grads, factors = loss_and_grad(x, y)
    opt.update(model, grads, factors)
    mx.eval(model.parameters(), opt.state)
"""

import importlib

# name -> module: imported on first use (PEP 562), so that the MLX-free parts of this package
# (accounting.py: the simulator's memory model) never pull MLX in.
_WHERE = {
    "closed_form_state_bytes": "accounting", "state_bytes": "accounting",
    "Adam": "base", "PhasedOptimizer": "base",
    "Communicator": "comm",
    "KFACLinear": "kfac", "attach_kfac": "kfac", "kfac_layers": "kfac", "kfac_value_and_grad": "kfac",
    "canonical_signs": "eigenbasis", "eigh_basis": "eigenbasis", "power_basis": "eigenbasis",
    "KPOP": "kpop", "TopKPOP": "kpop", "reduced_dim": "kpop",
    "make_optimizer": "factory",
    "Alice": "alice", "Alice0": "alice",
    "EigenAdam": "eigen_adam",
    "RACS": "racs",
    "SOAP": "soap",
    "StructuredOptimizer": "structured", "linear_weight_paths": "structured",
}
__all__ = list(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_WHERE))

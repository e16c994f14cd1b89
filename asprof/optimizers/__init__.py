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

from asprof.optimizers.accounting import closed_form_state_bytes, state_bytes
from asprof.optimizers.base import Adam, PhasedOptimizer
from asprof.optimizers.comm import Communicator
from asprof.optimizers.kfac import KFACLinear, attach_kfac, kfac_layers, kfac_value_and_grad
from asprof.optimizers.eigenbasis import canonical_signs, eigh_basis, power_basis
from asprof.optimizers.kpop import KPOP, TopKPOP, reduced_dim
from asprof.optimizers.factory import make_optimizer
from asprof.optimizers.alice import Alice, Alice0
from asprof.optimizers.eigen_adam import EigenAdam
from asprof.optimizers.racs import RACS
from asprof.optimizers.soap import SOAP
from asprof.optimizers.structured import StructuredOptimizer, linear_weight_paths

__all__ = [
    "Adam", "KPOP", "TopKPOP", "PhasedOptimizer", "Communicator", "KFACLinear", "attach_kfac", "kfac_layers",
    "kfac_value_and_grad", "make_optimizer", "closed_form_state_bytes", "state_bytes", "canonical_signs",
    "eigh_basis", "power_basis", "reduced_dim", "EigenAdam", "SOAP", "RACS", "Alice", "Alice0", "StructuredOptimizer",
    "linear_weight_paths",
]

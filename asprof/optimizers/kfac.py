"""KFAC factor capture for ``mlx.nn`` models built from ``nn.Linear`` layers.

For every linear layer W ∈ R^{R×C} (R = out, C = in) KPOP needs, per step, the batch factors
(KPOP paper §3.1, Eq. 2-3; kpop_contract.md step 1)

    C_b = Xᵀ X / B   (C×C)        R_b = ΔYᵀ ΔY / B   (R×R)

where X (B×C) are the layer's inputs over the B tokens of the local batch and ΔY (B×R) the
gradient of the *summed-over-tokens* loss with respect to the layer's outputs.

MLX has no hooks, so the factors must come out of the function transformation itself. DESIGN §5
lists two techniques: (a) add a zero "perturbation" to each layer's output and differentiate with
respect to it, which yields ΔY (B×R per layer) that must then be kept alive and multiplied
outside the backward pass; (b) a linear layer defined with ``mx.custom_function`` whose custom
VJP also returns Xᵀ X / B and ΔYᵀ ΔY / B as the "gradients" of two zero *sink* arguments of
shape C×C and R×R. We use (b): the factors come out of the same ``value_and_grad`` call as the
loss and the gradients, ΔY is consumed inside the backward pass where it exists anyway (no B×R
array per layer outlives the backward), the two extra GEMMs sit next to the weight-gradient
GEMM that already reads X and ΔY, and the whole thing goes through ``mx.compile`` unchanged (the
sinks are ordinary inputs).

Scale: the loss is normally the mean over the B tokens, so the cotangent reaching a layer is
ΔY / B; the VJP multiplies by B (``loss_reduction="mean"``) so that R_b is the contract's
ΔYᵀΔY / B and does not depend on how the global batch is split over ranks. Pass
``loss_reduction="sum"`` for a summed loss.

Usage::

    layers = attach_kfac(model)                      # swaps nn.Linear -> KFACLinear in place
    step = kfac_value_and_grad(model, loss_fn)       # like nn.value_and_grad
    loss, grads, factors = step(x, y)                # factors[path] = {"C": C_b, "R": R_b}

``factors`` is a flat dict keyed by the weight's parameter path (``"layers.0.mlp.up_proj.weight"``),
the same key the optimizers use for routing. Parameter names and counts are unchanged by
:func:`attach_kfac`.
"""

from __future__ import annotations

import fnmatch
from typing import Callable, Iterable

import mlx.core as mx
import mlx.nn as nn

# Output heads are preconditioned with Adam, like embeddings (KPOP paper §3.2).
DEFAULT_EXCLUDE = ("*lm_head", "*head", "output")


def _make_linear(scale_mode: str, with_c: bool, stride: int = 1, dtype: str | None = None):
    """The linear map x @ Wᵀ whose VJP also returns C_b (when ``with_c``) and R_b as the
    gradients of the sinks. A layer whose input another layer of the same capture already took
    (q/k/v, gate/up) uses ``with_c=False``: its C_b is that layer's, not computed again.
    Approximations (off by default): ``stride`` > 1 takes the factors from every stride-th token
    only (an unbiased estimate: the same mean over fewer tokens); ``dtype`` runs the two factor
    GEMMs in a lower precision (accumulated results cast back to float32)."""
    low = getattr(mx, dtype) if dtype else None

    def gram(a):
        a = a[::stride] if stride > 1 else a
        if low is not None:
            return (a.astype(low).T @ a.astype(low)).astype(mx.float32) * (1.0 / a.shape[0])
        return (a.T @ a) / a.shape[0]

    def linear(x, weight, *sinks):
        return x @ weight.T

    def vjp(primals, cotangent, output):
        x, weight = primals[:2]
        x2 = x.reshape(-1, x.shape[-1])
        dy2 = cotangent.reshape(-1, cotangent.shape[-1])
        b = x2.shape[0]
        dx = cotangent @ weight
        dw = dy2.T @ x2
        # mean loss: ΔY_sum = B·dy, so ΔY_sumᵀΔY_sum / B = B·dyᵀdy; sum loss: dy is ΔY already.
        if stride == 1 and low is None:
            r = (dy2.T @ dy2) * b if scale_mode == "mean" else (dy2.T @ dy2) / b
            c = (x2.T @ x2) / b if with_c else None
        else:
            r = gram(dy2 * b if scale_mode == "mean" else dy2)
            c = gram(x2) if with_c else None
        return (dx, dw, r) if c is None else (dx, dw, c, r)

    fn = mx.custom_function(linear)
    fn.vjp(vjp)
    return fn


#: Lower precisions the factor GEMMs may run in (``kfac_value_and_grad(factor_dtype=...)``).
FACTOR_DTYPES = ("float16", "bfloat16")


class _Capture:
    """One :func:`kfac_value_and_grad` call being traced: its custom linear functions, and which
    layer first took each input array (so a layer fed the same array reuses its C_b)."""

    def __init__(self, fns: dict):
        self.fns = fns  # with_c -> the custom linear function
        self.first_of: dict[int, tuple[mx.array, str]] = {}  # id(x) -> (x, path); x kept alive
        self.shares: dict[str, str] = {}  # path -> path of the layer whose C_b it shares


class _Sinks:
    """Holds the zero sink arrays while a capture is traced (a plain object, so ``nn.Module``
    does not register it as a parameter)."""

    def __init__(self, c: mx.array, r: mx.array, capture: _Capture, path: str):
        self.c, self.r, self.capture, self.path = c, r, capture, path


class KFACLinear(nn.Module):
    """Drop-in replacement for ``nn.Linear`` (same ``weight``/``bias`` parameters) that emits its
    KFAC factors when called inside :func:`kfac_value_and_grad`; a plain linear otherwise."""

    def __init__(self, weight: mx.array, bias: mx.array | None = None):
        super().__init__()
        self.weight = weight
        if bias is not None:
            self.bias = bias
        object.__setattr__(self, "_sinks", None)

    @classmethod
    def from_linear(cls, layer: nn.Linear) -> "KFACLinear":
        return cls(layer.weight, layer.get("bias"))

    def _extra_repr(self) -> str:
        r, c = self.weight.shape
        return f"input_dims={c}, output_dims={r}, bias={'bias' in self}"

    def __call__(self, x: mx.array) -> mx.array:
        sinks = self._sinks
        if sinks is None:
            y = x @ self.weight.T
        else:
            cap = sinks.capture
            first = cap.first_of.setdefault(id(x), (x, sinks.path))[1]
            if first == sinks.path:
                y = cap.fns[True](x, self.weight, sinks.c, sinks.r)
            else:
                cap.shares[sinks.path] = first
                y = cap.fns[False](x, self.weight, sinks.r)
        if "bias" in self:
            y = y + self.bias
        return y


def _excluded(name: str, exclude: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pat) for pat in exclude)


def attach_kfac(model: nn.Module, exclude: Iterable[str] = DEFAULT_EXCLUDE) -> list[str]:
    """Replace every ``nn.Linear`` of ``model`` (in place) by a :class:`KFACLinear` sharing its
    parameters, except modules whose path matches a glob in ``exclude`` (output heads by
    default, which KPOP leaves to Adam). Returns the module paths of the KFAC layers, in order.
    Calling it again is harmless (already-wrapped layers are kept)."""
    exclude = tuple(exclude)
    names = []
    for name, module in model.named_modules():
        if isinstance(module, KFACLinear):
            names.append(name)
        elif type(module) is nn.Linear and not _excluded(name, exclude):
            if not name:
                raise ValueError("attach_kfac needs a model that contains nn.Linear layers, not a bare nn.Linear")
            _set_module(model, name, KFACLinear.from_linear(module))
            names.append(name)
    return sorted(names, key=_path_key)


def kfac_layers(model: nn.Module) -> dict[str, KFACLinear]:
    """The :class:`KFACLinear` modules of ``model`` by path."""
    return {name: m for name, m in model.named_modules() if isinstance(m, KFACLinear)}


def _path_key(name: str):
    return [int(p) if p.isdigit() else p for p in name.split(".")]


def _set_module(model: nn.Module, path: str, new: nn.Module) -> None:
    *parents, last = path.split(".")
    obj = model
    for p in parents:
        obj = obj[int(p)] if isinstance(obj, list) else obj[p]
    if isinstance(obj, list):
        obj[int(last)] = new
    else:
        obj[last] = new


def kfac_value_and_grad(model: nn.Module, fn: Callable, loss_reduction: str = "mean", token_stride: int = 1,
                        factor_dtype: str | None = None) -> Callable:
    """Like ``nn.value_and_grad(model, fn)`` but the returned function gives
    ``(value, grads, factors)``, with ``factors[weight_path] = {"C": C_b, "R": R_b}`` for every
    :class:`KFACLinear` of ``model`` (call :func:`attach_kfac` first), all from one
    ``mx.value_and_grad`` call. ``loss_reduction`` says whether ``fn`` is the mean ("mean") or the
    sum ("sum") over the tokens that pass through the layers (it fixes the scale of R_b).

    Approximate, cheaper factors (KPOP is then no longer exact; effect on the loss in
    docs/optimizers.md): ``token_stride`` k > 1 computes them from every k-th token (k× fewer
    factor FLOPs); ``factor_dtype`` "bfloat16" or "float16" runs the factor GEMMs in that precision.
    Exact either way: layers fed the same input array (q/k/v, gate/up) share one C_b."""
    if loss_reduction not in ("mean", "sum"):
        raise ValueError(f"loss_reduction must be 'mean' or 'sum', got {loss_reduction!r}")
    if isinstance(token_stride, bool) or not isinstance(token_stride, int) or token_stride < 1:
        raise ValueError(f"token_stride must be a positive integer, got {token_stride!r}")
    if factor_dtype is not None and factor_dtype not in FACTOR_DTYPES:
        raise ValueError(f"factor_dtype must be None or one of {', '.join(FACTOR_DTYPES)}, got {factor_dtype!r}")
    fns = {with_c: _make_linear(loss_reduction, with_c, token_stride, factor_dtype) for with_c in (True, False)}
    layers = kfac_layers(model)
    if not layers:
        raise ValueError("the model has no KFAC layers: call attach_kfac(model) first")
    # Zero sinks are constants; one pair per layer shape is enough (each call site gets its own
    # cotangent, the sink values themselves are never read).
    sink_cache: dict[tuple[int, int], tuple[mx.array, mx.array]] = {}

    def sinks_for(layer: KFACLinear):
        r, c = layer.weight.shape
        if (r, c) not in sink_cache:
            sink_cache[(r, c)] = (mx.zeros((c, c), mx.float32), mx.zeros((r, r), mx.float32))
        return sink_cache[(r, c)]

    captures: list[_Capture] = []

    def inner(params, sinks, *args, **kwargs):
        model.update(params)
        capture = _Capture(fns)
        captures.append(capture)
        for name, layer in layers.items():
            c, r = sinks[name]
            object.__setattr__(layer, "_sinks", _Sinks(c, r, capture, name))
        try:
            return fn(*args, **kwargs)
        finally:
            for layer in layers.values():
                object.__setattr__(layer, "_sinks", None)

    value_grad = mx.value_and_grad(inner, argnums=(0, 1))

    def wrapped(*args, **kwargs):
        sinks = {name: sinks_for(layer) for name, layer in layers.items()}
        captures.clear()
        value, (grads, sink_grads) = value_grad(model.trainable_parameters(), sinks, *args, **kwargs)
        shares = captures[-1].shares if captures else {}
        factors = {f"{name}.weight": {"C": c, "R": r} for name, (c, r) in sink_grads.items()}
        # A layer that took another's input array gets that layer's C_b, the same array object
        # (KPOP keeps one Ĉ EMA and one eigendecomposition for them).
        for name, first in shares.items():
            factors[f"{name}.weight"]["C"] = factors[f"{first}.weight"]["C"]
        return value, grads, factors

    return wrapped

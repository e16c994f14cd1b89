"""Framework/device adapters for the probes: MLX (gpu, cpu) and PyTorch (mps, cuda, cpu).

A backend exposes the handful of kernels the probes time (matmul, matvec, a vector-Jacobian
product, copy/triad, tiny ops for launch latency) and ``sync``, which forces and awaits a
result: MLX is lazy (``mx.eval``) and GPU frameworks are asynchronous
(``torch.mps.synchronize`` / ``torch.cuda.synchronize``), so the harness calls ``sync`` inside
every timed region. :func:`discover` returns what this machine has and, for what it lacks, the
reason (recorded in the trace as skipped, never an error).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, Callable

DTYPES = ("float32", "float16", "bfloat16")
# Tiny ops for launch latency: the work is negligible, so the time is dispatch + sync.
TINY_OPS = ("add", "mul", "exp", "sum", "matmul")
# Ops that chain (output feeds the next op) for the in-graph dispatch measurement.
CHAIN_OPS = ("add", "mul", "matmul")


def repeat_op(step: Callable[[Any], Any], start: Any, length: int) -> Callable[[], Any]:
    """A callable applying ``step`` ``length`` times, each to the previous result (a chain of
    dependent ops: lazy frameworks build one graph, eager ones dispatch each op as issued)."""

    def run():
        y = start
        for _ in range(length):
            y = step(y)
        return y

    return run


@dataclass(frozen=True)
class Absent:
    """A framework/device this machine cannot run, and why."""

    framework: str
    device: str
    reason: str


class MLXBackend:
    framework = "mlx"

    def __init__(self, device: str):
        import mlx.core as mx

        self.mx = mx
        self.device = device
        self.stream = mx.gpu if device == "gpu" else mx.cpu

    @property
    def name(self) -> str:
        return f"{self.framework}/{self.device}"

    def sync(self, out: Any) -> None:
        self.mx.eval(out)
        if self.device == "gpu":
            self.mx.synchronize()

    def randn(self, shape: tuple[int, ...], dtype: str = "float32", seed: int = 0):
        mx = self.mx
        x = mx.random.normal(shape, key=mx.random.key(seed)).astype(getattr(mx, dtype))
        mx.eval(x)
        return x

    def matmul(self, a, b):
        return self.mx.matmul(a, b, stream=self.stream)

    def vjp(self, a, x, v):
        """Forward y = A·x and the VJP vᵀA of x ↦ A·x through MLX's autodiff; both evaluated."""
        with self.mx.stream(self.stream):
            ys, grads = self.mx.vjp(lambda x_: a @ x_, [x], [v])
        return ys[0], grads[0]

    def copy(self, x):
        # MLX exposes no standalone copy kernel; negation reads and writes each element once,
        # which is exactly the memory traffic of STREAM's copy.
        return self.mx.negative(x, stream=self.stream)

    def triad_fn(self) -> tuple[Callable, bool]:
        """a = b + s·c, fused with mx.compile where this MLX build can (else two kernels)."""
        mx = self.mx

        def triad(b, c):
            return b + 3.0 * c

        try:
            fused = mx.compile(triad)
            probe = mx.ones((4,))
            with mx.stream(self.stream):
                mx.eval(fused(probe, probe))
        except Exception:  # no JIT compiler on this machine: run the two kernels unfused
            fused = None

        def run(b, c):
            with mx.stream(self.stream):
                return (fused or triad)(b, c)

        return run, fused is not None

    def tiny_op(self, name: str) -> Callable[[], Any]:
        """A zero-argument callable running one tiny op on inputs created (and evaluated) now."""
        mx = self.mx
        a = mx.ones((16,))
        b = mx.full((16,), 2.0)
        m = mx.ones((8, 8))
        mx.eval(a, b, m)
        s = self.stream
        ops = {
            "add": lambda: mx.add(a, b, stream=s),
            "mul": lambda: mx.multiply(a, b, stream=s),
            "exp": lambda: mx.exp(a, stream=s),
            "sum": lambda: mx.sum(a, stream=s),
            "matmul": lambda: mx.matmul(m, m, stream=s),
        }
        return ops[name]

    def chain(self, name: str, length: int) -> Callable[[], Any]:
        """A callable building ``length`` dependent tiny ops as one lazy graph (evaluated once by
        the harness's sync): the per-op cost inside a graph, without a sync per op."""
        mx = self.mx
        a = mx.ones((16,))
        m = mx.full((8, 8), 1.0 / 8.0)  # y @ m keeps a ones matrix at ones
        mx.eval(a, m)
        s = self.stream
        step = {"add": lambda y: mx.add(y, a, stream=s), "mul": lambda y: mx.multiply(y, a, stream=s),
                "matmul": lambda y: mx.matmul(y, m, stream=s)}[name]
        start = m if name == "matmul" else a
        return repeat_op(step, start, length)

    def warm_library(self) -> None:
        """Initialise the framework with an op no probe times (so no timed op pays for it)."""
        mx = self.mx
        self.sync(mx.negative(mx.zeros((4,)), stream=self.stream))


class TorchBackend:
    framework = "torch"

    def __init__(self, device: str):
        import torch

        self.torch = torch
        self.device = device
        self._dev = torch.device(device)

    @property
    def name(self) -> str:
        return f"{self.framework}/{self.device}"

    def sync(self, out: Any) -> None:
        if self.device == "cuda":
            self.torch.cuda.synchronize()
        elif self.device == "mps":
            self.torch.mps.synchronize()
        # cpu: eager ops have finished when they return

    def randn(self, shape: tuple[int, ...], dtype: str = "float32", seed: int = 0):
        t = self.torch
        g = t.Generator().manual_seed(seed)
        x = t.randn(*shape, generator=g).to(device=self._dev, dtype=getattr(t, dtype))
        self.sync(x)
        return x

    def matmul(self, a, b):
        return self.torch.matmul(a, b)

    def vjp(self, a, x, v):
        y, pullback = self.torch.func.vjp(lambda x_: a @ x_, x)
        return y, pullback(v)[0]

    def copy(self, x):
        return self.torch.neg(x)

    def triad_fn(self) -> tuple[Callable, bool]:
        t = self.torch
        return (lambda b, c: t.add(b, c, alpha=3.0)), True  # one fused kernel

    def tiny_op(self, name: str) -> Callable[[], Any]:
        t = self.torch
        a = t.ones(16, device=self._dev)
        b = t.full((16,), 2.0, device=self._dev)
        m = t.ones(8, 8, device=self._dev)
        self.sync(m)
        ops = {
            "add": lambda: t.add(a, b),
            "mul": lambda: t.mul(a, b),
            "exp": lambda: t.exp(a),
            "sum": lambda: t.sum(a),
            "matmul": lambda: t.matmul(m, m),
        }
        return ops[name]

    def chain(self, name: str, length: int) -> Callable[[], Any]:
        """``length`` dependent tiny ops issued back to back, one sync at the end (eager
        frameworks dispatch each op as it is issued: this is their per-op dispatch cost)."""
        t = self.torch
        a = t.ones(16, device=self._dev)
        m = t.full((8, 8), 1.0 / 8.0, device=self._dev)
        step = {"add": lambda y: t.add(y, a), "mul": lambda y: t.mul(y, a), "matmul": lambda y: t.matmul(y, m)}[name]
        start = m if name == "matmul" else a
        return repeat_op(step, start, length)

    def warm_library(self) -> None:
        self.sync(self.torch.neg(self.torch.zeros(4, device=self._dev)))


Backend = MLXBackend | TorchBackend


def make_backend(framework: str, device: str) -> Backend:
    return MLXBackend(device) if framework == "mlx" else TorchBackend(device)


def discover(frameworks: tuple[str, ...] = ("mlx", "torch")) -> tuple[list[Backend], list[Absent]]:
    """Every framework/device this machine can run, and the ones it cannot with the reason."""
    have: list[Backend] = []
    absent: list[Absent] = []
    if "mlx" in frameworks:
        if importlib.util.find_spec("mlx") is None:
            absent += [Absent("mlx", d, "mlx is not installed") for d in ("gpu", "cpu")]
        else:
            import mlx.core as mx

            if mx.metal.is_available() or _mlx_cuda(mx):
                have.append(MLXBackend("gpu"))
            else:
                absent.append(Absent("mlx", "gpu", "this MLX build has no GPU backend (no Metal, no CUDA): "
                                     "it runs on the CPU only"))
            have.append(MLXBackend("cpu"))
    if "torch" in frameworks:
        if importlib.util.find_spec("torch") is None:
            absent += [Absent("torch", d, "PyTorch is not installed (pip install 'asprof[torch]')")
                       for d in ("mps", "cuda", "cpu")]
        else:
            import torch

            if torch.backends.mps.is_available():
                have.append(TorchBackend("mps"))
            else:
                absent.append(Absent("torch", "mps", "MPS is not available (needs macOS on Apple silicon)"))
            if torch.cuda.is_available():
                have.append(TorchBackend("cuda"))
            else:
                absent.append(Absent("torch", "cuda", "no CUDA device (or a CPU-only PyTorch build)"))
            have.append(TorchBackend("cpu"))
    return have, absent


def _mlx_cuda(mx) -> bool:
    cuda = getattr(mx, "cuda", None)
    try:
        return bool(cuda and cuda.is_available())
    except Exception:
        return False


def dtype_supported(backend: Backend, dtype: str) -> str | None:
    """None if ``backend`` can matmul in ``dtype``, else the reason it cannot."""
    try:
        a = backend.randn((4, 4), dtype)
        backend.sync(backend.matmul(a, a))
        return None
    except Exception as e:  # e.g. bfloat16 on an old macOS MPS
        return f"{dtype} matmul fails on {backend.name}: {type(e).__name__}: {str(e).splitlines()[0][:120]}"

"""TopKPOP's partial eigensolver against the full ``eigh``, on the factors of a real training run:
how far each method's top-k basis is from ``eigh``'s, and what it costs, side by side.

A TopKPOP run (``eig_method="eigh"``, so every method sees the same sequence of factors) trains the
model; at every refresh after the first, each method updates its own chain of bases from its
previous one (as it would inside the optimizer) and is compared with ``eigh`` of the same factor:

- ``sin θ``: the sine of the largest principal angle between the two k-dimensional subspaces,
  ‖(I − P Pᵀ) Q‖₂ with P the eigh basis (0 = the same subspace). Where λ_k ≈ λ_{k+1} the top-k
  subspace is itself ill-defined, so also:
- ``energy``: tr(QᵀMQ) / (λ_{n−k+1} + … + λ_n), the share of the best possible captured variance
  (1 = as good as eigh).
- ``ms``: the refresh's time over all factors (median over refreshes), each method timed on the
  same factors in turn.

    python benchmarks/bench_partial_eigensolver.py                 # small model, TopKPOP s = 0.1
    python benchmarks/bench_partial_eigensolver.py --steps 100 --sparsity 0.25

On Linux, preload OpenBLAS (see docs/optimizers.md, "Benchmarks").
"""

from __future__ import annotations

import argparse
import statistics
import time

import mlx.core as mx
import numpy as np

from asprof.optimizers.eigenbasis import eigh_basis, power_basis, subspace_basis
from asprof.probe.host import mlx_blas
from asprof.train.config import TrainConfig
from asprof.train.data import load_corpus
from asprof.train.loop import Trainer


def parse():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="small")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--sparsity", type=float, default=0.1)
    ap.add_argument("--frequency", type=int, default=10)
    return ap.parse_args()


METHODS = {
    "subspace x1": lambda m, q: subspace_basis(m, q, 1),
    "subspace x2": lambda m, q: subspace_basis(m, q, 2),
    "subspace x3": lambda m, q: subspace_basis(m, q, 3),
    "power": power_basis,
}


def compare(m: mx.array, q: mx.array, p: np.ndarray, top: float) -> tuple[float, float]:
    qn = np.array(q, dtype=np.float64)
    resid = qn - p @ (p.T @ qn)
    sin = float(np.linalg.norm(resid, 2))
    energy = float(np.trace(qn.T @ np.array(m, dtype=np.float64) @ qn)) / top
    return sin, energy


def main():
    a = parse()
    corpus = load_corpus()
    cfg = TrainConfig.build("topkpop", model=a.model, batch=a.batch, seq=a.seq, sparsity=a.sparsity,
                            frequency=a.frequency, eig_method="eigh", steps=a.steps, lr=3e-3)
    tr = Trainer(cfg, corpus)
    opt = tr.opt
    print(f"model {a.model}, TopKPOP s = {a.sparsity}, f = {a.frequency}, {a.steps} steps; mlx BLAS {mlx_blas()[0]}")
    chains: dict[str, dict] = {name: {} for name in METHODS}
    rows = {name: {"sin": [], "energy": [], "ms": []} for name in ["eigh", *METHODS]}
    for t in range(a.steps):
        x, y = tr.batch(t)
        due = opt.refresh_due()
        tr.step(x, y)
        if not due:
            continue
        factors = {}
        for path in opt.kfac_paths:
            st = opt._state_at(path)
            for f, qk in (("C_hat", "Q_C"), ("R_hat", "Q_R")):
                factors.setdefault(id(st[f]), (f"{path}:{f}", st[f], st[qk].shape[1]))
        if not chains["power"]:  # first refresh: every chain starts from eigh, as in the optimizer
            for name in METHODS:
                chains[name] = {key: eigh_basis(m, k) for key, m, k in factors.values()}
            continue
        times = {}
        t0 = time.perf_counter()
        ref = {key: eigh_basis(m, k) for key, m, k in factors.values()}
        mx.eval(ref)
        times["eigh"] = time.perf_counter() - t0
        for name, fn in METHODS.items():
            t0 = time.perf_counter()
            chains[name] = {key: fn(m, chains[name][key]) for key, m, _ in factors.values()}
            mx.eval(chains[name])
            times[name] = time.perf_counter() - t0
        for key, m, k in factors.values():
            vals = np.linalg.eigvalsh(np.array(m, dtype=np.float64))
            top = float(vals[-k:].sum())
            p = np.array(ref[key], dtype=np.float64)
            for name in ["eigh", *METHODS]:
                sin, energy = compare(m, ref[key] if name == "eigh" else chains[name][key], p, top)
                rows[name]["sin"].append(sin)
                rows[name]["energy"].append(energy)
        for name, dt in times.items():
            rows[name]["ms"].append(dt * 1e3)
    n = len(rows["eigh"]["ms"])
    print(f"\n{n} refreshes compared (after the first), {len(factors)} distinct factors each\n")
    print(f"{'method':<14}{'median sin θ':>14}{'max sin θ':>11}{'min energy':>12}{'median energy':>15}"
          f"{'ms/refresh':>12}{'vs eigh':>9}")
    base = statistics.median(rows["eigh"]["ms"])
    for name, r in rows.items():
        ms = statistics.median(r["ms"])
        print(f"{name:<14}{statistics.median(r['sin']):>14.2e}{max(r['sin']):>11.2e}{min(r['energy']):>12.6f}"
              f"{statistics.median(r['energy']):>15.6f}{ms:>12.1f}{ms / base:>8.2f}x")


if __name__ == "__main__":
    main()

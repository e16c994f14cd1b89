"""A GEMM's in-graph time at any (m, n, k), from the blas probe's shape grid (op ``matmul_shape``).

The probe times every (m, n, k) of a log grid of dimensions in each operand layout
(asprof.probe.blas_shapes). :class:`ShapeGrid` interpolates log time trilinearly in
(log m, log n, log k) between those points. Outside the grid a dimension is clamped to it:
above the largest measured dimension the time grows in proportion to the excess (the rate of
the largest measured shape holds, as it does once a BLAS is saturated); below the smallest it
stays at the smallest's time (a tiny GEMM costs its overhead, not its flop).

Measurements of the same point (a cluster probe's ranks and rounds) are averaged, as in
:class:`asprof.simulate.curves.Curve`.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from itertools import product
from statistics import fmean


@dataclass(frozen=True)
class ShapeGrid:
    dims: tuple[int, ...]  # the measured dimensions, increasing
    log_t: tuple[float, ...]  # log seconds at (dims[i], dims[j], dims[l]), index (i * D + j) * D + l

    @classmethod
    def fit(cls, points: list[tuple[int, int, int, float]]) -> "ShapeGrid | None":
        """From (m, n, k, seconds) points over dims³ (None with fewer than two dimensions). A
        point the probe skipped (the largest shapes, estimated over its per-call limit) takes
        the rate of the largest measured points it dominates in every dimension (the geometric
        mean of their rates where several have the same flop count)."""
        by: dict[tuple[int, int, int], list[float]] = {}
        for m, n, k, t in points:
            if t and t > 0 and math.isfinite(t) and min(m, n, k) > 0:
                by.setdefault((int(m), int(n), int(k)), []).append(float(t))
        dims = sorted({d for key in by for d in key})
        if len(dims) < 2:
            return None
        measured = {key: fmean(ts) for key, ts in by.items()}
        log_t = []
        for key in product(dims, dims, dims):
            if key in measured:
                log_t.append(math.log(measured[key]))
                continue
            below = [b for b in measured if all(x <= y for x, y in zip(b, key))]
            if not below:
                return None
            top = max(math.prod(b) for b in below)
            rates = [math.log(measured[b] / top) for b in below if math.prod(b) == top]
            log_t.append(fmean(rates) + math.log(math.prod(key)))
        return cls(tuple(dims), tuple(log_t))

    def _at(self, i: int, j: int, l: int) -> float:
        d = len(self.dims)
        return self.log_t[(i * d + j) * d + l]

    def _axis(self, x: float) -> tuple[int, float]:
        """The cell index along one axis and the log-space weight of its upper end."""
        dims = self.dims
        x = min(max(x, dims[0]), dims[-1])
        i = min(bisect.bisect_right(dims, x) - 1, len(dims) - 2)
        return i, math.log(x / dims[i]) / math.log(dims[i + 1] / dims[i])

    def __call__(self, m: float, n: float, k: float) -> float:
        """Seconds of one (m×k)·(k×n) GEMM inside a graph."""
        (i, wi), (j, wj), (l, wl) = self._axis(m), self._axis(n), self._axis(k)
        log_t = 0.0
        for di, fi in ((0, 1 - wi), (1, wi)):
            for dj, fj in ((0, 1 - wj), (1, wj)):
                for dl, fl in ((0, 1 - wl), (1, wl)):
                    if fi * fj * fl:
                        log_t += fi * fj * fl * self._at(i + di, j + dj, l + dl)
        top = self.dims[-1]
        excess = max(1.0, m / top) * max(1.0, n / top) * max(1.0, k / top)
        return math.exp(log_t) * excess

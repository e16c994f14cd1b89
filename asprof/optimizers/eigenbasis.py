"""The eigenbasis helpers the KFE/eigenbasis optimizers share (KPOP, TopKPOP, Eigen-Adam, SOAP,
Alice, the structured family): sign-canonical bases from a full ``eigh`` or one subspace power step.

Column-eigenvector convention (DESIGN §5): a basis holds eigenvectors as columns, ascending by
eigenvalue, each column's largest-magnitude entry positive so every rank holds the same basis.
"""

from __future__ import annotations

import mlx.core as mx

from asprof.spec import SUBSPACE_ITERATIONS


def canonical_signs(q: mx.array) -> mx.array:
    """Flip each column so its largest-magnitude entry is positive (first such entry on ties):
    eigenvectors are defined up to sign, and every rank must hold the identical basis."""
    idx = mx.argmax(mx.abs(q), axis=0)
    pivot = mx.take_along_axis(q, idx[None, :], axis=0)
    return q * mx.where(pivot < 0, -1.0, 1.0).astype(q.dtype)


def eigh_basis(m: mx.array, k: int) -> mx.array:
    """The eigenvectors of the top ``k`` eigenvalues of symmetric ``m``, ascending, sign-canonical.
    ``eigh`` runs on the CPU stream (the only place MLX implements it; DESIGN §5)."""
    _, vecs = mx.linalg.eigh(m, stream=mx.cpu)
    n = m.shape[0]
    return canonical_signs(vecs[:, n - k:] if k < n else vecs)


def power_basis(m: mx.array, q: mx.array) -> mx.array:
    """One step of (subspace) power iteration from the previous basis ``q`` (n×k): Q ← QR(M·Q)
    (KPOP paper §3.2, after SOAP), then columns sorted by the Rayleigh quotients diag(QᵀMQ),
    ascending, and sign-canonical. The QR runs on the CPU stream."""
    z = m @ q
    qn, _ = mx.linalg.qr(z, stream=mx.cpu)
    rayleigh = mx.sum(qn * (m @ qn), axis=0)
    order = mx.argsort(rayleigh)
    return canonical_signs(mx.take(qn, order, axis=1))


def subspace_basis(m: mx.array, q: mx.array, iterations: int = SUBSPACE_ITERATIONS) -> mx.array:
    """The top ``k`` eigenvectors of symmetric positive semi-definite ``m`` (n×n) by block power
    (subspace) iteration warm-started from the previous basis ``q`` (n×k): ``iterations`` steps
    Q ← QR(M·Q), then Rayleigh–Ritz (the eigenvectors V of the k×k QᵀMQ turn Q into the Ritz
    vectors QV), ascending, sign-canonical. O(n²k) per step and O(k³) for the small ``eigh``,
    against O(n³) for the full one, so a refresh costs in proportion to the vectors kept. Between
    refreshes the factor EMAs move little, so the previous basis is a good start and the steps of
    successive refreshes add up. QR and the small ``eigh`` run on the CPU stream."""
    for _ in range(iterations):
        q, _ = mx.linalg.qr(m @ q, stream=mx.cpu)
    h = q.T @ (m @ q)
    _, v = mx.linalg.eigh(0.5 * (h + h.T), stream=mx.cpu)
    return canonical_signs(q @ v)

"""Human-readable numbers for the text output of every command (no I/O)."""

from __future__ import annotations


def si(value: float, unit: str) -> str:
    """Decimal (SI) prefixes: 4.1 GFLOP/s, 12 GB/s."""
    shown = abs(float(f"{value:.3g}"))  # 999.97 shows as 1e+03: take the prefix of the rounded value
    for prefix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if shown >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def count(value: float) -> str:
    """A rate or count with k / M: 12.3 k, 4.56 M."""
    return si(value, "").rstrip()


def seconds(value: float, digits: int = 3) -> str:
    """Seconds in s, ms or us with ``digits`` significant digits; exactly zero is "0"."""
    if value == 0:
        return "0"
    shown = abs(float(f"{value:.{digits}g}"))  # the prefix of the rounded value (0.99997 s is 1 s)
    if shown >= 1:
        return f"{value:.{digits}g} s"
    if shown >= 1e-3:
        return f"{value * 1e3:.{digits}g} ms"
    return f"{value * 1e6:.{digits}g} us"


def nbytes(value: float) -> str:
    """Binary prefixes: 1.5 MiB."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.0f} B"

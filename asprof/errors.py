"""User-facing errors.

Anything a user can cause (a bad flag value, a corrupt trace, a missing probe, a rank that
died) raises :class:`AsprofError` with one line that says what, where and what to do. The CLI
prints that line and exits non-zero; it never shows a traceback for these.
"""


class AsprofError(Exception):
    """An error caused by input or environment, reported to the user as one line."""

    exit_code = 2


class TraceError(AsprofError):
    """A trace file that cannot be read, is not a trace, or fails validation."""


class MissingProbeError(AsprofError):
    """A trace lacks a measurement that a model needs; the message names the probe to run."""


class DistributedError(AsprofError):
    """A distributed run failed: a rank died, never connected, or hung."""

    exit_code = 3

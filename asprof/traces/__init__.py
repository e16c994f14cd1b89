"""The trace format (schema v1), its loader/writer and the bundled reference profiles."""

from asprof.traces.io import load_trace, newest_trace, save_trace
from asprof.traces.profiles import DEFAULT_PROFILE, load_profile, profile_names
from asprof.traces.schema import SCHEMA, VERSION, Host, Record, Skip, Timing, Trace

__all__ = [
    "SCHEMA", "VERSION", "Host", "Record", "Skip", "Timing", "Trace",
    "load_trace", "save_trace", "newest_trace", "load_profile", "profile_names", "DEFAULT_PROFILE",
]

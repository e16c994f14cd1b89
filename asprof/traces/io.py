"""Reading and writing trace files: atomic writes, one validating loader (DESIGN §2)."""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from asprof.errors import TraceError
from asprof.traces.schema import SchemaError, Trace


def load_trace(path: str | os.PathLike) -> Trace:
    """Load and validate a trace; any problem raises :class:`TraceError` naming path and field."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TraceError(f"{p}: no such trace file") from None
    except IsADirectoryError:
        raise TraceError(f"{p}: is a directory, not a trace file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise TraceError(f"{p}: cannot read trace ({e.__class__.__name__}: {e})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise TraceError(f"{p}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    try:
        return Trace.from_dict(data)
    except SchemaError as e:
        raise TraceError(f"{p}: not a valid asprof trace: {e}") from None


def dumps_trace(trace: Trace) -> str:
    return json.dumps(trace.to_dict(), indent=1, allow_nan=False) + "\n"


def save_trace(trace: Trace, path: str | os.PathLike) -> Path:
    """Write ``trace`` atomically (temp file in the same directory, then rename)."""
    return write_atomic(path, dumps_trace(trace))


def write_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write text so that readers see either the old file or the whole new one, never half."""
    p = Path(path)
    directory = p.parent if str(p.parent) else Path(".")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=directory)
    except OSError as e:
        raise TraceError(f"{p}: cannot write here ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; a trace is an ordinary file
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return p


def check_writable(path: str | os.PathLike) -> Path:
    """Fail early, before any measuring, if ``path`` cannot be written."""
    p = Path(path)
    if p.is_dir():
        raise TraceError(f"{p}: is a directory; give a file name for --out")
    probe = p.with_name(f".{p.name}.check")
    try:
        write_atomic(probe, "")
        os.unlink(probe)
    except TraceError:
        raise TraceError(f"{p}: cannot write here (check the directory exists and is writable)") from None
    return p


class TraceWriter:
    """Keeps a trace on disk up to date as records arrive, so Ctrl-C keeps what was measured."""

    def __init__(self, trace: Trace, path: str | os.PathLike):
        self.trace = trace
        self.path = Path(path)
        save_trace(self.trace, self.path)

    def add(self, records=(), skipped=()) -> None:
        self.trace = self.trace.with_records(records, skipped)
        save_trace(self.trace, self.path)


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def default_trace_path(hostname: str, directory: str | os.PathLike = "traces") -> Path:
    """`traces/<host>-<UTC time>.json` (DESIGN §1)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in hostname) or "host"
    return Path(directory) / f"{safe}-{stamp}.json"


def newest_trace(directory: str | os.PathLike = "traces") -> Path | None:
    """The most recently written `*.json` trace in ``directory``, or None."""
    d = Path(directory)
    if not d.is_dir():
        return None
    files = [p for p in d.glob("*.json") if p.is_file() and not p.name.startswith(".")]
    return max(files, key=lambda p: p.stat().st_mtime) if files else None

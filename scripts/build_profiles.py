"""Regenerate the bundled reference profiles (asprof/traces/profiles/*.json) from the
published figures in asprof/traces/profiles.py. A test checks the committed files are current."""

import sys
from pathlib import Path

from asprof.traces.profiles import write_profiles

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "asprof/traces/profiles"
for p in write_profiles(out):
    print(p)

"""Where power can be read, and the parsers of each source's own output.

- macOS: ``macmon pipe`` (github.com/vladkens/macmon; IOReport without sudo, as ``powermetrics``
  reads it with sudo) prints one JSON object per sample with ``cpu_power``, ``gpu_power``,
  ``ram_power`` (DRAM), ``sys_power`` ... in watts.
- Linux: powercap / RAPL, ``/sys/class/powercap/intel-rapl:N[:M]/{name,energy_uj,max_energy_range_uj}``,
  an energy counter in µJ that wraps at ``max_energy_range_uj`` (often readable by root only).
- NVIDIA: NVML through ``nvidia-smi --query-gpu=index,power.draw --format=csv,noheader,nounits``,
  one ``index, watts`` line per GPU (``[N/A]`` where the board does not report it).

A :class:`Source` measures the mean power of each of its domains over a callable's run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

POWERCAP = Path("/sys/class/powercap")
MACMON_DOMAINS = {"cpu_power": "cpu", "gpu_power": "gpu", "ram_power": "dram", "ane_power": "ane", "sys_power": "system"}


# -- parsers (pure: text in, watts out) -----------------------------------------------------------
def parse_macmon(lines: str) -> list[dict[str, float]]:
    """``macmon pipe`` output: per sample, domain -> watts."""
    out = []
    for line in lines.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        d = json.loads(line)
        out.append({dom: float(d[key]) for key, dom in MACMON_DOMAINS.items() if isinstance(d.get(key), (int, float))})
    return out


def parse_nvidia_smi(text: str) -> dict[str, list[float]]:
    """``nvidia-smi --query-gpu=index,power.draw --format=csv,noheader,nounits`` (one or more
    samples): ``gpuN`` -> watts per sample; GPUs reporting ``[N/A]`` are left out."""
    out: dict[str, list[float]] = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 2 or not parts[0].isdigit():
            continue
        try:
            watts = float(parts[1])
        except ValueError:  # [N/A]
            continue
        out.setdefault(f"gpu{parts[0]}", []).append(watts)
    return out


def rapl_domains(root: Path = POWERCAP) -> dict[str, Path]:
    """RAPL zones under ``root``: name (package-0, dram, core, ...) -> zone directory."""
    out = {}
    for zone in sorted(root.glob("intel-rapl:*")):
        try:
            name = (zone / "name").read_text().strip()
        except OSError:
            continue
        out[f"{name}" if name not in out else f"{name}-{zone.name}"] = zone
    return out


def rapl_watts(before_uj: int, after_uj: int, seconds: float, max_range_uj: int) -> float:
    """Mean watts from two readings of a RAPL energy counter (it wraps at ``max_range_uj``)."""
    delta = after_uj - before_uj
    if delta < 0:
        delta += max_range_uj
    return delta * 1e-6 / seconds


# -- sources --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    name: str  # "ioreport (macmon)", "rapl", "nvml (nvidia-smi)"
    measure: Callable[[Callable[[], None], float], dict[str, float]]  # (work, seconds) -> domain -> W


def _run_for(work: Callable[[], None], seconds: float) -> float:
    t0 = time.perf_counter()
    while True:  # at least once
        work()
        if time.perf_counter() - t0 >= seconds:
            return time.perf_counter() - t0


def _rapl(root: Path = POWERCAP) -> Source | str:
    zones = rapl_domains(root)
    if not zones:
        return f"no RAPL zones under {root} (no Intel/AMD powercap driver here)"
    try:
        for z in zones.values():
            int((z / "energy_uj").read_text())
    except (OSError, ValueError) as e:
        return f"RAPL energy counters are not readable ({getattr(e, 'strerror', None) or e}; root only on most kernels)"

    def measure(work, seconds):
        read = {n: int((z / "energy_uj").read_text()) for n, z in zones.items()}
        dt = _run_for(work, seconds)
        return {n: rapl_watts(read[n], int((z / "energy_uj").read_text()), dt,
                              int((z / "max_energy_range_uj").read_text())) for n, z in zones.items()}
    return Source("rapl", measure)


def _sampler(name: str, cmd: list[str], parse: Callable[[str], dict[str, list[float]]]) -> Source:
    def measure(work, seconds):
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            _run_for(work, seconds)
        finally:
            p.terminate()
            out, _ = p.communicate(timeout=10)
        samples = parse(out)
        return {d: sum(v) / len(v) for d, v in samples.items() if v}
    return Source(name, measure)


def _macmon() -> Source | str:
    if shutil.which("macmon") is None:
        return "no macmon on PATH (brew install macmon: IOReport power without sudo)"

    def parse(text):
        rows = parse_macmon(text)
        return {d: [r[d] for r in rows if d in r] for d in MACMON_DOMAINS.values()}
    return _sampler("ioreport (macmon)", ["macmon", "pipe", "-i", "200"], parse)


def _nvml() -> Source | str:
    if shutil.which("nvidia-smi") is None:
        return "no nvidia-smi on PATH (no NVIDIA driver)"
    try:
        probe = subprocess.run(["nvidia-smi", "--query-gpu=index,power.draw", "--format=csv,noheader,nounits"],
                               capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"nvidia-smi failed: {e}"
    if probe.returncode != 0 or not parse_nvidia_smi(probe.stdout):
        return "nvidia-smi reports no GPU power (power.draw is [N/A] or no GPU)"
    return _sampler("nvml (nvidia-smi)", ["nvidia-smi", "--query-gpu=index,power.draw",
                                         "--format=csv,noheader,nounits", "-lms", "200"], parse_nvidia_smi)


def available_sources() -> tuple[list[Source], list[str]]:
    """(readable sources, reasons the others are not)."""
    found, why = [], []
    for make in (_macmon, _rapl, _nvml):
        s = make()
        (found if isinstance(s, Source) else why).append(s)
    return found, why

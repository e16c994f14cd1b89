"""Where local ranks listen and run: free ports for the ring (below the kernel's ephemeral
range, so no other connection can take one between our check and the rank's bind) and the cores
each rank is held to where local ranks outnumber the cores."""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

from asprof.errors import DistributedError


def free_ports(n: int, host: str = "127.0.0.1", rng: random.Random | None = None) -> list[int]:
    """n distinct ports that are free right now, chosen below the kernel's ephemeral range.

    We release them before the ranks bind them. A port from the ephemeral range (the OS's
    choice for ``bind(0)``) could meanwhile become the local port of any ``connect()``, e.g. a
    rank joining the ring, and its owner would then fail to listen; ports below that range are
    never handed out that way.
    """
    lo, hi = _listen_range()
    if hi - lo < 4 * n:
        return _os_ports(n, host)
    rng = rng or random.Random()
    ports: list[int] = []
    for _ in range(64 * n):
        p = rng.randint(lo, hi)
        if p in ports:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, p))
            except OSError:
                continue
        ports.append(p)
        if len(ports) == n:
            return ports
    raise DistributedError(f"no {n} free ports on {host} between {lo} and {hi}")


def _listen_range() -> tuple[int, int]:
    """Ports below the ephemeral range (Linux: ip_local_port_range, 32768-60999 by default;
    macOS: 49152-65535), above the ones services usually take."""
    first = 32768
    try:
        first = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return 20000, min(first, 49152) - 1


def _os_ports(n: int, host: str) -> list[int]:
    """n ports the OS picks (from its ephemeral range), released for the ranks."""
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def rank_cpus(size: int, cpus: list[int] | None = None) -> list[set[int] | None]:
    """The cores each of ``size`` ranks on this machine is held to (None: wherever the OS puts it).

    Where the ranks outnumber the cores, rank r is held to core r mod c, so every core serves
    the same number of ranks (two and two for 4 ranks on 2 cores), as if each emulated host had
    its own share of the machine. Left to itself the OS sometimes runs one rank alone on a core
    and three on the other for seconds at a time; those three then set every step's pace
    (docs/validate.md §6.1). With a core or more per rank, or where a process cannot be pinned
    (macOS), the OS places them. ``cpus``: the cores to share (default: this process's).
    """
    if cpus is None:
        if not hasattr(os, "sched_getaffinity"):
            return [None] * size
        cpus = sorted(os.sched_getaffinity(0))
    if size <= len(cpus):
        return [None] * size
    return [{cpus[r % len(cpus)]} for r in range(size)]

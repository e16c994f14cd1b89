"""A real multi-host ring on one Linux machine: network namespaces, veth pairs, a bridge, and
each host's outbound link shaped with the `tbf` qdisc (DESIGN §6; `netem` is not available).

Layout, for N hosts of one ring (all names carry a per-ring id so rings never collide)::

    ns <id>-h0  veth 10.213.X.1 ─┐
    ns <id>-h1  veth 10.213.X.2 ─┼─ bridge in ns <id>-sw   (nothing in the root namespace)
    ...                         ─┘

Each host's veth egress gets ``tbf rate R``: like a Thunderbolt port, every node sends at most R
while it receives from its other neighbour at the same time (full duplex). MLX's ring backend
then runs across the namespaces with ``MLX_HOSTFILE`` listing the hosts' addresses; see
:func:`asprof.cluster.launch.launch` with ``hosts=``.

Needs root (CAP_NET_ADMIN). Everything is removed on exit, on error and on Ctrl-C.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from asprof.cluster.launch import RankHost
from asprof.errors import AsprofError

PREFIX = "asprof"
_count = iter(range(10**6))


@dataclass(frozen=True)
class NetnsRing:
    nodes: int
    rate_mbit: float | None = None  # per-host outbound rate; None leaves links unshaped
    # default: our pid and a counter, so concurrent rings (other runs, CI) never collide
    ring_id: str = field(default_factory=lambda: f"{os.getpid() % 100000}{next(_count) % 10}")

    def __post_init__(self):
        if not isinstance(self.nodes, int) or self.nodes < 1:
            raise AsprofError(f"a namespace ring needs at least one host, got {self.nodes!r}")
        if self.nodes > 250:
            raise AsprofError("a namespace ring holds at most 250 hosts")
        if self.rate_mbit is not None and not self.rate_mbit > 0:
            raise AsprofError(f"link rate must be positive, got {self.rate_mbit!r} Mbit/s")

    @property
    def id(self) -> str:
        return self.ring_id

    def ns(self, i: int) -> str:
        return f"{PREFIX}{self.id}-h{i}"

    @property
    def switch(self) -> str:
        return f"{PREFIX}{self.id}-sw"

    def ip(self, i: int) -> str:
        return f"10.213.{int(self.id) % 250}.{i + 1}" if self.id.isdigit() else f"10.213.0.{i + 1}"


def why_unavailable() -> str | None:
    """None when namespace rings can be built here, else the reason (for skips and errors)."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "building network namespaces needs root"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"the `{tool}` command (iproute2) is not installed"
    return None


def _run(*cmd: str) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise AsprofError(f"`{' '.join(cmd)}` failed: {r.stderr.strip() or r.returncode}")


def tbf_args(rate_mbit: float) -> list[str]:
    """tbf parameters for a link of ``rate_mbit``.

    The bucket must hold at least one full GSO segment (64 KiB on veth) or tbf drops it; we
    allow 2 ms of traffic at the line rate, at least 128 KiB. The queue may hold 50 ms.
    """
    rate_Bps = rate_mbit * 1e6 / 8
    burst = max(int(rate_Bps * 0.002), 128 * 1024)
    return ["rate", f"{rate_mbit:g}mbit", "burst", str(burst), "latency", "50ms"]


def plug_in(ring: NetnsRing, ns: str, tag: str, ip: str) -> str:
    """Join namespace ``ns`` to the ring's bridge by a veth pair (as<id>h<tag> in it,
    as<id>s<tag> on the bridge) with address ``ip``; returns the namespace's end (the interface
    a tbf shapes)."""
    host_if, sw_if = f"as{ring.id}h{tag}", f"as{ring.id}s{tag}"
    _run("ip", "link", "add", host_if, "type", "veth", "peer", "name", sw_if)
    _run("ip", "link", "set", host_if, "netns", ns)
    _run("ip", "link", "set", sw_if, "netns", ring.switch)
    _run("ip", "-n", ring.switch, "link", "set", sw_if, "master", "br0")
    _run("ip", "-n", ring.switch, "link", "set", sw_if, "up")
    _run("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", host_if)
    _run("ip", "-n", ns, "link", "set", host_if, "up")
    _run("ip", "-n", ns, "link", "set", "lo", "up")
    return host_if


@contextmanager
def namespace_ring(ring: NetnsRing) -> Iterator[list[RankHost]]:
    """Build the ring, yield one :class:`RankHost` per host, and always tear it down."""
    reason = why_unavailable()
    if reason:
        raise AsprofError(f"cannot build a namespace ring: {reason}")
    created: list[str] = []
    try:
        _run("ip", "netns", "add", ring.switch)
        created.append(ring.switch)
        _run("ip", "-n", ring.switch, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", ring.switch, "link", "set", "br0", "up")
        for i in range(ring.nodes):
            ns = ring.ns(i)
            _run("ip", "netns", "add", ns)
            created.append(ns)
            host_if = plug_in(ring, ns, str(i), ring.ip(i))
            if ring.rate_mbit is not None:
                _run("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", host_if, "root", "tbf",
                     *tbf_args(ring.rate_mbit))
        yield [RankHost(ring.ip(i), ("ip", "netns", "exec", ring.ns(i))) for i in range(ring.nodes)]
    finally:
        _teardown(created)


def host_link(ring: NetnsRing, i: int) -> tuple[str, str]:
    """(namespace, interface) of host i's link to the switch."""
    return ring.ns(i), f"as{ring.id}h{i}"


def set_link(ring: NetnsRing, i: int, up: bool) -> None:
    """Take host i's link down (its peers' packets are lost; TCP retries) or bring it back."""
    ns, dev = host_link(ring, i)
    _run("ip", "-n", ns, "link", "set", dev, "up" if up else "down")


def shape_link(ring: NetnsRing, i: int, rate_mbit: float) -> None:
    """Change host i's outbound rate now (tbf, replacing whatever shaped it), e.g. mid-run."""
    ns, dev = host_link(ring, i)
    _run("ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", dev, "root", "tbf", *tbf_args(rate_mbit))


def _teardown(namespaces: list[str]) -> None:
    # Deleting a namespace removes its interfaces; a veth pair dies with either end.
    for ns in reversed(namespaces):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def leftover_namespaces() -> list[str]:
    """asprof namespaces that exist now (to check cleanup, or to remove after a hard kill)."""
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    names = [line.split()[0] for line in r.stdout.splitlines() if line.strip()]
    return [n for n in names if n.startswith(PREFIX)]

"""Namespace rings: real hosts (network namespaces) with tbf-shaped links, MLX ring across them."""

import pytest

from asprof.cluster.launch import LaunchSpec, launch
from asprof.cluster.netns import NetnsRing, leftover_namespaces, namespace_ring, why_unavailable
from asprof.errors import AsprofError

reason = why_unavailable()
pytestmark = [pytest.mark.netns, pytest.mark.distributed,
              pytest.mark.skipif(reason is not None, reason=reason or "")]
WORKER = "asprof.cluster.echo_worker"


def test_ring_across_namespaces_is_shaped_and_cleaned_up():
    before = set(leftover_namespaces())
    ring = NetnsRing(nodes=2, rate_mbit=100)
    nbytes = 2 * 2**20
    with namespace_ring(ring) as hosts:
        assert [h.ip for h in hosts] == [ring.ip(0), ring.ip(1)]
        assert set(leftover_namespaces()) - before == {ring.ns(0), ring.ns(1), ring.switch}
        results = launch(LaunchSpec(module=WORKER, args=("--steps", "2", "--bytes", str(nbytes)),
                                    hosts=tuple(hosts)))
    assert all(r["sum"] == 3.0 and r["correct"] for r in results)
    # A ring all-reduce sends 2(K-1)/K * S bytes over each link: at 100 Mbit/s it cannot be
    # faster than that (the link is the bottleneck); unshaped loopback would take ~1 ms.
    floor_s = 2 * (2 - 1) / 2 * nbytes * 8 / 100e6
    assert min(results[0]["times_s"]) > 0.8 * floor_s
    assert set(leftover_namespaces()) == before


def test_namespaces_are_removed_when_the_body_fails():
    before = set(leftover_namespaces())
    with pytest.raises(RuntimeError):
        with namespace_ring(NetnsRing(nodes=3)):
            raise RuntimeError("boom")
    assert set(leftover_namespaces()) == before


def test_bad_ring_parameters():
    with pytest.raises(AsprofError, match="at least one host"):
        NetnsRing(nodes=0)
    with pytest.raises(AsprofError, match="must be positive"):
        NetnsRing(nodes=2, rate_mbit=0)

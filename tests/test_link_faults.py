"""Link faults on a real namespace ring (root only): a host's link taken down in the middle of the
all-reduces and brought back 3 s later, and a link slowed 10× mid-run. train, validate and probe
either go on after the transient or end within 30 s with one line naming the rank; either way
nothing is left behind (`ip netns list`, `ip link`, processes, listening ports)."""

import re
import subprocess
import sys
import threading
import time

import psutil
import pytest

from asprof.cluster.netns import NetnsRing, leftover_namespaces, namespace_ring, set_link, shape_link, why_unavailable
from asprof.errors import DistributedError

pytestmark = [pytest.mark.netns, pytest.mark.distributed, pytest.mark.slow,
              pytest.mark.skipif(why_unavailable() is not None, reason=str(why_unavailable()))]
WORKERS = ("asprof.train.worker", "asprof.probe.allreduce_worker", "asprof.probe.cluster_worker")
RATE = 1000.0
DOWN_S = 3.0


def fault(kind: str, ring: NetnsRing) -> None:
    """Host 1's link: down for DOWN_S and back, or its rate cut to a tenth."""
    if kind == "down":
        set_link(ring, 1, up=False)
        time.sleep(DOWN_S)
        set_link(ring, 1, up=True)
    else:
        shape_link(ring, 1, RATE / 10)


TAG = "ASPROF_FAULT_TEST"  # set while a test runs; every rank it starts inherits it, orphans too


@pytest.fixture(autouse=True)
def _tagged(monkeypatch):
    monkeypatch.setenv(TAG, str(psutil.Process().pid))


def _workers() -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(w in (p.info["cmdline"] or []) for w in WORKERS) and p.environ().get(TAG) == str(psutil.Process().pid):
                out.append(p)
        except psutil.Error:
            pass
    return out


def _parents(p):
    try:
        return p.parents()
    except psutil.Error:
        return []


def nothing_left(ring_id: str) -> None:
    time.sleep(0.5)
    # ours only: other runs (CI's, a neighbour's) may hold namespaces of their own meanwhile
    assert not [n for n in leftover_namespaces() if n.startswith(f"asprof{ring_id}-")], "namespaces left"
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert f"as{ring_id}" not in links, "an interface (veth/bridge) left in the root namespace"
    assert _workers() == [], "rank processes left"


def outcome(run, kind: str, ring: NetnsRing, start_fault: threading.Event):
    """Run ``run()`` (raises DistributedError or returns); inject the fault once ``start_fault`` is set.
    Returns ("continued", None) or ("ended", (message, seconds from the fault to the end))."""
    injected = {}

    def injector():
        if start_fault.wait(120):
            injected["t"] = time.monotonic()
            fault(kind, ring)

    th = threading.Thread(target=injector, daemon=True)
    th.start()
    try:
        run()
        assert "t" in injected, "the run was over before the fault"
        result = ("continued", time.monotonic() - injected["t"])
    except DistributedError as e:
        result = ("ended", (str(e), time.monotonic() - injected.get("t", time.monotonic())))
    start_fault.set()  # a run that ended before its trigger: let the injector go
    th.join()
    return result


def _check(result, kind):
    how, detail = result
    print(f"{kind}: {how} {detail}")
    if how == "continued" and kind == "down":
        assert detail > DOWN_S, "the run finished while the link was down: it was not in flight"
    if how == "ended":
        msg, took = detail
        assert re.search(r"rank \d|link", msg), msg
        assert took < 30 + (DOWN_S if kind == "down" else 0), (took, msg)


@pytest.mark.parametrize("kind", ["down", "slow"])
def test_train_through_a_link_fault(kind):
    from asprof.train.config import TrainConfig
    from asprof.train.runner import run_training

    ring = NetnsRing(2, RATE)
    config = TrainConfig.build("adam", model="tiny", batch=1, seq=16, steps=40, nodes=2)
    go = threading.Event()

    def on_progress(phase, step, steps, loss, dt):
        if step >= 3:
            go.set()

    with namespace_ring(ring) as hosts:
        result = outcome(lambda: run_training(config, on_progress=on_progress, hosts=tuple(hosts)), kind, ring, go)
    _check(result, kind)
    nothing_left(ring.id)


@pytest.mark.parametrize("kind", ["down", "slow"])
def test_probe_through_a_link_fault(kind, tmp_path):
    from asprof.probe.cluster import Placement, probe_ring

    ring = NetnsRing(2, RATE)
    go = threading.Event()

    def progress(msg):
        if "all_sum on 2 ranks" in msg:
            go.set()

    with namespace_ring(ring) as hosts:
        place = Placement(hosts=tuple(hosts), link=f"netns {RATE:g} Mbit/s")
        result = outcome(lambda: probe_ring(place, "tiny", progress), kind, ring, go)
    _check(result, kind)
    nothing_left(ring.id)


@pytest.mark.parametrize("kind", ["down", "slow"])
def test_validate_through_a_link_fault(kind, tmp_path):
    cmd = [sys.executable, "-c", "from asprof.cli import run; run()", "validate", "--nodes", "2", "--netns-rate",
           f"{RATE:g}", "--optimizer", "adam", "--model", "tiny", "--batch", "2", "--seq", "16", "--steps", "400",
           "--warmup", "2", "--trace", "m4-mini-x16-tb4", "--tolerance", "1e9", "--out", str(tmp_path / "out")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    prefix = f"asprof{proc.pid % 100000}"
    ring = None
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            trainers = [p for p in psutil.process_iter(["cmdline"]) if "asprof.train.worker" in (p.info["cmdline"] or [])
                        and any(a.pid == proc.pid for a in _parents(p))]
            names = [n for n in leftover_namespaces() if n.startswith(prefix) and n.endswith("-h1")]
            if len(trainers) == 2 and names:
                ring = NetnsRing(2, RATE, ring_id=names[0][len("asprof"):-len("-h1")])
                time.sleep(2.0)  # compiled, training
                break
            time.sleep(0.2)
        assert ring is not None, f"the ranks never started: {proc.communicate()[1][-2000:]}"
        t = time.monotonic()
        fault(kind, ring)
        _, err = proc.communicate(timeout=120)
        took = time.monotonic() - t
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode == 0:
        print(f"{kind}: continued ({took:.1f} s after the fault)")
    else:
        assert proc.returncode == 3, err
        lines = [x for x in err.splitlines() if "error" in x]
        assert len(lines) == 1 and "Traceback" not in err, err
        _check(("ended", (lines[0], took)), kind)
    nothing_left(ring.id)

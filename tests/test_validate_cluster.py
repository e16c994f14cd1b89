"""`asprof validate` end to end with real ranks (tiny sizes): loopback ring, namespace ring
(root only), and a rank killed mid-run."""

import json
import signal
import subprocess
import sys
import time

import psutil
import pytest

from asprof.cli import main
from asprof.cluster.netns import leftover_namespaces, why_unavailable
from asprof.traces.io import load_trace
from asprof.validate.match import ClusterIdentity, find_matching

pytestmark = pytest.mark.distributed
TINY = ["--model", "tiny", "--batch", "2", "--seq", "16", "--steps", "6", "--warmup", "2",
        "--probe-level", "tiny", "--probe-rounds", "1", "--replicas", "3", "--tolerance", "1e9"]


def _workers():
    return [p for p in psutil.process_iter(["cmdline"])
            if any(w in c for w in ("asprof.train.worker", "asprof.validate.probing_worker", "asprof.probe.cluster_worker")
                   for c in (p.info["cmdline"] or []))]


def _run(capsys, tmp_path, *extra):
    code = main(["validate", *TINY, "--traces-dir", str(tmp_path / "traces"), "--out", str(tmp_path / "out"), *extra])
    out, err = capsys.readouterr()
    return code, out, err


def test_two_local_ranks_end_to_end(capsys, tmp_path):
    code, out, err = _run(capsys, tmp_path, "--nodes", "2")
    assert code == 0, err
    assert "probing it first" in err and "Traceback" not in err
    for label in ("adam", "kpop", "topkpop s=0.1"):
        assert label in out
    assert "step time (un-instrumented pass)" in out and "phases (instrumented pass" in out
    res = json.loads((tmp_path / "out" / "validate.json").read_text())
    assert res["nodes"] == 2 and res["link"] == "loopback" and res["passed"]
    for name, o in res["optimizers"].items():
        c = o["comparison"]
        # --warmup 2: steps 0..2 (the warm-up and the step after it) are not compared
        assert c["steps"] == [3, 6] and len(c["measured_s"]) == 3 and len(c["predicted_replicas_s"]) == 3
        assert c["measured_mean_s"] > 0 and c["predicted_mean_s"] > 0 and 0.0 <= c["band_fraction"] <= 1.0
        assert set(c["measured_phases_s"]) >= {"fwd_bwd", "optimizer", "grad_allreduce"}
    assert (tmp_path / "out" / "validate.png").stat().st_size > 10_000
    # the probe it ran describes this cluster, so the next validation uses it
    (saved,) = (tmp_path / "traces").glob("*.json")
    trace = load_trace(saved)
    assert trace.nodes == 2 and {r.params.get("rank") for r in trace.probe("blas")} == {0, 1}
    from asprof.probe.host import capture_host

    # the ranks ran on the BLAS asprof preloads into them (where one is installed)
    here = capture_host(with_torch=False, launched_ranks=2)
    found, _ = find_matching(tmp_path / "traces", ClusterIdentity(2, "loopback", here))
    assert found == saved
    assert _workers() == []


def test_probing_during_the_runs(capsys, tmp_path):
    code, out, err = _run(capsys, tmp_path, "--nodes", "2", "--optimizer", "adam,kpop", "--probe-during")
    assert code == 0, err
    assert "probed during every run" in out and "probing the ring" in err and "probe records between the steps" in err
    (saved,) = (tmp_path / "traces").glob("*.json")
    trace = load_trace(saved)
    # every compute probe, on both ranks, during each of the two runs (rounds 0.. and 1000..); the ring once
    for probe in ("blas", "launch", "membw", "linalg"):
        runs = {(r.params["round"] // 1000, r.params["rank"]) for r in trace.probe(probe)}
        assert runs == {(0, 0), (0, 1), (1, 0), (1, 1)}, probe
    assert trace.probe("allreduce", op="fit")
    res = json.loads((tmp_path / "out" / "validate.json").read_text())
    assert set(res["optimizers"]) == {"adam", "kpop"} and res["trace"]["probed"]
    assert _workers() == []


@pytest.mark.netns
@pytest.mark.skipif(why_unavailable() is not None, reason=why_unavailable() or "")
def test_namespace_ring_end_to_end(capsys, tmp_path):
    before = set(leftover_namespaces())
    code, out, err = _run(capsys, tmp_path, "--nodes", "2", "--netns-rate", "200", "--optimizer", "adam,topkpop")
    assert code == 0, err
    res = json.loads((tmp_path / "out" / "validate.json").read_text())
    assert res["link"] == "netns 200 Mbit/s" and set(res["optimizers"]) == {"adam", "topkpop s=0.1"}
    fit = load_trace(next((tmp_path / "traces").glob("*.json"))).probe("allreduce", op="fit")
    assert fit and fit[0].params["link"] == "netns 200 Mbit/s"
    assert set(leftover_namespaces()) == before and _workers() == []


def test_killing_a_rank_ends_the_run_with_one_line(tmp_path):
    cmd = [sys.executable, "-c", "from asprof.cli import run; run()", "validate", "--nodes", "2", "--optimizer", "adam",
           "--model", "tiny", "--batch", "2", "--seq", "16", "--steps", "100000", "--warmup", "2",
           "--trace", "m4-mini-x16-tb4", "--out", str(tmp_path / "out")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 90
        victim = None
        while time.monotonic() < deadline and victim is None:
            ranks = [p for p in _workers() if p.info["cmdline"] and proc.pid in [a.pid for a in p.parents()]]
            if len(ranks) == 2:
                time.sleep(2.0)  # let them train a little
                victim = ranks[1]
            time.sleep(0.2)
        assert victim is not None, "the ranks never started"
        rank = int(victim.environ().get("MLX_RANK", "-1"))
        killed_at = time.monotonic()
        victim.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
        assert time.monotonic() - killed_at < 30
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 3, err
    lines = [x for x in err.splitlines() if "error" in x]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert f"rank {rank} was killed by signal 9" in lines[0] and lines[0].startswith("asprof validate: error:")
    time.sleep(0.5)
    assert _workers() == []

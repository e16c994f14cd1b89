"""A rank that hangs (SIGSTOP: a stopped process, a frozen host) ends the run, in train, validate
and probe alike, within 30 s with one line naming it; with slow steps the limit grows and is stated.

The rule itself (asprof/cluster/watchdog.py) is checked on made-up clocks; the processes are real."""

import re
import signal
import subprocess
import sys
import time

import psutil
import pytest

from asprof.cluster.launch import LaunchSpec, launch
from asprof.cluster.watchdog import SILENCE_FLOOR_S, STEPS_K, Watchdog
from asprof.errors import DistributedError

WORKERS = ("asprof.train.worker", "asprof.probe.allreduce_worker", "asprof.probe.cluster_worker",
           "asprof.cluster.echo_worker")


def _ranks_of(pid: int) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        try:
            if any(w in cmd for w in WORKERS) and pid in [a.pid for a in p.parents()]:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def _in_ring(p: psutil.Process) -> bool:
    """The rank joined the ring (holds a connected TCP socket; its pipes to us are not sockets)."""
    try:
        return any(c.status == psutil.CONN_ESTABLISHED for c in p.net_connections("tcp"))
    except psutil.Error:
        return False


def stop_a_rank(cmd: list[str], cwd, settle_s: float = 3.0, nodes: int = 2):
    """Run ``cmd``, SIGSTOP its rank 1 ``settle_s`` after every rank joined the ring: (exit code, stderr,
    seconds from the stop to the exit, the ranks left afterwards)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd)
    victim = None
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and victim is None and proc.poll() is None:
            ranks = _ranks_of(proc.pid)
            if len(ranks) == nodes and all(_in_ring(p) for p in ranks):
                time.sleep(settle_s)
                victim = next(p for p in ranks if p.environ().get("MLX_RANK") == "1")
            time.sleep(0.2)
        assert victim is not None, f"the ranks never started: {proc.communicate()[1][-2000:]}"
        stopped_at = time.monotonic()
        victim.send_signal(signal.SIGSTOP)
        _, err = proc.communicate(timeout=90)
        took = time.monotonic() - stopped_at
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if victim is not None and victim.is_running():
            try:
                victim.send_signal(signal.SIGCONT)
            except psutil.NoSuchProcess:
                pass
    time.sleep(0.5)
    return proc.returncode, err, took, _ranks_of(proc.pid)


def _asprof(*argv) -> list[str]:
    return [sys.executable, "-c", "from asprof.cli import run; run()", *argv]


def _one_line(err: str, cmd: str) -> str:
    lines = [x for x in err.splitlines() if "error" in x]
    assert len(lines) == 1 and "Traceback" not in err, err
    # probe names the probe that failed ("allreduce probe: ...")
    assert re.match(rf"asprof {cmd}: error: (\w+ probe: )?rank 1 went silent \(rank 1 at step \d+\)", lines[0]), lines[0]
    return lines[0]


TINY_TRAIN = ["--optimizer", "adam", "--model", "tiny", "--batch", "2", "--seq", "16", "--steps", "100000"]


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize("what", ["train", "validate", "probe"])
def test_a_stopped_rank_ends_the_run_within_30_s(what, tmp_path):
    if what == "train":
        cmd = _asprof("train", "--nodes", "2", *TINY_TRAIN, "--out", str(tmp_path / "out"))
    elif what == "validate":
        cmd = _asprof("validate", "--nodes", "2", *TINY_TRAIN, "--warmup", "2", "--trace", "m4-mini-x16-tb4",
                      "--out", str(tmp_path / "out"))
    else:  # the all-reduce sweep's largest sizes run long enough to be stopped mid-sweep
        cmd = _asprof("probe", "--nodes", "2", "--only", "allreduce", "--out", str(tmp_path / "t.json"))
    code, err, took, left = stop_a_rank(cmd, tmp_path, settle_s=2.0 if what == "probe" else 3.0)
    assert code == 3, err
    line = _one_line(err, what)
    assert f"limit {SILENCE_FLOOR_S:g} s = max({SILENCE_FLOOR_S:g} s, {STEPS_K:g} × the median step" in line, line
    print(f"{what}: ended {took:.1f} s after the stop: {line}")
    assert took < 30, (took, line)
    assert left == []


@pytest.mark.distributed
@pytest.mark.slow
def test_with_slow_steps_the_limit_scales_and_is_stated():
    # steps of 4 s: the rank may be silent for 5 × 4 = 20 s, not 15
    t0 = time.monotonic()
    pids, proc = {}, {}

    def on_event(msg):
        if msg.get("type") == "hello":
            pids[msg["rank"]] = msg["pid"]
        if msg.get("type") == "heartbeat" and msg.get("step") == 3 and msg["rank"] == 1 and "stopped" not in proc:
            proc["stopped"] = time.monotonic()
            psutil.Process(pids[1]).send_signal(signal.SIGSTOP)

    with pytest.raises(DistributedError) as e:
        launch(LaunchSpec(module="asprof.cluster.echo_worker", nodes=2,
                          args=("--steps", "1000", "--step-s", "4")), on_event=on_event)
    took = time.monotonic() - proc["stopped"]
    msg = str(e.value)
    assert msg.startswith("rank 1 went silent (rank 1 at step 3)"), msg
    assert re.search(r"limit 20(\.\d)? s = max\(15 s, 5 × the median step 4(\.\d+)? s\)", msg), msg
    print(f"slow steps: ended {took:.1f} s after the stop: {msg}")
    assert SILENCE_FLOOR_S + 3 < took < 20 + 8, took  # the scaled limit held, not the 15 s floor
    assert time.monotonic() - t0 < 60


def _dog(**kw) -> Watchdog:
    return Watchdog(2, 0.0, timeout_s=1000, connect_s=25, stall_s=60, **kw)


def _steps(dog: Watchdog, step_s: float, n: int, t: float = 10.0) -> float:
    for i in range(n):
        for r in range(2):
            dog.heard(r, "heartbeat", t, step=i)
        t += step_s
    return t - step_s


def test_the_silence_limit_is_the_floor_for_short_steps_and_k_medians_for_long_ones():
    dog = _dog()
    assert dog.silence_limit()[0] == 25  # before the first step: the connect limit
    _steps(dog, 0.2, 20)
    assert dog.median_step_s() == pytest.approx(0.2)
    assert dog.silence_limit()[0] == SILENCE_FLOOR_S
    dog = _dog()
    _steps(dog, 7.0, 5)
    assert dog.silence_limit()[0] == pytest.approx(STEPS_K * 7.0)
    assert "max(15 s, 5 × the median step 7 s)" in dog.silence_limit()[1]


def test_a_rare_long_step_does_not_move_the_median():
    dog = _dog()
    t = _steps(dog, 0.5, 30)
    for r in range(2):
        dog.heard(r, "heartbeat", t + 120, step=30)  # one 120 s step (a refresh)
    assert dog.median_step_s() == pytest.approx(0.5)


def test_alive_messages_keep_a_rank_from_silence_but_not_from_stalling():
    dog = _dog()
    t = _steps(dog, 1.0, 5)
    ready = {0, 1}
    for s in range(1, 70):
        dog.heard(0, "alive", t + s)
        dog.heard(1, "alive", t + s)
    dog.check(t + 59, ready, ready, set())  # alive, 59 s without a step: still within stall_s
    with pytest.raises(DistributedError, match=r"every running rank made no progress for 60 s"):
        dog.check(t + 61, ready, ready, set())
    dog = _dog()
    t = _steps(dog, 1.0, 5)
    for s in range(1, 20):
        dog.heard(0, "alive", t + s)
    with pytest.raises(DistributedError, match=r"^rank 1 went silent \(rank 1 at step 4\): nothing from it for 16 s"):
        dog.check(t + 16, ready, ready, set())

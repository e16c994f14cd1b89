"""A rank whose own work runs much slower than the others' is named in validate's report.

The rule on made-up phases; then a real 2-rank validate whose rank 1 runs on a slower "machine":
a cpu cgroup holding it to a tenth of a core (root only; its waits are not slowed, its work is)."""

import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from asprof.validate.stragglers import RATIO, find_stragglers, own_work_s


def _steps(fwd: float, wait: float, n: int = 10) -> list[dict]:
    return [{"fwd_bwd": fwd, "optimizer": fwd / 4, "grad_allreduce": wait} for _ in range(n)]


def test_own_work_leaves_out_the_all_reduce():
    assert own_work_s(_steps(0.02, 0.5)) == pytest.approx(0.025)


def test_the_slow_rank_is_named_and_the_waiting_ones_are_not():
    # rank 2 computes 3× longer; the others wait for it in the all-reduce (longer steps for them too)
    ranks = [_steps(0.02, 0.045), _steps(0.021, 0.044), _steps(0.06, 0.001), _steps(0.019, 0.046)]
    got = find_stragglers(ranks)
    assert [s["rank"] for s in got] == [2]
    assert got[0]["ratio"] == pytest.approx(0.075 / 0.025, rel=0.05)


def test_a_healthy_run_has_no_straggler():
    ranks = [_steps(0.02 * (1 + 0.1 * r), 0.01) for r in range(4)]  # 30 % apart at most
    assert find_stragglers(ranks) == [] and 1.3 < RATIO
    assert find_stragglers(None) == [] and find_stragglers([_steps(0.02, 0.0)]) == []


def test_warm_up_steps_are_left_out():
    slow_start = [{"fwd_bwd": 1.0}] * 3 + _steps(0.02, 0.0, 2)  # compiling, say
    assert find_stragglers([slow_start, _steps(0.02, 0.0, 5)], first=3) == []
    assert [s["rank"] for s in find_stragglers([slow_start, _steps(0.02, 0.0, 5)], first=0)] == [0]


def test_a_few_descheduled_steps_are_not_a_straggler():
    bursty = _steps(0.02, 0.0, 10)
    bursty[2] = bursty[7] = {"fwd_bwd": 0.5}  # the machine's other work took the core twice
    assert find_stragglers([bursty, _steps(0.02, 0.0, 10)]) == []


def _cpu_dir() -> Path | None:
    """A cpu cgroup we may create groups under (v1's cpu controller, or v2 with cpu enabled)."""
    if os.geteuid() != 0:
        return None
    v1, v2 = Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup")
    if (v1 / "cpu.cfs_quota_us").exists():
        return v1
    if "cpu" in (v2 / "cgroup.subtree_control").read_text().split() if (v2 / "cgroup.subtree_control").exists() else False:
        return v2
    return None


@contextmanager
def slow_node(pid: int, share: float):
    """Hold process ``pid`` (all its threads) to ``share`` of one core: a slower machine. Its
    waits (the all-reduce) are not slowed, only its work."""
    root = _cpu_dir()
    group = root / f"asprof-test-{os.getpid()}"
    group.mkdir()
    try:
        period = 10000
        if (root / "cpu.cfs_quota_us").exists():
            (group / "cpu.cfs_period_us").write_text(str(period))
            (group / "cpu.cfs_quota_us").write_text(str(int(share * period)))
        else:
            (group / "cpu.max").write_text(f"{int(share * period)} {period}")
        (group / "cgroup.procs").write_text(str(pid))
        yield
    finally:
        for t in (group / "cgroup.procs").read_text().split():  # back to the root group, then remove ours
            try:
                (root / "cgroup.procs").write_text(t)
            except OSError:
                pass
        group.rmdir()


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.skipif(_cpu_dir() is None, reason="limiting one rank's CPU needs root and a cpu cgroup controller")
def test_validate_names_a_straggling_rank(tmp_path):
    cmd = [sys.executable, "-c", "from asprof.cli import run; run()", "validate", "--nodes", "2", "--optimizer", "adam",
           "--model", "tiny", "--batch", "2", "--seq", "16", "--steps", "16", "--warmup", "2",
           "--trace", "m4-mini-x16-tb4", "--tolerance", "1e9", "--out", str(tmp_path / "out")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        victim = None
        deadline = time.monotonic() + 120
        while victim is None and time.monotonic() < deadline and proc.poll() is None:
            for p in psutil.process_iter(["cmdline"]):
                try:
                    if ("asprof.train.worker" in (p.info["cmdline"] or []) and p.ppid() == proc.pid
                            and p.environ().get("MLX_RANK") == "1"):
                        victim = p
                except psutil.Error:
                    pass
            time.sleep(0.05)
        assert victim is not None, "the ranks never started"
        with slow_node(victim.pid, 0.1):  # a tenth of a core: its own work ~10× slower when it has a core
            out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    notes = [x for x in out.splitlines() if "straggler" in x]
    assert len(notes) == 1 and "rank 1 is a straggler" in notes[0], out
    res = json.loads((tmp_path / "out" / "validate.json").read_text())
    got = res["optimizers"]["adam"]["training"]["stragglers"]
    assert [s["rank"] for s in got] == [1] and got[0]["ratio"] > RATIO

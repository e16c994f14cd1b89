"""`asprof probe` from the command line: bad input fails fast with one line; a run writes a
valid trace; Ctrl-C keeps the finished probes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from asprof.traces.io import load_trace
from helpers import run_cli


def one_line_error(code, err):
    assert code != 0
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and "error:" in lines[0] and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("argv, expect", [
    (["--only", "blas,nope"], "unknown probe 'nope'"),
    (["--only", ","], "--only needs probe names"),
    (["--nodes", "0"], "--nodes must be at least 2"),
    (["--nodes", "1"], "--nodes must be at least 2"),
    (["--nodes", "-3"], "--nodes must be at least 2"),
    (["--nodes", "two"], "'two' is not a valid integer"),
    (["--only", "allreduce"], "needs a cluster"),
    (["--nodes", "2", "--hostfile", "h.json"], "not both"),
    (["--hostfile", "/nonexistent/hosts.json"], "no such hostfile"),
    (["--nodes", "2", "--only", "memory"], "a cluster probe (--nodes/--hostfile) measures"),
])
def test_bad_input_fails_before_measuring(capsys, tmp_path, monkeypatch, argv, expect):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "probe", *argv)
    assert expect in one_line_error(code, err)
    assert not (tmp_path / "traces").exists()  # nothing measured, nothing written


def test_unwritable_out_fails_before_measuring(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a directory")
    code, _, err = run_cli(capsys, "probe", "--quick", "--out", str(blocker / "t.json"))
    assert str(blocker) in one_line_error(code, err)
    code, _, err = run_cli(capsys, "probe", "--quick", "--out", str(tmp_path))
    assert "is a directory" in one_line_error(code, err)


def test_a_tiny_run_writes_a_valid_trace(capsys, tmp_path):
    out = tmp_path / "sub" / "t.json"
    code, stdout, err = run_cli(capsys, "probe", "--level", "tiny", "--only", "linalg,membw", "--out", str(out))
    assert code == 0, err
    t = load_trace(out)
    assert {r.probe for r in t.records} == {"linalg", "membw"}
    assert t.host.blas.get("mlx") and f"wrote {out}" in stdout
    assert "[1/2 linalg]" in err and "[2/2 membw]" in err  # progress, one line per step off a TTY


def test_default_path_is_traces_host_utc(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, stdout, err = run_cli(capsys, "probe", "--level", "tiny", "--only", "linalg")
    assert code == 0, err
    (path,) = (tmp_path / "traces").glob("*.json")
    assert path.name.endswith("Z.json") and load_trace(path).has("linalg")


@pytest.mark.slow
def test_ctrl_c_keeps_the_finished_probes(tmp_path):
    out = tmp_path / "t.json"
    cmd = [sys.executable, "-c", "from asprof.cli import run; run()", "probe", "--level", "quick",
           "--only", "linalg,blas", "--out", str(out)]
    # a shell's background job starts with SIGINT ignored, and Python keeps it so: restore it
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # wait until linalg is on disk, blas is running
            if out.exists() and "linalg" in json.loads(out.read_text() or "{}").get("probes", {}):
                break
            time.sleep(0.2)
        else:
            pytest.fail("linalg never finished")
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted; kept linalg in" in err and "Traceback" not in err
    t = load_trace(out)
    assert t.has("linalg") and not t.has("blas")
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


@pytest.mark.distributed
def test_a_cluster_probe_is_the_trace_validate_uses(capsys, tmp_path, monkeypatch):
    """`asprof probe --nodes 2` writes the trace `asprof validate --nodes 2` would: compute on
    both ranks at once (validate's rounds), the ring labelled loopback, under traces/ — and
    validate's matcher accepts it for that cluster (one trace for probe → simulate → validate)."""
    from asprof.probe.cluster import cluster_rounds
    from asprof.probe.host import capture_host
    from asprof.validate.config import ValidateConfig
    from asprof.validate.match import find_matching, mismatches
    from asprof.validate.run import identity

    monkeypatch.chdir(tmp_path)
    code, stdout, err = run_cli(capsys, "probe", "--nodes", "2", "--level", "tiny")
    assert code == 0, err
    (path,) = (tmp_path / "traces").glob("*.json")
    assert "-2r-loopback-" in path.name and f"wrote traces/{path.name}" in stdout
    trace = load_trace(path)
    assert trace.nodes == 2
    for probe in ("blas", "launch", "membw", "linalg"):
        seen = {(r.params["rank"], r.params["round"]) for r in trace.probe(probe)}
        assert seen == {(k, i) for k in (0, 1) for i in range(cluster_rounds(2))}, probe
        assert {r.params["ranks"] for r in trace.probe(probe)} == {2}
    assert {r.params["link"] for r in trace.probe("allreduce")} == {"loopback"}
    assert mismatches(trace, identity(ValidateConfig(nodes=2))) == []
    found, _ = find_matching(tmp_path / "traces", identity(ValidateConfig(nodes=2)))
    assert found == path
    # and it describes only that cluster: not three ranks, not a shaped link
    from asprof.validate.match import ClusterIdentity

    assert mismatches(trace, identity(ValidateConfig(nodes=3)))
    assert mismatches(trace, ClusterIdentity(2, "netns 200 Mbit/s", capture_host(with_torch=False)))

"""The --hostfile path for real: `asprof` in a client namespace runs mlx.launch, which ssh-es
into namespace hosts each running its own sshd (asprof.cluster.ssh_netns). Root only."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import asprof
from asprof.cluster.netns import leftover_namespaces
from asprof.cluster.remote import (ENV_REMOTE_PYTHON, LOCAL, SSH_CONNECT_S, check_hosts, node_exit, node_exit_message,
                                   remote_python, ssh_rank_command)
from asprof.cluster.ssh_netns import ssh_cluster, why_unavailable

reason = why_unavailable()


def needs_cluster(test):
    """Root, iproute2 and sshd: the marks and the skip of every test that builds a cluster."""
    for mark in (pytest.mark.netns, pytest.mark.distributed, pytest.mark.skipif(reason is not None, reason=reason or "")):
        test = mark(test)
    return test


ASPROF = [sys.executable, "-c", "from asprof.cli import run; run()"]
TRAIN = ["train", "--model", "tiny", "--batch", "2", "--seq", "16"]


def _asprof(cluster, *args, cwd=None, stderr=subprocess.PIPE):
    """`asprof ARGS` started in the cluster's client namespace ({hostfile} filled in)."""
    argv = [a.replace("{hostfile}", str(cluster.hostfile)) for a in args]
    return subprocess.Popen(cluster.command([*ASPROF, *argv]), env=cluster.env(), cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=stderr)


def _hostfile(tmp_path, cluster, entries):
    p = tmp_path / "hosts.json"
    p.write_text(json.dumps(entries))
    return str(p)


def _until_nothing_left(cluster, within_s=30.0):
    """Every process in every namespace of the cluster (sshd listeners aside), waited for up to within_s."""
    deadline = time.monotonic() + within_s
    while any(cluster.pids().values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return {ns: pids for ns, pids in cluster.pids().items() if pids}


def _error_lines(err):
    return [line for line in err.splitlines() if ": error:" in line]


@pytest.mark.slow
@needs_cluster
def test_validate_through_ssh(tmp_path):
    n = 2
    with ssh_cluster(n, rate_mbit=1000) as cluster:
        ours = {*cluster.names, cluster.client_ns, cluster.ring.switch}
        assert ours <= set(leftover_namespaces())
        hosts = json.loads(cluster.hostfile.read_text())
        assert [h["ssh"] for h in hosts] == list(cluster.names) and hosts[1]["ips"] == [cluster.ring.ip(1)]
        p = _asprof(cluster, "validate", "--hostfile", "{hostfile}", "--optimizer", "adam", "--model", "tiny",
                    "--batch", "2", "--seq", "16", "--steps", "5", "--warmup", "2", "--probe-level", "tiny",
                    "--probe-rounds", "1", "--replicas", "3", "--tolerance", "1e9",
                    "--traces-dir", str(tmp_path / "traces"), "--out", str(tmp_path / "out"))
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
        assert "step time (un-instrumented pass)" in out and "adam" in out and "Traceback" not in err
        res = json.loads((tmp_path / "out" / "validate.json").read_text())
        assert res["nodes"] == n and res["link"] == "hostfile " + ",".join(cluster.names)
        assert _until_nothing_left(cluster) == {}
    assert not ours & set(leftover_namespaces())  # (other runs' namespaces may come and go meanwhile)


@needs_cluster
def test_the_cluster_is_removed_when_the_body_fails():
    with pytest.raises(RuntimeError, match="boom"):
        with ssh_cluster(2) as c:
            ours, sshds = {*c.names, c.client_ns, c.ring.switch}, [p for p in c.sshd_pids if p]
            assert len(sshds) == 2 and all(Path(f"/proc/{p}").exists() for p in sshds)
            raise RuntimeError("boom")
    assert not ours & set(leftover_namespaces())
    assert not any(Path(f"/proc/{p}").exists() for p in sshds) and not c.ssh_dir.exists()


@needs_cluster
@pytest.mark.parametrize("case", ["refuses", "wrong key", "unreachable"])
def test_a_host_we_cannot_ssh_into_is_named(tmp_path, case):
    with ssh_cluster(2, no_sshd={1} if case == "refuses" else set(), wrong_key={1} if case == "wrong key" else set()) as c:
        entries = json.loads(c.hostfile.read_text())
        if case == "unreachable":  # nothing ever answers: only ssh's connect timeout ends it
            entries[1] = {"ssh": c.silent_ip(), "ips": [c.silent_ip()]}
        bad = entries[1]["ssh"]
        t = time.monotonic()
        p = _asprof(c, *TRAIN, "--steps", "3", "--hostfile", _hostfile(tmp_path, c, entries))
        out, err = p.communicate(timeout=120)
        took = time.monotonic() - t
        assert p.returncode == 3, err
        (line,) = _error_lines(err)
        assert f"cannot ssh into host {bad}:" in line
        assert {"refuses": "Connection refused", "wrong key": "Permission denied",
                "unreachable": "Connection timed out"}[case] in line
        # the connect timeout bounds it (plus starting asprof on a busy machine)
        assert took < SSH_CONNECT_S + 30
        if case == "unreachable":
            assert took >= SSH_CONNECT_S
        assert _until_nothing_left(c) == {}


@needs_cluster
def test_a_host_without_asprof_is_named(tmp_path):
    hide = {1: [str(Path(asprof.__file__).parent)], 2: [sys.prefix]}  # asprof missing; the whole venv missing
    with ssh_cluster(3, hide=hide) as c:
        entries = json.loads(c.hostfile.read_text())
        for i, expect in ((1, "asprof is not installed for"), (2, f"has no {sys.executable}")):
            p = _asprof(c, *TRAIN, "--steps", "3", "--hostfile", _hostfile(tmp_path, c, [entries[0], entries[i]]))
            out, err = p.communicate(timeout=120)
            assert p.returncode == 3, err
            (line,) = _error_lines(err)
            assert f"host {c.names[i]}" in line and expect in line
            assert _until_nothing_left(c) == {}


def _remote_ranks(cluster, i):
    """pids of asprof ranks (`python -m asprof...`) in host i's namespace."""
    def cmdline(pid):
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return b""
    return [p for p in cluster.pids()[cluster.ring.ns(i)] if b"\0-m\0asprof." in cmdline(p)]


def _wait_training(p, cluster, err_path, timeout_s=120.0):
    """Until every host runs a rank and rank 0 reported a step (in ``err_path``, its stderr)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and p.poll() is None:
        if "step " in err_path.read_text() and all(_remote_ranks(cluster, i) for i in range(cluster.ring.nodes)):
            return
        time.sleep(0.2)
    raise AssertionError(f"the run never got going: {err_path.read_text()[-2000:]}")


@needs_cluster
@pytest.mark.parametrize("how", ["killed", "ctrl-c"])
def test_a_run_stopped_mid_way_leaves_nothing_behind(tmp_path, how):
    with ssh_cluster(2) as c:
        err_path = tmp_path / "stderr.txt"
        with open(err_path, "w") as f:
            p = _asprof(c, *TRAIN, "--steps", "100000", "--hostfile", "{hostfile}", cwd=tmp_path, stderr=f)
        _wait_training(p, c, err_path)
        if how == "killed":
            os.kill(_remote_ranks(c, 1)[0], signal.SIGKILL)
        else:
            p.send_signal(signal.SIGINT)
        p.communicate(timeout=60)
        err = err_path.read_text()
        assert _until_nothing_left(c) == {}, "processes left in the namespaces within 30 s"
        if how == "killed":
            assert p.returncode == 3, err
            (line,) = _error_lines(err)
            assert f"rank 1 on host {c.names[1]} was killed" in line
        else:
            assert p.returncode == 130, err
            assert err.rstrip().endswith("asprof train: interrupted")


@needs_cluster
def test_a_hung_remote_rank_is_stopped_with_the_rest(tmp_path):
    """A rank stopped (SIGSTOP) mid-run: the watchdog ends the run, and every remote process,
    the stopped one too, is gone."""
    launch = ("import sys; from asprof.cluster.launch import LaunchSpec, launch; from asprof.errors import "
              "AsprofError\ntry: launch(LaunchSpec(module='asprof.cluster.echo_worker', args=('--steps', '100000000'), "
              "hostfile=sys.argv[1], stall_s=3))\nexcept AsprofError as e: sys.exit(f'error: {e}')")
    with ssh_cluster(2) as c:
        err_path = tmp_path / "stderr.txt"
        with open(err_path, "w") as f:
            p = subprocess.Popen(c.command([sys.executable, "-c", launch, str(c.hostfile)]), env=c.env(),
                                 stdout=subprocess.DEVNULL, stderr=f, text=True)
        deadline = time.monotonic() + 60
        while not all(_remote_ranks(c, i) for i in range(2)) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)  # into the steps
        os.kill(_remote_ranks(c, 1)[0], signal.SIGSTOP)
        p.wait(timeout=60)
        assert p.returncode == 1 and "made no progress for 3 s" in err_path.read_text()
        assert _until_nothing_left(c) == {}


def test_mlx_launch_reports_are_read():
    line = "[mlx.launch] \x1b[33m[WARN] Node with rank 2 exited with code 255 \x1b[0m"
    assert node_exit(line) == (2, 255) and node_exit("step 3 loss 2.0") is None
    assert node_exit_message("mac3", 2, 7, 4) == "rank 2 on host mac3 exited with code 7; stopped all 4 ranks"


def test_the_rank_command_survives_the_remote_shell(tmp_path):
    """What crosses ssh is one shell line: arguments and variables with spaces, quotes, $ and
    JSON arrive intact (run through sh here, as on a host named 127.0.0.1)."""
    args = ["a b", "it's", "$HOME", '{"k": [1, "x y"]}', ""]
    env = {"X": "\"q\" $(echo no) `no` 'single'", "EMPTY": ""}
    cmd = ssh_rank_command(LOCAL, sys.executable, ["-c", "import sys, os, json; print(json.dumps("
                           "[sys.argv[1:], os.environ['X'], os.environ['EMPTY'], os.getcwd()]))", *args], env, str(tmp_path))
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == [args, env["X"], "", str(tmp_path)]
    remote = ssh_rank_command("mac2", "/p/python", ["-m", "m"], {"A": "1"})
    assert remote[:2] == ["ssh", "-tt"] and "BatchMode=yes" in remote and remote[-2] == "mac2"
    assert remote[-1] == "export A=1; exec /p/python -m m"


def test_the_remote_interpreter_is_configurable(monkeypatch):
    monkeypatch.delenv(ENV_REMOTE_PYTHON, raising=False)
    assert remote_python("/local/venv/bin/python") == "/local/venv/bin/python"
    monkeypatch.setenv(ENV_REMOTE_PYTHON, "/Users/a/asprof-venv/bin/python")
    assert remote_python("/local/venv/bin/python") == "/Users/a/asprof-venv/bin/python"


def test_the_host_check_names_what_is_missing():
    """The check before a hostfile run, on a host named 127.0.0.1 (no ssh): a missing
    interpreter, a missing module, and a host that is ready."""
    (ok,) = check_hosts([LOCAL], sys.executable, "asprof.cluster.echo_worker")
    assert ok.problem is None
    (no_python,) = check_hosts([LOCAL], "/nonexistent/bin/python", "asprof.cluster.echo_worker")
    assert no_python.problem.startswith(f"host {LOCAL} has no /nonexistent/bin/python")
    (no_module,) = check_hosts([LOCAL], sys.executable, "asprof.no_such_worker")
    assert "asprof is not installed for" in no_module.problem and "no module asprof.no_such_worker" in no_module.problem

"""What a ``--hostfile`` run needs from each remote host, checked over ssh before it starts.

``mlx.launch`` ssh-es into every host and runs ``PYTHON -m MODULE`` there. When a host cannot be
reached, turns the key away, or lacks asprof, all it reports is "Node with rank 1 exited with
code 255" (its ssh runs with ``LogLevel=QUIET``), and it may then fail tearing down the other
ranks. So before launching we log into every host at once, the way ``mlx.launch`` will
(``BatchMode``: a password prompt would wait forever), bounded by :data:`SSH_CONNECT_S`, and
check that the interpreter exists, imports MLX and the worker module, and runs the same asprof
version as here. The first problem is one line naming the host.

The interpreter on the remote hosts is this one's path (``sys.executable``), as with
``mlx.launch --python``: install asprof at the same path on every Mac (e.g. a venv at the same
place in the same user's home). Where it differs, set ``ASPROF_REMOTE_PYTHON`` to the remote
hosts' absolute path (``mlx.launch`` may change to a directory of the same name as the local
working directory before it starts the interpreter, so a relative path is ambiguous).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
from dataclasses import dataclass

from asprof import __version__
from asprof.errors import DistributedError

SSH_CONNECT_S = 10.0  # ssh ConnectTimeout for each host (the TCP connect and the key exchange)
ENV_REMOTE_PYTHON = "ASPROF_REMOTE_PYTHON"
RING_PORT = 32323  # the ring's first port on the hosts (mlx.launch's default)
LOCAL = "127.0.0.1"  # the host name mlx.launch starts without ssh
_CHECK_EXIT = 42  # our check's own "asprof/MLX missing" exit code
_NODE_EXIT = re.compile(r"Node with rank (\d+) exited with code (-?\d+)")  # mlx.launch's report
_checked: set[tuple] = set()  # (hosts, python, module) already found fine in this process


def remote_python(local: str) -> str:
    """The interpreter to run on the remote hosts: ``$ASPROF_REMOTE_PYTHON``, else ``local``."""
    return os.environ.get(ENV_REMOTE_PYTHON) or local


@dataclass(frozen=True)
class HostCheck:
    host: str
    problem: str | None  # None: the host is ready


def _check_script(module: str) -> str:
    # Prints asprof's version; exits _CHECK_EXIT with the reason when an import fails.
    return (
        "import sys, importlib.util\n"
        "try:\n"
        "    import mlx.core, asprof\n"
        f"    ok = importlib.util.find_spec({module!r}) is not None\n"
        "except ImportError as e:\n"
        f"    print(e, file=sys.stderr); sys.exit({_CHECK_EXIT})\n"
        f"if not ok: print('no module {module}', file=sys.stderr); sys.exit({_CHECK_EXIT})\n"
        "print(asprof.__version__)\n"
    )


def ssh_command(host: str, remote_cmd: list[str], connect_s: float = SSH_CONNECT_S) -> list[str]:
    """``ssh`` running ``remote_cmd`` on ``host`` without prompting, giving up after ``connect_s``.
    The remote side is a shell: every word is quoted for it."""
    return ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={max(1, round(connect_s))}",
            "-o", "LogLevel=ERROR", host, shlex.join(remote_cmd)]


def check_hosts(hosts: list[str], python: str, module: str, connect_s: float = SSH_CONNECT_S) -> list[HostCheck]:
    """Log into every host at once and check it can run ``python -m module``."""
    cmd = [python, "-c", _check_script(module)]
    # mlx.launch runs a host named 127.0.0.1 here, without ssh
    local = ["sh", "-c", 'exec "$@"', "sh", *cmd]  # a missing interpreter: exit 127, as over ssh
    procs = [subprocess.Popen(local if h == LOCAL else ssh_command(h, cmd, connect_s), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True) for h in hosts]
    # the login (connect_s) plus the imports (MLX takes a second or two on a cold Mac)
    deadline = time.monotonic() + connect_s + 20.0
    out = []
    try:
        for h, p in zip(hosts, procs):
            try:
                stdout, stderr = p.communicate(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                out.append(HostCheck(h, f"host {h} did not answer within {connect_s + 20.0:g} s of ssh-ing in"))
                continue
            out.append(HostCheck(h, _problem(h, python, module, p.returncode, stdout, stderr)))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return out


def _problem(host: str, python: str, module: str, code: int, stdout: str, stderr: str) -> str | None:
    last = next((x.strip() for x in reversed(stderr.splitlines()) if x.strip()), "")
    if code == 255:  # ssh's own failure: unreachable, refused, key rejected, unknown host key
        return f"cannot ssh into host {host}: {last or 'ssh failed'} (check `ssh {host} true` works without a prompt)"
    if code == 127:
        return (f"host {host} has no {python} (install asprof there at the same path, or set "
                f"{ENV_REMOTE_PYTHON} to its python)")
    if code == _CHECK_EXIT:
        return f"host {host}: asprof is not installed for {python} ({last}); install the same asprof there"
    if code != 0:
        return f"host {host}: {python} failed (exit {code}): {last}"
    theirs = stdout.strip().splitlines()[-1:] or ["?"]
    if theirs[0] != __version__:
        return f"host {host} has asprof {theirs[0]}, this one is {__version__}: install the same version on every host"
    return None


def require_hosts(hosts: list[str], python: str, module: str, connect_s: float = SSH_CONNECT_S) -> None:
    """:func:`check_hosts`, raising the first problem as one line (once per process per cluster)."""
    key = (tuple(hosts), python, module)
    if key in _checked:
        return
    for c in check_hosts(hosts, python, module, connect_s):
        if c.problem:
            raise DistributedError(c.problem)
    _checked.add(key)


def node_exit(line: str) -> tuple[int, int] | None:
    """(rank, exit code) when ``line`` is ``mlx.launch``'s report that a rank failed."""
    m = _NODE_EXIT.search(line)
    return (int(m.group(1)), int(m.group(2))) if m else None


def node_exit_message(host: str, rank: int, code: int, size: int, detail: str = "") -> str:
    """One line for a remote rank whose ssh ended with ``code``; ``detail``: ": its last line"."""
    if code == 255:  # ssh's code when the remote process died by a signal or the connection broke
        how = "was killed or lost its ssh connection (ssh exit 255)"
    elif code < 0:  # our ssh itself was killed
        how = f"lost its ssh (killed by signal {-code})"
    else:
        how = f"exited with code {code}"
    return f"rank {rank} on host {host} {how}{detail}; stopped all {size} ranks"


def ring_hosts(hosts: list[dict], ports: list[int]) -> list[list[str]]:
    """The ring backend's ``MLX_HOSTFILE`` for hostfile hosts: ``ip:port`` for each address of
    each host, in order, taking ``ports`` in turn (one per address, as ``mlx.launch`` does)."""
    it = iter(ports)
    return [[f"{ip}:{next(it)}" for ip in h["ips"]] for h in hosts]


def ssh_rank_command(host: str, python: str, argv: list[str], env: dict[str, str], cwd: str | None = None,
                     connect_s: float = SSH_CONNECT_S) -> list[str]:
    """``ssh`` starting one rank on ``host``: ``python ARGV`` with ``env`` exported.

    ``-tt`` gives the rank a terminal, so when our ssh ends (the run is stopped, or we are) the
    remote sshd hangs that terminal up and the rank, its session leader, gets SIGHUP: nothing
    outlives the run, on macOS too. The rank's stdout and stderr arrive together on ssh's stdout.
    Everything runs from one shell line, each word quoted for that shell.
    """
    script = "".join(f"export {k}={shlex.quote(v)}; " for k, v in env.items())
    if cwd:  # as mlx.launch: the same directory where it exists (relative data paths)
        script += f"cd {shlex.quote(cwd)} 2>/dev/null; "
    script += "exec " + shlex.join([python, *argv])
    if host == LOCAL:  # as mlx.launch: no ssh to this machine
        return ["sh", "-c", script]
    return ["ssh", "-tt", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={max(1, round(connect_s))}",
            "-o", "LogLevel=ERROR", host, script]

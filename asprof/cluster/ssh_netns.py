"""A real ssh cluster on one Linux machine: every namespace host runs its own ``sshd``.

:mod:`asprof.cluster.netns` builds the hosts (namespaces on a bridge, tbf-shaped links); this
module adds what a cluster of Macs has and a local ring does not, so the ``--hostfile`` path
(``mlx.launch`` ssh-ing into every host) runs for real:

- each host ``<id>-hN`` runs ``sshd`` (Debian's openssh-server) on its own address, port 22,
  with a host key made for this run and one authorized client key, also made for this run;
- a client namespace ``<id>-c`` on the same bridge, where the user's commands run (the Mac the
  user types on); its ``ssh`` is a wrapper with this run's config (key, known hosts, names);
- ``hostfile.json`` in ``mlx.launch``'s own format: ``[{"ssh": "<id>-h0", "ips": [...]}, ...]``.

Hosts share this machine's file system, so asprof's interpreter path is the same on all of
them. ``hide={i: [paths]}`` mounts an empty tmpfs over paths in host i's view only (its sshd
runs in a mount namespace of its own): a host without asprof. ``no_sshd={i}`` leaves a host
without sshd: a host that refuses ssh.

Needs root. All of it (sshd, every process left in the namespaces, the namespaces, the keys)
is removed on exit, on error and on Ctrl-C. Traffic stays on the namespaces' own addresses.

As a command, it builds a cluster, runs one command in the client namespace (``{hostfile}``
replaced by the hostfile's path) and tears the cluster down::

    python -m asprof.cluster.ssh_netns --nodes 3 --rate 200 -- asprof validate --hostfile {hostfile}
"""

from __future__ import annotations

import json
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from asprof.cluster.netns import NetnsRing, namespace_ring, plug_in, why_unavailable as netns_unavailable
from asprof.errors import AsprofError

SSHD = "/usr/sbin/sshd"
START_S = 10.0  # every sshd must accept a login within this


def why_unavailable() -> str | None:
    """None when an ssh cluster can be built here, else the reason (for skips and errors)."""
    reason = netns_unavailable()
    if reason:
        return reason
    if not os.path.exists(SSHD):
        return f"{SSHD} is missing (install Debian's openssh-server: apt-get install -y openssh-server)"
    for tool in ("ssh", "ssh-keygen", "unshare", "mount"):
        if shutil.which(tool) is None:
            return f"the `{tool}` command is not installed"
    return None


@dataclass(frozen=True)
class SshCluster:
    """A built cluster: its ring, hostfile, and how to run a command on the client."""

    ring: NetnsRing
    hostfile: Path
    names: tuple[str, ...]  # ssh names, rank order
    ssh_dir: Path  # keys, configs, the ssh wrapper
    sshd_pids: tuple[int | None, ...]

    @property
    def client_ns(self) -> str:
        return client_ns(self.ring)

    @property
    def client_ip(self) -> str:
        return self.ring.ip(253)

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """The environment of a client command: ``ssh`` is this cluster's wrapper."""
        env = dict(os.environ if base is None else base)
        env["PATH"] = f"{self.ssh_dir / 'bin'}:{env.get('PATH', os.defpath)}"
        return env

    def command(self, cmd: list[str]) -> list[str]:
        """``cmd`` as run in the client namespace (pass :meth:`env` as its environment)."""
        return ["ip", "netns", "exec", self.client_ns, *cmd]

    def silent_ip(self) -> str:
        """An address on the bridge that swallows what the client sends it and never answers
        (a host that is off, or drops packets): ssh can only give up after its connect timeout."""
        ip = self.ring.ip(250)
        _run("ip", "-n", self.client_ns, "neigh", "replace", ip, "lladdr", "02:00:00:00:00:fa",
             "dev", f"as{self.ring.id}hc", "nud", "permanent")
        return ip

    def pids(self) -> dict[str, list[int]]:
        """Every process in each namespace of the cluster except the sshd listeners."""
        namespaces = [self.ring.ns(i) for i in range(self.ring.nodes)] + [self.client_ns]
        listeners = {p for p in self.sshd_pids if p is not None}
        return {ns: [p for p in ns_pids(ns) if p not in listeners] for ns in namespaces}


def client_ns(ring: NetnsRing) -> str:
    return f"{ring.switch[:-3]}-c"


def ns_pids(ns: str) -> list[int]:
    r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
    return [int(x) for x in r.stdout.split() if x.isdigit()]


@contextmanager
def ssh_cluster(nodes: int, rate_mbit: float | None = None, hide: dict[int, list[str]] | None = None,
                no_sshd: set[int] | frozenset[int] = frozenset(),
                wrong_key: set[int] | frozenset[int] = frozenset()) -> Iterator[SshCluster]:
    """Build an ssh cluster of ``nodes`` hosts, yield it, and always tear it all down."""
    reason = why_unavailable()
    if reason:
        raise AsprofError(f"cannot build an ssh cluster: {reason}")
    ring = NetnsRing(nodes=nodes, rate_mbit=rate_mbit)
    ssh_dir = Path(tempfile.mkdtemp(prefix="asprof-ssh-"))  # 0700: sshd accepts keys in it
    sshds: list[subprocess.Popen | None] = []
    namespaces = [ring.ns(i) for i in range(nodes)] + [client_ns(ring)]
    try:
        with namespace_ring(ring):
            try:
                _add_client(ring)
                names = tuple(ring.ns(i) for i in range(nodes))
                _keys_and_configs(ring, ssh_dir, names, wrong_key)
                Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
                for i in range(nodes):
                    sshds.append(None if i in no_sshd else _start_sshd(ring, i, ssh_dir, (hide or {}).get(i, [])))
                cluster = SshCluster(ring, ssh_dir / "hostfile.json", names, ssh_dir,
                                     tuple(p.pid if p else None for p in sshds))
                _wait_for_logins(cluster, [i for i in range(nodes) if i not in no_sshd], sshds, wrong_key)
                yield cluster
            finally:
                # sshd, its logins, and whatever a failed run left: all in namespaces made for this
                _kill_namespace_processes(namespaces)
                for p in sshds:
                    if p is not None:
                        p.wait()
                subprocess.run(["ip", "netns", "del", client_ns(ring)], capture_output=True)
    finally:
        shutil.rmtree(ssh_dir, ignore_errors=True)


def _run(*cmd: str) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise AsprofError(f"`{' '.join(cmd)}` failed: {r.stderr.strip() or r.returncode}")
    return r.stdout


def _add_client(ring: NetnsRing) -> None:
    """The client namespace on the ring's bridge (no tbf: the user's own link to the cluster)."""
    ns = client_ns(ring)
    _run("ip", "netns", "add", ns)
    plug_in(ring, ns, "c", ring.ip(253))


def _keys_and_configs(ring: NetnsRing, d: Path, names: tuple[str, ...], wrong_key) -> None:
    """Throwaway keys, sshd configs, the client's ssh config, known hosts, wrapper and hostfile.
    Hosts in ``wrong_key`` authorize another key than the client's."""
    for key in ("host_key", "client_key", "other_key"):
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"asprof-{ring.id}", "-f", str(d / key))
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    (d / "other_authorized_keys").write_text((d / "other_key.pub").read_text())
    host_pub = (d / "host_key.pub").read_text().split()
    (d / "known_hosts").write_text("".join(f"{ring.ip(i)} {host_pub[0]} {host_pub[1]}\n" for i in range(len(names))))
    for i in range(len(names)):
        (d / f"sshd_config.{i}").write_text(
            f"ListenAddress {ring.ip(i)}:22\nHostKey {d / 'host_key'}\nPidFile none\n"
            f"AuthorizedKeysFile {d / ('other_authorized_keys' if i in wrong_key else 'authorized_keys')}\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
            "StrictModes no\nPrintMotd no\nPrintLastLog no\nUseDNS no\nMaxStartups 64\n"
        )
    user = os.environ.get("USER") or "root"
    (d / "ssh_config").write_text("".join(
        f"Host {name}\n  HostName {ring.ip(i)}\n  User {user}\n" for i, name in enumerate(names)
    ) + (f"Host *\n  IdentityFile {d / 'client_key'}\n  IdentitiesOnly yes\n"
         f"  UserKnownHostsFile {d / 'known_hosts'}\n  GlobalKnownHostsFile /dev/null\n"
         "  StrictHostKeyChecking yes\n  BatchMode yes\n"))
    (d / "bin").mkdir()
    wrapper = d / "bin" / "ssh"
    wrapper.write_text(f"#!/bin/sh\nexec {shutil.which('ssh')} -F {d / 'ssh_config'} \"$@\"\n")
    wrapper.chmod(0o755)
    hosts = [{"ssh": name, "ips": [ring.ip(i)]} for i, name in enumerate(names)]
    (d / "hostfile.json").write_text(json.dumps(hosts, indent=1) + "\n")


def _start_sshd(ring: NetnsRing, i: int, d: Path, hide: list[str]) -> subprocess.Popen:
    """Host i's sshd, in a mount namespace of its own where ``hide`` are empty and the login
    user's shell start-up files are empty too: they belong to whoever set this machine up, not
    to the cluster, and can take a minute (here `pyenv rehash` waits 60 s for a lock)."""
    home = Path(pwd.getpwuid(os.geteuid()).pw_dir)
    rc = [home / f for f in (".bashrc", ".bash_profile", ".bash_login", ".profile", ".zshenv") if (home / f).is_file()]
    mounts = [f"mount -t tmpfs -o size=1m,mode=0755 asprof-hidden {shlex.quote(p)}" for p in hide]
    mounts += [f"mount --bind /dev/null {shlex.quote(str(f))}" for f in rc]
    sshd = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            " && ".join([*mounts, 'exec "$@"']), "sh", SSHD, "-D", "-e", "-f", str(d / f"sshd_config.{i}")]
    with open(d / f"sshd.{i}.log", "wb") as log:
        return subprocess.Popen(["ip", "netns", "exec", ring.ns(i), *sshd], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=log, start_new_session=True, preexec_fn=_die_with_parent)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when we die, even by SIGKILL (no sshd outlives us; the
    namespaces themselves stay until removed, see asprof.cluster.netns.leftover_namespaces)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _wait_for_logins(cluster: SshCluster, hosts: list[int], sshds, wrong_key) -> None:
    """Until each sshd lets the client in (or, with the wrong key, turns it away)."""
    deadline = time.monotonic() + START_S
    for i in hosts:
        while True:
            r = subprocess.run(cluster.command(["ssh", "-o", "ConnectTimeout=2", cluster.names[i], "true"]),
                               env=cluster.env(), capture_output=True, text=True)
            if r.returncode == 0 if i not in wrong_key else "Permission denied" in r.stderr:
                break
            if sshds[i].poll() is not None or time.monotonic() > deadline:
                log = (cluster.ssh_dir / f"sshd.{i}.log").read_text(errors="replace").strip()
                raise AsprofError(f"sshd on {cluster.names[i]} did not accept a login within {START_S:g} s: "
                                  f"{r.stderr.strip() or log.splitlines()[-1:] or r.returncode}")
            time.sleep(0.1)


def _kill_namespace_processes(namespaces: list[str]) -> None:
    """SIGKILL every process in these namespaces (ours: built for this run), then wait for them."""
    for _ in range(50):
        pids = [p for ns in namespaces for p in ns_pids(ns)]
        if not pids:
            return
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m asprof.cluster.ssh_netns", description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=2, help="hosts (namespaces with an sshd each)")
    ap.add_argument("--rate", type=float, default=None, metavar="MBIT", help="tbf rate of each host's link")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="run in the client namespace; {hostfile} is replaced")
    args = ap.parse_args(argv)
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        ap.error("give a command to run, e.g. -- asprof validate --hostfile {hostfile}")
    signal.signal(signal.SIGTERM, _interrupt)  # `timeout`, `kill`: stop as on Ctrl-C
    try:
        with ssh_cluster(args.nodes, args.rate) as cluster:
            print(f"ssh cluster {', '.join(cluster.names)} (client {cluster.client_ns}); hostfile "
                  f"{cluster.hostfile}:\n{cluster.hostfile.read_text()}", file=sys.stderr, flush=True)
            cmd = [c.replace("{hostfile}", str(cluster.hostfile)) for c in cmd]
            p = subprocess.Popen(cluster.command(cmd), env=cluster.env())
            try:
                return p.wait()
            except KeyboardInterrupt:  # the command stops as on Ctrl-C, then the cluster goes
                p.send_signal(signal.SIGINT)
                return p.wait()
    except AsprofError as e:
        print(f"{ap.prog}: error: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())

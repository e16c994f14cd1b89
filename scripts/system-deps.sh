#!/usr/bin/env bash
# System packages some tests use: OpenMPI (the `mpi` backend) and OpenSSH's server (the ssh
# cluster in network namespaces behind `--hostfile`). Installed with apt-get where this is a
# Debian/Ubuntu machine and we are root; elsewhere nothing is installed and the tests that need
# them skip with the reason. Idempotent: nothing is fetched when both are present.
set -u
need=()
command -v mpirun >/dev/null 2>&1 || need+=(openmpi-bin)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: not installing ${need[*]} (needs root and apt-get); the tests that use them will skip" >&2
    exit 0
fi
echo "system-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null && apt-get install -y -qq "${need[@]}" >/dev/null \
    || echo "system-deps: could not install ${need[*]}; the tests that use them will skip" >&2
exit 0

#!/usr/bin/env bash
# System packages some tests use: OpenMPI (the `mpi` backend), OpenSSH's server (the ssh cluster
# in network namespaces behind `--hostfile`) and OpenBLAS (the fast BLAS asprof preloads into the
# MLX ranks it launches on Linux). Installed with apt-get where this is a Debian/Ubuntu machine
# and we are root; elsewhere nothing is installed and the tests that need them skip with the
# reason. Idempotent: nothing is fetched when all are present.
set -u
command -v dpkg >/dev/null 2>&1 || exit 0  # not Debian/Ubuntu: nothing to do here
need=()
for pkg in openmpi-bin openssh-server libopenblas0-pthread; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
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

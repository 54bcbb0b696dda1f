#!/usr/bin/env bash
# Installs what the benchmark needs beyond the test peers, from Debian's
# packages, when it is missing: nginx (sendfile: the disk + loopback ceiling)
# and wrk (the manifest load generator). Then the test peers themselves
# (containerd, docker-registry, skopeo) through the tests' own script.
# Needs root (or sudo). Safe to run again.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$here/../scripts/install-test-deps.sh"

need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v wrk >/dev/null 2>&1 || need+=(wrk)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "bench/install-deps: need root to install: ${need[*]}" >&2
    exit 1
  fi
fi

echo "bench/install-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# nginx-light's package starts a system nginx on port 80; the bench runs its
# own instance on a port of its own and never uses that one. Stop it when the
# package just started it, so it does not hold CPU or a port for nothing.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet nginx 2>/dev/null; then
  $SUDO systemctl stop nginx || true
fi

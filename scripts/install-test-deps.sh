#!/usr/bin/env bash
# Installs the real peers the tests start on loopback, from Debian's packages,
# when they are missing: containerd (daemon + ctr), docker-registry (CNCF
# Distribution 2.8), skopeo and prometheus (server and promtool), plus openssl, systemd-analyze and python3-yaml
# for the TLS and packaging checks. Needs root (or sudo). Safe to run again.
set -euo pipefail

need=()
command -v containerd >/dev/null 2>&1 && command -v ctr >/dev/null 2>&1 || need+=(containerd)
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || need+=(skopeo)
# promtool checks and unit-tests the alert rules; the server scrapes berth in test/e2e/monitoring.test.ts.
command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v tar >/dev/null 2>&1 || need+=(tar)
# systemd-analyze verifies the unit file; python3-yaml checks the Kubernetes manifests.
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -c 'import yaml' >/dev/null 2>&1 || need+=(python3-yaml)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install-test-deps: need root to install: ${need[*]}" >&2
    exit 1
  fi
fi

echo "install-test-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# The packages may ship services; the tests start their own instances, on
# their own ports and directories, and never rely on these.

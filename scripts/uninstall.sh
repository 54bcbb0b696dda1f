#!/usr/bin/env bash
# Undoes scripts/install.sh: puts containerd's hosts.toml files back as they
# were (`berth configure containerd --undo`), stops and disables the unit, and
# removes the unit, the wrapper and the package. The configuration
# (/etc/berth) and the cache (/var/cache/berth) stay unless --purge.
#
# Usage: sudo scripts/uninstall.sh [--root DIR] [--lib-dir DIR] [--bin-dir DIR]
#                                  [--microk8s | --hosts-dir DIR] [--purge] [--dry-run]
#
#   --root DIR      act on a tree staged with install.sh --root DIR
#   --microk8s, --hosts-dir DIR   where berth configured containerd, when not
#                   the one berth finds itself (MicroK8s', else /etc/containerd/certs.d)
#   --purge         also remove /etc/berth and the cache and state directories
#   --dry-run       print what would be done, change nothing
set -euo pipefail

ROOT=""
LIB_DIR=/opt/berth
BIN_DIR=/usr/local/bin
UNIT_DIR=/etc/systemd/system
CONF_DIR=/etc/berth
HOSTS_DIR=""
MICROK8S=0
PURGE=0
DRY=0
MICROK8S_HOSTS_DIR=/var/snap/microk8s/current/args/certs.d

die() { echo "uninstall.sh: $*" >&2; exit 1; }
say() { echo "uninstall.sh: $*"; }
act() {
  if [ "$DRY" = 1 ]; then echo "+ $*"; else "$@"; fi
}

while [ $# -gt 0 ]; do
  case "$1" in
    --root) ROOT="${2:?--root needs a directory}"; shift 2 ;;
    --lib-dir) LIB_DIR="${2:?--lib-dir needs a directory}"; shift 2 ;;
    --bin-dir) BIN_DIR="${2:?--bin-dir needs a directory}"; shift 2 ;;
    --microk8s) MICROK8S=1; shift ;;
    --hosts-dir) HOSTS_DIR="${2:?--hosts-dir needs a directory}"; shift 2 ;;
    --purge) PURGE=1; shift ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
if [ -n "$ROOT" ]; then
  [ -d "$ROOT" ] || die "--root $ROOT: no such directory (stage into an existing one: mkdir -p it first)"
  ROOT="$(cd "$ROOT" && pwd)"
fi
if [ -z "$ROOT" ] && [ "$DRY" = 0 ] && [ "$(id -u)" != 0 ]; then die "run as root (sudo)"; fi

SYSTEMD=0
if [ -z "$ROOT" ] && [ -d /run/systemd/system ]; then SYSTEMD=1; fi

# Stop berth first, so no pull is sent to a berth that is going away.
if [ "$SYSTEMD" = 1 ]; then
  act systemctl disable --now berth.service || true
fi

BERTH_JS="$ROOT$LIB_DIR/dist/cli/main.js"
if [ -f "$BERTH_JS" ]; then
  args=()
  if [ -n "$HOSTS_DIR" ]; then
    args=(--hosts-dir "$ROOT$HOSTS_DIR")
  elif [ "$MICROK8S" = 1 ] || { [ -n "$ROOT" ] && [ -d "$ROOT$MICROK8S_HOSTS_DIR" ]; }; then
    args=(--hosts-dir "$ROOT$MICROK8S_HOSTS_DIR")
  elif [ -n "$ROOT" ]; then
    args=(--hosts-dir "$ROOT/etc/containerd/certs.d")
  fi
  if [ "$DRY" = 1 ]; then args+=(--dry-run); fi
  say "restoring containerd's hosts.toml files"
  node "$BERTH_JS" configure containerd --undo "${args[@]+"${args[@]}"}" \
    || die "berth configure containerd --undo failed (see above); nothing else was removed"
else
  say "$BERTH_JS not found: skipping the hosts.toml restore (run berth configure containerd --undo from a checkout)"
fi

act rm -f "$ROOT$UNIT_DIR/berth.service" "$ROOT$BIN_DIR/berth"
act rm -rf "$ROOT$LIB_DIR"
if [ "$SYSTEMD" = 1 ]; then act systemctl daemon-reload; fi

if [ "$PURGE" = 1 ]; then
  say "purging configuration, cache and state"
  act rm -rf "$ROOT$CONF_DIR" "$ROOT/var/cache/berth" "$ROOT/var/cache/private/berth" "$ROOT/var/lib/berth" "$ROOT/var/lib/private/berth"
else
  say "kept $ROOT$CONF_DIR and the cache (/var/cache/berth); --purge removes them"
fi
say "done"

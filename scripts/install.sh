#!/usr/bin/env bash
# Installs berth from this checkout onto the node:
#   /opt/berth/                      the package: dist/, production node_modules/, config/
#   /usr/local/bin/berth             a wrapper running it with this machine's node
#   /etc/systemd/system/berth.service
#   /etc/berth/berth.toml            the example config, only if none exists
# then points containerd at berth (`berth configure containerd`) and enables
# and starts the unit when systemd runs the machine.
#
# Usage: sudo scripts/install.sh [--root DIR] [--lib-dir DIR] [--bin-dir DIR]
#                                [--microk8s | --hosts-dir DIR] [--no-fallback]
#                                [--no-configure] [--no-start] [--dry-run]
#
#   --root DIR      stage everything under DIR (DESTDIR-style; paths written
#                   into files stay the final ones); nothing is started
#   --lib-dir DIR   package location (default /opt/berth)
#   --bin-dir DIR   wrapper location (default /usr/local/bin)
#   --microk8s, --hosts-dir DIR, --no-fallback   passed to `berth configure containerd`
#   --no-configure  leave containerd's hosts directory alone
#   --no-start      install and enable the unit, do not start it
#   --dry-run       print what would be done, change nothing
#
# Needs: `npm ci` run in this checkout (dist/ built, node_modules/ present),
# Node.js >= 20.18 installed system-wide (not under /home or /root: the unit
# has ProtectHome=yes).
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROOT=""
LIB_DIR=/opt/berth
BIN_DIR=/usr/local/bin
UNIT_DIR=/etc/systemd/system
CONF_DIR=/etc/berth
CONFIGURE=1
START=1
DRY=0
HOSTS_DIR=""
MICROK8S=0
NO_FALLBACK=0
MICROK8S_HOSTS_DIR=/var/snap/microk8s/current/args/certs.d

die() { echo "install.sh: $*" >&2; exit 1; }
say() { echo "install.sh: $*"; }
# Runs a command, or only shows it with --dry-run.
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
    --no-fallback) NO_FALLBACK=1; shift ;;
    --no-configure) CONFIGURE=0; shift ;;
    --no-start) START=0; shift ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
if [ -n "$ROOT" ]; then
  [ -d "$ROOT" ] || die "--root $ROOT: no such directory (stage into an existing one: mkdir -p it first)"
  ROOT="$(cd "$ROOT" && pwd)"
fi

NODE="$(command -v node || true)"
[ -n "$NODE" ] || die "node not found on PATH: install Node.js >= 20.18 system-wide"
NODE="$(readlink -f "$NODE")"
"$NODE" -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=18)?0:1)' \
  || die "$NODE is Node $("$NODE" --version); berth needs >= 20.18"
case "$NODE" in
  /home/*|/root/*) die "$NODE lives under a home directory, which the hardened unit cannot read (ProtectHome=yes): install Node.js system-wide" ;;
esac
[ -f "$SRC/dist/cli/main.js" ] || die "$SRC/dist is not built: run npm ci in the checkout first"
[ -d "$SRC/node_modules" ] || die "$SRC/node_modules is missing: run npm ci in the checkout first"
[ -f "$SRC/package-lock.json" ] || die "$SRC/package-lock.json is missing"
if [ -z "$ROOT" ] && [ "$DRY" = 0 ] && [ "$(id -u)" != 0 ]; then die "run as root (sudo), or stage with --root DIR"; fi

DEST_LIB="$ROOT$LIB_DIR"
say "installing the package into $DEST_LIB"
act mkdir -p "$DEST_LIB"
act rm -rf "$DEST_LIB/dist" "$DEST_LIB/node_modules" "$DEST_LIB/config" "$DEST_LIB/native"
# native/: the optional sendfile addon, built (node_modules/berth-sendfile links to it).
act cp -a "$SRC/package.json" "$SRC/dist" "$SRC/config" "$SRC/native" "$DEST_LIB/"
act cp -a "$SRC/package-lock.json" "$DEST_LIB/"
# Production dependencies only, copied from this checkout's node_modules as
# package-lock.json lists them (no download; better-sqlite3 stays built for
# this node). Top-level packages only: nested ones come along with their parent.
act mkdir -p "$DEST_LIB/node_modules"
"$NODE" -e '
  const lock = require(process.argv[1]);
  for (const [dir, pkg] of Object.entries(lock.packages ?? {})) {
    if (!dir.startsWith("node_modules/") || pkg.dev) continue;
    if (dir.slice("node_modules/".length).includes("/node_modules/")) continue;
    console.log(dir);
  }' "$SRC/package-lock.json" | while read -r rel; do
  # an optional package for another platform is in the lock but not installed
  [ -e "$SRC/$rel" ] || continue
  act mkdir -p "$(dirname "$DEST_LIB/$rel")"
  act cp -a "$SRC/$rel" "$DEST_LIB/$rel"
done

say "writing the wrapper $ROOT$BIN_DIR/berth"
act mkdir -p "$ROOT$BIN_DIR"
if [ "$DRY" = 0 ]; then
  printf '#!/bin/sh\n# berth, installed by scripts/install.sh from %s\nexec %s %s "$@"\n' \
    "$SRC" "$NODE" "$LIB_DIR/dist/cli/main.js" > "$ROOT$BIN_DIR/berth"
  chmod 0755 "$ROOT$BIN_DIR/berth"
fi

say "installing the unit $ROOT$UNIT_DIR/berth.service"
act mkdir -p "$ROOT$UNIT_DIR"
if [ "$DRY" = 0 ]; then
  sed "s#^ExecStart=/usr/local/bin/berth #ExecStart=$BIN_DIR/berth #" "$SRC/systemd/berth.service" > "$ROOT$UNIT_DIR/berth.service"
  chmod 0644 "$ROOT$UNIT_DIR/berth.service"
fi

if [ -e "$ROOT$CONF_DIR/berth.toml" ]; then
  say "keeping the existing $ROOT$CONF_DIR/berth.toml"
else
  say "writing $ROOT$CONF_DIR/berth.toml (the commented example: edit it, then systemctl restart berth)"
  act mkdir -p "$ROOT$CONF_DIR"
  act install -m 0644 "$SRC/config/berth.toml" "$ROOT$CONF_DIR/berth.toml"
fi

if [ "$CONFIGURE" = 1 ]; then
  # The hosts directory, under --root when staging; berth itself picks
  # MicroK8s' or /etc/containerd/certs.d when nothing says otherwise.
  args=()
  if [ -n "$HOSTS_DIR" ]; then
    args=(--hosts-dir "$ROOT$HOSTS_DIR")
  elif [ "$MICROK8S" = 1 ] || { [ -n "$ROOT" ] && [ -d "$ROOT$MICROK8S_HOSTS_DIR" ]; }; then
    args=(--hosts-dir "$ROOT$MICROK8S_HOSTS_DIR")
  elif [ -n "$ROOT" ]; then
    args=(--hosts-dir "$ROOT/etc/containerd/certs.d")
  fi
  if [ "$NO_FALLBACK" = 1 ]; then args+=(--no-fallback); fi
  if [ "$DRY" = 1 ]; then args+=(--dry-run); fi
  say "pointing containerd at berth"
  # In a dry run the package is not copied yet: run the checkout's own build.
  BERTH_JS="$DEST_LIB/dist/cli/main.js"
  CONFIG_FILE="$ROOT$CONF_DIR/berth.toml"
  if [ "$DRY" = 1 ]; then
    BERTH_JS="$SRC/dist/cli/main.js"
    [ -e "$CONFIG_FILE" ] || CONFIG_FILE="$SRC/config/berth.toml"
  fi
  "$NODE" "$BERTH_JS" configure containerd --config "$CONFIG_FILE" "${args[@]+"${args[@]}"}" \
    || die "berth configure containerd failed (see above); everything else is installed"
fi

if [ -n "$ROOT" ]; then
  say "staged under $ROOT; not enabling the unit"
elif [ ! -d /run/systemd/system ]; then
  say "systemd is not running this machine: start berth yourself ($BIN_DIR/berth serve)"
else
  act systemctl daemon-reload
  if [ "$START" = 1 ]; then act systemctl enable --now berth.service; else act systemctl enable berth.service; fi
  say "done: systemctl status berth; berth doctor"
fi

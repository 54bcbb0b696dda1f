#!/usr/bin/env bash
# Starts a test environment to try berth by hand, from a checkout: on loopback,
# ports chosen at run time, Distribution behind a token server (docker.io's
# auth flow) holding docker.io/library/hello:v1, berth (this checkout's dist/)
# mirroring it, and, as root, a containerd of its own pointed at berth by
# `berth configure containerd --hosts-dir`. Prints the commands to try; Ctrl-C
# stops everything and removes its temp dirs. Touches nothing outside them.
# Needs the test dependencies (scripts/install-test-deps.sh) and dist/ built.
#
# Usage: scripts/test-env.sh [--no-containerd]
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f test/env/start.ts ] || { echo "test-env.sh: runs from a checkout (test/ is not in the package)" >&2; exit 1; }
[ -f dist/cli/main.js ] || { echo "test-env.sh: dist/ is not built: run npm ci (or npm run build) first" >&2; exit 1; }
for c in docker-registry skopeo; do
  command -v "$c" >/dev/null 2>&1 || { echo "test-env.sh: $c not found: run scripts/install-test-deps.sh" >&2; exit 1; }
done
exec node --import=@tapjs/typescript/import test/env/start.ts "$@"

#!/usr/bin/env bash
# The whole test suite: installs what the tests need, type-checks, builds,
# then runs unit, harness and end-to-end tests with tap.
# Usage: scripts/test.sh [tap args...]   (npm test -- <files> runs a subset)
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-test-deps.sh
if [ ! -d node_modules ]; then npm ci; fi
npx tsc --noEmit -p tsconfig.json
npm run --silent build

if [ $# -gt 0 ]; then
  exec npx tap "$@"
fi
exec npx tap test/unit test/harness-selftest test/e2e

#!/usr/bin/env bash
# Packs @chunkwise/core as npm would publish it, installs the tarball into a new service outside the
# repo (with its peers from the registry) and runs a job there: the package works outside the workspace.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
npm pack -w packages/core --pack-destination "$work" --silent >/dev/null
mkdir "$work/service"
cd "$work/service"
echo '{ "name": "service", "private": true, "type": "module" }' > package.json
npm install --silent --no-audit --no-fund "$work"/chunkwise-core-*.tgz \
  "effect@^3.22.2" "@effect/sql@^0.52.1" "@effect/platform@^0.97.2" "@effect/experimental@^0.61.1"
cp "$root/scripts/pack-smoke/main.mjs" .
node main.mjs | grep "^packed:"

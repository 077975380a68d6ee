#!/usr/bin/env bash
# Runs every `go test -fuzz` target in the module for $FUZZTIME each (default 20s).
# Crashers land in the package's testdata/fuzz/<Target>/; commit them with the fix.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME=${FUZZTIME:-20s}
status=0
for pkg in $(go list ./...); do
  if ! listing=$(go test -list '^Fuzz' "$pkg" 2>&1); then
    echo "== $pkg does not build:"; echo "$listing"; status=1; continue
  fi
  targets=$(echo "$listing" | grep '^Fuzz' || true)
  for t in $targets; do
    echo "== fuzz $pkg $t ($FUZZTIME)"
    if ! go test -run '^$' -fuzz "^${t}\$" -fuzztime "$FUZZTIME" "$pkg"; then
      status=1
    fi
  done
done
exit $status

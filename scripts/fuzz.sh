#!/usr/bin/env bash
# Runs every fuzz target for a while (default 10 minutes each), one after
# another, and prints each target's last progress line (elapsed, executions).
# Crashers are saved under internal/<pkg>/testdata/fuzz/<Target>/ and then
# replayed by every ordinary `go test` run: commit them with the fix.
# Minimisation of new inputs is capped at 10s (FUZZ_MINIMIZE): with the
# default 60s, slow decoders (X-Wing key parsing) spend the run minimising.
#
#   scripts/fuzz.sh            # 10m per target
#   scripts/fuzz.sh 30s        # a quick pass
#   FUZZ_LOG_DIR=/tmp/fuzz scripts/fuzz.sh 10m
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-10m}"
logs="${FUZZ_LOG_DIR:-$(mktemp -d)}"
mkdir -p "$logs"
status=0
for pkg in $(go list ./...); do
  dir="$(go list -f '{{.Dir}}' "$pkg")"
  for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort); do
    log="$logs/$target.log"
    echo "== $pkg $target for $duration"
    if go test "$pkg" -run '^$' -fuzz "^${target}\$" -fuzztime "$duration" -fuzzminimizetime "${FUZZ_MINIMIZE:-10s}" >"$log" 2>&1; then
      grep -E '^fuzz: elapsed' "$log" | tail -1
    else
      status=1
      tail -30 "$log"
    fi
  done
done
echo "logs: $logs"
exit $status

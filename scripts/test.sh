#!/usr/bin/env bash
# The whole test suite: Go (unit, shared and public vectors, Go↔Node and
# Go↔Chromium round trips, fuzz-corpus replays, structure, stores on SQLite
# and on throwaway PostgreSQL clusters, the official provider SDKs against
# the provider emulator — the Node ones in test/sdk-node run inside go test,
# one subtest each) and the browser crypto module under Node's test runner. Installs what it needs when run as
# root (Debian packages via apt-get) and leaves nothing running behind.
#
#   scripts/test.sh            # locally: a missing component skips its tests with a message
#   CI=true scripts/test.sh    # CI: a missing component fails its tests
#
# Slow runs live apart: scripts/fuzz.sh (fuzzing), and the benchmarks named
# in docs/crypto.md.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

need_apt=()
command -v node >/dev/null || { echo "node (Node.js 20+) is required" >&2; exit 1; }
command -v chromium >/dev/null || need_apt+=(chromium)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null || need_apt+=(postgresql)
# login VMs: QEMU microvm, qemu-img overlays, Debian's cloud kernel, a static busybox for the test image
command -v qemu-system-x86_64 >/dev/null || need_apt+=(qemu-system-x86)
command -v qemu-img >/dev/null || need_apt+=(qemu-utils)
compgen -G '/boot/vmlinuz-*-cloud-amd64' >/dev/null || need_apt+=(linux-image-cloud-amd64)
dpkg -s busybox-static >/dev/null 2>&1 || need_apt+=(busybox-static)
command -v ip >/dev/null || need_apt+=(iproute2)
command -v runc >/dev/null || need_apt+=(runc)               # runtime containers
[[ -f /etc/ssl/certs/ca-certificates.crt ]] || need_apt+=(ca-certificates)  # the runtime image's CA bundle
if ((${#need_apt[@]})); then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    log "installing ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    echo "note: ${need_apt[*]} missing and not root: their tests will skip (or fail with CI=true)" >&2
  fi
fi

if [[ ! -d test/sdk-node/node_modules ]]; then
  log "npm ci (test/sdk-node: the official OpenAI and Anthropic Node SDKs, pinned)"
  (cd test/sdk-node && npm ci --no-audit --no-fund) ||
    echo "note: npm ci failed: the Node SDK tests will skip (or fail with CI=true)" >&2
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

log "go vet"
go vet ./...

log "go test"
go_status=0
go test -count=1 -v -timeout 20m ./... 2>&1 | tee "$work/go.log" || go_status=$?

log "node --test (browser crypto module)"
node_status=0
(cd web && node --test test/*.test.mjs) 2>&1 | tee "$work/node.log" || node_status=$?

count() { grep -cE "$1" "$2" || true; }
go_pass=$(count '^ *--- PASS' "$work/go.log")
go_fail=$(count '^ *--- FAIL' "$work/go.log")
go_skip=$(count '^ *--- SKIP' "$work/go.log")
node_pass=$(sed -n 's/^# pass //p' "$work/node.log" | tail -1)
node_fail=$(sed -n 's/^# fail //p' "$work/node.log" | tail -1)
node_skip=$(sed -n 's/^# skipped //p' "$work/node.log" | tail -1)

log "summary"
echo "go:   ${go_pass} passed, ${go_fail} failed, ${go_skip} skipped (tests and subtests)"
grep -hE 'node sdk tests: |shared vectors: |public vectors .*skipped|skipped [0-9]+: |javascript checked|chromium checked|go checked|conformance suite passed|FIRECRACKER CONFORMANCE SKIPPED|zero-trace: [0-9]+ lifecycles;' "$work/go.log" | sed 's/^ *[a-z_]*\.go:[0-9]*: /      /' || true
echo "node: ${node_pass:-0} passed, ${node_fail:-0} failed, ${node_skip:-0} skipped"
if ((go_status != 0 || node_status != 0)) || [[ -z "${node_pass:-}" ]]; then
  echo "tests: $((go_pass + ${node_pass:-0})) passed, $((go_fail + ${node_fail:-0})) failed"
  echo "FAILED (go exit $go_status, node exit $node_status)"
  exit 1
fi
echo "tests: $((go_pass + node_pass)) passed, $((go_fail + node_fail)) failed, $((go_skip + ${node_skip:-0})) skipped"

#!/usr/bin/env bash
# Tests that need kernel features this host lacks (quotas), run inside the VM (vm/run):
# the test binaries built here run there unchanged, with --ignored selecting them.
set -euo pipefail
cd "$(dirname "$0")/.."
vm/setup.sh >/dev/null
bins=$(cargo test --release -p graphdriver-harness --test vfs_quota --test overlay2 --no-run --message-format=json 2>/dev/null |
  python3 -c 'import sys, json
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["executable"])')
[ -n "$bins" ] || { echo "vm-tests: no test binaries" >&2; exit 1; }
for b in $bins; do
  echo "--- in the VM: $(basename "$b") --ignored"
  vm/run -- "$b" --ignored --test-threads=1
done

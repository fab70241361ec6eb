#!/usr/bin/env bash
# Tests that need kernel features this host lacks (quotas, device-mapper), run inside the VM
# (`graphctl vm`): the test binaries built here run there unchanged, with --ignored selecting
# them; then the whole conformance suite on devmapper, with nothing allowed to skip.
set -euo pipefail
cd "$(dirname "$0")/.."
vm/setup.sh >/dev/null
bins=$(cargo test --release -p graphdriver-harness --test vfs_quota --test overlay2 --test devmapper \
    --no-run --message-format=json 2>/dev/null |
  python3 -c 'import sys, json
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["executable"])')
[ -n "$bins" ] || { echo "vm-tests: no test binaries" >&2; exit 1; }
G=$PWD/target/release/graphctl
[ -x "$G" ] || cargo build --release -q -p graphdriver-harness --bin graphctl
for b in $bins; do
  echo "--- in the VM: $(basename "$b") --ignored"
  "$G" vm --modules loop,dm-thin-pool -- "$b" --ignored --test-threads=1
done
echo "--- in the VM: conformance suite on devmapper"
GRAPHDRIVER_REQUIRE=devmapper "$G" vm --modules loop,dm-thin-pool -- "$G" check --driver devmapper

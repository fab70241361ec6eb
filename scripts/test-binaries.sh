# Sourced by the VM scripts. test_binaries ARGS...: builds the test targets that
# `cargo test --release ARGS --no-run` names and prints their executables' paths, one a line
# (they run in the VM unchanged, the host's root being shared).
test_binaries() {
  cargo test --release "$@" --no-run --message-format=json 2>/dev/null |
    python3 -c 'import sys, json
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["executable"])'
}

# in_vm SECONDS COMMAND...: runs COMMAND (a `graphctl vm` or `vm/run` line) and, when it has
# not finished in SECONDS, kills it and runs it once more, saying so. A guest under software
# emulation has been seen to hang once in many runs (qemu spinning, no output); a second hang
# fails the run.
in_vm() {
  local limit=$1; shift
  local rc=0
  timeout --kill-after=10 "$limit" "$@" || rc=$?
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    echo "in_vm: no result after ${limit}s; killed it, running it once more: $*" >&2
    rc=0
    timeout --kill-after=10 "$limit" "$@" || rc=$?
  fi
  return "$rc"
}

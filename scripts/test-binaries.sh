# Sourced by the VM scripts.
#
# build_workspace: the release build every script shares (`cargo build --workspace
# --all-targets --release`, as scripts/test.sh runs it). Building a single package instead
# (`-p ...`) resolves other cargo features for the dependencies they share, so it rebuilds
# them and relinks target/release/graphctl, and the next whole-workspace build undoes it.
build_workspace() {
  cargo build --workspace --all-targets --release
}

# test_binaries NAME...: the executables of the integration tests named NAME (for example
# `devmapper` for graphctl/tests/devmapper.rs), one a line, built as `cargo test --workspace
# --release` builds them (so nothing is rebuilt after scripts/test.sh). They run in the VM
# unchanged, the host's root being shared.
test_binaries() {
  cargo test --workspace --release --no-run --message-format=json 2>/dev/null |
    python3 -c 'import sys, json
names = sys.argv[1:]
for line in sys.stdin:
    m = json.loads(line)
    t = m.get("target") or {}
    if m.get("reason") == "compiler-artifact" and m.get("executable") and t.get("kind") == ["test"] and t.get("name") in names:
        print(m["executable"])' "$@"
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

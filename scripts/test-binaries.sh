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

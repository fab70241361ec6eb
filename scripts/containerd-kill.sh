#!/usr/bin/env bash
# The snapshotter service killed in the middle of Prepare, Commit and Remove, then
# restarted, under a real containerd (scripts/containerd.sh). Per backend and per crash point
# (GRAPHDRIVER_FAILPOINT=NAME makes the service abort there, as SIGKILL would stop it):
#   - a committed base with a file, and for Commit and Remove an active snapshot on it with
#     a file of its own, made through containerd with the service as usual;
#   - the service restarted with the crash point; the operation through `ctr snapshots`.
#     Prepare and Commit: ctr fails because the service died. Remove: containerd drops its
#     own record and ctr succeeds; its garbage collector then asks the service to remove
#     the snapshot, and the service dies there;
#   - the service restarted without it; then `ctr snapshots ls` shows the operation either
#     done or not (no half state), every listed active snapshot mounts (`ctr snapshots
#     mounts`, mount, its files are there, write one, umount), every committed one can be
#     prepared on and shows its files, the operation retried (when not done) succeeds, and
#     once everything is removed the service holds no layer, mount or loop device.
# Plus a plain `kill -9` of the service while a loop of prepares runs: every prepare ctr
# saw succeed is listed, the listed ones mount, the rest can be prepared again.
#   scripts/containerd-kill.sh [BACKEND...]    (default: vfs overlay2 btrfs)
# One line per case, then "containerd kill: N passed, M failed". Run as root. Safe to run
# twice. GRAPHCTL and GRAPHDRIVER_CONTAINERD_DIR as for scripts/containerd.sh;
# GRAPHDRIVER_KILL_LOG=FILE appends each case's stderr there (with bash -x, its trace).
set -euo pipefail
cd "$(dirname "$0")/.."
BACKENDS=("$@"); [ ${#BACKENDS[@]} -gt 0 ] || BACKENDS=(vfs overlay2 btrfs)
DIR=${GRAPHDRIVER_CONTAINERD_DIR:-/var/tmp/graphdriver-containerd}
export GRAPHDRIVER_CONTAINERD_DIR=$DIR
unset GRAPHDRIVER_FAILPOINT # only the restarts below set it

PREPARE_POINTS=(snapshotter.prepare.after-record create.after-make snapshotter.prepare.after-create
                get.after-mount snapshotter.prepare.after-mount)
COMMIT_POINTS=(snapshotter.commit.after-unhold snapshotter.commit.after-release)
REMOVE_POINTS=(snapshotter.remove.after-record snapshotter.remove.after-release remove.after-record
               snapshotter.remove.after-discard)

MNT=$(mktemp -d /var/tmp/graphdriver-kill.XXXXXX)
LOOP_PID=
cleanup() {
  [ -z "$LOOP_PID" ] || kill "$LOOP_PID" 2>/dev/null || true
  if mountpoint -q "$MNT"; then umount -l "$MNT"; fi
  rmdir "$MNT" 2>/dev/null || true
  rm -f "$MNT.ok" "$MNT.why" "$MNT.err"
  scripts/containerd.sh stop
}
trap cleanup EXIT
scripts/containerd.sh start "${BACKENDS[@]}"
CTR=(ctr --address "$DIR/containerd.sock" --namespace graphdriver)

passed=0 failed=0
B= # the backend under test
WHY= # why the current case failed
snap() { "${CTR[@]}" snapshots --snapshotter "graphdriver-$B" "$@"; }
svc_pid() { cat "$DIR/graphdriver-$B.pid"; }
bad() { WHY="$*"; return 1; }
alive() { # alive PID: running, not a zombie waiting for init to reap it
  local s
  s=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
  [ "${s%% *}" != Z ]
}

# restart [FAILPOINT]: the backend's service again, with the crash point or without
restart() {
  if [ -n "${1:-}" ]; then
    GRAPHDRIVER_FAILPOINT=$1 scripts/containerd.sh restart-snapshotter "$B"
  else
    scripts/containerd.sh restart-snapshotter "$B"
  fi
}

# ready: containerd reaches the restarted service again (its client reconnects with a
# backoff); `ls` asks the service about each snapshot containerd has
ready() {
  local i out
  for i in $(seq 100); do
    out=$(snap ls 2>/dev/null) && [ -n "$(awk 'NR > 1' <<<"$out")" ] && return 0
    sleep 0.1
  done
  bad "containerd does not reach the restarted service"
}

# died FAILPOINT LOGLINES [SECONDS]: the service aborted at that point (its log had
# LOGLINES lines before)
died() {
  local pid i
  pid=$(svc_pid)
  for i in $(seq $(( ${3:-5} * 20 ))); do
    alive "$pid" || break
    sleep 0.05
  done
  ! alive "$pid" || bad "the service did not die at $1"
  tail -n +"$(( $2 + 1 ))" "$DIR/graphdriver-$B.log" | grep -qF "failpoint $1: aborting" ||
    bad "the service died, but not at $1: $(tail -n +"$(( $2 + 1 ))" "$DIR/graphdriver-$B.log" | tail -2)"
}

# held [EXTRA]: the service holds one layer per snapshot containerd lists on this backend
# (and up to EXTRA more: a snapshot the service made but whose reply the kill lost, which
# containerd rolled back; its garbage collector removes it)
held() {
  local n l
  n=$(state "" | grep -c . || true)
  l=$(layers)
  [ "$l" -ge "$n" ] && [ "$l" -le $((n + ${1:-0})) ] ||
    bad "the service holds $l layers for $n snapshots"
}

# state PREFIX: "key parent kind" of the snapshots containerd lists under PREFIX, sorted
state() {
  local out
  out=$(snap ls) || bad "ctr snapshots ls failed"
  awk -v p="$1" 'NR > 1 && index($1, p) == 1 {print $1, ($3 == "" ? "-" : $2), ($3 == "" ? $2 : $3)}' \
    <<<"$out" | sort
}

# mount_check KEY FILE...: mounts the active KEY where containerd says, the files are there
# with their names as content, writes one more, unmounts
mount_check() {
  local key=$1 f m; shift
  m=$(snap mounts "$MNT" "$key") || bad "no mounts for $key"
  eval "$m" || bad "cannot mount $key: $m"
  for f in "$@"; do
    [ "$(cat "$MNT/$f" 2>/dev/null)" = "$f" ] || { umount "$MNT"; bad "$key: file $f is missing"; }
  done
  echo written > "$MNT/written-$RANDOM" || { umount "$MNT"; bad "$key: not writable"; }
  umount "$MNT"
}

# write KEY FILE: mounts the active KEY, writes FILE (its name as content), unmounts
write() {
  eval "$(snap mounts "$MNT" "$1")"
  echo "$2" > "$MNT/$2"
  umount "$MNT"
}

# every_listed FILES_OF...: every snapshot of this backend containerd lists works: an
# active one mounts with its files; on a committed one a snapshot can be prepared that
# shows its files. FILES_OF is a function: FILES_OF KEY prints the files KEY must hold.
every_listed() {
  local files_of=$1 key parent kind
  while read -r key parent kind; do
    # shellcheck disable=SC2046
    case $kind in
      Active) mount_check "$key" $($files_of "$key") ;;
      Committed)
        snap prepare "check-$key" "$key" || bad "cannot prepare on committed $key"
        mount_check "check-$key" $($files_of "$key")
        snap rm "check-$key" >/dev/null || bad "cannot remove check-$key"
        ;;
      *) bad "$key is $kind" ;;
    esac
  done < <(state "")
}

# layers: the driver layers the service holds
layers() {
  local d
  d=$(find "$DIR/gd-$B" -maxdepth 3 -type d -path '*/.store/layers' 2>/dev/null | head -1)
  [ -n "$d" ] || { echo 0; return; }
  find "$d" -maxdepth 1 -name 'ctrd-*' | wc -l
}

# kick: a snapshot made and removed, so that containerd's garbage collector runs again (a
# removal while it runs may wait for the next one); fails while containerd cannot reach
# the service
kick() { snap prepare "gc-kick-$$" >/dev/null 2>&1 && snap rm "gc-kick-$$" >/dev/null 2>&1; }

# clean: containerd lists nothing on this backend, and (once containerd's garbage collector
# has called the service) the service holds no layer and no mount but btrfs's own
clean() {
  local i n mounts
  [ -z "$(state "")" ] || bad "snapshots left: $(state "" | tr '\n' ' ')"
  for i in $(seq 200); do
    n=$(layers); [ "$n" = 0 ] && break
    [ $((i % 20)) != 0 ] || kick || true
    sleep 0.05
  done
  [ "$n" = 0 ] || bad "$n layers left in the service's store"
  mounts=$(awk -v d="$DIR/gd-$B/" 'index($5, d) == 1 && $5 != d "btrfs" {print $5}' /proc/self/mountinfo)
  [ -z "$mounts" ] || bad "mounts left: $mounts"
}

# The files each snapshot of a case must show (see base and crash below).
K= # the case's prefix
OP= # the case's operation
files_of() {
  case $OP:$1 in
    commit:"$K-x"|commit:"$K-c"|commit:"check-$K-c"|remove:"$K-x") echo base x ;;
    *) echo base ;; # the base, a prepared snapshot, the loop's snapshots, checks of them
  esac
}

# base: the committed "$K-base" holding file base
base() {
  snap prepare "$K-w"
  write "$K-w" base
  snap commit "$K-base" "$K-w"
}

# crash OP POINT: one case
crash() {
  local op=$1 point=$2 rc out before done_state not_state now lines
  # the fixture, with the service as usual
  base
  case $op in
    prepare)
      not_state="$K-base - Committed"
      done_state=$(printf '%s\n' "$K-base - Committed" "$K-x $K-base Active")
      ;;
    commit|remove)
      snap prepare "$K-x" "$K-base"
      write "$K-x" x
      not_state=$(printf '%s\n' "$K-base - Committed" "$K-x $K-base Active")
      done_state="$K-base - Committed"
      [ "$op" = remove ] ||
        done_state=$(printf '%s\n' "$K-base - Committed" "$K-c $K-base Committed")
      ;;
  esac
  before=$(state "$K-")
  [ "$before" = "$not_state" ] || bad "fixture: $before"
  # the operation, and the service dies in it
  restart "$point" || bad "cannot start the service with $point"
  ready
  lines=$(wc -l < "$DIR/graphdriver-$B.log")
  rc=0
  case $op in
    prepare) out=$(snap prepare "$K-x" "$K-base" 2>&1) || rc=$? ;;
    commit) out=$(snap commit "$K-c" "$K-x" 2>&1) || rc=$? ;;
    remove) out=$(snap rm "$K-x" 2>&1) || rc=$? ;;
  esac
  if [ "$op" = remove ]; then
    # containerd removes its record; its garbage collector calls the service after
    [ "$rc" = 0 ] || bad "ctr snapshots rm failed: $out"
    died "$point" "$lines" 10
  else
    [ "$rc" != 0 ] || bad "ctr snapshots $op succeeded with the service dying at $point"
    died "$point" "$lines"
  fi
  # back without the crash point
  restart || bad "the service does not start again after $point: $(tail -3 "$DIR/graphdriver-$B.log")"
  ready
  now=$(state "$K-")
  if [ "$now" = "$done_state" ]; then
    how=done
  elif [ "$now" = "$not_state" ]; then
    how="not done"
  else
    bad "half state after $op at $point: containerd lists $(tr '\n' ',' <<<"$now")" \
      "$(snap info "$K-x" 2>&1 | tail -1)"
  fi
  held
  every_listed files_of
  if [ "$how" = "not done" ]; then
    case $op in
      prepare) snap prepare "$K-x" "$K-base" >/dev/null || bad "the prepare cannot be retried" ;;
      commit) snap commit "$K-c" "$K-x" || bad "the commit cannot be retried" ;;
      remove) snap rm "$K-x" || bad "the remove cannot be retried" ;;
    esac
    [ "$(state "$K-")" = "$done_state" ] || bad "retried, but: $(state "$K-" | tr '\n' ',')"
    how="not done, retried"
    every_listed files_of
  fi
  # everything removed
  case $op in
    prepare) snap rm "$K-x" ;;
    commit) snap rm "$K-c" ;;
  esac
  snap rm "$K-base"
  clean
  WHY=$how
}

# killed: kill -9 of the service while a loop of prepares runs
killed() {
  local i ok listed n key
  base
  : > "$MNT.ok"
  ( for i in $(seq 1000); do
      snap prepare "$K-$i" "$K-base" >/dev/null 2>&1 || exit 0
      echo "$K-$i" >> "$MNT.ok"
    done ) &
  LOOP_PID=$!
  # a few prepares in, then SIGKILL in the middle of one
  for i in $(seq 100); do [ "$(wc -l < "$MNT.ok")" -lt 5 ] || break; sleep 0.05; done
  sleep "0.0$((RANDOM % 10))"
  kill -KILL "$(svc_pid)"
  wait "$LOOP_PID" || true
  LOOP_PID=
  ok=$(wc -l < "$MNT.ok")
  [ "$ok" -ge 5 ] || bad "only $ok prepares before the kill"
  restart || bad "the service does not start again: $(tail -3 "$DIR/graphdriver-$B.log")"
  ready
  held 1
  listed=$(state "$K-" | grep -v "^$K-base " || true)
  # every prepare ctr saw succeed is there, active on the base; at most the one in flight more
  while read -r key; do
    grep -qx "$key $K-base Active" <<<"$listed" || bad "$key was prepared but is not listed"
  done < "$MNT.ok"
  n=$(grep -c . <<<"$listed" || true)
  [ "$n" -le $((ok + 1)) ] || bad "$n listed after $ok prepares"
  every_listed files_of
  # the one in flight can be prepared (again or for the first time)
  key=$K-$((ok + 1))
  if ! grep -q "^$key " <<<"$listed"; then
    snap prepare "$key" "$K-base" >/dev/null || bad "the interrupted prepare cannot be retried"
    mount_check "$key" base
  fi
  for key in $(state "$K-" | awk '$1 != k {print $1}' k="$K-base"); do snap rm "$key"; done
  snap rm "$K-base"
  rm -f "$MNT.ok"
  clean
  WHY="$ok prepares done, $n listed"
}

report() { # report NAME STATUS DETAIL
  printf '%-6s %-9s %-48s %s\n' "$2" "$B" "$1" "$3"
}

# scrub: after a failed case, the next starts from nothing: the service as usual, whatever
# the case left removed (children first, a few rounds)
scrub() {
  local i key
  [ -z "$LOOP_PID" ] || kill "$LOOP_PID" 2>/dev/null || true
  LOOP_PID=
  if mountpoint -q "$MNT"; then umount -l "$MNT"; fi
  scripts/containerd.sh restart-snapshotter "$B" >/dev/null 2>&1 || true
  for i in $(seq 50); do kick && break; sleep 0.1; done
  for key in "$K-x" "$K-c" "$K-w" "$K-base"; do snap rm "$key" >/dev/null 2>&1 || true; done
  for i in 1 2 3 4; do
    for key in $(snap ls 2>/dev/null | awk 'NR > 1 {print $1}'); do
      snap rm "$key" >/dev/null 2>&1 || true
    done
  done
}

for B in "${BACKENDS[@]}"; do
  n=0
  points=("${PREPARE_POINTS[@]}")
  # overlay2's Prepare mounts nothing (containerd makes the overlay mount the service returns)
  [ "$B" = overlay2 ] && points=("${points[@]/get.after-mount}")
  for spec in $(printf 'prepare:%s\n' "${points[@]}" | grep -v ':$') "${COMMIT_POINTS[@]/#/commit:}" \
              "${REMOVE_POINTS[@]/#/remove:}" "loop:kill -9"; do
    n=$((n + 1)); K=c$n
    op=${spec%%:*} point=${spec#*:} OP=$op
    t=$(date +%s%N)
    WHY=
    # each case in a subshell: its first failure ends it (not under `if`, where bash would
    # ignore set -e); WHY comes back through a file
    set +e
    ( set -e
      trap 'echo "$WHY" > "$MNT.why"; [ -z "$LOOP_PID" ] || kill "$LOOP_PID" 2>/dev/null' EXIT
      if [ "$op" = loop ]; then killed; else crash "$op" "$point"; fi ) 2>"$MNT.err"
    rc=$?
    set -e
    [ -z "${GRAPHDRIVER_KILL_LOG:-}" ] || { echo "=== $B $op $point: $rc"; cat "$MNT.err"; } >> "$GRAPHDRIVER_KILL_LOG"
    if [ "$rc" = 0 ]; then
      passed=$((passed + 1))
      report "$op $point" ok "$(cat "$MNT.why") ($(( ($(date +%s%N) - t) / 1000000 )) ms)"
    else
      failed=$((failed + 1))
      why=$(cat "$MNT.why" 2>/dev/null)
      report "$op $point" FAIL "${why:-$(tail -1 "$MNT.err")}"
      sed 's/^/    /' "$MNT.err" | tail -5
      scrub
    fi
    rm -f "$MNT.why" "$MNT.err"
  done
done

rmdir "$MNT"
rm -f "$MNT.ok" "$MNT.why" "$MNT.err"
scripts/containerd.sh stop
trap - EXIT
leftover=$(losetup -a | grep -c "$DIR" || true)
if [ "$leftover" != 0 ]; then
  echo "FAIL   loop devices left: $(losetup -a | grep "$DIR")"
  failed=$((failed + 1))
fi
echo "containerd kill: $passed passed, $failed failed"
[ "$failed" = 0 ]

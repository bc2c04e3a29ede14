#!/usr/bin/env bash
# bench/fs/wakeups.sh — how often remote small-file work wakes the owner's
# daemons (not a test): context switches of node 2's mount.mfs and mfsd
# (every thread, voluntary + involuntary, /proc/PID/task/*/status) while
# node 1 creates, writes 4 KiB to, stats and unlinks --files files of node 2.
# Unlike files/s, these counts do not swing with the host's load.
#
#   sudo bash bench/fs/wakeups.sh [--files 2000]
#
# MFS_BIN=DIR runs another build's binaries. Starts a 2-node mfs-cluster in
# its own directory and stops it on exit.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${MFS_BIN:-$ROOT/build/bin}
FILES=2000
while (($#)); do
  case $1 in
    --files) FILES=$2; shift 2 ;;
    -h | --help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "wakeups.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[[ $FILES =~ ^[0-9]+$ && $FILES -gt 0 && $FILES -le 1000000 ]] ||
  { echo "wakeups.sh: --files must be 1..1000000" >&2; exit 2; }
[[ -x $BIN/mfs-cluster ]] || { echo "wakeups.sh: $BIN/mfs-cluster missing (build first)" >&2; exit 1; }
D=$(mktemp -d /tmp/mfs-wakeups.XXXXXX)
trap '"$BIN/mfs-cluster" down --dir "$D" --purge > /dev/null 2>&1 || true; rm -rf "$D"' EXIT
"$BIN/mfs-cluster" up 2 --dir "$D" > /dev/null
"$BIN/mfs-cluster" exec --dir "$D" 1 -- mkdir -p /mfs/2/wakeups

switches() {  # switches PATTERN: the sum over every thread of the matching processes
  local t=0 p s
  for p in $(pgrep -f "$1"); do
    for s in /proc/"$p"/task/*/status; do
      t=$((t + $(awk '/ctxt_switches/ {n += $2} END {print n + 0}' "$s" 2> /dev/null || echo 0)))
    done
  done
  echo "$t"
}
mount2="mount.mfs .*config=$D/node2/"
mfsd2="mfsd --config $D/node2/"
m0=$(switches "$mount2"); d0=$(switches "$mfsd2")
"$BIN/mfs-cluster" exec --dir "$D" 1 -- python3 -c '
import os, sys
for i in range(int(sys.argv[1])):
    p = "/mfs/2/wakeups/f%d" % i
    with open(p, "w") as f:
        f.write("x" * 4096)
    os.stat(p)
    os.unlink(p)
' "$FILES"
m1=$(switches "$mount2"); d1=$(switches "$mfsd2")
status=$("$BIN/mfs-cluster" control --dir "$D" 2 '{"op":"fs.status"}' 2> /dev/null || true)
pushes=$(echo "$status" | sed -n 's/.*"own_mount_pushes":\([0-9]*\).*/\1/p')
awk -v n="$FILES" -v m=$((m1 - m0)) -v d=$((d1 - d0)) -v p="${pushes:-n/a}" 'BEGIN {
  printf "%d remote create+write+stat+unlink cycles from node 1\n", n
  printf "node 2 mount.mfs: %d context switches (%.2f per cycle)\n", m, m / n
  printf "node 2 mfsd:      %d context switches (%.2f per cycle)\n", d, d / n
  printf "invalidations pushed to node 2'"'"'s own mount: %s\n", p
}'

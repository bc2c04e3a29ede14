#!/usr/bin/env bash
# bench/migrate/dfsa.sh — read throughput on a /mfs file by a migrated
# process: DFSA against the deputy (not a test).
#
#   sudo bash bench/migrate/dfsa.sh [--mib 64] [--passes 4]
#
# Starts a 2-node mfs-cluster (its own directory, a random port), puts a
# --mib MiB file in node 2's export, and runs mfs-bench-readbw on it from
# node 1 (read() of 4 KiB, 64 KiB and 1 MiB, --passes passes after one
# untimed pass, so every mode reads a warm page cache where it runs; 4 KiB
# reads show the cost per call):
#   home       under mfsrun on node 1, never moved (reads /mfs/2 over the network)
#   dfsa       moved to node 2 first: its fd was re-opened there, each
#              read() is one seccomp trap answered CONTINUE (node-local file)
#   forwarded  the same, with DFSA switched off for the process (the home
#              supervisor's "dfsa" op): each read() goes to the deputy
#              (capped at 4 MiB per call) and its bytes come back over TCP
# Prints a markdown table with the ratios. Stops everything on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${MFS_BIN:-$ROOT/build/bin}
MIB=64
PASSES=4
while (($#)); do
  case $1 in
    --mib) MIB=$2; shift 2 ;;
    --passes) PASSES=$2; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "dfsa.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
for b in mfs-cluster mfsd mfs-supervisor mfsrun mfs-bench-readbw; do
  [[ -x $BIN/$b ]] || { echo "dfsa.sh: $BIN/$b missing (build first)" >&2; exit 1; }
done

DIR=$(mktemp -d /tmp/mfs-bench-dfsa.XXXXXX)
cleanup() {
  "$BIN/mfs-cluster" down --dir "$DIR" > /dev/null 2>&1 || true
  rm -rf "$DIR"
}
trap cleanup EXIT
"$BIN/mfs-cluster" up 2 --dir "$DIR" --port $((20000 + RANDOM % 5000)) > /dev/null
on() { local n=$1; shift; "$BIN/mfs-cluster" exec "$n" --dir "$DIR" -- "$@"; }
on 1 test -d /mfs/2 || { echo "dfsa.sh: /mfs is not mounted in the nodes" >&2; exit 1; }
head -c $((MIB << 20)) /dev/urandom > "$DIR/node2/export/data"

# One run: $1 mode, $2 chunk bytes. Prints "MB/s µs-per-read".
run() {
  local mode=$1 chunk=$2 gate=$DIR/gate.$RANDOM out=$DIR/out.$RANDOM
  on 1 sh -c "PATH=$BIN:\$PATH; (mfsrun -- mfs-bench-readbw /mfs/2/data $chunk $PASSES $gate > $out 2>&1 & echo \$! > $DIR/pid) < /dev/null" > /dev/null
  local pid=""
  for _ in $(seq 200); do pid=$(cat "$DIR/pid" 2>/dev/null || true); [[ -n $pid ]] && break; sleep 0.05; done
  rm -f "$DIR/pid"
  # Wait for its file to be open (past mfsrun's exec).
  for _ in $(seq 400); do [[ -e /proc/$pid/fd/3 ]] && grep -q readbw "/proc/$pid/cmdline" 2>/dev/null && break; sleep 0.02; done
  local sock=$DIR/node1/run/sup/$pid.sock
  for _ in $(seq 200); do [[ -S $sock ]] && break; sleep 0.02; done
  if [[ $mode == forwarded ]]; then
    python3 -c 'import json,socket,sys
s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b"{\"op\":\"dfsa\",\"enable\":false}\n"); s.recv(4096)' "$sock"
  fi
  if [[ $mode != home ]]; then
    on 1 "$BIN/mfsmigrate" "$pid" 2 > /dev/null
  fi
  touch "$gate"
  for _ in $(seq 6000); do [[ -s $out ]] && ! kill -0 "$pid" 2>/dev/null && break; sleep 0.05; done
  awk '{printf "%s %.2f\n", $1, $3 * 1e6 / $4}' "$out"
}

echo "## DFSA read throughput ($MIB MiB file on node 2, read from a process of node 1, $PASSES warm passes)"
echo
echo "| read() size | home MB/s (µs/read) | remote, DFSA MB/s (µs/read) | remote, forwarded MB/s (µs/read) | DFSA / forwarded | DFSA / home |"
echo "|---|---|---|---|---|---|"
for chunk in 4096 65536 1048576; do
  read -r h hu < <(run home $chunk)
  read -r d du < <(run dfsa $chunk)
  read -r f fu < <(run forwarded $chunk)
  awk -v c=$chunk -v h="$h" -v d="$d" -v f="$f" -v hu="$hu" -v du="$du" -v fu="$fu" 'BEGIN {
    printf "| %d KiB | %.0f (%.1f) | %.0f (%.1f) | %.0f (%.1f) | %.1fx | %.2fx |\n", c / 1024, h, hu, d, du, f, fu, d / f, d / h }'
done

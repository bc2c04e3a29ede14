#!/usr/bin/env bash
# The demo command: installs what is missing, builds, starts a 3-node mfs
# cluster on this machine, shows it working, and stops it.
#
#   sudo bash scripts/demo.sh [--keep]
#
# --keep leaves the cluster running for you to explore (it prints how).
# Environment: MFS_DEMO_DIR (cluster directory, default /tmp/mfs-demo).
#
# Each part of the demo is one function below; add yours to DEMO_PARTS.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

keep=0
for arg in "$@"; do
  case $arg in
    --keep) keep=1 ;;
    -h | --help) sed -n '2,11p' "$0"; exit 0 ;;
    *) fail "unknown argument '$arg' (try --keep)" ;;
  esac
done

N=3
export MFS_CLUSTER_DIR=${MFS_DEMO_DIR:-/tmp/mfs-demo}
export PATH=$MFS_ROOT/build/bin:$PATH
CLUSTER=mfs-cluster

# Runs and shows one command.
show() {
  printf '\n$ %s\n' "$*"
  "$@"
}

alive_peers() {
  "$CLUSTER" exec "$1" -- mfsctl status --json 2>/dev/null | grep -c '"state": "alive"' || true
}

# wait_alive NODE COUNT: until NODE sees COUNT peers alive (bounded).
wait_alive() {
  local deadline=$((SECONDS + 20))
  until [[ $(alive_peers "$1") == "$2" ]]; do
    ((SECONDS < deadline)) || fail "node $1 does not see $2 peers alive after 20 s (see $MFS_CLUSTER_DIR/node$1/mfsd.log)"
    sleep 0.2
  done
}

demo_membership() {
  say "membership: every node sees the other two"
  local i
  for ((i = 1; i <= N; i++)); do wait_alive "$i" $((N - 1)); done
  for ((i = 1; i <= N; i++)); do show "$CLUSTER" exec "$i" -- mfsctl status; done

  say "a node dies: the others notice within dead_after_ms (3 s)"
  show "$CLUSTER" kill 3
  local deadline=$((SECONDS + 15))
  until [[ $(alive_peers 1) == 1 ]]; do
    ((SECONDS < deadline)) || fail "node 1 still sees node 3 alive 15 s after it was killed"
    sleep 0.2
  done
  show "$CLUSTER" exec 1 -- mfsctl status
  show "$CLUSTER" restart 3
  for ((i = 1; i <= N; i++)); do wait_alive "$i" $((N - 1)); done
  show "$CLUSTER" exec 3 -- mfsctl status
}

# /mfs (issue 4): a file written on one node, read through the others.
demo_fs() {
  say "/mfs: every node's export on every node"
  local i deadline=$((SECONDS + 20))
  for ((i = 1; i <= N; i++)); do
    until "$CLUSTER" exec "$i" -- test -d "/mfs/$(((i % N) + 1))" 2>/dev/null; do
      ((SECONDS < deadline)) || fail "node $i does not show /mfs/$(((i % N) + 1)) (see $MFS_CLUSTER_DIR/node$i/mfsd.log)"
      sleep 0.2
    done
  done
  show "$CLUSTER" exec 1 -- ls -l /mfs
  show "$CLUSTER" exec 1 -- sh -c 'echo "written on node 1 at $(date +%T)" > /mfs/2/hello.txt'
  for ((i = 1; i <= N; i++)); do show "$CLUSTER" exec "$i" -- cat /mfs/2/hello.txt; done
  show "$CLUSTER" exec 3 -- getfattr -n user.mfs.node /mfs/2/hello.txt
  show "$CLUSTER" exec 3 -- sh -c 'echo "appended on node 3" >> /mfs/2/hello.txt'
  show "$CLUSTER" exec 1 -- cat /mfs/2/hello.txt
  show "$CLUSTER" exec 2 -- readlink /mfs/here
}

demo_locality() {
  say "I/O locality: a job on node 1 reads 1, 2 and 3 MiB stored on nodes 1, 2 and 3"
  if ! "$CLUSTER" exec 1 -- test -d /mfs/3 2>/dev/null; then
    echo "(skipped: /mfs is not mounted in the nodes)"
    return 0
  fi
  local i
  for i in 1 2 3; do
    head -c $((i << 20)) /dev/zero >"$MFS_CLUSTER_DIR/node$i/export/demo-part"
  done
  show "$CLUSTER" exec 1 -- sh -c 'cat /mfs/1/demo-part /mfs/2/demo-part /mfs/3/demo-part | wc -c'
  sleep 1.5 # the client reports every 500 ms
  show "$CLUSTER" exec 1 -- mfsstat -a -c cat
  show "$CLUSTER" exec 2 -- mfsstat -a --html "$MFS_CLUSTER_DIR/locality.html"
  echo "open $MFS_CLUSTER_DIR/locality.html in a browser for the heat map and time series;"
  echo "mfs-cluster exec 1 -- mfsmon   shows the live view (q quits)"
}

# start_on_node1 OUT WHAT CMD...: runs CMD under mfsrun on node 1 in the
# background, output to OUT, and prints its pid once it has printed something.
start_on_node1() {
  local out=$1 what=$2
  shift 2
  "$CLUSTER" exec 1 -- sh -c "setsid mfsrun $* > $out 2>&1 & echo \$! > $out.pid"
  local deadline=$((SECONDS + 20))
  until [[ -s $out ]]; do
    ((SECONDS < deadline)) || fail "the $what did not start (see $MFS_CLUSTER_DIR/node1/mfsd.log)"
    sleep 0.2
  done
  cat "$out.pid"
}

# Process migration (issue 6): a running program goes to node 2 and back;
# its output never stops and mfsps shows where it is.
demo_migration() {
  say "migration: a running counter moves to node 2 and back"
  local out=$MFS_CLUSTER_DIR/counter.out pid
  pid=$(start_on_node1 "$out" counter mfs-test-counter 400 150000 64)
  show "$CLUSTER" exec 1 -- mfsps
  show tail -n 2 "$out"
  show "$CLUSTER" exec 1 -- mfsmigrate "$pid" 2
  show "$CLUSTER" exec 1 -- mfsps
  show "$CLUSTER" exec 2 -- mfsps
  sleep 1
  show tail -n 2 "$out"
  show "$CLUSTER" exec 1 -- mfsmigrate "$pid" home
  show "$CLUSTER" exec 1 -- mfsps
  sleep 1
  show tail -n 2 "$out"
  kill "$pid" 2>/dev/null || true
}
# DFSA (issue 6): a job started on node 1 reads a file stored on node 2; moved
# there, its reads of that open file run on node 2 (not through the deputy at
# home), and node 2's locality report shows them under the job's home pid.
demo_dfsa() {
  say "DFSA: a job on node 1 reading node 2's data moves to node 2"
  if ! "$CLUSTER" exec 1 -- test -d /mfs/2 2>/dev/null; then
    echo "(skipped: /mfs is not mounted in the nodes)"
    return 0
  fi
  local data=$MFS_CLUSTER_DIR/node2/export/demo-data out=$MFS_CLUSTER_DIR/dfsa.out pid
  head -c $((48 << 20)) /dev/urandom >"$data"
  # 1 MiB every 40 ms: about two seconds of reading, so the move lands mid-file.
  cat >"$MFS_CLUSTER_DIR/reader.py" <<'EOT'
import hashlib, sys, time
h, n = hashlib.sha256(), 0
with open(sys.argv[1], "rb") as f:
    while chunk := f.read(1 << 20):
        h.update(chunk)
        n += len(chunk)
        if n % (8 << 20) == 0:
            print(f"{n >> 20} MiB read", flush=True)
        time.sleep(0.04)
print(h.hexdigest(), flush=True)
EOT
  pid=$(start_on_node1 "$out" reader python3 "$MFS_CLUSTER_DIR/reader.py" /mfs/2/demo-data)
  show "$CLUSTER" exec 1 -- mfsmigrate "$pid" 2
  show "$CLUSTER" exec 1 -- mfsps
  local deadline=$((SECONDS + 60))
  while kill -0 "$pid" 2>/dev/null; do
    ((SECONDS < deadline)) || fail "the reader did not finish within 60 s"
    sleep 0.2
  done
  show cat "$out"
  show "$CLUSTER" exec 2 -- sha256sum /mfs/2/demo-data
  sleep 1.5 # the clients report every 500 ms
  echo "(node 2 saw the reads made after the move, under the job's home identity 1:$pid)"
  show "$CLUSTER" exec 2 -- mfsstat -a -p "$pid"
  rm -f "$data"
}
DEMO_PARTS=(demo_membership demo_fs demo_locality demo_migration demo_dfsa)

bash "$MFS_ROOT/scripts/setup.sh"

say "starting a $N-node cluster in $MFS_CLUSTER_DIR"
"$CLUSTER" down >/dev/null 2>&1 || true # a cluster left by an earlier --keep
stop_cluster() { "$CLUSTER" down || true; }
trap stop_cluster EXIT
show "$CLUSTER" up "$N"
show "$CLUSTER" status

for part in "${DEMO_PARTS[@]}"; do "$part"; done

if ((keep)); then
  trap - EXIT
  say "the cluster keeps running (--keep). To explore:"
  cat <<EOT
  export MFS_CLUSTER_DIR=$MFS_CLUSTER_DIR PATH=$MFS_ROOT/build/bin:\$PATH
  mfs-cluster status                       # nodes, pids, state
  mfs-cluster exec 2 -- mfsctl status      # node 2's view of the cluster
  mfs-cluster exec 1 -- bash               # a shell on node 1 (its own /mfs, /run/mfs)
  mfs-cluster exec 1 -- mfsstat -a         # I/O locality of every process, node, program
  mfs-cluster exec 1 -- mfsmon             # live view: load, memory, I/O, locality (q quits)
  mfs-cluster kill 3; mfs-cluster restart 3
  mfs-cluster partition 2; mfs-cluster heal 2
  less $MFS_CLUSTER_DIR/node1/mfsd.log
  man -l $MFS_ROOT/man/mfs-cluster.1
To stop it:
  $MFS_ROOT/build/bin/mfs-cluster down --dir $MFS_CLUSTER_DIR
EOT
else
  say "stopping the cluster (run with --keep to explore it)"
fi

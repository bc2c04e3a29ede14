#!/usr/bin/env bash
# bench/fs/run.sh — the file-system benchmark: each workload on the native
# export directory, on /mfs/<local>, on /mfs/<remote> over loopback, and on
# sshfs over loopback (the peer), in one run, with the ratio to native.
#
#   sudo bash bench/fs/run.sh [--size 1G] [--rand-size 256M] [--files 10000]
#                             [--runtime 10] [--only native,mfs-local,...]
#
# Workloads: sequential write and read (1 MiB blocks, read with a cold
# cache), 4 KiB random reads on a file (cold cache, --runtime seconds),
# create+stat+unlink of small 4 KiB files. mfs-local runs with locality
# accounting on (the default: mount.mfs sees every read and write);
# mfs-local-pt the same with `mfsctl accounting off`, where the default
# `[fs] passthrough = auto` lets the kernel pass local file I/O through to
# the backing file (FUSE passthrough, when the kernel has it). Nodes 1 and 2
# read FUSE requests from /dev/fuse (`[fs] io_uring = "off"`); the -ur
# targets run the same on node 3, whose mount takes them off FUSE's
# io_uring queues (`io_uring = "on"`, where the kernel has FUSE over
# io_uring): mfs-local-ur on /mfs/3, mfs-remote-ur on /mfs/2 from node 3.
# A 3-node cluster is started with mfs-cluster (node 1 is "here"); sshfs
# mounts node 2's export through an sshd on 127.0.0.1:$SSH_PORT with a
# throw-away key. Everything started is stopped on exit. Needs root
# (drop_caches, mounts, namespaces).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${MFS_BIN:-$ROOT/build/bin}
SIZE=1G
RAND_SIZE=256M
FILES=10000
RUNTIME=10
TARGETS="native mfs-local mfs-local-ur mfs-local-pt mfs-remote mfs-remote-ur sshfs"
ONLY=${TARGETS// /,}
SSH_PORT=${SSH_PORT:-2299}

while (($#)); do
  case $1 in
    --size) SIZE=$2; shift 2 ;;
    --rand-size) RAND_SIZE=$2; shift 2 ;;
    --files) FILES=$2; shift 2 ;;
    --runtime) RUNTIME=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

for tool in fio jq; do
  command -v $tool >/dev/null || { echo "run.sh: $tool is missing (scripts/setup.sh installs it)" >&2; exit 1; }
done
[[ $(id -u) == 0 ]] || { echo "run.sh: must run as root" >&2; exit 1; }

WORK=$(mktemp -d /var/tmp/mfs-bench-fs.XXXXXX)
CLUSTER=$WORK/cluster
SSHFS_MNT=$WORK/sshfs
SSHD_PID=
cleanup() {
  set +e
  mountpoint -q "$SSHFS_MNT" 2>/dev/null && fusermount3 -u "$SSHFS_MNT"
  [[ -n $SSHD_PID ]] && kill "$SSHD_PID" 2>/dev/null
  [[ -f $CLUSTER/cluster.env ]] && "$BIN/mfs-cluster" down --dir "$CLUSTER" >/dev/null 2>&1
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

want() { [[ ,$ONLY, == *,$1,* ]]; }

declare -A PATH_OF RUN_OF SKIP
# Where each target's files live, and the host directory under it (for chattr).
if [[ ,$ONLY, == *,mfs-* ]]; then
  printf '[fs]\nio_uring = "off"\n' >"$WORK/devfuse.toml"
  printf '[fs]\nio_uring = "on"\n' >"$WORK/uring.toml"
  if [[ ! -x $BIN/mfs-cluster ]]; then
    SKIP[mfs-local]="mfs-cluster not built"; SKIP[mfs-remote]="mfs-cluster not built"
  elif ! "$BIN/mfs-cluster" up 3 --dir "$CLUSTER" --config-extra "$WORK/devfuse.toml" \
      --config-extra 3="$WORK/uring.toml" >"$WORK/up.log" 2>&1; then
    SKIP[mfs-local]="cluster did not start: $(tail -1 "$WORK/up.log")"
    SKIP[mfs-remote]=${SKIP[mfs-local]}
  elif ! "$BIN/mfs-cluster" exec 1 --dir "$CLUSTER" -- test -d /mfs/2 2>/dev/null; then
    SKIP[mfs-local]="/mfs is not mounted in the cluster nodes"
    SKIP[mfs-remote]=${SKIP[mfs-local]}
  fi
  SKIP[mfs-local-pt]=${SKIP[mfs-local]:-}
  SKIP[mfs-local-ur]=${SKIP[mfs-local]:-}
  SKIP[mfs-remote-ur]=${SKIP[mfs-remote]:-}
  if [[ -z ${SKIP[mfs-local]:-} ]] &&
    ! "$BIN/mfs-cluster" exec 3 --dir "$CLUSTER" -- getfattr --only-values -n user.mfs.uring /mfs 2>/dev/null | grep -q '^1 '; then
    SKIP[mfs-local-ur]="node 3's mount did not get FUSE over io_uring from this kernel"
    SKIP[mfs-remote-ur]=${SKIP[mfs-local-ur]}
  fi
fi
EXPORT1=$CLUSTER/node1/export
EXPORT2=$CLUSTER/node2/export
EXPORT3=$CLUSTER/node3/export
mkdir -p "$EXPORT1" "$EXPORT2" "$EXPORT3"
PATH_OF[native]=$EXPORT1/native;     HOSTDIR_native=$EXPORT1/native
PATH_OF[mfs-local]=/mfs/1/local;     HOSTDIR_mfs_local=$EXPORT1/local
PATH_OF[mfs-local-pt]=/mfs/1/localpt; HOSTDIR_mfs_local_pt=$EXPORT1/localpt
PATH_OF[mfs-local-ur]=/mfs/3/local;  HOSTDIR_mfs_local_ur=$EXPORT3/local
PATH_OF[mfs-remote]=/mfs/2/remote;   HOSTDIR_mfs_remote=$EXPORT2/remote
PATH_OF[mfs-remote-ur]=/mfs/2/remoteur; HOSTDIR_mfs_remote_ur=$EXPORT2/remoteur
PATH_OF[sshfs]=$SSHFS_MNT/sshfs;     HOSTDIR_sshfs=$EXPORT2/sshfs

if want sshfs; then
  if ! command -v sshfs >/dev/null || [[ ! -x /usr/sbin/sshd ]]; then
    SKIP[sshfs]="sshfs or openssh-server missing"
  else
    mkdir -p "$WORK/ssh" "$SSHFS_MNT" /run/sshd
    ssh-keygen -q -t ed25519 -N '' -f "$WORK/ssh/host" && ssh-keygen -q -t ed25519 -N '' -f "$WORK/ssh/user"
    cp "$WORK/ssh/user.pub" "$WORK/ssh/authorized_keys"
    chmod 700 "$WORK/ssh"; chmod 600 "$WORK/ssh/authorized_keys"
    cat >"$WORK/ssh/sshd_config" <<CFG
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey $WORK/ssh/host
AuthorizedKeysFile $WORK/ssh/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
StrictModes no
PidFile $WORK/ssh/sshd.pid
Subsystem sftp internal-sftp
CFG
    /usr/sbin/sshd -D -f "$WORK/ssh/sshd_config" -E "$WORK/ssh/sshd.log" & SSHD_PID=$!
    for _ in $(seq 50); do (echo >/dev/tcp/127.0.0.1/$SSH_PORT) 2>/dev/null && break; sleep 0.1; done
    if ! sshfs -o "port=$SSH_PORT,IdentityFile=$WORK/ssh/user,StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,LogLevel=ERROR" \
        "root@127.0.0.1:$EXPORT2" "$SSHFS_MNT" 2>"$WORK/sshfs.err"; then
      SKIP[sshfs]="sshfs mount failed: $(head -1 "$WORK/sshfs.err")"
    fi
  fi
fi

# Runs a command where the target is reachable: inside node 1 for /mfs,
# node 3 for the -ur targets.
run_on() {
  local target=$1; shift
  case $target in
    mfs-*-ur) "$BIN/mfs-cluster" exec 3 --dir "$CLUSTER" -- "$@" ;;
    mfs-*) "$BIN/mfs-cluster" exec 1 --dir "$CLUSTER" -- "$@" ;;
    *) "$@" ;;
  esac
}
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
fio_json() {  # target, fio args... -> json on stdout
  local t=$1; shift
  run_on "$t" fio --output-format=json --ioengine=psync --group_reporting "$@"
}

# Switches node 1's locality accounting and waits until its client follows.
accounting() {
  local want=false; [[ $1 == on ]] && want=true
  run_on mfs-local "$BIN/mfsctl" accounting "$1" >/dev/null || return 1
  for _ in $(seq 100); do
    run_on mfs-local "$BIN/mfsctl" accounting --json | grep -q "\"client\":$want" && return 0
    sleep 0.1
  done
  return 1
}

declare -A WRITE READ IOPS FILESPS
PT_NOTE=
REQ_NOTE=
PHASE_NOTE=
for t in $TARGETS; do
  want "$t" || continue
  [[ -n ${SKIP[$t]:-} ]] && { echo "skip $t: ${SKIP[$t]}" >&2; continue; }
  if [[ $t == mfs-local-pt ]]; then
    accounting off || { echo "skip $t: node 1 did not switch accounting off" >&2; SKIP[$t]="accounting switch failed"; continue; }
    PT_NOTE=$(run_on "$t" getfattr --only-values -n user.mfs.passthrough /mfs 2>/dev/null || true)
  fi
  hv=HOSTDIR_${t//-/_}; host_dir=${!hv}
  # Each target's small files in a block group of their own: on this
  # journal-less ext4, creating inodes in a group where many were deleted
  # in the last seconds crawls (ext4 skips "recently deleted" inodes one by
  # one), so a target sharing the previous target's group would be timed
  # against the allocator. +T on the parent *before* mkdir makes the Orlov
  # allocator put "small" in a fresh group.
  mkdir -p "$host_dir" && chattr +T "$host_dir" 2>/dev/null || true
  mkdir -p "$host_dir/small" && chattr +T "$host_dir/small" 2>/dev/null || true
  p=${PATH_OF[$t]}
  echo "== $t ($p)" >&2
  WRITE[$t]=$(fio_json "$t" --name=seqwrite --filename="$p/seq" --rw=write --bs=1M --size="$SIZE" --end_fsync=1 |
    jq '.jobs[0].write.bw_bytes')
  drop_caches
  READ[$t]=$(fio_json "$t" --name=seqread --filename="$p/seq" --rw=read --bs=1M --size="$SIZE" |
    jq '.jobs[0].read.bw_bytes')
  run_on "$t" rm -f "$p/seq"
  fio_json "$t" --name=prep --filename="$p/rand" --rw=write --bs=1M --size="$RAND_SIZE" --end_fsync=1 >/dev/null
  drop_caches
  IOPS[$t]=$(fio_json "$t" --name=randread --filename="$p/rand" --rw=randread --bs=4k --size="$RAND_SIZE" \
    --runtime="$RUNTIME" --time_based | jq '.jobs[0].read.iops')
  run_on "$t" rm -f "$p/rand"
  # Node 1's mount counts the FUSE requests it reads and the network
  # requests it sends (user.mfs.requests): what a small-file cycle costs,
  # whatever the load of the machine does to the wall clock.
  [[ $t == mfs-* ]] && req0=$(run_on "$t" getfattr --only-values -n user.mfs.requests /mfs 2>/dev/null || true)
  small=$(run_on "$t" "$BIN/mfs_bench_smallfiles" "$p/small" "$FILES" 4096)
  FILESPS[$t]=$(sed -n 's/^files_per_s=\([0-9]*\).*/\1/p' <<<"$small")
  PHASE_NOTE+="${PHASE_NOTE:+, }$t $(sed -n 's/.*create_s=\([0-9.]*\) stat_s=\([0-9.]*\) unlink_s=\([0-9.]*\).*/\1 \/ \2 \/ \3/p' <<<"$small")"
  if [[ $t == mfs-* && -n ${req0:-} ]]; then
    req1=$(run_on "$t" getfattr --only-values -n user.mfs.requests /mfs 2>/dev/null || true)
    REQ_NOTE+="${REQ_NOTE:+, }$t $(awk -v a="$req0" -v b="$req1" -v n="$FILES" 'BEGIN{split(a,x," "); split(b,y," "); printf "%.1f / %.1f", (y[1]-x[1])/n, (y[2]-x[2])/n}')"
  fi
  if [[ $t == mfs-local-pt ]]; then
    after=$(run_on "$t" getfattr --only-values -n user.mfs.passthrough /mfs 2>/dev/null || true)
    PT_NOTE="passthrough (negotiated, inodes now, opens) before: ${PT_NOTE:-?}  after: ${after:-?}"
    accounting on || echo "run.sh: node 1 did not switch accounting back on" >&2
  fi
done

ratio() { [[ -n ${2:-} && -n ${1:-} && $2 != 0 ]] && awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2fx", a/b}' || echo "-"; }
mib() { [[ -n ${1:-} ]] && awk -v v="$1" 'BEGIN{printf "%.0f", v/1048576}' || echo "-"; }
num() { [[ -n ${1:-} ]] && awk -v v="$1" 'BEGIN{printf "%.0f", v}' || echo "-"; }

echo
echo "bench/fs  $(date -u +%FT%TZ)  size=$SIZE rand=$RAND_SIZE/${RUNTIME}s files=$FILES  ($(nproc) cores, $(uname -r))"
printf '%-13s %11s %7s %11s %7s %9s %7s %9s %7s\n' target "write MiB/s" ratio "read MiB/s" ratio "rand IOPS" ratio "files/s" ratio
for t in $TARGETS; do
  want "$t" || continue
  if [[ -n ${SKIP[$t]:-} ]]; then printf '%-13s skipped: %s\n' "$t" "${SKIP[$t]}"; continue; fi
  printf '%-13s %11s %7s %11s %7s %9s %7s %9s %7s\n' "$t" \
    "$(mib "${WRITE[$t]}")" "$(ratio "${WRITE[$t]}" "${WRITE[native]:-}")" \
    "$(mib "${READ[$t]}")" "$(ratio "${READ[$t]}" "${READ[native]:-}")" \
    "$(num "${IOPS[$t]}")" "$(ratio "${IOPS[$t]}" "${IOPS[native]:-}")" \
    "$(num "${FILESPS[$t]}")" "$(ratio "${FILESPS[$t]}" "${FILESPS[native]:-}")"
done
if [[ -n $PT_NOTE ]]; then echo "mfs-local-pt: $PT_NOTE"; fi
if [[ -n $REQ_NOTE ]]; then echo "requests per small-file cycle on the target's node (FUSE / network): $REQ_NOTE"; fi
if [[ -n ${PHASE_NOTE:-} ]]; then echo "small-file phases, seconds (create+write / stat / unlink): $PHASE_NOTE"; fi

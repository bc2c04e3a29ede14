#!/usr/bin/env bash
# bench/locality/run.sh — what I/O accounting costs, with accounting on and
# off in one run.
#
#   sudo bash bench/locality/run.sh [--seconds S] [--rounds N] [--fs]
#                                   [--fs-rounds N] [--fs-seconds S]
#
# 1. mfs_bench_locality: 4 KiB reads from the page cache (the cheapest read
#    /mfs can serve) with and without IoRecorder::Record() per read, rounds
#    alternating, medians; and the cost of one Record() call.
# 2. With --fs (needs fio, root, mfs-cluster and the FUSE client): one
#    2-node cluster; node 1's /mfs client is switched off and on at run time
#    (`mfsctl accounting off|on`, the same mount, the same files), in
#    alternating order for --fs-rounds rounds. Each round runs the bench/fs
#    workloads that reach the client on every operation — 4 KiB random
#    O_DIRECT reads on /mfs/1 and on /mfs/2, a 1 MiB O_DIRECT sequential read
#    on /mfs/1, create+stat+unlink of 4 KiB files on /mfs/1 — and charges
#    mount.mfs's CPU time to the mode. Prints medians and the difference.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${MFS_BIN:-$ROOT/build/bin}
SECONDS_PER=1
ROUNDS=7
FS=0
FS_ROUNDS=5
FS_SECONDS=3
while (($#)); do
  case $1 in
    --seconds) SECONDS_PER=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --fs) FS=1; shift ;;
    --fs-rounds) FS_ROUNDS=$2; shift 2 ;;
    --fs-seconds) FS_SECONDS=$2; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[[ $FS_ROUNDS =~ ^[1-9][0-9]?$ ]] || { echo "run.sh: --fs-rounds must be 1..99" >&2; exit 2; }
[[ $FS_SECONDS =~ ^[1-9][0-9]?$ ]] || { echo "run.sh: --fs-seconds must be 1..99" >&2; exit 2; }

[[ -x $BIN/mfs_bench_locality ]] || { echo "run.sh: build first ($BIN/mfs_bench_locality missing)" >&2; exit 1; }
echo "# $(date -u +%FT%TZ) $(uname -r), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
"$BIN/mfs_bench_locality" --seconds "$SECONDS_PER" --rounds "$ROUNDS"
((FS)) || exit 0

command -v fio >/dev/null || { echo "run.sh: fio is missing (scripts/setup.sh installs it)" >&2; exit 1; }
[[ $(id -u) == 0 ]] || { echo "run.sh: --fs must run as root" >&2; exit 1; }
WORK=$(mktemp -d /var/tmp/mfs-bench-locality.XXXXXX)
CLUSTER=$WORK/cluster
cleanup() {
  set +e
  [[ -f $CLUSTER/cluster.env ]] && "$BIN/mfs-cluster" down --dir "$CLUSTER" >/dev/null 2>&1
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A port of its own, so that another cluster on this machine does not collide.
PORT=${MFS_BENCH_PORT:-$((21000 + RANDOM % 20000))}
"$BIN/mfs-cluster" up 2 --dir "$CLUSTER" --port "$PORT" >"$WORK/up.log" 2>&1 ||
  { echo "run.sh: cluster did not start: $(tail -1 "$WORK/up.log")" >&2; exit 1; }
on1() { "$BIN/mfs-cluster" exec 1 --dir "$CLUSTER" -- "$@"; }
for _ in $(seq 100); do on1 test -d /mfs/2 2>/dev/null && break; sleep 0.1; done
on1 test -d /mfs/2 || { echo "run.sh: /mfs is not mounted in the cluster nodes" >&2; exit 1; }

# node 1's mount.mfs: the child of the mfsd started with node1's config.
mfsd1=$(pgrep -f "$CLUSTER/node1/mfsd.toml" | head -1)
mount1=$(pgrep -P "$mfsd1" -x mount.mfs | head -1)
[[ -n $mount1 ]] || { echo "run.sh: cannot find node 1's mount.mfs" >&2; exit 1; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$mount1/stat"; }
TICK=$(getconf CLK_TCK)

mkdir -p "$CLUSTER/node1/export/b/small" "$CLUSTER/node2/export/b"
chattr +T "$CLUSTER/node1/export/b" "$CLUSTER/node1/export/b/small" 2>/dev/null || true
head -c 256M /dev/urandom >"$CLUSTER/node1/export/b/data"
head -c 64M /dev/urandom >"$CLUSTER/node2/export/b/data"

switch() {  # on|off: switch node 1 and wait until its client says it follows
  on1 mfsctl accounting "$1" >/dev/null
  local want=false; [[ $1 == on ]] && want=true
  for _ in $(seq 100); do
    on1 mfsctl accounting --json | grep -q "\"client\":$want" && return 0
    sleep 0.1
  done
  echo "run.sh: node 1's client did not follow 'accounting $1'" >&2; exit 1
}
fio_val() {  # jq-free: pull one number out of fio's terse output field N
  local field=$1; shift
  on1 fio --minimal --ioengine=psync --direct=1 "$@" | cut -d';' -f"$field"
}
# One measurement: prints "<value> <mount.mfs CPU µs per op>".
measure() {
  local kind=$1 c0 c1 v ops
  c0=$(cpu_ticks)
  case $kind in
    rand-local|rand-remote)
      local f=/mfs/1/b/data; [[ $kind == rand-remote ]] && f=/mfs/2/b/data
      v=$(fio_val 8 --name=r --filename=$f --rw=randread --bs=4k --runtime="$FS_SECONDS" --time_based)
      ops=$((v * FS_SECONDS)) ;;
    seq-local)
      v=$(fio_val 7 --name=s --filename=/mfs/1/b/data --rw=read --bs=1M --size=256M)
      v=$((v / 1024)); ops=256 ;;  # KiB/s -> MiB/s; 256 reads of 1 MiB
    files-local)
      v=$(on1 "$BIN/mfs_bench_smallfiles" /mfs/1/b/small 2000 4096 | sed -n 's/^files_per_s=\([0-9]*\).*/\1/p')
      ops=2000 ;;
  esac
  c1=$(cpu_ticks)
  awk -v v="$v" -v c=$((c1 - c0)) -v t="$TICK" -v n="$ops" 'BEGIN{printf "%s %.2f\n", v, (n > 0 ? c / t * 1e6 / n : 0)}'
}

KINDS=(rand-local rand-remote seq-local files-local)
declare -A VAL CPU
echo
echo "## accounting off vs on, node 1's /mfs client switched at run time, $FS_ROUNDS rounds"
printf '%-6s %-5s %12s %12s %12s %12s\n' round mode "rand-l IOPS" "rand-r IOPS" "seq-l MiB/s" "files/s"
for r in $(seq 1 "$FS_ROUNDS"); do
  order="off on"; ((r % 2 == 0)) && order="on off"
  for mode in $order; do
    switch "$mode"
    line=()
    for k in "${KINDS[@]}"; do
      read -r v c < <(measure "$k")
      VAL[$k,$mode]+="$v "; CPU[$k,$mode]+="$c "
      line+=("$v")
    done
    printf '%-6s %-5s %12s %12s %12s %12s\n' "$r" "$mode" "${line[@]}"
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END{if (NR%2) print a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2}'; }
echo
printf '%-12s %12s %12s %9s %16s %16s\n' workload "off median" "on median" "on/off" "off CPU µs/op" "on CPU µs/op"
for k in "${KINDS[@]}"; do
  off=$(median <<<"${VAL[$k,off]}"); on=$(median <<<"${VAL[$k,on]}")
  coff=$(median <<<"${CPU[$k,off]}"); con=$(median <<<"${CPU[$k,on]}")
  printf '%-12s %12s %12s %9s %16s %16s\n' "$k" "$off" "$on" \
    "$(awk -v a="$on" -v b="$off" 'BEGIN{printf "%+.1f%%", (a / b - 1) * 100}')" "$coff" "$con"
done
echo "(mount.mfs CPU is user+system time of node 1's client per operation; ticks of 1/$TICK s)"

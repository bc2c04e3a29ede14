#!/usr/bin/env bash
# bench/locality/run.sh — what I/O accounting costs, with accounting on and
# off in one run.
#
#   sudo bash bench/locality/run.sh [--seconds S] [--rounds N] [--fs]
#
# 1. mfs_bench_locality: 4 KiB reads from the page cache (the cheapest read
#    /mfs can serve) with and without IoRecorder::Record() per read, rounds
#    alternating, medians; and the cost of one Record() call.
# 2. With --fs (needs fio, jq, root, mfs-cluster and the FUSE client):
#    bench/fs/run.sh on /mfs (local and remote) twice, MFS_LOCALITY=off then
#    on. mount.mfs reads MFS_LOCALITY when it starts (RecorderOptions::
#    FromEnvironment); mfs-cluster starts it with this script's environment.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${MFS_BIN:-$ROOT/build/bin}
SECONDS_PER=1
ROUNDS=7
FS=0
while (($#)); do
  case $1 in
    --seconds) SECONDS_PER=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --fs) FS=1; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

[[ -x $BIN/mfs_bench_locality ]] || { echo "run.sh: build first ($BIN/mfs_bench_locality missing)" >&2; exit 1; }
echo "# $(date -u +%FT%TZ) $(uname -r), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
"$BIN/mfs_bench_locality" --seconds "$SECONDS_PER" --rounds "$ROUNDS"

if ((FS)); then
  for mode in off on; do
    echo
    echo "## bench/fs with MFS_LOCALITY=$mode"
    MFS_LOCALITY=$mode bash "$ROOT/bench/fs/run.sh" --only mfs-local,mfs-remote --size 256M \
      --rand-size 64M --files 2000 --runtime 5
  done
fi

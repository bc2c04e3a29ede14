#!/usr/bin/env bash
# bench/migrate/run.sh — process migration benchmark (not a test).
#
#   sudo bash bench/migrate/run.sh [--sizes "16 256 1024"] [--reps 3]
#                                  [--rewrite MIB_PER_S]
#
# Starts a 2-node cluster of mfsd (127.6.251.1 and .2, its own directory),
# then measures, in one run:
#   * downtime of one move home -> node 2 for each size of dirty memory
#     (with --rewrite, the program also rewrites its memory at that rate
#     throughout, during the move as before it; CRIU's program does too),
#     as mfsmigrate reports it (freeze to confirmed running) and as the
#     program sees it on its own wall clock (longest pause); median of --reps;
#     fitted as fixed + per-MiB cost (least squares);
#   * a getpid() round trip forwarded to the deputy vs native, against its
#     floor (one SECCOMP_RET_USER_NOTIF trap + one loopback TCP round trip,
#     both measured now by mfs-bench-floor, just before each of --reps runs);
#     and a forwarded 64-byte write() to /dev/null against the same floor;
#   * a CPU-bound job under mfsrun at home and remote, each sharing one CPU
#     with a plain run of the same job: the ratio of their paces (this VM's
#     CPU speed swings cancel out; a plain-beside-plain pair is the control);
#   * CRIU (plain dump to tmpfs + restore) on the same program when a criu
#     >= 4.1 is on PATH or named by CRIU=; otherwise the column is skipped
#     with the reason.
# Prints a markdown report on stdout. Stops everything it started on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${MFS_BIN:-$ROOT/build/bin}
SIZES="16 256 1024"
REPS=3
REWRITE=0
CPU_STEPS=600   # the CPU-bound job: ~10 ms a step here (alone)
CPU_FROM=60     # its steady pace is timed from this output line on
while (($#)); do
  case $1 in
    --sizes) SIZES=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
    --rewrite) REWRITE=$2; shift 2 ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
for b in mfsd mfs-supervisor mfsrun mfsmigrate mfs-bench-dirty mfs-bench-syscalls mfs-bench-floor mfs-test-counter; do
  [[ -x $BIN/$b ]] || { echo "run.sh: $BIN/$b missing (build first)" >&2; exit 1; }
done

DIR=$(mktemp -d /tmp/mfs-bench-migrate.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT

head -c 32 /dev/urandom | base64 > "$DIR/secret"; chmod 600 "$DIR/secret"
for i in 1 2; do
  mkdir -p "$DIR/n$i/run" "$DIR/n$i/state" "$DIR/n$i/export"
  cat > "$DIR/n$i/mfsd.toml" <<CONF
[node]
id = $i
address = "127.6.251.$i"
port = 7420
export = "$DIR/n$i/export"
state_dir = "$DIR/n$i/state"
secret_file = "$DIR/secret"
control_socket = "$DIR/n$i/run/mfsd.sock"
mount = ""
peers = ["127.6.251.1:7420", "127.6.251.2:7420"]
[membership]
heartbeat_ms = 200
dead_after_ms = 1500
[log]
level = "warn"
file = "$DIR/n$i/log"
CONF
  "$BIN/mfsd" --config "$DIR/n$i/mfsd.toml" & PIDS+=($!)
done
export MFS_SOCKET=$DIR/n1/run/mfsd.sock
for _ in $(seq 50); do
  "$BIN/mfsctl" status --json 2>/dev/null | grep -q '"alive"' && break
  sleep 0.2
done

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

echo "# bench/migrate — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, kernel $(uname -r)"
echo
echo "## Downtime of one move (home -> node 2), median of $REPS"
echo
CRIU_BIN=${CRIU:-$(command -v criu || true)}
CRIU_OK=""
CRIU_WHY="no criu on PATH (set CRIU=/path/to/criu >= 4.1)"
if [[ -n $CRIU_BIN && ! -x $CRIU_BIN ]]; then
  CRIU_WHY="CRIU=$CRIU_BIN is not an executable file"
elif [[ -n $CRIU_BIN ]]; then
  v=$("$CRIU_BIN" --version 2>/dev/null | sed -n 's/^Version: *//p' || true)
  if [[ -n $v ]] && printf '4.1\n%s\n' "$v" | sort -V -C; then CRIU_OK=1; else CRIU_WHY="criu ${v:-of unknown version} < 4.1 (3.x fails on this kernel's split vDSO)"; fi
fi
if [[ $REWRITE != 0 ]]; then echo "The program rewrites its memory at $REWRITE MiB/s throughout (before and during the move)."; echo; fi
if [[ -n $CRIU_OK ]]; then
  echo "| dirty MiB | mfs downtime (ms) | as the program saw it (ms) | CRIU dump+restore (ms) | mfs / CRIU |"
  echo "|---:|---:|---:|---:|---:|"
else
  echo "| dirty MiB | mfs downtime (ms) | as the program saw it (ms) |"
  echo "|---:|---:|---:|"
fi
FIT=""
FITG=""
PHASES=""
for mib in $SIZES; do
  d=(); g=(); c=()
  for _ in $(seq "$REPS"); do
    out=$DIR/dirty.out
    # Up to 60 s; told to stop (SIGUSR1, forwarded to the remote) 0.3 s
    # after the move, whatever the time spent before the freeze.
    "$BIN/mfsrun" "$BIN/mfs-bench-dirty" "$mib" 60 "$REWRITE" > "$out" & p=$!
    for _ in $(seq 600); do grep -q ready "$out" 2>/dev/null && break; sleep 0.05; done
    sleep 0.3
    r=$("$BIN/mfsmigrate" --json "$p" 2) || { echo "run.sh: move of $mib MiB failed (rep left out): $r" >&2; r=""; }
    sleep 0.3; kill -USR1 "$p" 2>/dev/null || true
    wait "$p" || true
    if [[ -n $r ]]; then
      d+=("$(echo "$r" | sed -n 's/.*"downtime_ms":\([0-9.]*\).*/\1/p')")
      g+=("$(sed -n 's/^max_gap_ms \([0-9.]*\).*/\1/p' "$out")")
    fi
    ph=$(echo "$r" | sed -n 's/.*"phases_ms":\({[^}]*}\).*/\1/p')
    pr=$(echo "$r" | sed -n 's/.*"prepared":\({[^}]*}\).*/\1/p')
    if [[ -n $CRIU_OK ]]; then
      "$BIN/mfs-bench-dirty" "$mib" 30 "$REWRITE" > "$DIR/criu.out" 2>&1 & cp=$!
      disown "$cp"  # the dump kills it: no "Killed" from bash
      for _ in $(seq 600); do grep -q ready "$DIR/criu.out" 2>/dev/null && break; sleep 0.05; done
      rm -rf "$DIR/img"; mkdir -p "$DIR/img"; mount -t tmpfs none "$DIR/img"
      t0=$(date +%s%N)
      "$CRIU_BIN" dump -t "$cp" -D "$DIR/img" --shell-job >/dev/null 2>&1 || true
      "$CRIU_BIN" restore -D "$DIR/img" --shell-job -d >/dev/null 2>&1 || true
      t1=$(date +%s%N)
      c+=("$(( (t1 - t0) / 1000000 ))")
      kill "$cp" 2>/dev/null || true  # the restored copy (same pid, not our child)
      umount "$DIR/img" || true
    fi
  done
  dm=$(printf '%s\n' "${d[@]}" | median); gm=$(printf '%s\n' "${g[@]}" | median)
  FIT+="$mib $dm"$'\n'
  FITG+="$mib $gm"$'\n'
  PHASES+="| $mib | ${ph:-?} | ${pr:--} |"$'\n'
  if [[ -n $CRIU_OK ]]; then
    cm=$(printf '%s\n' "${c[@]}" | median)
    echo "| $mib | $dm | $gm | $cm | $(awk -v a="$dm" -v b="$cm" 'BEGIN{printf "%.2f", a/b}') |"
  else
    echo "| $mib | $dm | $gm |"
  fi
done
echo
fit() { awk -v what="$1" 'NF==2 {n++; sx+=$1; sy+=$2; sxx+=$1*$1; sxy+=$1*$2}
  END { if (n > 1) { b=(n*sxy-sx*sy)/(n*sxx-sx*sx); a=(sy-b*sx)/n;
        printf "Fit (%s): downtime ~ %.1f ms + %.3f ms/MiB\n", what, a, b } }'; }
echo "$FIT" | fit "mfsmigrate"
echo
echo "$FITG" | fit "as the program saw it"
echo
echo "Phases of the last move per size (ms; capture, send, restore at the"
echo "destination, and the rest of the start round trip), and what the"
echo "destination prepared before the freeze (kPrepare: pages populated, time"
echo "before the freeze, pages the restore moved into place; - for a build"
echo "without it):"
echo
echo "| dirty MiB | phases_ms | prepared |"
echo "|---:|---|---|"
printf '%s' "$PHASES"
[[ -n $CRIU_OK ]] || echo "CRIU column skipped: $CRIU_WHY."
echo
echo "## Forwarded system call"
echo
# Floor and forwarded call measured back to back, --reps times (this VM's
# timings vary from run to run); medians, and the median of the ratios.
F=(); N=(); T=(); R=(); W=(); WR=(); WRR=()
for _ in $(seq "$REPS"); do
  "$BIN/mfs-bench-floor" 20000 > "$DIR/floor"
  notif=$(sed -n 's/user_notif_us //p' "$DIR/floor"); trace=$(sed -n 's/ret_trace_us //p' "$DIR/floor"); tcp=$(sed -n 's/tcp_rtt_us //p' "$DIR/floor")
  "$BIN/mfsrun" "$BIN/mfs-bench-syscalls" 20000 1500 > "$DIR/sys.out" & p=$!
  sleep 0.5; "$BIN/mfsmigrate" "$p" 2 >/dev/null; wait "$p" || true
  fwd=$(sed -n 's/getpid_ns \([0-9.]*\).*/\1/p' "$DIR/sys.out")
  fwd_us=$(awk -v x="$fwd" 'BEGIN{printf "%.2f", x/1000}')
  F+=("$fwd_us"); N+=("$notif"); T+=("$tcp"); W+=("$trace")
  R+=("$(awk -v a="$fwd_us" -v b="$notif" -v c="$tcp" 'BEGIN{printf "%.2f", a/(b+c)}')")
  # The same for a 64-byte write() to /dev/null (an in-buffer travels).
  "$BIN/mfsrun" "$BIN/mfs-bench-syscalls" 20000 1500 write > "$DIR/wr.out" & p=$!
  sleep 0.5; "$BIN/mfsmigrate" "$p" 2 >/dev/null; wait "$p" || true
  wr=$(sed -n 's/write_ns \([0-9.]*\).*/\1/p' "$DIR/wr.out")
  [[ -n $wr ]] && WR+=("$(awk -v x="$wr" 'BEGIN{printf "%.2f", x/1000}')")
  [[ -n $wr ]] && WRR+=("$(awk -v x="$wr" -v b="$notif" -v c="$tcp" 'BEGIN{printf "%.2f", x/1000/(b+c)}')")
done
native=$("$BIN/mfsrun" "$BIN/mfs-bench-syscalls" 1000000 | sed -n 's/getpid_ns \([0-9.]*\).*/\1/p')
fwd_us=$(printf '%s\n' "${F[@]}" | median); notif=$(printf '%s\n' "${N[@]}" | median)
tcp=$(printf '%s\n' "${T[@]}" | median); trace=$(printf '%s\n' "${W[@]}" | median)
floor=$(awk -v a="$notif" -v b="$tcp" 'BEGIN{printf "%.2f", a+b}')
echo "| getpid() | µs |"
echo "|---|---:|"
echo "| native (at home, under mfsrun) | $(awk -v x="$native" 'BEGIN{printf "%.3f", x/1000}') |"
echo "| forwarded (remote on node 2) | $fwd_us |"
echo "| floor: USER_NOTIF trap ($notif) + loopback TCP RTT ($tcp) | $floor |"
echo "| (SECCOMP_RET_TRACE trap, for comparison) | $trace |"
if ((${#WR[@]})); then
  echo "| write(64 B) to /dev/null, forwarded | $(printf '%s\n' "${WR[@]}" | median) |"
else
  echo "| write(64 B) to /dev/null, forwarded | n/a (this mfs-bench-syscalls has no write mode) |"
fi
echo
echo "Forwarded / floor, per run: ${R[*]}; median $(printf '%s\n' "${R[@]}" | median)x (medians of $REPS)"
((${#WRR[@]})) && echo "Forwarded write / floor, per run: ${WRR[*]}; median $(printf '%s\n' "${WRR[@]}" | median)x"
echo
echo "## CPU-bound job (mfs-test-counter $CPU_STEPS 400000 4), paired on one CPU"
echo
# This VM's CPU speed swings by 2x and more from one second to the next (the
# host's load), and its two vCPUs do not swing together, so run times taken
# one after the other, or side by side on the two CPUs, say nothing at the
# 2 % level. Instead each run shares CPU 0 with a plain run of the same job
# started at the same moment: the scheduler gives both the same CPU time,
# so both see the same swings, and the ratio of their paces while both run
# is the cost of running under mfsrun (at home or remote), swings cancelled.
# The cluster's daemons -- and so the supervisors and remotes they start --
# are pinned to CPU 0 for this part, and each job runs in a session of its
# own (setsid): the scheduler's autogroups then hold one job each, as the
# remote's, started by node 2's mfsd, always is. A pace is lines per second over the
# window in which both jobs are past line $CPU_FROM (the remote run has moved
# by then) and neither has finished; lines are stamped as they reach a
# reader at home (the remote's writes to its stdout are forwarded there).
for p in "${PIDS[@]}"; do taskset -a -c -p 0 "$p" > /dev/null; done
stamp() {  # stamp FILE CMD...: runs CMD on CPU 0, one monotonic stamp per output line
  local f=$1; shift
  setsid -w taskset -c 0 "$@" | python3 -c '
import sys, time
with open(sys.argv[1], "w") as f:
    for _ in sys.stdin:
        f.write("%.6f\n" % time.monotonic())' "$DIR/$f" || true  # exits with its checksum
}
pace_ratio() {  # pace_ratio A B: A's pace / B's pace while both run
  python3 - "$DIR/$1" "$DIR/$2" "$CPU_FROM" <<'PY'
import bisect, sys
a = [float(x) for x in open(sys.argv[1])]
b = [float(x) for x in open(sys.argv[2])]
k = int(sys.argv[3])
if len(a) <= k + 1 or len(b) <= k + 1:
    print("nan"); sys.exit()
lo, hi = max(a[k], b[k]), min(a[-1], b[-1])
if hi - lo < 1.0:
    print("nan"); sys.exit()
def done(v, t):  # lines of v done by time t, interpolated between stamps
    i = bisect.bisect_right(v, t)
    if i == 0: return 0.0
    if i >= len(v): return float(len(v))
    return i - 1 + (t - v[i - 1]) / (v[i] - v[i - 1])
print("%.4f" % ((done(a, hi) - done(a, lo)) / (done(b, hi) - done(b, lo))))
PY
}
pair() {  # pair CMD...: the pace of CMD relative to a plain run beside it
  stamp pair.plain "$BIN/mfs-test-counter" "$CPU_STEPS" 400000 4 &
  local p=$!
  stamp pair.other "$@"
  wait "$p"
  pace_ratio pair.other pair.plain
}
med() { printf '%s\n' "$@" | median; }
ctl=(); home_r=(); remote_r=()
for _ in $(seq "$REPS"); do
  ctl+=("$(pair "$BIN/mfs-test-counter" "$CPU_STEPS" 400000 4)")
  home_r+=("$(pair "$BIN/mfsrun" "$BIN/mfs-test-counter" "$CPU_STEPS" 400000 4)")
  remote_r+=("$(pair "$BIN/mfsrun" --node 2 "$BIN/mfs-test-counter" "$CPU_STEPS" 400000 4)")
done
for p in "${PIDS[@]}"; do taskset -a -c -p "0-$(($(nproc) - 1))" "$p" > /dev/null; done
echo "| run, beside a plain run on the same CPU | pace vs plain (median) | slowdown | per pair |"
echo "|---|---:|---:|---|"
row() { local m; m=$(med "${@:2}"); echo "| $1 | $m | $(awk -v m="$m" 'BEGIN{printf "%+.1f %%", (1/m - 1) * 100}') | ${*:2} |"; }
row "plain (control: the method's own spread)" "${ctl[@]}"
row "mfsrun, at home" "${home_r[@]}"
row "mfsrun --node 2, remote (after its move)" "${remote_r[@]}"

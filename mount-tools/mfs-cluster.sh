#!/usr/bin/env bash
# mfs-cluster — run an mfs cluster on this one machine (see man mfs-cluster).
#
# Process model. Node I is one mfsd listening on 127.0.0.I:PORT. Each node
# has a *keeper*: `unshare --mount --propagation private` running a sleeper,
# which holds the node's private mount namespace for the cluster's lifetime,
# so that killing or restarting mfsd keeps the namespace and its mounts. In
# that namespace D/nodeI/run is bind-mounted on /run/mfs (so the default
# control socket /run/mfs/mfsd.sock is the node's own) and mfsd mounts its
# own /mfs. mfsd and every `exec` enter the namespace with `nsenter -m` and,
# when limits were asked for, join the node's cgroup first.
#
# State of a running cluster, all under the cluster directory D:
#   D/cluster.env            N, PORT, TAG (names the iptables chain and cgroups)
#   D/secret                 the cluster secret (0600)
#   D/.lock                  flock(1) lock taken by every mutating command
#   D/nodeI/mfsd.toml        the node's config (kept across restart)
#   D/nodeI/{export,state,run}
#   D/nodeI/mfsd.log         mfsd's stdout and stderr, appended
#   D/nodeI/keeper.pid       "PID STARTTIME NSINODE" of the keeper
#   D/nodeI/mfsd.pid         "PID STARTTIME" of mfsd
#   D/nodeI/cgroups          the node's cgroup directories, one per line
# A process is identified by pid *and* start time, so a recycled pid is
# never mistaken for ours.
#
# Every wait is bounded (--timeout for start-up, fixed grace periods for
# stopping); every failure prints one line "mfs-cluster: ..." and exits
# non-zero; a failed `up` tears down whatever it had started.

# "A && B || die" is used on purpose: die runs when either check fails.
# shellcheck disable=SC2015
set -euo pipefail
shopt -s nullglob

readonly PROG=mfs-cluster
readonly DEFAULT_PORT=7420
readonly MAX_NODES=250
readonly STOP_GRACE_S=10  # SIGTERM to SIGKILL for a graceful stop
readonly KILL_WAIT_S=5    # how long a SIGKILLed process may take to go

# ---------------------------------------------------------------- messages

die() {
  printf '%s: %s\n' "$PROG" "$*" >&2
  exit 1
}

usage_error() {
  printf '%s: %s (see "%s --help")\n' "$PROG" "$*" "$PROG" >&2
  exit 2
}

info() { printf '%s\n' "$*"; }

usage() {
  cat <<EOF
usage: $PROG COMMAND [--dir D] [ARGS]

Runs an mfs cluster on this machine: node I is an mfsd on 127.0.0.I, in its
own mount namespace. Every command takes --dir D (default \$MFS_CLUSTER_DIR,
else /tmp/mfs-cluster).

  up N [--cpus [I=]LIST] [--cpu-quota [I=]PCT] [--mem [I=]SIZE]
       [--config-extra [I=]FILE] [--node-secret I=FILE] [--port P]
       [--heartbeat-ms MS] [--dead-after-ms MS] [--log-level L]
       [--timeout SEC]                  start N nodes (1..$MAX_NODES)
  exec NODE [--] CMD [ARG...]          run CMD in NODE's namespace and cgroup
  control NODE JSON                    send one control request, print reply
  kill NODE                            SIGKILL the node's mfsd
  stop NODE                            stop the node's mfsd (SIGTERM)
  start NODE                           start a stopped or killed node's mfsd
  restart NODE                         stop (if running) and start again
  partition NODE                       drop the node's cluster traffic
  heal NODE                            undo partition
  status                               list nodes, pids, state
  down [--purge]                       stop everything; --purge deletes D

mfsd is taken from \$MFSD, else from the directory holding $PROG.
EOF
}

# ------------------------------------------------------------ small helpers

# A decimal number without leading zeros (so bash never reads it as octal).
is_uint() { [[ $1 =~ ^(0|[1-9][0-9]{0,8})$ ]]; }

# Start time (clock ticks after boot) of a live, non-zombie process.
proc_start_time() {
  local line rest
  { read -r line <"/proc/$1/stat"; } 2>/dev/null || return 1
  rest=${line##*) }
  # shellcheck disable=SC2086
  set -- $rest
  [[ $1 != Z && $1 != X ]] || return 1
  printf '%s\n' "${20}"
}

# record_pid FILE PID [EXTRA...]: remember a process by pid and start time.
record_pid() {
  local file=$1 pid=$2 start
  shift 2
  start=$(proc_start_time "$pid") || return 1
  printf '%s %s%s\n' "$pid" "$start" "${*:+ $*}" >"$file"
}

# live_pid FILE: prints the recorded pid if that very process still runs.
live_pid() {
  local pid start rest
  [[ -r $1 ]] || return 1
  read -r pid start rest <"$1" || return 1
  is_uint "$pid" || return 1
  [[ $(proc_start_time "$pid" 2>/dev/null) == "$start" ]] || return 1
  printf '%s\n' "$pid"
}

mount_ns_inode() { stat -L -c '%i' "/proc/$1/ns/mnt" 2>/dev/null; }

# Pids of every process in the mount namespace with inode $1.
pids_in_mount_ns() {
  local ino path
  # One stat(1) for all of /proc; processes that vanish meanwhile are ignored.
  stat -L -c '%i %n' /proc/[0-9]*/ns/mnt 2>/dev/null |
    while read -r ino path; do
      [[ $ino == "$1" ]] || continue
      path=${path#/proc/}
      printf '%s\n' "${path%%/*}"
    done || true
}

# wait_until SECONDS COMMAND...: polls COMMAND every 0.1 s, bounded in time.
wait_until() {
  local deadline=$((SECONDS + $1))
  shift
  while ! "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.1
  done
}

not_alive() { ! kill -0 "$1" 2>/dev/null || ! proc_start_time "$1" >/dev/null; }

# control_call SOCKET JSON TIMEOUT_S: one request line, prints the reply line.
control_call() {
  perl -MIO::Socket::UNIX -MSocket -e '
    my ($path, $req, $tmo) = @ARGV;
    $SIG{ALRM} = sub { print STDERR "no reply within ${tmo}s\n"; exit 3 };
    alarm $tmo;
    my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Peer => $path)
      or do { print STDERR "cannot connect to $path: $!\n"; exit 2 };
    $s->autoflush(1);
    print $s $req, "\n";
    my $line = <$s>;
    defined $line or do { print STDERR "$path closed without a reply\n"; exit 4 };
    print $line;
    exit 0;
  ' "$1" "$2" "$3"
}

reply_ok() { [[ $1 =~ \"ok\"[[:space:]]*:[[:space:]]*true ]]; }

# Can a listener bind 127.0.0.$1:$2 (with SO_REUSEADDR, as mfsd does)?
port_free() {
  perl -MSocket -e '
    socket(my $s, PF_INET, SOCK_STREAM, 0) or exit 2;
    setsockopt($s, SOL_SOCKET, SO_REUSEADDR, 1);
    bind($s, pack_sockaddr_in($ARGV[1], inet_aton($ARGV[0]))) or exit 1;
    listen($s, 1) or exit 1;
    exit 0;
  ' "127.0.0.$1" "$2"
}

# ------------------------------------------------------------ cluster state

DIR=${MFS_CLUSTER_DIR:-/tmp/mfs-cluster}
N=0
PORT=$DEFAULT_PORT
TAG=

node_dir() { printf '%s/node%d\n' "$DIR" "$1"; }

# The tag names the cluster's iptables chain and cgroups; it is derived from
# the directory so that `down` finds them even if cluster.env is lost.
compute_tag() {
  printf 'mfs-%s\n' "$(printf '%s' "$DIR" | sha256sum | cut -c1-10)"
}

resolve_dir() {
  [[ -n $DIR ]] || usage_error "--dir needs a directory"
  DIR=$(realpath -m -- "$DIR")
  [[ $DIR != / ]] || usage_error "--dir / is not a cluster directory"
  TAG=$(compute_tag)
}

take_lock() {
  mkdir -p -- "$DIR" || die "cannot create $DIR"
  exec 9>"$DIR/.lock" || die "cannot open $DIR/.lock"
  flock -w 60 9 || die "$DIR is locked by another $PROG command (waited 60 s)"
}

# Loads cluster.env; fails with a clear line if there is no cluster in DIR.
load_cluster() {
  [[ -r $DIR/cluster.env ]] || die "no cluster in $DIR (start one with '$PROG up N --dir $DIR')"
  local key value
  while IFS='=' read -r key value; do
    case $key in
      N) N=$value ;;
      PORT) PORT=$value ;;
    esac
  done <"$DIR/cluster.env"
  is_uint "$N" && ((N >= 1 && N <= MAX_NODES)) || die "$DIR/cluster.env: bad N='$N'"
  is_uint "$PORT" || die "$DIR/cluster.env: bad PORT='$PORT'"
}

# Validates a NODE argument against the loaded cluster.
check_node() {
  is_uint "$1" && (($1 >= 1 && $1 <= N)) ||
    die "unknown node '$1': the cluster in $DIR has nodes 1..$N"
}

any_process_alive() {
  local i nd
  for nd in "$DIR"/node*/; do
    live_pid "$nd/keeper.pid" >/dev/null && return 0
    live_pid "$nd/mfsd.pid" >/dev/null && return 0
  done
  return 1
}

# ------------------------------------------------------------------ cgroups
# Per-node limits use cgroup v1 controllers mounted at /sys/fs/cgroup/<ctrl>
# (the node's group is made beneath the caller's own group, so the caller's
# limits still apply), or the unified cgroup v2 hierarchy at /sys/fs/cgroup.

cgroup_v2() { [[ -e /sys/fs/cgroup/cgroup.controllers ]]; }

# Current cgroup path of this process for a v1 controller.
cgroup_v1_self() {
  awk -F: -v c="$1" '{ n = split($2, a, ","); for (k = 1; k <= n; k++) if (a[k] == c) print $3 }' /proc/self/cgroup
}

cg_write() {
  printf '%s\n' "$2" >"$1" 2>/dev/null || die "cannot write '$2' to $1"
}

# cgroup_setup I CPUS QUOTA MEM: makes node I's cgroup(s); records them.
cgroup_setup() {
  local i=$1 cpus=$2 quota=$3 mem=$4 list=() ctrl base parent dir
  [[ -n $cpus$quota$mem ]] || return 0
  if cgroup_v2; then
    local want=""
    [[ -n $cpus ]] && want+=" +cpuset"
    [[ -n $quota ]] && want+=" +cpu"
    [[ -n $mem ]] && want+=" +memory"
    parent=/sys/fs/cgroup/$TAG
    cg_write /sys/fs/cgroup/cgroup.subtree_control "${want# }"
    mkdir -p "$parent" || die "cannot create cgroup $parent"
    cg_write "$parent/cgroup.subtree_control" "${want# }"
    dir=$parent/node$i
    mkdir -p "$dir" || die "cannot create cgroup $dir"
    list+=("$dir")
    [[ -z $cpus ]] || cg_write "$dir/cpuset.cpus" "$cpus"
    [[ -z $quota ]] || cg_write "$dir/cpu.max" "$((quota * 1000)) 100000"
    [[ -z $mem ]] || cg_write "$dir/memory.max" "$(size_to_bytes "$mem")"
  else
    for ctrl in cpuset cpu memory; do
      case $ctrl in
        cpuset) [[ -n $cpus ]] || continue ;;
        cpu) [[ -n $quota ]] || continue ;;
        memory) [[ -n $mem ]] || continue ;;
      esac
      base=/sys/fs/cgroup/$ctrl
      [[ -e $base/cgroup.procs ]] ||
        die "node $i: limits need the cgroup v1 '$ctrl' controller mounted at $base (or cgroup v2 at /sys/fs/cgroup)"
      parent=$base$(cgroup_v1_self "$ctrl")
      parent=${parent%/}/$TAG
      mkdir -p "$parent" || die "cannot create cgroup $parent"
      dir=$parent/node$i
      mkdir -p "$dir" || die "cannot create cgroup $dir"
      list+=("$dir")
      case $ctrl in
        cpuset)
          # v1 cpusets start empty: inherit mems, and cpus for the parent.
          [[ -n $(<"$parent/cpuset.cpus") ]] || cg_write "$parent/cpuset.cpus" "$(<"${parent%/*}/cpuset.cpus")"
          [[ -n $(<"$parent/cpuset.mems") ]] || cg_write "$parent/cpuset.mems" "$(<"${parent%/*}/cpuset.mems")"
          cg_write "$dir/cpuset.mems" "$(<"$parent/cpuset.mems")"
          cg_write "$dir/cpuset.cpus" "$cpus"
          ;;
        cpu)
          cg_write "$dir/cpu.cfs_period_us" 100000
          cg_write "$dir/cpu.cfs_quota_us" "$((quota * 1000))"
          ;;
        memory) cg_write "$dir/memory.limit_in_bytes" "$(size_to_bytes "$mem")" ;;
      esac
    done
  fi
  printf '%s\n' "${list[@]}" >"$(node_dir "$i")/cgroups"
}

# Moves process $2 into node $1's cgroups (if it has any).
cgroup_join() {
  local file dir
  file=$(node_dir "$1")/cgroups
  [[ -r $file ]] || return 0
  while read -r dir; do
    [[ -n $dir ]] || continue
    printf '%s\n' "$2" >"$dir/cgroup.procs" 2>/dev/null || die "node $1: cannot join cgroup $dir"
  done <"$file"
}

cgroup_pids() {
  local file dir
  file=$(node_dir "$1")/cgroups
  [[ -r $file ]] || return 0
  while read -r dir; do
    [[ -r $dir/cgroup.procs ]] && cat "$dir/cgroup.procs" 2>/dev/null
  done <"$file" || true
}

cgroup_remove() {
  local file dir parent
  file=$(node_dir "$1")/cgroups
  [[ -r $file ]] || return 0
  while read -r dir; do
    [[ -d $dir ]] || continue
    wait_until 3 rmdir "$dir" 2>/dev/null || printf '%s: warning: cannot remove cgroup %s\n' "$PROG" "$dir" >&2
    parent=${dir%/*}
    rmdir "$parent" 2>/dev/null || true # the last node removes the cluster's group
  done <"$file"
  rm -f -- "$file"
}

size_to_bytes() {
  local v=${1%[KkMmGg]} unit=${1: -1}
  case $unit in
    K | k) echo $((v * 1024)) ;;
    M | m) echo $((v * 1024 * 1024)) ;;
    G | g) echo $((v * 1024 * 1024 * 1024)) ;;
    *) echo "$v" ;;
  esac
}

# ----------------------------------------------------------------- iptables
# One chain per cluster, hooked into OUTPUT (loopback packets traverse OUTPUT
# once, so a drop there cuts both directions). Partitioning node I drops
# every packet to or from 127.0.0.I on the cluster's port, in both roles
# (the node as server and as client), TCP and UDP.

chain() { printf '%s\n' "$TAG"; }

ipt() { iptables -w 10 "$@"; }

partition_rules() {
  local i=$1 proto
  for proto in tcp udp; do
    printf '%s\n' "-s 127.0.0.$i -p $proto --dport $PORT -j DROP"
    printf '%s\n' "-d 127.0.0.$i -p $proto --dport $PORT -j DROP"
    printf '%s\n' "-s 127.0.0.$i -p $proto --sport $PORT -j DROP"
    printf '%s\n' "-d 127.0.0.$i -p $proto --sport $PORT -j DROP"
  done
}

is_partitioned() {
  command -v iptables >/dev/null || return 1
  local rule
  rule=$(partition_rules "$1" | head -n1)
  # shellcheck disable=SC2086
  ipt -C "$(chain)" $rule 2>/dev/null
}

iptables_remove_chain() {
  command -v iptables >/dev/null || return 0
  ipt -L "$(chain)" -n >/dev/null 2>&1 || return 0
  local k
  for ((k = 0; k < 100; k++)); do
    ipt -D OUTPUT -j "$(chain)" 2>/dev/null || break
  done
  ipt -F "$(chain)" && ipt -X "$(chain)" ||
    printf '%s: warning: cannot remove iptables chain %s\n' "$PROG" "$(chain)" >&2
}

# ------------------------------------------------------------ node process

# Starts node I's keeper and bind-mounts its run directory on /run/mfs.
start_keeper() {
  local i=$1 nd kpid ino
  nd=$(node_dir "$i")
  # setsid: no terminal signal reaches it. As a background job of this
  # script it is no process-group leader, so setsid(1) execs in place and
  # $! stays the keeper's pid.
  # shellcheck disable=SC2016 # $1 is expanded by the inner bash
  setsid unshare --mount --propagation private -- \
    bash -c 'exec -a "$1" sleep infinity' sh "mfs-keeper[$TAG/node$i]" \
    </dev/null >/dev/null 2>>"$nd/keeper.log" 9>&- &
  kpid=$!
  record_pid "$nd/keeper.pid" "$kpid" || die "node $i: the namespace keeper exited at once (see $nd/keeper.log)"
  # unshare has done its work once it has exec'ed the sleeper.
  wait_until 5 eval "[[ \$(cat /proc/$kpid/comm 2>/dev/null) == sleep ]]" ||
    die "node $i: the namespace keeper did not start (see $nd/keeper.log)"
  ino=$(mount_ns_inode "$kpid") || die "node $i: the namespace keeper vanished"
  [[ $ino != "$(mount_ns_inode $$)" ]] || die "node $i: unshare did not make a new mount namespace"
  record_pid "$nd/keeper.pid" "$kpid" "$ino" || die "node $i: the namespace keeper vanished"
  nsenter -t "$kpid" -m -- mount --bind "$nd/run" /run/mfs 2>>"$nd/keeper.log" ||
    die "node $i: cannot bind-mount $nd/run on /run/mfs in its namespace (see $nd/keeper.log)"
}

keeper_pid() {
  live_pid "$(node_dir "$1")/keeper.pid" ||
    die "node $1: its namespace keeper is gone; run '$PROG down --dir $DIR' and start again"
}

# Lazily unmounts /mfs in node I's namespace if a dead FUSE server left it
# behind (stat fails with ENOTCONN, or hangs); a live mount is left alone.
unmount_stale() {
  local i=$1 kpid=$2
  if awk '$5 == "/mfs" { found = 1 } END { exit !found }' "/proc/$kpid/mountinfo" 2>/dev/null &&
    ! timeout 5 nsenter -t "$kpid" -m -- stat -c %i /mfs >/dev/null 2>&1; then
    nsenter -t "$kpid" -m -- umount -l /mfs 2>/dev/null || true
  fi
}

# Launches node I's mfsd (does not wait for it to answer).
start_mfsd() {
  local i=$1 nd kpid pid
  nd=$(node_dir "$i")
  kpid=$(keeper_pid "$i")
  unmount_stale "$i" "$kpid"
  rm -f -- "$nd/run/mfsd.sock" "$nd/mfsd.pid"
  printf '=== %s mfs-cluster: starting mfsd (node %d) ===\n' "$(date -u +%FT%TZ)" "$i" >>"$nd/mfsd.log"
  (
    cgroup_join "$i" "$BASHPID"
    # Not a process-group leader here, so setsid(1) execs in place: the pid
    # recorded below is mfsd's own.
    exec nsenter -t "$kpid" -m --wd=/ -- setsid "$MFSD_BIN" --config "$nd/mfsd.toml"
  ) </dev/null >>"$nd/mfsd.log" 2>&1 9>&- &
  pid=$!
  MFSD_CHILD[$i]=$pid
  record_pid "$nd/mfsd.pid" "$pid" || die "node $i: mfsd exited at once: $(last_log_line "$i")"
}

declare -A MFSD_CHILD=()

# "exited with status S" for an mfsd this very command started.
child_exit_status() {
  local st=0
  if [[ -n ${MFSD_CHILD[$1]:-} ]]; then
    wait "${MFSD_CHILD[$1]}" 2>/dev/null || st=$?
    if ((st > 128)); then
      printf 'was killed by signal %d\n' $((st - 128))
    else
      printf 'exited with status %d\n' "$st"
    fi
  else
    printf 'exited\n'
  fi
}

last_log_line() {
  local line
  line=$(grep -v '^=== ' "$(node_dir "$1")/mfsd.log" 2>/dev/null | tail -n 1) || true
  printf '%s\n' "${line:-(empty log)} [$(node_dir "$1")/mfsd.log]"
}

node_answers() {
  local reply
  reply=$(control_call "$(node_dir "$1")/run/mfsd.sock" '{"op":"status"}' 2 2>/dev/null) || return 1
  reply_ok "$reply"
}

# Waits until every listed node's control socket answers {"op":"status"}.
wait_ready() {
  local deadline=$((SECONDS + TIMEOUT)) pending=("$@") next i
  while ((${#pending[@]})); do
    next=()
    for i in "${pending[@]}"; do
      if ! live_pid "$(node_dir "$i")/mfsd.pid" >/dev/null; then
        die "node $i: mfsd $(child_exit_status "$i") during start-up: $(last_log_line "$i")"
      fi
      node_answers "$i" || next+=("$i")
    done
    pending=("${next[@]+"${next[@]}"}")
    ((${#pending[@]})) || break
    ((SECONDS < deadline)) ||
      die "node ${pending[0]}: control socket $(node_dir "${pending[0]}")/run/mfsd.sock did not answer within ${TIMEOUT}s: $(last_log_line "${pending[0]}")"
    sleep 0.1
  done
}

# Signals node I's mfsd and waits (bounded) for it to go. Returns 1 if it
# was not running.
signal_mfsd() {
  local i=$1 sig=$2 wait_s=$3 pid
  pid=$(live_pid "$(node_dir "$i")/mfsd.pid") || return 1
  kill -s "$sig" "$pid" 2>/dev/null || true
  if ! wait_until "$wait_s" not_alive "$pid"; then
    [[ $sig == KILL ]] && die "node $i: mfsd (pid $pid) survived SIGKILL for ${wait_s}s"
    kill -s KILL "$pid" 2>/dev/null || true
    wait_until "$KILL_WAIT_S" not_alive "$pid" || die "node $i: mfsd (pid $pid) survived SIGKILL"
  fi
  return 0
}

# Aborts every FUSE connection mounted in node I's namespace, so that
# processes stuck on a dead /mfs can be killed.
abort_fuse() {
  local kpid=$1 dev
  [[ -d /sys/fs/fuse/connections ]] || return 0
  # mountinfo: the file-system type follows the "-" after the optional fields.
  awk '{ for (k = 7; k < NF; k++) if ($k == "-") { if ($(k + 1) ~ /^fuse/) { split($3, d, ":"); print d[2] } break } }' \
    "/proc/$kpid/mountinfo" 2>/dev/null |
    while read -r dev; do
      [[ -w /sys/fs/fuse/connections/$dev/abort ]] && echo 1 >"/sys/fs/fuse/connections/$dev/abort" 2>/dev/null
    done || true
}

# Stops everything node I runs: mfsd, the keeper, every process in its mount
# namespace and cgroup. Quiet and idempotent.
stop_node_processes() {
  local i=$1 nd kpid mpid ino=
  nd=$(node_dir "$i")
  kpid=$(live_pid "$nd/keeper.pid") || kpid=
  mpid=$(live_pid "$nd/mfsd.pid") || mpid=
  # Our namespace is identified by a process we can prove is ours.
  if [[ -n $kpid ]]; then
    ino=$(mount_ns_inode "$kpid") || ino=
    abort_fuse "$kpid"
  elif [[ -n $mpid ]]; then
    ino=$(mount_ns_inode "$mpid") || ino=
  fi
  local round pids
  for ((round = 0; round < 50; round++)); do
    pids=$({
      [[ -z $ino ]] || pids_in_mount_ns "$ino"
      cgroup_pids "$i"
      [[ -z $kpid ]] || echo "$kpid"
      [[ -z $mpid ]] || echo "$mpid"
    } | sort -un | grep -vx "$$" || true)
    # shellcheck disable=SC2086
    pids=$(for p in $pids; do kill -0 "$p" 2>/dev/null && proc_start_time "$p" >/dev/null && echo "$p"; done || true)
    [[ -n $pids ]] || break
    # shellcheck disable=SC2086
    kill -s KILL $pids 2>/dev/null || true
    sleep 0.1
  done
  [[ -z $pids ]] || printf '%s: warning: node %d: processes %s would not die\n' "$PROG" "$i" "${pids//$'\n'/ }" >&2
  rm -f -- "$nd/keeper.pid" "$nd/mfsd.pid" "$nd/run/mfsd.sock"
  cgroup_remove "$i"
}

# Stops the whole cluster in DIR. Quiet and idempotent; used by `down` and
# by a failed `up`.
teardown() {
  local nd i
  # Graceful first, all nodes at once: mfsd unmounts /mfs on SIGTERM.
  for nd in "$DIR"/node*/; do
    i=${nd%/}
    i=${i##*/node}
    is_uint "$i" || continue
    local pid
    pid=$(live_pid "$nd/mfsd.pid") && kill -s TERM "$pid" 2>/dev/null || true
  done
  for nd in "$DIR"/node*/; do
    local pid
    pid=$(live_pid "$nd/mfsd.pid") || continue
    wait_until "$KILL_WAIT_S" not_alive "$pid" || true
  done
  for nd in "$DIR"/node*/; do
    i=${nd%/}
    i=${i##*/node}
    is_uint "$i" || continue
    stop_node_processes "$i"
  done
  iptables_remove_chain
  rm -f -- "$DIR/cluster.env"
}

# ---------------------------------------------------------------- commands

write_config() {
  local i=$1 secret=$2 extra=$3 nd peers=() j
  nd=$(node_dir "$i")
  for ((j = 1; j <= N; j++)); do
    ((j == i)) || peers+=("\"127.0.0.$j:$PORT\"")
  done
  local IFS=,
  {
    printf '# Generated by mfs-cluster for node %d; edit and run "mfs-cluster restart %d".\n' "$i" "$i"
    printf '[node]\n'
    printf 'id = %d\n' "$i"
    printf 'address = "127.0.0.%d"\n' "$i"
    printf 'port = %d\n' "$PORT"
    printf 'export = "%s"\n' "$nd/export"
    printf 'state_dir = "%s"\n' "$nd/state"
    printf 'secret_file = "%s"\n' "$secret"
    printf 'control_socket = "/run/mfs/mfsd.sock"\n'
    printf 'mount = "/mfs"\n'
    printf 'peers = [%s]\n' "${peers[*]}"
    if [[ -z $extra ]] || ! grep -Eq '^[[:space:]]*\[membership\]' "$extra"; then
      printf '\n[membership]\nheartbeat_ms = %d\ndead_after_ms = %d\n' "$HEARTBEAT_MS" "$DEAD_AFTER_MS"
    fi
    if [[ -z $extra ]] || ! grep -Eq '^[[:space:]]*\[log\]' "$extra"; then
      printf '\n[log]\nlevel = "%s"\nfile = ""\n' "$LOG_LEVEL"
    fi
    if [[ -n $extra ]]; then
      printf '\n# --- from %s\n' "$extra"
      cat -- "$extra"
    fi
  } >"$nd/mfsd.toml"
}

# parse_per_node OPTION VALUE: "I=VALUE" sets node I, "VALUE" sets the default.
# Results land in the associative array named by $3.
parse_per_node() {
  local opt=$1 arg=$2 node value
  local -n map=$3
  if [[ $arg == *=* ]]; then
    node=${arg%%=*}
    value=${arg#*=}
    is_uint "$node" && ((node >= 1 && node <= MAX_NODES)) || usage_error "$opt $arg: bad node '$node'"
  else
    node=0
    value=$arg
  fi
  [[ -n $value ]] || usage_error "$opt $arg: empty value"
  # shellcheck disable=SC2034,SC2004 # map is a nameref to the caller's array
  map[$node]=$value
}

find_mfsd() {
  local self_dir
  if [[ -n ${MFSD:-} ]]; then
    MFSD_BIN=$MFSD
  else
    self_dir=$(dirname -- "$(realpath -- "${BASH_SOURCE[0]}")")
    MFSD_BIN=$self_dir/mfsd
  fi
  [[ -x $MFSD_BIN && -f $MFSD_BIN ]] || die "mfsd not found at $MFSD_BIN (build it, or set MFSD=/path/to/mfsd)"
}

require_root() {
  ((EUID == 0)) || die "$1 needs root (mount namespaces, bind mounts, cgroups, iptables)"
}

require_tools() {
  local t
  for t in "$@"; do
    command -v "$t" >/dev/null || die "'$t' not found (install it: see scripts/setup.sh)"
  done
}

UP_STARTED=0
on_up_exit() {
  local rc=$?
  if ((rc != 0 && UP_STARTED)); then
    teardown 2>/dev/null || true
  fi
  return "$rc"
}

cmd_up() {
  local -A cpus=() quota=() mem=() secrets=() extras=()
  local arg
  HEARTBEAT_MS=500 DEAD_AFTER_MS=3000 LOG_LEVEL=info TIMEOUT=30
  [[ $# -ge 1 ]] || usage_error "up: missing N (number of nodes, 1..$MAX_NODES)"
  local n=$1
  shift
  is_uint "$n" && ((n >= 1 && n <= MAX_NODES)) || usage_error "up: N must be a number in 1..$MAX_NODES, not '$n'"
  N=$n
  while (($#)); do
    arg=$1
    [[ $# -ge 2 ]] || usage_error "up: $arg needs a value"
    case $arg in
      --cpus) parse_per_node "$arg" "$2" cpus ;;
      --cpu-quota) parse_per_node "$arg" "$2" quota ;;
      --mem) parse_per_node "$arg" "$2" mem ;;
      --node-secret) [[ $2 == *=* ]] || usage_error "--node-secret needs I=FILE"
        parse_per_node "$arg" "$2" secrets ;;
      --config-extra) parse_per_node "$arg" "$2" extras ;;
      --port) PORT=$2 ;;
      --heartbeat-ms) HEARTBEAT_MS=$2 ;;
      --dead-after-ms) DEAD_AFTER_MS=$2 ;;
      --log-level) LOG_LEVEL=$2 ;;
      --timeout) TIMEOUT=$2 ;;
      *) usage_error "up: unknown option '$arg'" ;;
    esac
    shift 2
  done
  is_uint "$PORT" && ((PORT >= 1 && PORT <= 65535)) || usage_error "--port: bad port '$PORT'"
  is_uint "$HEARTBEAT_MS" && ((HEARTBEAT_MS > 0)) || usage_error "--heartbeat-ms: bad value '$HEARTBEAT_MS'"
  is_uint "$DEAD_AFTER_MS" && ((DEAD_AFTER_MS > HEARTBEAT_MS)) || usage_error "--dead-after-ms must exceed --heartbeat-ms"
  is_uint "$TIMEOUT" && ((TIMEOUT > 0)) || usage_error "--timeout: bad value '$TIMEOUT'"
  [[ $LOG_LEVEL =~ ^(trace|debug|info|warn|error|critical|off)$ ]] || usage_error "--log-level: bad level '$LOG_LEVEL'"
  local k v
  for k in "${!cpus[@]}"; do
    [[ ${cpus[$k]} =~ ^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$ ]] || usage_error "--cpus: bad CPU list '${cpus[$k]}'"
  done
  for k in "${!quota[@]}"; do
    v=${quota[$k]}
    is_uint "$v" && ((v >= 1 && v <= 100000)) || usage_error "--cpu-quota: bad percentage '$v'"
  done
  for k in "${!mem[@]}"; do
    [[ ${mem[$k]} =~ ^[0-9]+[KkMmGg]?$ ]] || usage_error "--mem: bad size '${mem[$k]}' (e.g. 512M)"
  done
  for k in "${!cpus[@]}" "${!quota[@]}" "${!mem[@]}" "${!secrets[@]}" "${!extras[@]}"; do
    ((k <= N)) || usage_error "per-node option for node $k, but the cluster has nodes 1..$N"
  done
  for k in "${!extras[@]}"; do
    [[ -f ${extras[$k]} && -r ${extras[$k]} ]] || die "--config-extra: cannot read '${extras[$k]}'"
    extras[$k]=$(realpath -- "${extras[$k]}")
  done
  for k in "${!secrets[@]}"; do
    [[ -f ${secrets[$k]} && -r ${secrets[$k]} ]] || die "--node-secret: cannot read '${secrets[$k]}'"
    secrets[$k]=$(realpath -- "${secrets[$k]}")
  done

  require_root up
  require_tools unshare nsenter setsid flock perl sha256sum
  find_mfsd
  take_lock

  if [[ -e $DIR/cluster.env ]] || any_process_alive; then
    any_process_alive && die "a cluster is already running in $DIR (stop it with '$PROG down --dir $DIR')"
    teardown # leftovers of a cluster whose processes are all gone
  fi
  for ((k = 1; k <= N; k++)); do
    port_free "$k" "$PORT" || die "127.0.0.$k:$PORT is already in use (another cluster or service; see 'ss -ltnp')"
  done

  UP_STARTED=1
  trap on_up_exit EXIT
  trap 'exit 130' INT TERM HUP

  printf 'N=%d\nPORT=%d\nTAG=%s\n' "$N" "$PORT" "$TAG" >"$DIR/cluster.env"
  if [[ ! -s $DIR/secret ]]; then
    (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/secret") ||
      die "cannot write $DIR/secret"
  fi
  chmod 0600 "$DIR/secret"
  [[ -d /run/mfs ]] || mkdir -p /run/mfs || die "cannot create /run/mfs"
  [[ -d /mfs ]] || mkdir -p /mfs || die "cannot create /mfs"

  local nd
  for ((k = 1; k <= N; k++)); do
    nd=$(node_dir "$k")
    mkdir -p "$nd/export" "$nd/state" "$nd/run" || die "cannot create $nd"
    write_config "$k" "${secrets[$k]:-$DIR/secret}" "${extras[$k]:-${extras[0]:-}}"
    cgroup_setup "$k" "${cpus[$k]:-${cpus[0]:-}}" "${quota[$k]:-${quota[0]:-}}" "${mem[$k]:-${mem[0]:-}}"
    start_keeper "$k"
    start_mfsd "$k"
  done
  local all=()
  for ((k = 1; k <= N; k++)); do all+=("$k"); done
  wait_ready "${all[@]}"

  UP_STARTED=0
  trap - EXIT INT TERM HUP
  local dflag=""
  [[ $DIR == /tmp/mfs-cluster && -z ${MFS_CLUSTER_DIR:-} ]] || dflag=" --dir $DIR"
  local range=127.0.0.1
  ((N == 1)) || range+="..127.0.0.$N"
  info "$PROG: $N node(s) up in $DIR ($range, port $PORT)"
  info "  run on node 1:  $PROG exec 1$dflag -- mfsctl status"
  info "  stop:           $PROG down$dflag"
}

cmd_down() {
  local purge=0
  while (($#)); do
    case $1 in
      --purge) purge=1 ;;
      *) usage_error "down: unknown argument '$1'" ;;
    esac
    shift
  done
  local nodes=("$DIR"/node*/mfsd.toml)
  if [[ ! -e $DIR/cluster.env && ${#nodes[@]} -eq 0 ]]; then
    info "$PROG: no cluster in $DIR"
    return 0
  fi
  require_root down
  take_lock
  if [[ -r $DIR/cluster.env ]]; then load_cluster; fi
  teardown
  if ((purge)); then
    local nd
    for nd in "$DIR"/node*/; do
      [[ -e $nd/mfsd.toml ]] && rm -rf -- "$nd"
    done
    rm -f -- "$DIR/secret" "$DIR/.lock"
    rmdir -- "$DIR" 2>/dev/null || printf '%s: note: %s kept (it holds files not made by %s)\n' "$PROG" "$DIR" "$PROG" >&2
  fi
  info "$PROG: cluster in $DIR is down"
}

one_node_arg() {
  [[ $# -ge 1 ]] || usage_error "$CMD: missing NODE"
  [[ $# -eq 1 ]] || usage_error "$CMD: unexpected argument '$2'"
  require_root "$CMD"
  load_cluster
  check_node "$1"
}

cmd_kill() {
  one_node_arg "$@"
  take_lock
  signal_mfsd "$1" KILL "$KILL_WAIT_S" || die "node $1: mfsd is not running"
  info "$PROG: node $1: mfsd killed"
}

cmd_stop() {
  one_node_arg "$@"
  take_lock
  signal_mfsd "$1" TERM "$STOP_GRACE_S" || die "node $1: mfsd is not running"
  info "$PROG: node $1: mfsd stopped"
}

cmd_start() {
  local restart=$1
  shift
  TIMEOUT=30
  local args=()
  while (($#)); do
    case $1 in
      --timeout) [[ $# -ge 2 ]] || usage_error "--timeout needs a value"
        TIMEOUT=$2
        shift ;;
      *) args+=("$1") ;;
    esac
    shift
  done
  is_uint "$TIMEOUT" && ((TIMEOUT > 0)) || usage_error "--timeout: bad value '$TIMEOUT'"
  one_node_arg "${args[@]+"${args[@]}"}"
  local i=${args[0]}
  find_mfsd
  take_lock
  if ((restart)); then
    signal_mfsd "$i" TERM "$STOP_GRACE_S" || true
  elif live_pid "$(node_dir "$i")/mfsd.pid" >/dev/null; then
    die "node $i: mfsd is already running"
  fi
  start_mfsd "$i"
  if ! (wait_ready "$i"); then
    signal_mfsd "$i" KILL "$KILL_WAIT_S" || true
    exit 1
  fi
  info "$PROG: node $i: mfsd running (pid $(live_pid "$(node_dir "$i")/mfsd.pid"))"
}

cmd_exec() {
  [[ $# -ge 1 ]] || usage_error "exec: missing NODE"
  local i=$1
  shift
  [[ ${1:-} != -- ]] || shift
  [[ $# -ge 1 ]] || usage_error "exec: missing command (exec NODE -- CMD ARGS...)"
  require_root exec
  load_cluster
  check_node "$i"
  local kpid self_dir
  kpid=$(keeper_pid "$i")
  cgroup_join "$i" "$$"
  self_dir=$(dirname -- "$(realpath -- "${BASH_SOURCE[0]}")")
  export PATH="$self_dir:$PATH" MFS_NODE="$i" MFS_CLUSTER_DIR="$DIR"
  local wd=$PWD
  [[ -d $wd ]] || wd=/
  exec nsenter -t "$kpid" -m --wd="$wd" -- "$@"
}

cmd_control() {
  [[ $# -eq 2 ]] || usage_error "control: usage: control NODE JSON"
  load_cluster
  check_node "$1"
  local reply
  reply=$(control_call "$(node_dir "$1")/run/mfsd.sock" "$2" 10 2>&1) || die "node $1: $reply"
  printf '%s\n' "$reply"
  reply_ok "$reply"
}

cmd_partition() {
  one_node_arg "$@"
  require_tools iptables
  take_lock
  local c rule
  c=$(chain)
  if ! ipt -L "$c" -n >/dev/null 2>&1; then
    ipt -N "$c" || die "cannot create iptables chain $c"
  fi
  ipt -C OUTPUT -j "$c" 2>/dev/null || ipt -I OUTPUT 1 -j "$c" || die "cannot hook chain $c into OUTPUT"
  while read -r rule; do
    # shellcheck disable=SC2086
    ipt -C "$c" $rule 2>/dev/null || ipt -A "$c" $rule || die "cannot add iptables rule: $rule"
  done < <(partition_rules "$1")
  info "$PROG: node $1 partitioned (127.0.0.$1 port $PORT dropped)"
}

cmd_heal() {
  one_node_arg "$@"
  require_tools iptables
  take_lock
  local c rule
  c=$(chain)
  if ipt -L "$c" -n >/dev/null 2>&1; then
    while read -r rule; do
      # shellcheck disable=SC2086
      while ipt -C "$c" $rule 2>/dev/null; do ipt -D "$c" $rule; done
    done < <(partition_rules "$1")
  fi
  info "$PROG: node $1 healed"
}

cmd_status() {
  [[ $# -eq 0 ]] || usage_error "status: unexpected argument '$1'"
  load_cluster
  printf 'cluster %s: %d node(s), port %d\n' "$DIR" "$N" "$PORT"
  printf '%-5s %-12s %-9s %-9s %-10s %s\n' NODE ADDRESS MFSD-PID KEEPER STATE LINK
  local i nd mpid kpid state link
  for ((i = 1; i <= N; i++)); do
    nd=$(node_dir "$i")
    mpid=$(live_pid "$nd/mfsd.pid") || mpid=-
    kpid=$(live_pid "$nd/keeper.pid") || kpid=-
    if [[ $mpid == - ]]; then
      state=down
    elif node_answers "$i"; then
      state=running
    else
      state=starting
    fi
    link=connected
    ((EUID == 0)) && is_partitioned "$i" && link=partitioned
    printf '%-5s %-12s %-9s %-9s %-10s %s\n' "$i" "127.0.0.$i" "$mpid" "$kpid" "$state" "$link"
  done
}

main() {
  local args=() cmd=""
  # --dir may come anywhere before "--" (exec's command is left untouched).
  while (($#)); do
    case $1 in
      --dir)
        [[ $# -ge 2 ]] || usage_error "--dir needs a directory"
        DIR=$2
        shift 2
        ;;
      --dir=*)
        DIR=${1#--dir=}
        shift
        ;;
      -h | --help)
        if [[ -z $cmd ]]; then usage; exit 0; fi
        args+=("$1")
        shift
        ;;
      --)
        args+=("$@")
        break
        ;;
      *)
        if [[ -z $cmd ]]; then cmd=$1; else args+=("$1"); fi
        shift
        # After exec NODE, everything belongs to the command.
        if [[ $cmd == exec && ${#args[@]} -eq 1 && ${1:-} != -- ]] && (($#)) && [[ $1 != --dir* ]]; then
          args+=("$@")
          break
        fi
        ;;
    esac
  done
  [[ -n $cmd ]] || { usage >&2; exit 2; }
  resolve_dir
  CMD=$cmd
  set -- "${args[@]+"${args[@]}"}"
  case $cmd in
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    exec) cmd_exec "$@" ;;
    control) cmd_control "$@" ;;
    kill) cmd_kill "$@" ;;
    stop) cmd_stop "$@" ;;
    start) cmd_start 0 "$@" ;;
    restart) cmd_start 1 "$@" ;;
    partition) cmd_partition "$@" ;;
    heal) cmd_heal "$@" ;;
    status) cmd_status "$@" ;;
    help) usage ;;
    *) usage_error "unknown command '$cmd'" ;;
  esac
}

main "$@"

#include "migrate/syscall_table.h"

#include <linux/filter.h>
#include <linux/seccomp.h>
#include <seccomp.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <cstddef>
#include <map>
#include <sstream>

#include "mfs/base/unique_fd.h"

namespace mfs::migrate {
namespace {

using K = ArgKind;
constexpr ArgSpec V{};
constexpr ArgSpec P{K::kPath};
constexpr ArgSpec In(int size_arg) { return {K::kIn, static_cast<int8_t>(size_arg)}; }
constexpr ArgSpec InFixed(uint32_t n) { return {K::kIn, -1, -1, n}; }
constexpr ArgSpec Out(uint32_t n) { return {K::kOut, -1, -1, n}; }
constexpr ArgSpec OutArg(int size_arg, uint32_t mul = 1) { return {K::kOut, static_cast<int8_t>(size_arg), -1, 0, mul}; }
constexpr ArgSpec OutRet(int size_arg) { return {K::kOutRet, static_cast<int8_t>(size_arg)}; }
constexpr ArgSpec OutDeref(int len_ptr_arg) { return {K::kOut, -1, static_cast<int8_t>(len_ptr_arg)}; }
constexpr ArgSpec InOut(uint32_t n) { return {K::kInOut, -1, -1, n}; }
constexpr ArgSpec InOutArg(int size_arg, uint32_t mul) { return {K::kInOut, static_cast<int8_t>(size_arg), -1, 0, mul}; }

constexpr auto N = SyscallClass::kNative;
constexpr auto F = SyscallClass::kForwarded;
constexpr auto S = SyscallClass::kSelf;

constexpr uint32_t kStat = 144, kStatfs = 120, kStatx = 256, kRusage = 144, kSiginfo = 128;
constexpr uint32_t kSockaddr = 128, kTimespec = 16, kTimeval = 16, kFdSet = 128;

std::vector<SyscallSpec> MakeTable() {
  return {
      // Memory, threads' own state, time, signals: native.
      {SYS_brk, "brk", N},
      {SYS_mmap, "mmap", N},  // anonymous only: the filter sends fd-backed mmap home
      {SYS_munmap, "munmap", N},
      {SYS_mprotect, "mprotect", N},
      {SYS_mremap, "mremap", N},
      {SYS_madvise, "madvise", N},
      {SYS_msync, "msync", N},
      {SYS_mincore, "mincore", N},
      {SYS_mlock, "mlock", N},
      {SYS_munlock, "munlock", N},
      {SYS_mlock2, "mlock2", N},
      {SYS_membarrier, "membarrier", N},
      {SYS_futex, "futex", N},
      {SYS_set_robust_list, "set_robust_list", N},
      {SYS_get_robust_list, "get_robust_list", N},
      {SYS_rseq, "rseq", N},
      {SYS_arch_prctl, "arch_prctl", N},
      {SYS_set_tid_address, "set_tid_address", N},
      {SYS_clock_gettime, "clock_gettime", N},
      {SYS_clock_getres, "clock_getres", N},
      {SYS_clock_nanosleep, "clock_nanosleep", N},
      {SYS_nanosleep, "nanosleep", N},
      {SYS_gettimeofday, "gettimeofday", N},
      {SYS_time, "time", N},
      {SYS_sched_yield, "sched_yield", N},
      {SYS_sched_getaffinity, "sched_getaffinity", N},
      {SYS_getcpu, "getcpu", N},
      {SYS_getrandom, "getrandom", N},
      {SYS_rt_sigaction, "rt_sigaction", N},
      {SYS_rt_sigprocmask, "rt_sigprocmask", N},
      {SYS_rt_sigreturn, "rt_sigreturn", N},
      {SYS_rt_sigsuspend, "rt_sigsuspend", N},
      {SYS_rt_sigpending, "rt_sigpending", N},
      {SYS_rt_sigtimedwait, "rt_sigtimedwait", N},
      {SYS_sigaltstack, "sigaltstack", N},
      {SYS_pause, "pause", N},
      {SYS_alarm, "alarm", N},
      {SYS_setitimer, "setitimer", N},
      {SYS_getitimer, "getitimer", N},
      {SYS_exit, "exit", N},
      {SYS_exit_group, "exit_group", N},
      {SYS_restart_syscall, "restart_syscall", N},
      {SYS_getrusage, "getrusage", N},
      {SYS_times, "times", N},
      {SYS_getrlimit, "getrlimit", N},
      {SYS_setrlimit, "setrlimit", N},
      {SYS_prlimit64, "prlimit64", N},  // of itself (pid 0); others go home via the filter
      {SYS_uname, "uname", N},
      {SYS_sysinfo, "sysinfo", N},
      {SYS_capget, "capget", N},
      {SYS_prctl, "prctl", N},
      {SYS_sched_getparam, "sched_getparam", N},
      {SYS_sched_getscheduler, "sched_getscheduler", N},
      {SYS_sched_get_priority_max, "sched_get_priority_max", N},
      {SYS_sched_get_priority_min, "sched_get_priority_min", N},

      // Signals to itself, and its own thread ids (answered by the guest).
      {SYS_kill, "kill", S},
      {SYS_tgkill, "tgkill", S},
      {SYS_tkill, "tkill", S},
      {SYS_gettid, "gettid", S},

      // Files and descriptors: forwarded.
      {SYS_read, "read", F, {V, OutRet(2), V}},
      {SYS_write, "write", F, {V, In(2), V}},
      {SYS_pread64, "pread64", F, {V, OutRet(2), V, V}},
      {SYS_pwrite64, "pwrite64", F, {V, In(2), V, V}},
      {SYS_readv, "readv", F},   // rewritten to read by the remote side
      {SYS_writev, "writev", F}, // rewritten to write
      {SYS_preadv, "preadv", F},   // rewritten to pread64
      {SYS_pwritev, "pwritev", F}, // rewritten to pwrite64
      {SYS_open, "open", F, {P, V, V}},
      {SYS_openat, "openat", F, {V, P, V, V}},
      {SYS_creat, "creat", F, {P, V}},
      {SYS_close, "close", F, {V}},
      {SYS_close_range, "close_range", F, {V, V, V}},
      {SYS_dup, "dup", F, {V}},
      {SYS_dup2, "dup2", F, {V, V}},
      {SYS_dup3, "dup3", F, {V, V, V}},
      {SYS_fcntl, "fcntl", F, {V, V, V}},  // lock commands: struct flock in/out, see remote.cc
      {SYS_fstat, "fstat", F, {V, Out(kStat)}},
      {SYS_stat, "stat", F, {P, Out(kStat)}},
      {SYS_lstat, "lstat", F, {P, Out(kStat)}},
      {SYS_newfstatat, "newfstatat", F, {V, P, Out(kStat), V}},
      {SYS_statx, "statx", F, {V, P, V, V, Out(kStatx)}},
      {SYS_statfs, "statfs", F, {P, Out(kStatfs)}},
      {SYS_fstatfs, "fstatfs", F, {V, Out(kStatfs)}},
      {SYS_lseek, "lseek", F, {V, V, V}},
      {SYS_fsync, "fsync", F, {V}},
      {SYS_fdatasync, "fdatasync", F, {V}},
      {SYS_sync, "sync", F},
      {SYS_syncfs, "syncfs", F, {V}},
      {SYS_ftruncate, "ftruncate", F, {V, V}},
      {SYS_truncate, "truncate", F, {P, V}},
      {SYS_fallocate, "fallocate", F, {V, V, V, V}},
      {SYS_fadvise64, "fadvise64", F, {V, V, V, V}},
      {SYS_flock, "flock", F, {V, V}},
      {SYS_getdents64, "getdents64", F, {V, OutRet(2), V}},
      {SYS_getdents, "getdents", F, {V, OutRet(2), V}},
      {SYS_access, "access", F, {P, V}},
      {SYS_faccessat, "faccessat", F, {V, P, V}},
      {SYS_faccessat2, "faccessat2", F, {V, P, V, V}},
      {SYS_readlink, "readlink", F, {P, OutRet(2), V}},
      {SYS_readlinkat, "readlinkat", F, {V, P, OutRet(3), V}},
      {SYS_getcwd, "getcwd", F, {OutRet(1), V}},
      {SYS_chdir, "chdir", F, {P}},
      {SYS_fchdir, "fchdir", F, {V}},
      {SYS_unlink, "unlink", F, {P}},
      {SYS_unlinkat, "unlinkat", F, {V, P, V}},
      {SYS_mkdir, "mkdir", F, {P, V}},
      {SYS_mkdirat, "mkdirat", F, {V, P, V}},
      {SYS_rmdir, "rmdir", F, {P}},
      {SYS_rename, "rename", F, {P, P}},
      {SYS_renameat, "renameat", F, {V, P, V, P}},
      {SYS_renameat2, "renameat2", F, {V, P, V, P, V}},
      {SYS_link, "link", F, {P, P}},
      {SYS_linkat, "linkat", F, {V, P, V, P, V}},
      {SYS_symlink, "symlink", F, {P, P}},
      {SYS_symlinkat, "symlinkat", F, {P, V, P}},
      {SYS_chmod, "chmod", F, {P, V}},
      {SYS_fchmod, "fchmod", F, {V, V}},
      {SYS_fchmodat, "fchmodat", F, {V, P, V}},
      {SYS_chown, "chown", F, {P, V, V}},
      {SYS_fchown, "fchown", F, {V, V, V}},
      {SYS_lchown, "lchown", F, {P, V, V}},
      {SYS_fchownat, "fchownat", F, {V, P, V, V, V}},
      {SYS_utimensat, "utimensat", F, {V, P, InFixed(2 * kTimespec), V}},
      {SYS_umask, "umask", F, {V}},
      {SYS_pipe, "pipe", F, {Out(8)}},
      {SYS_pipe2, "pipe2", F, {Out(8), V}},
      {SYS_ioctl, "ioctl", F},  // known requests only, see remote.cc; others go home
      {SYS_poll, "poll", F, {InOutArg(1, 8), V, V}},
      {SYS_ppoll, "ppoll", F, {InOutArg(1, 8), V, InFixed(kTimespec), InFixed(8), V}},
      {SYS_select, "select", F, {V, InOut(kFdSet), InOut(kFdSet), InOut(kFdSet), InOut(kTimeval)}},
      {SYS_sendfile, "sendfile", F, {V, V, InOut(8), V}},
      {SYS_copy_file_range, "copy_file_range", F, {V, InOut(8), V, InOut(8), V, V}},
      {SYS_splice, "splice", F, {V, InOut(8), V, InOut(8), V, V}},
      {SYS_epoll_create1, "epoll_create1", F, {V}},
      {SYS_epoll_ctl, "epoll_ctl", F, {V, V, V, InFixed(12)}},
      {SYS_epoll_wait, "epoll_wait", F, {V, OutArg(2, 12), V, V}},
      {SYS_eventfd2, "eventfd2", F, {V, V}},
      {SYS_timerfd_create, "timerfd_create", F, {V, V}},
      {SYS_timerfd_settime, "timerfd_settime", F, {V, V, InFixed(32), Out(32)}},
      {SYS_timerfd_gettime, "timerfd_gettime", F, {V, Out(32)}},

      // Sockets.
      {SYS_socket, "socket", F, {V, V, V}},
      {SYS_socketpair, "socketpair", F, {V, V, V, Out(8)}},
      {SYS_connect, "connect", F, {V, In(2), V}},
      {SYS_bind, "bind", F, {V, In(2), V}},
      {SYS_listen, "listen", F, {V, V}},
      {SYS_accept, "accept", F, {V, OutDeref(2), InOut(4)}},
      {SYS_accept4, "accept4", F, {V, OutDeref(2), InOut(4), V}},
      {SYS_sendto, "sendto", F, {V, In(2), V, V, In(5), V}},
      {SYS_recvfrom, "recvfrom", F, {V, OutRet(2), V, V, OutDeref(5), InOut(4)}},
      {SYS_shutdown, "shutdown", F, {V, V}},
      {SYS_setsockopt, "setsockopt", F, {V, V, V, In(4), V}},
      {SYS_getsockopt, "getsockopt", F, {V, V, V, OutDeref(4), InOut(4)}},
      {SYS_getsockname, "getsockname", F, {V, OutDeref(2), InOut(4)}},
      {SYS_getpeername, "getpeername", F, {V, OutDeref(2), InOut(4)}},

      // Identity, credentials, process tree: forwarded to the deputy.
      {SYS_getpid, "getpid", F},
      {SYS_getppid, "getppid", F},
      {SYS_getuid, "getuid", F},
      {SYS_geteuid, "geteuid", F},
      {SYS_getgid, "getgid", F},
      {SYS_getegid, "getegid", F},
      {SYS_getgroups, "getgroups", F, {V, OutArg(0, 4)}},
      {SYS_getresuid, "getresuid", F, {Out(4), Out(4), Out(4)}},
      {SYS_getresgid, "getresgid", F, {Out(4), Out(4), Out(4)}},
      {SYS_getpgrp, "getpgrp", F},
      {SYS_getpgid, "getpgid", F, {V}},
      {SYS_getsid, "getsid", F, {V}},
      {SYS_setpgid, "setpgid", F, {V, V}},
      {SYS_setsid, "setsid", F},
      {SYS_getpriority, "getpriority", F, {V, V}},
      {SYS_setpriority, "setpriority", F, {V, V, V}},
      {SYS_wait4, "wait4", F, {V, Out(4), V, Out(kRusage)}},
      {SYS_waitid, "waitid", F, {V, V, Out(kSiginfo), V, Out(kRusage)}},
  };
}

constexpr auto DN = DfsaRule::kNative;
constexpr auto DC = DfsaRule::kClose;
constexpr auto DH = DfsaRule::kHome;
constexpr uint8_t kFd0 = 1, kFd1 = 2, kFd2 = 4, kFd4 = 16;

std::vector<DfsaSpec> MakeDfsaTable() {
  return {
      {SYS_read, "read", DN, kFd0},
      {SYS_write, "write", DN, kFd0},
      {SYS_pread64, "pread64", DN, kFd0},
      {SYS_pwrite64, "pwrite64", DN, kFd0},
      {SYS_readv, "readv", DN, kFd0},
      {SYS_writev, "writev", DN, kFd0},
      {SYS_preadv, "preadv", DN, kFd0},
      {SYS_pwritev, "pwritev", DN, kFd0},
      {SYS_preadv2, "preadv2", DN, kFd0},
      {SYS_pwritev2, "pwritev2", DN, kFd0},
      {SYS_lseek, "lseek", DN, kFd0},
      {SYS_fstat, "fstat", DN, kFd0},
      {SYS_newfstatat, "newfstatat", DN, kFd0, "AT_EMPTY_PATH and an empty path"},
      {SYS_statx, "statx", DN, kFd0, "AT_EMPTY_PATH and an empty path"},
      {SYS_fstatfs, "fstatfs", DN, kFd0},
      {SYS_fsync, "fsync", DN, kFd0},
      {SYS_fdatasync, "fdatasync", DN, kFd0},
      {SYS_sync_file_range, "sync_file_range", DN, kFd0},
      {SYS_ftruncate, "ftruncate", DN, kFd0},
      {SYS_fallocate, "fallocate", DN, kFd0},
      {SYS_fadvise64, "fadvise64", DN, kFd0},
      {SYS_readahead, "readahead", DN, kFd0},
      {SYS_flock, "flock", DN, kFd0},
      {SYS_ioctl, "ioctl", DN, kFd0},
      {SYS_fgetxattr, "fgetxattr", DN, kFd0},
      {SYS_flistxattr, "flistxattr", DN, kFd0},
      {SYS_fcntl, "fcntl", DN, kFd0, "not F_DUPFD/F_DUPFD_CLOEXEC (home)"},
      {SYS_mmap, "mmap", DN, kFd4, "not MAP_SHARED with PROT_WRITE (home)"},
      {SYS_close, "close", DC, kFd0},
      {SYS_dup, "dup", DH, kFd0},
      {SYS_dup2, "dup2", DH, kFd0 | kFd1},
      {SYS_dup3, "dup3", DH, kFd0 | kFd1},
      {SYS_close_range, "close_range", DH, 0, "a DFSA fd in the range"},
      {SYS_sendfile, "sendfile", DH, kFd0 | kFd1},
      {SYS_copy_file_range, "copy_file_range", DH, kFd0 | kFd2},
      {SYS_splice, "splice", DH, kFd0 | kFd2},
      {SYS_tee, "tee", DH, kFd0 | kFd1},
  };
}

const char* DfsaRuleName(DfsaRule r) {
  switch (r) {
    case DfsaRule::kNative:
      return "dfsa-native";
    case DfsaRule::kClose:
      return "dfsa-close";
    case DfsaRule::kHome:
      return "dfsa-home";
    case DfsaRule::kNone:
      return "-";
  }
  return "?";
}

}  // namespace

const std::vector<DfsaSpec>& DfsaTable() {
  static const std::vector<DfsaSpec> table = MakeDfsaTable();
  return table;
}

const DfsaSpec* LookupDfsa(int nr) {
  static const std::map<int, const DfsaSpec*> index = [] {
    std::map<int, const DfsaSpec*> m;
    for (const auto& s : DfsaTable()) m[s.nr] = &s;
    return m;
  }();
  auto it = index.find(nr);
  return it == index.end() ? nullptr : it->second;
}

const std::vector<SyscallSpec>& SyscallTable() {
  static const std::vector<SyscallSpec> table = MakeTable();
  return table;
}

const SyscallSpec& LookupSyscall(int nr) {
  static const std::map<int, const SyscallSpec*> index = [] {
    std::map<int, const SyscallSpec*> m;
    for (const auto& s : SyscallTable()) m[s.nr] = &s;
    return m;
  }();
  static const SyscallSpec kUnknown{};
  auto it = index.find(nr);
  return it == index.end() ? kUnknown : *it->second;
}

const char* ClassName(SyscallClass c) {
  switch (c) {
    case SyscallClass::kNative: return "native";
    case SyscallClass::kForwarded: return "forwarded";
    case SyscallClass::kSelf: return "self";
    case SyscallClass::kHome: return "home";
  }
  return "?";
}

std::vector<std::array<std::string, 3>> SyscallTableRows() {
  std::vector<std::array<std::string, 3>> rows;
  for (const auto& s : SyscallTable()) rows.push_back({s.name, std::to_string(s.nr), ClassName(s.cls)});
  rows.push_back({"(every other call)", "-", ClassName(SyscallClass::kHome)});
  for (const auto& d : DfsaTable()) {
    std::string rule = DfsaRuleName(d.rule);
    if (d.when[0]) rule += std::string(" (") + d.when + ")";
    rows.push_back({d.name, std::to_string(d.nr), rule});
  }
  return rows;
}

std::string SyscallTableText() {
  std::string out;
  for (const auto& r : SyscallTableRows()) out += r[0] + ' ' + r[1] + ' ' + r[2] + '\n';
  return out;
}

Result<std::string> BuildRemoteFilter(uint64_t stub_gadget) {
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_NOTIFY);
  if (!ctx) return Status::Error(ENOMEM, "seccomp_init");
  struct Ctx {
    scmp_filter_ctx c;
    ~Ctx() { seccomp_release(c); }
  } guard{ctx};
  int rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2);
  if (rc != 0) return Status::PosixError("seccomp_attr_set", -rc);
  for (const auto& s : SyscallTable()) {
    if (s.cls != SyscallClass::kNative) continue;
    if (s.nr == SYS_mmap) {
      rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, s.nr, 1, SCMP_A3(SCMP_CMP_MASKED_EQ, MAP_ANONYMOUS, MAP_ANONYMOUS));
    } else if (s.nr == SYS_prlimit64) {
      rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, s.nr, 1, SCMP_A0(SCMP_CMP_EQ, 0));
    } else {
      rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, s.nr, 0);
    }
    if (rc != 0) return Status::PosixError(std::string("seccomp_rule_add ") + s.name, -rc);
  }
  UniqueFd mem(memfd_create("mfs-filter", MFD_CLOEXEC));
  if (!mem) return Status::FromErrno("memfd_create");
  rc = seccomp_export_bpf(ctx, mem.get());
  if (rc != 0) return Status::PosixError("seccomp_export_bpf", -rc);
  off_t size = lseek(mem.get(), 0, SEEK_END);
  std::string body(static_cast<size_t>(size), '\0');
  if (pread(mem.get(), body.data(), body.size(), 0) != size) return Status::FromErrno("read filter");

  // Prefix: calls made from the stub's `syscall` are the supervisor's own.
  const uint32_t ip_lo = offsetof(seccomp_data, instruction_pointer);
  sock_filter prefix[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ip_lo + 4),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, static_cast<uint32_t>(stub_gadget >> 32), 0, 3),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ip_lo),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, static_cast<uint32_t>(stub_gadget + 2), 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  std::string out(reinterpret_cast<const char*>(prefix), sizeof prefix);
  out += body;
  return out;
}

}  // namespace mfs::migrate

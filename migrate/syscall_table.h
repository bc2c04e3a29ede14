// The class of every system call a remote may make — the one table.
//
//   native     runs on the remote's node at full speed (memory, futexes,
//              clocks, signal masks and handlers, rseq, exit ...): the
//              seccomp filter allows it.
//   forwarded  site-dependent (files, sockets, pipes, the terminal, pids,
//              credentials, children ...): trapped (SECCOMP_RET_USER_NOTIF),
//              sent to the home supervisor with its in-buffers, executed by
//              the deputy in the original process (same pid, fds, cwd,
//              credentials, children), answered with its out-buffers: one
//              round trip per call.
//   self       a signal the process sends to itself (kill of its home pid,
//              tgkill/tkill of one of its threads) and gettid: answered by
//              the guest supervisor on the spot (thread ids: the ones the
//              program knows, see man/mfs-migration.7).
//   home       cannot run away from home (fork, execve, clone, ptrace, SysV
//              shm, unknown ioctls, anything not in this table ...): the
//              process is brought home with the call pending, and re-executes
//              it there natively. Nothing is refused.
// mmap of a file descriptor is `home` (the fd lives at home); anonymous mmap
// is native (the filter checks the fd argument).
//
// DFSA (see man/mfs-migration.7): a remote's files on /mfs are its own fds,
// re-opened where it runs. A call that names one of them (DfsaTable) still
// traps (a filter cannot see the fd table) but is answered on the spot:
//   native  the remote's kernel runs it (SECCOMP_USER_NOTIF_FLAG_CONTINUE);
//   close   run natively and at home (fire and forget), so the number is
//           free on both sides;
//   home    the two fd tables would diverge (dup of or onto a DFSA fd,
//           close_range over one, calls that move bytes between two fds):
//           the process is brought home, as for class home.
//
// man/mfs-migration.7 prints this table; `mfsps --syscalls` prints it from
// this code (SyscallTableText), and migrate/syscall_table_test.cc fails when
// the man page's copy differs from the code.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "mfs/base/status.h"

namespace mfs::migrate {

enum class SyscallClass : uint8_t { kNative, kForwarded, kSelf, kHome };

// How one argument travels when a call is forwarded.
enum class ArgKind : uint8_t {
  kValue,   // an integer, passed as is
  kPath,    // NUL-terminated string in (≤ PATH_MAX)
  kIn,      // buffer read by the kernel
  kOut,     // buffer written by the kernel (all `size` bytes)
  kOutRet,  // buffer written by the kernel, `return value` bytes of it
  kInOut,   // both
};

struct ArgSpec {
  ArgKind kind = ArgKind::kValue;
  int8_t size_arg = -1;      // size comes from this argument's value ...
  int8_t size_deref = -1;    // ... or from the u32 this argument points to
  uint32_t fixed = 0;        // ... or is fixed
  uint32_t multiplier = 1;   // element size when size_arg counts elements
};

struct SyscallSpec {
  int nr = -1;
  const char* name = "";
  SyscallClass cls = SyscallClass::kHome;
  ArgSpec args[6];
};

enum class DfsaRule : uint8_t { kNone, kNative, kClose, kHome };

struct DfsaSpec {
  int nr = -1;
  const char* name = "";
  DfsaRule rule = DfsaRule::kNone;
  uint8_t fd_args = 0;    // bit i: argument i is an fd
  const char* when = "";  // a condition the guest checks, for the table
};

// The rules for calls on DFSA fds; nullptr: the call is not about one.
const DfsaSpec* LookupDfsa(int nr);
const std::vector<DfsaSpec>& DfsaTable();

// The spec of `nr`; calls missing from the table are kHome.
const SyscallSpec& LookupSyscall(int nr);
const std::vector<SyscallSpec>& SyscallTable();
const char* ClassName(SyscallClass c);
// The table of man/mfs-migration.7: {name, nr, class} rows, then
// "(every other call)", then {name, nr, "dfsa-rule[ (condition)]"} rows for
// calls on a DFSA fd. SyscallTableText: the same, one row per line with
// single spaces (`mfsps --syscalls`).
std::vector<std::array<std::string, 3>> SyscallTableRows();
std::string SyscallTableText();

// The seccomp filter of a remote: native calls allowed, the rest
// SECCOMP_RET_USER_NOTIF, and every call made from `stub_gadget` (the
// supervisor's own injected calls) allowed. Returns the BPF program
// (sock_filter array bytes).
Result<std::string> BuildRemoteFilter(uint64_t stub_gadget);

}  // namespace mfs::migrate

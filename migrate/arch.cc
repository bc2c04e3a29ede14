#include "migrate/arch.h"

#include <elf.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>

#include <cstring>

#include "mfs/base/coding.h"

namespace mfs::migrate {
namespace {
// Kernel-internal restart codes (include/linux/errno.h).
constexpr int64_t kERestartSys = 512;
constexpr int64_t kERestartNoIntr = 513;
constexpr int64_t kERestartNoHand = 514;
constexpr int64_t kERestartRestartBlock = 516;
// Large enough for every XSAVE layout shipped so far (AMX is ~11 KiB).
constexpr size_t kMaxXState = 64 * 1024;
}  // namespace

uint64_t CpuState::arg(int i) const {
  switch (i) {
    case 0: return gp.rdi;
    case 1: return gp.rsi;
    case 2: return gp.rdx;
    case 3: return gp.r10;
    case 4: return gp.r8;
    case 5: return gp.r9;
  }
  return 0;
}

void CpuState::SetUpSyscall(uint64_t gadget, long nr, const std::array<uint64_t, 6>& a) {
  gp.rip = gadget;
  gp.rax = static_cast<uint64_t>(nr);
  gp.orig_rax = static_cast<uint64_t>(-1);
  gp.rdi = a[0];
  gp.rsi = a[1];
  gp.rdx = a[2];
  gp.r10 = a[3];
  gp.r8 = a[4];
  gp.r9 = a[5];
}

void CpuState::NormalizeRestart() {
  if (static_cast<int64_t>(gp.orig_rax) < 0) return;
  switch (-static_cast<int64_t>(gp.rax)) {
    case kERestartSys:
    case kERestartNoIntr:
    case kERestartNoHand:
      gp.rax = gp.orig_rax;
      gp.rip -= 2;
      break;
    case kERestartRestartBlock:
      // The restart block is kernel state. For the sleeps and waits below
      // the arguments (still in their registers) say enough to wait again:
      // a relative timeout then runs in full once more (later, never
      // earlier, which POSIX allows); anything else fails with EINTR.
      if (gp.orig_rax == SYS_nanosleep || gp.orig_rax == SYS_clock_nanosleep || gp.orig_rax == SYS_futex ||
          gp.orig_rax == SYS_poll) {
        gp.rax = gp.orig_rax;
        gp.rip -= 2;
      } else {
        gp.rax = static_cast<uint64_t>(-EINTR);
      }
      break;
    default:
      break;
  }
  gp.orig_rax = static_cast<uint64_t>(-1);
}

void CpuState::Encode(std::string* out) const {
  Writer w(out);
  w.Bytes(std::string_view(reinterpret_cast<const char*>(&gp), sizeof gp));
  w.Bytes(xstate);
}

bool CpuState::Decode(Reader& r) {
  std::string_view g = r.Bytes();
  std::string_view x = r.Bytes();
  if (!r.ok() || g.size() != sizeof gp) return false;
  std::memcpy(&gp, g.data(), sizeof gp);
  xstate.assign(x);
  return true;
}

Result<user_regs_struct> GetGpRegs(pid_t tid) {
  user_regs_struct r{};
  if (ptrace(PTRACE_GETREGS, tid, nullptr, &r) != 0) return Status::FromErrno("PTRACE_GETREGS");
  return r;
}

Status SetGpRegs(pid_t tid, const user_regs_struct& r) {
  if (ptrace(PTRACE_SETREGS, tid, nullptr, &r) != 0) return Status::FromErrno("PTRACE_SETREGS");
  return Status::OK();
}

Result<CpuState> GetCpuState(pid_t tid) {
  CpuState s;
  MFS_ASSIGN_OR_RETURN(s.gp, GetGpRegs(tid));
  std::string buf(kMaxXState, '\0');
  iovec iov{buf.data(), buf.size()};
  if (ptrace(PTRACE_GETREGSET, tid, reinterpret_cast<void*>(NT_X86_XSTATE), &iov) != 0)
    return Status::FromErrno("PTRACE_GETREGSET NT_X86_XSTATE");
  buf.resize(iov.iov_len);
  s.xstate = std::move(buf);
  return s;
}

Status SetCpuState(pid_t tid, const CpuState& s) {
  if (!s.xstate.empty()) {
    std::string buf = s.xstate;
    iovec iov{buf.data(), buf.size()};
    if (ptrace(PTRACE_SETREGSET, tid, reinterpret_cast<void*>(NT_X86_XSTATE), &iov) != 0)
      return Status::FromErrno("PTRACE_SETREGSET NT_X86_XSTATE");
  }
  return SetGpRegs(tid, s.gp);
}

}  // namespace mfs::migrate

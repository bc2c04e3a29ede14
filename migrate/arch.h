// The x86-64 register layout, in one place.
//
// Every other file of the migration library sees registers only through
// CpuState and the accessors below; this file (and arch.cc) is the only one
// that touches user_regs_struct and the XSAVE area. Not thread-safe (values).
#pragma once

#include <sys/ptrace.h>
#include <sys/types.h>
#include <sys/user.h>

#include <array>
#include <cstdint>
#include <string>

#include "mfs/base/coding.h"
#include "mfs/base/status.h"

namespace mfs::migrate {

// One thread's CPU state: general registers (incl. fs_base/gs_base) and the
// extended FPU/SSE/AVX state as the kernel's XSAVE layout (NT_X86_XSTATE).
struct CpuState {
  user_regs_struct gp{};
  std::string xstate;  // empty: not captured

  uint64_t ip() const { return gp.rip; }
  uint64_t sp() const { return gp.rsp; }
  // The syscall number the thread is in (or -1), and the return register.
  int64_t syscall_nr() const { return static_cast<int64_t>(gp.orig_rax); }
  int64_t ret() const { return static_cast<int64_t>(gp.rax); }
  void set_ret(int64_t v) { gp.rax = static_cast<uint64_t>(v); }
  uint64_t arg(int i) const;
  // Makes the registers execute `syscall` at `gadget` with `nr` and `args`;
  // orig_rax is -1 so that no kernel restart logic applies to the old state.
  void SetUpSyscall(uint64_t gadget, long nr, const std::array<uint64_t, 6>& args);
  // If the thread was stopped inside an interrupted system call, rewrites the
  // registers so that resuming them re-executes that call (what the kernel
  // would have done on return to user space): -ERESTARTSYS/-NOINTR/-NOHAND
  // become "ip -= 2, rax = nr"; -ERESTART_RESTARTBLOCK (the restart block is
  // kernel state that cannot move) re-executes nanosleep, clock_nanosleep,
  // futex and poll with their original arguments and becomes -EINTR for
  // anything else.
  void NormalizeRestart();
  // Serialised form (fixed-size gp block + xstate bytes).
  void Encode(std::string* out) const;
  bool Decode(Reader& r);
};

Result<CpuState> GetCpuState(pid_t tid);
Status SetCpuState(pid_t tid, const CpuState& s);
Result<user_regs_struct> GetGpRegs(pid_t tid);
Status SetGpRegs(pid_t tid, const user_regs_struct& r);

// PTRACE_GET_RSEQ_CONFIGURATION (5.13); <linux/ptrace.h> clashes with
// <sys/ptrace.h>, so the request and its struct are spelled out here.
inline constexpr auto kPtraceGetRseqConfiguration = static_cast<__ptrace_request>(0x420f);
struct RseqConfig {
  uint64_t rseq_abi_pointer;
  uint32_t rseq_abi_size;
  uint32_t signature;
  uint32_t flags;
  uint32_t pad;
};

// The two instruction bytes of `syscall`.
inline constexpr uint8_t kSyscallInsn[2] = {0x0f, 0x05};

}  // namespace mfs::migrate

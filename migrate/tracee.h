// Tracee: one ptrace-stopped (or running) thread that this thread traces.
//
// The ptrace lifecycle of CRIU's compel, small: seize → interrupt (stop) →
// run system calls inside it (Syscall) → restore its registers → resume or
// detach. Only the thread that seized a tracee may call ptrace on it, so a
// Tracee is used from one thread only (not thread-safe). The destructor
// detaches a live tracee (it then runs on with whatever registers it has:
// callers restore them first), so a tracer that fails never leaves a process
// stopped forever.
//
// System calls run in the tracee at a "gadget": the address of a `syscall`
// instruction in its address space ([vdso] at first, our stub page later).
// Each call is stepped with PTRACE_SYSCALL to its exit stop, so nothing after
// the instruction ever runs. Signals that arrive meanwhile are held back
// (stashed) and handed to the caller, never lost.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "mfs/base/status.h"
#include "mfs/base/unique_fd.h"
#include "migrate/arch.h"

namespace mfs::migrate {

class Tracee {
 public:
  // PTRACE_SEIZE of `tid` with `options` (PTRACE_O_*; TRACESYSGOOD is added).
  static Result<std::unique_ptr<Tracee>> Seize(pid_t tid, long options);
  // A thread this thread already traces (auto-attached by PTRACE_O_TRACECLONE)
  // whose first stop the caller has reaped: it is stopped.
  static std::unique_ptr<Tracee> Adopt(pid_t tid, long options);
  ~Tracee();
  Tracee(const Tracee&) = delete;
  Tracee& operator=(const Tracee&) = delete;

  pid_t tid() const { return tid_; }
  long options() const { return options_; }
  // PTRACE_SETOPTIONS (TRACESYSGOOD is added). REQUIRES: stopped.
  Status SetOptions(long options);
  bool stopped() const { return stopped_; }
  bool dead() const { return dead_; }
  int exit_status() const { return exit_status_; }  // waitpid status once dead()

  // Stops a running tracee (PTRACE_INTERRUPT) and waits for the stop.
  Status Interrupt();
  // Waits for the next ptrace stop of this tid (blocking). Signal-delivery
  // stops are stashed and the tracee resumed; returns the first non-signal
  // stop status (PTRACE_EVENT_STOP, syscall stop, ...), or ESRCH if it died.
  Result<int> WaitForStop(bool resume_on_signal);
  // Marks the tracee stopped after the caller reaped a stop itself.
  void MarkStopped(int status);
  void MarkRunning() { stopped_ = false; }

  void set_gadget(uint64_t gadget) { gadget_ = gadget; }
  uint64_t gadget() const { return gadget_; }
  // Stack pointer for injected calls (0: keep the tracee's). sigaltstack
  // refuses to change the alternate stack while the stack pointer is on it,
  // so the restore runs its calls on the stub's own stack.
  void set_stack(uint64_t sp) { stack_ = sp; }
  // Runs one system call in the stopped tracee. Clobbers its registers
  // (callers save and restore a CpuState). Returns the raw return value
  // (-errno on failure) or a Status if the tracee could not be driven.
  Result<int64_t> Syscall(long nr, uint64_t a0 = 0, uint64_t a1 = 0, uint64_t a2 = 0,
                          uint64_t a3 = 0, uint64_t a4 = 0, uint64_t a5 = 0);
  // Same, turning a negative return into a Status naming `what`.
  Result<uint64_t> CheckedSyscall(const char* what, long nr, uint64_t a0 = 0, uint64_t a1 = 0,
                                  uint64_t a2 = 0, uint64_t a3 = 0, uint64_t a4 = 0,
                                  uint64_t a5 = 0);

  // Runs many system calls in one ptrace round trip (see BatchCall): writes
  // the calls to `table` and a small loop to `code` (both in a writable,
  // executable area of the tracee: the stub), runs the loop to its int3 and
  // reads the results back. Stops at the first call that fails unless it
  // may_fail. Returns how many calls ran (the last of them the failing one,
  // if any) with each one's raw return in calls[i].ret. Clobbers registers.
  struct BatchCall {
    uint64_t nr = 0;
    uint64_t args[6] = {};
    int64_t ret = 0;
    uint64_t may_fail = 0;
  };
  static constexpr size_t kBatchCodeSize = 64;
  Result<size_t> RunBatch(uint64_t code, uint64_t table, std::vector<BatchCall>& calls);

  // Memory of the tracee: process_vm_{read,write}v, falling back to
  // /proc/PID/mem (which can write read-only private pages).
  Status ReadMem(uint64_t addr, void* buf, size_t len);
  Status WriteMem(uint64_t addr, const void* buf, size_t len);

  Status Cont(int sig = 0);
  // Detaches, letting the tracee run (or stay in group-stop).
  Status Detach();
  // SIGKILL and reap.
  void Kill();

  // Signals held back while we drove the tracee; the caller re-delivers them.
  std::vector<int> TakeStashedSignals() { return std::move(stashed_); }
  const std::vector<int>& stashed_signals() const { return stashed_; }

 private:
  Tracee(pid_t tid, long options) : tid_(tid), options_(options) {}
  Status OpenMem();

  pid_t tid_;
  long options_;
  bool attached_ = true;
  bool stopped_ = false;
  bool dead_ = false;
  int exit_status_ = 0;
  uint64_t gadget_ = 0;
  uint64_t stack_ = 0;
  UniqueFd mem_;
  std::vector<int> stashed_;
};

}  // namespace mfs::migrate

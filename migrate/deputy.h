// DeputyChannel: the deputy executes forwarded system calls from shared
// memory, without a ptrace stop per call.
//
// A memfd is mapped both in the deputy (MAP_SHARED, read-write-execute) and
// here. Its first page holds a small control block and a loop of injected
// code; the rest is the buffer area for the calls' pointer arguments. The
// deputy runs the loop with rbx = the block and r12 = the last request
// number it served:
//
//   loop:  if block.req == r12: futex_wait(&block.req, r12); goto loop
//          r12 = block.req
//          block.ret = syscall(block.nr, block.args...)
//          block.done = r12
//          if block.waiting: futex_wake(&block.done)
//          goto loop
//
// The supervisor writes a call (Submit: nr, args, bumps req, FUTEX_WAKE) and
// waits for `done` (WaitDone on the io thread for a short while, then a
// waiter thread that posts the completion). The deputy stays traced, so a
// signal sent to the home pid still stops it (signal-delivery stop) and is
// forwarded; a PTRACE_INTERRUPT stops it for a move, and Classify() tells
// from its registers whether the call in flight ran.
//
// Not thread-safe except where noted: used from the supervisor's io thread;
// the waiter thread only reads `done` and posts.
#pragma once

#include <sys/types.h>
#include <sys/user.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>

#include "mfs/base/status.h"
#include "migrate/checkpoint.h"
#include "migrate/tracee.h"

namespace mfs::migrate {

class DeputyChannel {
 public:
  static constexpr uint64_t kSize = 8u << 20;  // block + code page, then buffers
  static constexpr uint64_t kBufferOffset = 4096;

  // Maps the channel in the stopped tracee `t` (gadget and `scratch` mapped;
  // clobbers its registers: the caller restores them) and here. The waiter
  // thread calls `post(seq)` (from its own thread) when call `seq` is done.
  static Result<std::unique_ptr<DeputyChannel>> Create(Tracee& t, const Scratch& scratch,
                                                       std::function<void(uint32_t)> post);
  ~DeputyChannel();
  DeputyChannel(const DeputyChannel&) = delete;
  DeputyChannel& operator=(const DeputyChannel&) = delete;

  // Registers that run the loop, idle (r12 = the current request number),
  // from `base` (the deputy's registers at the freeze).
  user_regs_struct LoopRegs(const user_regs_struct& base) const;

  // The buffer area, here and at the deputy's address.
  char* buffer() const { return local_ + kBufferOffset; }
  uint64_t remote_buffer() const { return remote_ + kBufferOffset; }
  uint64_t buffer_size() const { return kSize - kBufferOffset; }

  // Starts call nr(args) in the (running, idle) deputy; returns its number.
  uint32_t Submit(long nr, const uint64_t args[6]);
  // Whether call `seq` is done; its return value then in *ret.
  bool Done(uint32_t seq, int64_t* ret) const;
  // Waits up to `usec` on the io thread for call `seq`.
  bool WaitDone(uint32_t seq, int64_t* ret, long usec) const;
  // Has the waiter thread post `seq` once it is done (or Cancel()).
  void Watch(uint32_t seq);
  void Cancel();

  // What the deputy's registers, stopped while call `seq` was in flight and
  // not Done, say about it: it did not run (kNotRun), or it ran and returned
  // *ret (kRan). A call cut with a restart code did not run.
  enum class Fate { kNotRun, kRan };
  Fate Classify(uint32_t seq, const user_regs_struct& regs, int64_t* ret) const;
  // True if `regs` stopped at the instruction after the forwarded call's
  // `syscall` with a restart code that the kernel would act on.
  bool AtCallRestart(const user_regs_struct& regs) const;

 private:
  DeputyChannel() = default;
  void WaiterLoop();

  char* local_ = nullptr;
  uint64_t remote_ = 0;
  uint64_t code_ = 0;  // the loop, in the deputy's scratch
  std::function<void(uint32_t)> post_;
  uint32_t seq_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  uint32_t watch_ = 0;      // 0: nothing to watch
  uint64_t watch_gen_ = 0;  // bumped by Watch/Cancel
  std::thread waiter_;
};

}  // namespace mfs::migrate

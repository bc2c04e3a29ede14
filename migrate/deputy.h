// DeputyChannel: the deputy executes forwarded system calls from shared
// memory, without a ptrace stop per call, and (the direct path) reads simple
// calls from a socket connected to the guest supervisor itself, so that the
// home supervisor is off their data path.
//
// A memfd is mapped both in the deputy (MAP_SHARED) and here. Its first page
// holds a control block; then come two buffer areas for the calls' pointer
// arguments: one for the calls this supervisor submits, one for the direct
// calls. The loop of injected code lives in the deputy's (executable)
// scratch. The deputy runs it with rbx = the block and r12 = the last
// request number it served:
//
//   loop:  if block.req != r12: r12 = block.req              (submitted call)
//                               block.ret = syscall(block.nr, block.args...)
//                               block.done = r12; futex_wake(&block.done) if waited on
//                               goto loop
//          poll({socket, POLLIN}, {eventfd, POLLIN})
//          eventfd readable: read it; goto loop               (Submit wrote it)
//          socket readable: recv a DirectRequest, then its in_len bytes at
//                 its `msg` (MSG_WAITALL, resumed after a short count);
//                 ret = syscall(nr, args...);
//                 send {seq, ret} and the out-buffers: sendmsg(msg) after
//                 cutting the iovec `ret_iov` to ret bytes (read-like calls),
//                 or the header alone if ret < 0
//          anything unexpected (EOF, an error, a short send, a closed fd): int3
//
// The supervisor writes a call (Submit: nr, args, bumps req, writes the
// eventfd) and waits for `done` (WaitDone on the io thread for a short while,
// then a waiter thread that posts the completion). The guest writes direct
// calls to its end of the socket; their buffers are placed in the direct
// area (whose address it learns at setup, DirectHello) with argument
// pointers already rewritten. The deputy stays traced, so a signal sent to
// the home pid still stops it (signal-delivery stop) and is forwarded; a
// PTRACE_INTERRUPT stops it for a move, and Classify()/ClassifyDirect() tell
// from its registers and the block whether the call in flight ran.
//
// Both fds (the eventfd, and the socket while the direct path is on) are
// placed at a high number (>= the `min_fd` given), close-on-exec, so that the
// program's own numbers do not change; they exist only while the process is
// away (man/mfs-migration.7).
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
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "mfs/base/status.h"
#include "migrate/checkpoint.h"
#include "migrate/tracee.h"

namespace mfs::migrate {

// The direct path's wire format (guest -> deputy, then deputy -> guest):
// each request is a DirectRequest, then `in_len` bytes that the deputy
// receives at `msg` in its direct area: a msghdr (msg_iov, msg_iovlen), its
// iovec array and the call's in-buffers, all laid out by the guest. The
// reply is a DirectReplyHeader (iovec 0 of `msg`: the block's reply header)
// and then, if ret >= 0, the other iovecs' bytes (iovec `ret_iov`, if not 0,
// cut to ret bytes).
struct DirectRequest {
  uint32_t seq;     // the guest's number of the call (never 0)
  uint32_t in_len;  // bytes that follow
  uint64_t nr;
  uint64_t args[6];
  uint64_t msg;      // the deputy's address of the msghdr
  uint32_t ret_iov;  // iovec cut to ret bytes; 0: none
  uint32_t pad;
};
static_assert(sizeof(DirectRequest) == 80);
struct DirectReplyHeader {
  uint32_t seq;
  uint32_t pad;
  int64_t ret;
};
static_assert(sizeof(DirectReplyHeader) == 16);
// The first bytes the home writes on a new direct socket: the guest checks
// the token (sent to it over the authenticated connection) and learns where
// the direct area is and which fd numbers the deputy uses.
struct DirectHello {
  uint8_t token[16];
  uint64_t block;  // the deputy's address of the control block
  uint64_t area;   // ... of the direct area
  uint64_t area_size;
  int32_t sock_fd;  // the deputy's fd numbers: the program must not use them
  int32_t event_fd;
};
static_assert(sizeof(DirectHello) == 48);
inline constexpr uint64_t kDirectReplyHeaderOffset = 256;  // in the block

class DeputyChannel {
 public:
  // The block page, then the submitted calls' buffers, then the direct ones.
  static constexpr uint64_t kBufferOffset = 4096;
  static constexpr uint64_t kAreaSize = 8u << 20;
  static constexpr uint64_t kDirectOffset = kBufferOffset + kAreaSize;
  static constexpr uint64_t kSize = kDirectOffset + kAreaSize;

  // Maps the channel in the stopped tracee `t` (gadget and `scratch` mapped;
  // clobbers its registers: the caller restores them) and here. The waiter
  // thread calls `post(seq)` (from its own thread) when call `seq` is done.
  // Its eventfd is placed at the first free number >= `min_fd`.
  static Result<std::unique_ptr<DeputyChannel>> Create(Tracee& t, const Scratch& scratch,
                                                       std::function<void(uint32_t)> post,
                                                       int min_fd);
  ~DeputyChannel();
  DeputyChannel(const DeputyChannel&) = delete;
  DeputyChannel& operator=(const DeputyChannel&) = delete;

  // Registers that run the loop, idle (r12 = the current request number),
  // from `base` (the deputy's registers at the freeze).
  user_regs_struct LoopRegs(const user_regs_struct& base) const;

  // The buffer area, here and at the deputy's address.
  char* buffer() const { return local_ + kBufferOffset; }
  uint64_t remote_buffer() const { return remote_ + kBufferOffset; }
  uint64_t buffer_size() const { return kAreaSize; }

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

  // ---- The direct path.

  // Creates, in the stopped deputy, a TCP socket bound to `local` and
  // connected to `peer` (TCP_NODELAY, close-on-exec, moved to >= min_fd),
  // takes a copy of it here, and writes the DirectHello (with `token`) on it. The loop serves it
  // once EnableDirect() is called. Clobbers the deputy's registers.
  Status AttachDirect(Tracee& t, uint32_t local_ip, uint32_t peer_ip, uint16_t port, int min_fd,
                      const uint8_t token[16]);
  void EnableDirect();
  bool direct() const { return sock_local_ >= 0; }
  int direct_fd() const { return sock_remote_; }
  int event_fd() const { return efd_remote_; }
  uint64_t remote_direct_buffer() const { return remote_ + kDirectOffset; }
  uint64_t remote_block() const { return remote_; }

  // What the stopped deputy's registers and block say about the direct call
  // last received: it ran (returned *ret; *out = the bytes of its
  // out-buffers, as the reply carries them) or none did. A call that ran
  // may also have been answered on the socket already; the guest tells
  // (by seq).
  bool ClassifyDirect(const user_regs_struct& regs, uint32_t* seq, int64_t* ret,
                      std::string* out) const;
  // True if `regs` stopped right after the direct call's `syscall` with a
  // restart code (a signal for the home pid cut it); *seq its number.
  bool AtDirectRestart(const user_regs_struct& regs, uint32_t* seq) const;
  // True if the loop stopped at its int3 (the direct socket failed, or one
  // of its fds was closed by the program).
  bool AtTrap(const user_regs_struct& regs) const;
  // `regs` moved to the top of the loop (r12 kept), with no kernel restart.
  user_regs_struct TopRegs(const user_regs_struct& regs) const;
  // Ends the direct path (the deputy stopped): no more reads of the socket;
  // our end is shut down for writing (the guest reads what was sent, then
  // EOF), then closed here and in the deputy (if that fd is still ours).
  void EndDirect(Tracee& t);
  // Whether the deputy's eventfd is still the one we made (the program may
  // have closed it with a forwarded close_range).
  bool EventFdIntact() const;
  // Closes the channel's fds in the stopped deputy (if still ours); before
  // the process comes home. Clobbers its registers.
  void CloseInDeputy(Tracee& t);
  // Calls the deputy ran on the direct path, by system call number.
  std::map<int, uint64_t> DirectCounts() const;

 private:
  DeputyChannel() = default;
  void WaiterLoop();

  bool SameFile(int local, int remote) const;

  pid_t pid_ = 0;
  char* local_ = nullptr;
  int efd_local_ = -1, efd_remote_ = -1;
  int sock_local_ = -1, sock_remote_ = -1;
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

// UringTransport: FUSE over io_uring (Linux 6.14+, protocol 7.42) under
// libfuse 3.14, which knows nothing of it.
//
// With FUSE_OVER_IO_URING agreed at INIT, the kernel keeps one queue per
// possible CPU and puts each request on the queue of the CPU its caller
// runs on, into a buffer the server registered there. Each queue here has
// one thread, pinned to that CPU where it can be, with its own ring, in
// SCHED_IDLE: the caller's request wakes a thread on its own CPU, the
// reply wakes the caller there too (the CPU counts as idle, the caller
// preempts the ring's thread), so a round trip crosses no CPU; and one
// io_uring_enter commits a reply, fetches the next request and waits. A
// guard thread puts a ring thread that starves in SCHED_IDLE (CPU-bound
// tasks of its own scheduling group on its CPU) back in SCHED_OTHER. FORGET and INTERRUPT still
// come through /dev/fuse, which libfuse's own loop keeps reading.
//
// A request taken off a ring is laid out as read(2) on /dev/fuse would
// deliver it (header, op header, payload: the payload is not copied, the
// headers go in front of it) and handed to fuse_session_process_buf. Its
// reply, which libfuse writes through the session's custom I/O, is caught
// by TakeReply / TakeSpliceReply and committed on the ring it came from:
// at once when the handler replied on the ring's thread, through the
// thread's wake-up eventfd when it replied later from another (a remote
// file's reply from a network thread).
//
// Handlers run on the ring's thread: one that blocks holds up the requests
// of callers on that CPU until it returns (the others' queues go on).
//
// Thread-safety: TakeReply/TakeSpliceReply from any thread; the rest from
// the thread that owns the FuseFs.
#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <vector>

#include "mfs/base/status.h"

struct fuse_session;

namespace mfs::fuse {

class UringTransport {
 public:
  // Rings and buffers for `queues` kernel queues of `depth` entries, each
  // taking requests and replies of up to `payload` bytes. Made before INIT
  // is answered: once the kernel has agreed to io_uring it holds every
  // request back until each queue has an entry, so nothing that can fail
  // may come between the answer and Start().
  static Result<std::unique_ptr<UringTransport>> Create(fuse_session* se, int dev_fd,
                                                        unsigned queues, unsigned depth,
                                                        size_t payload);
  ~UringTransport();  // stops and joins the threads
  UringTransport(const UringTransport&) = delete;
  UringTransport& operator=(const UringTransport&) = delete;

  // Lets the threads register their queue's entries. REQUIRES: the
  // INIT reply with FUSE_OVER_IO_URING was written. A registration the
  // kernel refuses makes it fall back to /dev/fuse (logged).
  void Start();

  // libfuse's output hooks (FuseFs's custom I/O). If `iov` answers a request
  // taken off a ring, stores it there and returns the bytes consumed;
  // nullopt otherwise (write it to the device).
  std::optional<ssize_t> TakeReply(const iovec* iov, int count);
  // The same for a reply libfuse spliced into `pipe_fd` (`len` bytes,
  // header first), written from the ring's own thread only.
  std::optional<ssize_t> TakeSpliceReply(int pipe_fd, size_t len);

  unsigned queues() const;
  // Entries the kernel took (registered and not torn down).
  unsigned live_entries() const;
  // Requests taken off the rings.
  uint64_t requests() const;
  // Times a ring thread was found starved in SCHED_IDLE and made normal.
  uint64_t promotions() const;

  // The kernel's queue count: its possible CPUs (/sys/devices/system/cpu).
  static unsigned PossibleCpus();

  struct Entry;  // one registered request buffer (uring.cc)

 private:
  struct Queue;
  UringTransport() = default;
  void Serve(Queue& q);
  void Guard();
  void SetIdleClass(Queue& q, bool idle);
  void Dispatch(Queue& q, Entry& e);
  // Takes the entry serving request `unique` for its reply: once, for
  // whoever answers first.
  Entry* Claim(uint64_t unique);

  fuse_session* se_ = nullptr;
  int dev_fd_ = -1;
  size_t payload_ = 0;
  std::vector<std::unique_ptr<Queue>> queues_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> promotions_{0};
  std::thread guard_;  // Guard(): SCHED_IDLE without starvation
  std::mutex serving_mu_;                         // a leaf lock
  std::unordered_map<uint64_t, Entry*> serving_;  // by request unique, until answered
  // The threads enable their rings at Create() and register entries only
  // once Start() says go.
  std::mutex start_mu_;
  std::condition_variable start_cv_;
  size_t enabled_ = 0, failed_ = 0;
  bool go_ = false;
};

}  // namespace mfs::fuse

#define FUSE_USE_VERSION 314
#include "mfs/fuse/uring.h"

#include <fuse_lowlevel.h>
#include <liburing.h>
#include <linux/fuse.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>

#include "mfs/base/log.h"
#include "mfs/base/unique_fd.h"

namespace mfs::fuse {

// From the kernel's uapi <linux/fuse.h> of protocol 7.42 (Linux 6.14); the
// installed header (7.38) lacks them.
namespace {
constexpr uint32_t kCmdRegister = 1;        // FUSE_IO_URING_CMD_REGISTER
constexpr uint32_t kCmdCommitAndFetch = 2;  // FUSE_IO_URING_CMD_COMMIT_AND_FETCH
struct RingHeader {                         // struct fuse_uring_req_header
  char in_out[128];                         // fuse_in_header / fuse_out_header
  char op_in[128];                          // the op's own header (fuse_write_in ...)
  uint64_t flags;                           // struct fuse_uring_ent_in_out
  uint64_t commit_id;
  uint32_t payload_sz;
  uint32_t padding;
  uint64_t reserved;
};
struct CmdReq {  // struct fuse_uring_cmd_req, in the SQE's command area
  uint64_t flags;
  uint64_t commit_id;
  uint16_t qid;
  uint8_t padding[6];
};
static_assert(sizeof(CmdReq) <= 80, "must fit the 128-byte SQE's command area");

// Room in front of each payload for the request headers, so that a request
// reaches libfuse in one piece without moving its payload.
constexpr size_t kLead = 4096;
constexpr uint64_t kWakeTag = ~uint64_t{0};  // user_data of the eventfd read
}  // namespace

struct UringTransport::Entry {
  Queue* queue = nullptr;
  alignas(64) RingHeader hdr{};
  char* area = nullptr;  // kLead + payload bytes, in the queue's mapping
  iovec iov[2]{};
  // The rest belongs to the ring's thread; another thread that answers the
  // request gets the entry from serving_ (Claim) and hands it back through
  // done_mu.
  uint64_t unique = 0;      // the request being served; 0: none
  bool live = false;        // registered and not torn down (ring thread only)
  bool sync_reply = false;  // replied on the ring's thread (ring thread only)
  char* payload() const { return area + kLead; }
};

struct UringTransport::Queue {
  unsigned qid = 0;
  io_uring ring{};
  bool ring_ok = false;
  UniqueFd wake;  // eventfd: replies from other threads, stop
  uint64_t wake_buf = 0;
  std::vector<std::unique_ptr<Entry>> entries;
  void* map = MAP_FAILED;  // every entry's buffers: untouched pages cost nothing
  size_t map_len = 0;
  std::mutex done_mu;
  std::vector<Entry*> done;   // replied from another thread, to commit
  std::vector<Entry*> ready;  // to commit this turn (ring thread only)
  std::atomic<unsigned> live{0};
  std::thread thread;
  // The thread's scheduling (Serve sets tid; the guard owns the rest).
  std::atomic<pid_t> tid{0};
  std::atomic<bool> idle_class{false};
  uint64_t run_delay = 0;           // ns waited on a run queue, at the last look
  std::atomic<uint64_t> served{0};  // requests handed to libfuse
  uint64_t served_seen = 0;         // `served` at the last look
  std::chrono::steady_clock::time_point idle_since, retry_at;
  std::chrono::milliseconds backoff{1000};
  ~Queue() {
    if (ring_ok) io_uring_queue_exit(&ring);  // first: the kernel lets go of the buffers
    if (map != MAP_FAILED) munmap(map, map_len);
  }
};

namespace {
thread_local UringTransport::Entry* tl_serving = nullptr;  // NOLINT: private to this file

io_uring_sqe* CmdSqe(io_uring* ring, int dev_fd, uint32_t op, unsigned qid, uint64_t commit_id,
                     void* entry, iovec* iov) {
  io_uring_sqe* sqe = io_uring_get_sqe(ring);
  if (!sqe) return nullptr;
  std::memset(sqe, 0, 2 * sizeof(io_uring_sqe));  // SQE128: the command area follows
  sqe->opcode = IORING_OP_URING_CMD;
  sqe->fd = dev_fd;
  sqe->cmd_op = op;
  sqe->addr = reinterpret_cast<uint64_t>(iov);
  sqe->len = 2;
  CmdReq req{};
  req.qid = static_cast<uint16_t>(qid);
  req.commit_id = commit_id;
  std::memcpy(sqe->cmd, &req, sizeof req);
  io_uring_sqe_set_data(sqe, entry);
  return sqe;
}

void ArmWake(io_uring* ring, int fd, uint64_t* buf) {
  io_uring_sqe* sqe = io_uring_get_sqe(ring);
  if (!sqe) return;
  io_uring_prep_read(sqe, fd, buf, sizeof *buf, 0);
  io_uring_sqe_set_data64(sqe, kWakeTag);
}

// Copies a reply (fuse_out_header first) into the entry's ring buffers.
// One too big for the payload buffer becomes EIO (the kernel would refuse
// it anyway).
size_t StoreReply(UringTransport::Entry& e, const iovec* iov, int count, size_t payload) {
  size_t total = 0;
  for (int i = 0; i < count; ++i) total += iov[i].iov_len;
  fuse_out_header oh{};
  size_t skip = sizeof oh, off = 0;
  char* dst = reinterpret_cast<char*>(&oh);
  for (int i = 0; i < count; ++i) {
    const char* p = static_cast<const char*>(iov[i].iov_base);
    size_t n = iov[i].iov_len;
    if (skip > 0) {
      size_t h = std::min(skip, n);
      std::memcpy(dst + (sizeof oh - skip), p, h);
      skip -= h;
      p += h;
      n -= h;
    }
    if (n == 0) continue;
    if (off + n > payload) {
      off = payload + 1;
      break;
    }
    std::memcpy(e.payload() + off, p, n);
    off += n;
  }
  if (off > payload) {
    oh.error = -EIO;
    off = 0;
  }
  oh.len = static_cast<uint32_t>(sizeof oh + off);
  std::memcpy(e.hdr.in_out, &oh, sizeof oh);
  e.hdr.payload_sz = static_cast<uint32_t>(off);
  return total;
}
}  // namespace

unsigned UringTransport::PossibleCpus() {
  std::ifstream f("/sys/devices/system/cpu/possible");
  std::string s;
  if (!(f >> s)) return 0;
  unsigned n = 0;
  std::stringstream ss(s);
  std::string part;
  while (std::getline(ss, part, ',')) {
    unsigned a = 0, b = 0;
    if (std::sscanf(part.c_str(), "%u-%u", &a, &b) == 2 && b >= a)
      n += b - a + 1;
    else if (std::sscanf(part.c_str(), "%u", &a) == 1)
      n += 1;
  }
  return n;
}

Result<std::unique_ptr<UringTransport>> UringTransport::Create(fuse_session* se, int dev_fd,
                                                               unsigned queues, unsigned depth,
                                                               size_t payload) {
  if (queues == 0 || queues > 1024) return Status::InvalidArgument("io_uring: no CPUs");
  std::unique_ptr<UringTransport> t(new UringTransport());
  t->se_ = se;
  t->dev_fd_ = dev_fd;
  long page = sysconf(_SC_PAGESIZE);
  size_t pg = page > 0 ? static_cast<size_t>(page) : 4096;
  t->payload_ = (payload + pg - 1) / pg * pg;
  for (unsigned q = 0; q < queues; ++q) {
    auto queue = std::make_unique<Queue>();
    queue->qid = q;
    // Entries + their commits + the eventfd read, with room to spare.
    unsigned sq = 2 * depth + 2;
    // Single issuer, task work run only while the thread waits: the ring
    // is enabled by its own thread (Serve), which becomes its issuer.
    int r = io_uring_queue_init(sq, &queue->ring,
                                IORING_SETUP_SQE128 | IORING_SETUP_R_DISABLED |
                                    IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN);
    if (r == -EINVAL)  // a kernel without the task-run flags (< 6.1)
      r = io_uring_queue_init(sq, &queue->ring, IORING_SETUP_SQE128 | IORING_SETUP_R_DISABLED);
    if (r < 0) return Status::PosixError("io_uring_queue_init", -r);
    queue->ring_ok = true;
    queue->wake.Reset(eventfd(0, EFD_CLOEXEC));
    if (!queue->wake.valid()) return Status::FromErrno("eventfd");
    size_t slice = kLead + t->payload_;
    queue->map_len = slice * depth;
    queue->map = mmap(nullptr, queue->map_len, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (queue->map == MAP_FAILED) return Status::FromErrno("io_uring buffers");
    for (unsigned i = 0; i < depth; ++i) {
      auto e = std::make_unique<Entry>();
      e->queue = queue.get();
      e->area = static_cast<char*>(queue->map) + slice * i;
      e->iov[0] = {&e->hdr, sizeof e->hdr};
      e->iov[1] = {e->payload(), t->payload_};
      queue->entries.push_back(std::move(e));
    }
    t->queues_.push_back(std::move(queue));
  }
  // Each ring is enabled by its own thread, its only issuer; none may fail
  // after the kernel agreed to io_uring, so they are all enabled now.
  for (auto& q : t->queues_) q->thread = std::thread([t = t.get(), q = q.get()] { t->Serve(*q); });
  std::unique_lock<std::mutex> l(t->start_mu_);
  t->start_cv_.wait(l, [&] { return t->enabled_ + t->failed_ == t->queues_.size(); });
  if (t->failed_ > 0) return Status::Error(EIO, "io_uring: a ring could not be enabled");
  l.unlock();
  t->guard_ = std::thread([t = t.get()] { t->Guard(); });
  return t;
}

UringTransport::~UringTransport() {
  stop_.store(true);
  {
    std::lock_guard<std::mutex> l(start_mu_);
    go_ = true;
  }
  start_cv_.notify_all();
  if (guard_.joinable()) guard_.join();
  for (auto& q : queues_) {
    if (!q->thread.joinable()) continue;
    uint64_t one = 1;
    ssize_t n = write(q->wake.get(), &one, sizeof one);
    (void)n;
    q->thread.join();
  }
}

void UringTransport::Start() {
  {
    std::lock_guard<std::mutex> l(start_mu_);
    go_ = true;
  }
  start_cv_.notify_all();
}

unsigned UringTransport::queues() const { return static_cast<unsigned>(queues_.size()); }

unsigned UringTransport::live_entries() const {
  unsigned n = 0;
  for (auto& q : queues_) n += q->live.load(std::memory_order_relaxed);
  return n;
}

uint64_t UringTransport::requests() const {
  uint64_t n = 0;
  for (auto& q : queues_) n += q->served.load(std::memory_order_relaxed);
  return n;
}

uint64_t UringTransport::promotions() const { return promotions_.load(std::memory_order_relaxed); }

void UringTransport::Serve(Queue& q) {
  // On the CPU whose callers this queue serves, where that CPU may be used.
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(q.qid, &set);
  sched_setaffinity(0, sizeof set, &set);  // best effort (cpusets, offline CPUs)
  // Put in SCHED_IDLE, and out of it, by Guard() (uring.h).
  q.tid.store(static_cast<pid_t>(syscall(SYS_gettid)));

  io_uring* ring = &q.ring;
  // io_uring_enable_rings is declared by Debian's liburing 2.3 but not
  // exported: the system call it wraps.
  int enabled =
      syscall(__NR_io_uring_register, ring->ring_fd, IORING_REGISTER_ENABLE_RINGS, nullptr, 0) < 0
          ? -errno
          : 0;
  {
    std::unique_lock<std::mutex> l(start_mu_);
    ++(enabled < 0 ? failed_ : enabled_);
    start_cv_.notify_all();
    if (enabled < 0) {
      spdlog::error("fuse io_uring queue {}: enabling the ring: {}", q.qid,
                    std::strerror(-enabled));
      return;
    }
    start_cv_.wait(l, [&] { return go_; });
  }
  if (stop_.load()) return;
  for (auto& e : q.entries) {
    if (CmdSqe(ring, dev_fd_, kCmdRegister, q.qid, 0, e.get(), e->iov)) {
      e->live = true;
      q.live.fetch_add(1);
    }
  }
  ArmWake(ring, q.wake.get(), &q.wake_buf);
  bool logged = false;
  while (q.live.load(std::memory_order_relaxed) > 0 && !stop_.load()) {
    int r = io_uring_submit_and_wait(ring, 1);
    if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) {
      spdlog::error("fuse io_uring queue {}: {}", q.qid, std::strerror(-r));
      break;
    }
    io_uring_cqe* cqe;
    unsigned head, seen = 0;
    std::vector<Entry*>& ready = q.ready;
    ready.clear();
    io_uring_for_each_cqe(ring, head, cqe) {
      ++seen;
      if (cqe->user_data == kWakeTag) {
        {
          std::lock_guard<std::mutex> l(q.done_mu);
          ready.insert(ready.end(), q.done.begin(), q.done.end());
          q.done.clear();
        }
        if (!stop_.load()) ArmWake(ring, q.wake.get(), &q.wake_buf);
        continue;
      }
      auto* e = static_cast<Entry*>(io_uring_cqe_get_data(cqe));
      if (cqe->res < 0) {
        // The connection ended (ENOTCONN, ECANCELED) or the kernel refused
        // the entry: it is gone either way.
        if (cqe->res != -ENOTCONN && cqe->res != -ECANCELED && !logged) {
          spdlog::warn("fuse io_uring queue {}: entry refused: {} (requests go through /dev/fuse)",
                       q.qid, std::strerror(-cqe->res));
          logged = true;
        }
        if (e->live) {
          e->live = false;
          q.live.fetch_sub(1);
        }
        continue;
      }
      Dispatch(q, *e);
      if (e->sync_reply) ready.push_back(e);
    }
    io_uring_cq_advance(ring, seen);
    for (Entry* e : ready) {
      uint64_t unique = std::exchange(e->unique, 0);
      if (!CmdSqe(ring, dev_fd_, kCmdCommitAndFetch, q.qid, unique, e, e->iov)) {
        // Cannot happen with the ring sized for every entry; leaves the
        // request unanswered rather than answering another's.
        spdlog::error("fuse io_uring queue {}: no room to commit request {}", q.qid, unique);
      }
    }
  }
}

// Hands the request in `e` to libfuse as if read from /dev/fuse.
void UringTransport::Dispatch(Queue& q, Entry& e) {
  fuse_in_header ih;
  std::memcpy(&ih, e.hdr.in_out, sizeof ih);
  size_t payload = e.hdr.payload_sz;
  size_t head = ih.len >= sizeof ih + payload ? ih.len - payload : 0;
  e.sync_reply = false;
  if (head < sizeof ih || head - sizeof ih > sizeof e.hdr.op_in || payload > payload_) {
    // Not a request we can lay out: answer it with EIO ourselves.
    e.unique = ih.unique;
    fuse_out_header oh{static_cast<uint32_t>(sizeof(fuse_out_header)), -EIO, ih.unique};
    std::memcpy(e.hdr.in_out, &oh, sizeof oh);
    e.hdr.payload_sz = 0;
    e.sync_reply = true;
    return;
  }
  char* start = e.payload() - head;
  std::memcpy(start, &ih, sizeof ih);
  std::memcpy(start + sizeof ih, e.hdr.op_in, head - sizeof ih);
  e.unique = ih.unique;
  {
    std::lock_guard<std::mutex> l(serving_mu_);
    serving_[ih.unique] = &e;
  }
  q.served.fetch_add(1, std::memory_order_relaxed);
  fuse_buf buf{};
  buf.size = ih.len;
  buf.mem = start;
  tl_serving = &e;
  fuse_session_process_buf(se_, &buf);
  tl_serving = nullptr;
}

namespace {
// run_delay of thread `tid` of this process: ns it has waited on a run
// queue (/proc/<pid>/task/<tid>/schedstat, second field).
std::optional<uint64_t> RunDelay(pid_t tid) {
  std::ifstream f("/proc/self/task/" + std::to_string(tid) + "/schedstat");
  uint64_t cpu = 0, delay = 0;
  if (!(f >> cpu >> delay)) return std::nullopt;
  return delay;
}
}  // namespace

void UringTransport::SetIdleClass(Queue& q, bool idle) {
  pid_t tid = q.tid.load();
  sched_param p{};
  if (tid == 0 || sched_setscheduler(tid, idle ? SCHED_IDLE : SCHED_OTHER, &p) != 0) {
    if (idle) q.idle_class.store(false);
    return;
  }
  q.idle_class.store(idle);
  if (idle) {
    q.idle_since = std::chrono::steady_clock::now();
    if (auto d = RunDelay(tid)) q.run_delay = *d;
    q.served_seen = q.served.load(std::memory_order_relaxed);
  }
}

// Keeps SCHED_IDLE from starving a ring: a thread of that class gets the
// CPU only when nothing else of its scheduling group wants it, so next to
// CPU-bound tasks of the same group (the same session, with autogroup) its
// callers would wait tens of milliseconds per request. Every 10 ms, a ring
// thread that waited on its run queue for half of them while serving at
// most two requests goes back to SCHED_OTHER, and tries SCHED_IDLE again
// after a back-off (1 s, doubled each time it starves within 5 s of trying,
// up to a minute). Waiting while requests flow is the design at work: the
// callers it answered run first (a 1 MiB read's copy, for one).
void UringTransport::Guard() {
  using Clock = std::chrono::steady_clock;
  constexpr auto kPeriod = std::chrono::milliseconds(10);
  constexpr uint64_t kStarvedNs = 5'000'000;
  constexpr uint64_t kStarvedServed = 2;
  std::unique_lock<std::mutex> l(start_mu_);
  while (!stop_.load()) {
    start_cv_.wait_for(l, kPeriod, [&] { return stop_.load(); });
    if (stop_.load()) break;
    auto now = Clock::now();
    for (auto& q : queues_) {
      pid_t tid = q->tid.load();
      if (tid == 0 || q->live.load(std::memory_order_relaxed) == 0) continue;
      if (!q->idle_class.load()) {
        if (now >= q->retry_at) SetIdleClass(*q, true);
        continue;
      }
      std::optional<uint64_t> d = RunDelay(tid);
      if (!d) {  // cannot watch it: never leave it in SCHED_IDLE
        SetIdleClass(*q, false);
        q->retry_at = Clock::time_point::max();
        continue;
      }
      uint64_t waited = *d - std::min(*d, q->run_delay);
      uint64_t served = q->served.load(std::memory_order_relaxed);
      uint64_t progress = served - q->served_seen;
      q->run_delay = *d;
      q->served_seen = served;
      if (waited < kStarvedNs || progress > kStarvedServed) continue;
      SetIdleClass(*q, false);
      q->backoff =
          now - q->idle_since < std::chrono::seconds(5)
              ? std::min<std::chrono::milliseconds>(q->backoff * 2, std::chrono::minutes(1))
              : std::chrono::milliseconds(1000);
      q->retry_at = now + q->backoff;
      promotions_.fetch_add(1, std::memory_order_relaxed);
      spdlog::debug(
          "fuse io_uring queue {}: starved in SCHED_IDLE ({} us in 10 ms), normal for {} ms",
          q->qid, waited / 1000, q->backoff.count());
    }
  }
}

UringTransport::Entry* UringTransport::Claim(uint64_t unique) {
  std::lock_guard<std::mutex> l(serving_mu_);
  auto it = serving_.find(unique);
  if (it == serving_.end()) return nullptr;
  Entry* e = it->second;
  serving_.erase(it);
  return e;
}

std::optional<ssize_t> UringTransport::TakeReply(const iovec* iov, int count) {
  if (count < 1 || iov[0].iov_len < sizeof(fuse_out_header)) return std::nullopt;
  fuse_out_header oh;
  std::memcpy(&oh, iov[0].iov_base, sizeof oh);
  if (oh.unique == 0) return std::nullopt;  // a notification
  Entry* e = Claim(oh.unique);
  if (!e) return std::nullopt;  // not a ring's, or answered already
  size_t n = StoreReply(*e, iov, count, payload_);
  if (e == tl_serving) {
    e->sync_reply = true;
  } else {
    Queue& q = *e->queue;
    {
      std::lock_guard<std::mutex> l(q.done_mu);
      q.done.push_back(e);
    }
    uint64_t one = 1;
    if (write(q.wake.get(), &one, sizeof one) < 0)
      spdlog::error("fuse io_uring: waking queue {}: {}", q.qid, std::strerror(errno));
  }
  return static_cast<ssize_t>(n);
}

std::optional<ssize_t> UringTransport::TakeSpliceReply(int pipe_fd, size_t len) {
  if (!tl_serving || len < sizeof(fuse_out_header) || len - sizeof(fuse_out_header) > payload_)
    return std::nullopt;
  Entry* e = Claim(tl_serving->unique);
  if (!e) return std::nullopt;
  // libfuse spliced the header and then the data into the pipe: read both
  // out, the data straight into the payload buffer.
  fuse_out_header oh{};
  size_t got = 0;
  bool ok = true;
  while (got < len) {
    char* dst =
        got < sizeof oh ? reinterpret_cast<char*>(&oh) + got : e->payload() + (got - sizeof oh);
    size_t want = got < sizeof oh ? sizeof oh - got : len - got;
    ssize_t n = read(pipe_fd, dst, want);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ok = false;
      break;
    }
    got += static_cast<size_t>(n);
  }
  if (!ok || oh.unique != e->unique) {
    // A short pipe, or not this request's reply: answer EIO rather than
    // leave the caller waiting.
    oh = fuse_out_header{static_cast<uint32_t>(sizeof oh), -EIO, e->unique};
    got = sizeof oh;
  }
  std::memcpy(e->hdr.in_out, &oh, sizeof oh);
  e->hdr.payload_sz = static_cast<uint32_t>(got - sizeof oh);
  e->sync_reply = true;
  return static_cast<ssize_t>(len);
}

}  // namespace mfs::fuse

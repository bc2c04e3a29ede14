// IoRecorder: the in-process I/O accountant of the /mfs client (mount.mfs).
//
// The FUSE client calls Record() for every open, create, read and write on
// /mfs with the calling thread id, the node that owns the file and the bytes
// moved. The recorder attributes the call to the thread's process, adds it to
// per-(process, owner node) counters and, every flush interval, sends the
// accumulated deltas to the local mfsd (control op "locality.report", see
// man/mfsstat.1 and mfs/locality/report.h), where LocalityService keeps them.
//
// Hot path: Record() takes one uncontended mutex (one of kShards, chosen by
// the calling thread) and, unless the same thread hit the same node last
// time, does two hash-map lookups. It reads no clock and makes no system call
// except the first time a thread id is seen (or again after tid_ttl): then it
// reads /proc/<tid>/status, /proc/<tgid>/stat and /proc/<tgid>/exe to learn the
// process, its start time (pid reuse) and its executable. Everything else —
// merging shards, encoding JSON, talking to mfsd — happens on the recorder's
// own flush thread.
//
// Writeback caching: the kernel sends cached writes later, from a thread that
// is not the writer. Capture the opener when the file is opened
// (CaptureOpener) and keep it in the file handle; record the handle's writes
// with RecordFor(opener, ...).
//
// If mfsd is unreachable, unsent deltas are kept (merged, so memory is
// bounded by the number of distinct (process, node) pairs, capped at
// kMaxPending entries; beyond that the oldest batch is dropped and counted).
//
// Thread-safety: every method is thread-safe. Lock order: a shard mutex is a
// leaf; flush_mu_ is never held while a shard mutex is taken by Record().
#pragma once

#include <sys/types.h>

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "mfs/base/status.h"
#include "mfs/locality/report.h"

namespace mfs::locality {

// Same values and order as mfs::client::IoOp, so the client can cast.
enum class IoOp : uint8_t { kOpen = 0, kCreate = 1, kRead = 2, kWrite = 3 };

// The process a file handle was opened by (captured once at open).
struct Opener {
  pid_t pid = 0;       // thread-group id; 0 = unknown
  uint64_t start = 0;  // process start time (clock ticks since boot)
};

struct RecorderOptions {
  // The local mfsd's control socket. Empty: nothing is sent (use `sink`).
  std::string control_socket;
  std::chrono::milliseconds flush_interval{500};
  // How long a tid -> process resolution is trusted (tids are reused).
  std::chrono::milliseconds tid_ttl{5000};
  // Where batches go instead of the control socket (tests, benchmarks).
  // Returns OK when the batch was accepted; on error it is retried later.
  std::function<Status(const Batch&)> sink;
  // false: Record() returns at once (accounting off, for comparisons), and
  // mfsd cannot turn it on. When true, mfsd switches accounting on and off
  // at run time (`mfsctl accounting on|off`): every flush — sent even when
  // there is nothing to report — learns the switch's state from the reply.
  bool enabled = true;
  // Start the flush thread at the first Record() if Start() was not called.
  bool auto_start = false;

  // Defaults for mount.mfs (auto_start on): `control_socket`, then the
  // environment:
  // MFS_LOCALITY=off (or 0/no/false) disables accounting,
  // MFS_LOCALITY_FLUSH_MS sets the flush interval (10..60000).
  static RecorderOptions FromEnvironment(std::string control_socket);
};

class IoRecorder {
 public:
  explicit IoRecorder(RecorderOptions options);
  // Stops the flush thread after a final flush.
  ~IoRecorder();
  IoRecorder(const IoRecorder&) = delete;
  IoRecorder& operator=(const IoRecorder&) = delete;

  // Starts the flush thread now. With options.auto_start it also starts by
  // itself at the first recorded operation (so a recorder made before a
  // daemonizing fork gets its thread in the child). Idempotent.
  void Start();

  // Accounts one operation of thread (or process) `tid` on a file owned by
  // `owner_node`. `bytes` is 0 for open/create. `from_cache`: a read
  // answered from the client's cache (counted as a read too).
  void Record(pid_t tid, uint32_t owner_node, IoOp op, uint64_t bytes, bool from_cache = false);

  // Resolves `tid` to its process now, for RecordFor() on later writeback.
  Opener CaptureOpener(pid_t tid);
  void RecordFor(const Opener& opener, uint32_t owner_node, IoOp op, uint64_t bytes,
                 bool from_cache = false);

  // Sends everything accumulated so far; returns the send status (OK when
  // there was nothing to send).
  Status Flush();

  struct Stats {
    uint64_t batches_sent = 0;
    uint64_t send_failures = 0;
    uint64_t entries_dropped = 0;
    uint64_t resolutions = 0;  // /proc look-ups (cache misses)
  };
  Stats stats() const;
  // Whether Record() counts right now.
  bool accounting() const { return on_.load(std::memory_order_relaxed); }

  static constexpr size_t kShards = 32;
  static constexpr size_t kMaxPending = 1 << 16;

 private:
  struct ProcKey {
    pid_t pid;
    uint64_t start;
    uint32_t node;
    bool operator==(const ProcKey&) const = default;
  };
  struct ProcKeyHash {
    size_t operator()(const ProcKey& k) const {
      return std::hash<uint64_t>()((static_cast<uint64_t>(k.pid) << 32) ^ k.node ^ (k.start << 7));
    }
  };
  struct TidEntry {
    Opener proc;
    uint32_t expires;  // epoch_ at which the resolution is no longer trusted
  };
  struct ProcInfo {
    std::string comm;
    std::string exe;
  };
  struct alignas(64) Shard {
    std::mutex mu;
    std::unordered_map<pid_t, TidEntry> tids;                   // GUARDED_BY(mu)
    std::unordered_map<ProcKey, Counters, ProcKeyHash> counts;  // GUARDED_BY(mu)
    std::unordered_map<uint64_t, ProcInfo> infos;               // GUARDED_BY(mu), by pid<<32^start
    // The last (tid, node) recorded here and its counters: a run of I/O by
    // one thread on one file skips both look-ups. Cleared when counts is
    // swapped out (unordered_map elements do not move otherwise).
    pid_t hit_tid = 0;         // GUARDED_BY(mu)
    uint32_t hit_node = 0;     // GUARDED_BY(mu)
    uint32_t hit_expires = 0;  // GUARDED_BY(mu)
    Counters* hit = nullptr;   // GUARDED_BY(mu)
  };

  Shard& ShardForThisThread();
  void MaybeStart() {
    if (options_.auto_start && !started_.load(std::memory_order_relaxed)) Start();
  }
  // REQUIRES: s.mu held.
  TidEntry ResolveLocked(Shard& s, pid_t tid, uint32_t epoch);
  void AddLocked(Shard& s, const Opener& p, uint32_t node, IoOp op, uint64_t bytes,
                 bool from_cache);
  void Loop();
  // Moves every shard's counters into pending_. REQUIRES: flush_mu_ held.
  void Collect();

  RecorderOptions options_;
  std::atomic<bool> on_;  // options_.enabled and mfsd's switch
  std::array<Shard, kShards> shards_;
  // Advanced by every Collect(): the recorder's clock for tid expiry, so the
  // hot path reads an atomic instead of a clock.
  std::atomic<uint32_t> epoch_{1};
  uint32_t ttl_epochs_;

  std::mutex flush_mu_;  // serialises flushes; guards pending_
  Batch pending_;
  std::unordered_map<ProcKey, size_t, ProcKeyHash> pending_index_;

  std::atomic<bool> started_{false};
  std::mutex loop_mu_;  // guards stop_ and the start of thread_
  std::condition_variable loop_cv_;
  bool stop_ = false;  // GUARDED_BY(loop_mu_)
  std::thread thread_;

  std::atomic<uint64_t> batches_sent_{0}, send_failures_{0}, dropped_{0}, resolutions_{0};
};

}  // namespace mfs::locality

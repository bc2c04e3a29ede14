#include "mfs/locality/recorder.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <optional>

#include "mfs/base/unique_fd.h"
#include "mfs/control/client.h"

namespace mfs::locality {
namespace {

// Reads a small /proc file into buf; returns the length or -1.
ssize_t ReadSmall(const char* path, char* buf, size_t size) {
  UniqueFd fd(::open(path, O_RDONLY | O_CLOEXEC));
  if (!fd) return -1;
  ssize_t n = ::read(fd.get(), buf, size - 1);
  if (n < 0) return -1;
  buf[n] = 0;
  return n;
}

struct Resolved {
  pid_t tgid = 0;
  uint64_t start = 0;
  std::string comm;
  std::string exe;
};

// tid -> process (thread-group id, start time, comm, executable), from /proc.
// A thread that is already gone resolves to itself with start 0.
Resolved ResolveFromProc(pid_t tid) {
  Resolved r;
  r.tgid = tid;
  char path[64];
  char buf[4096];
  snprintf(path, sizeof path, "/proc/%d/status", tid);
  if (ReadSmall(path, buf, sizeof buf) > 0) {
    if (const char* t = strstr(buf, "\nTgid:")) r.tgid = static_cast<pid_t>(atoi(t + 6));
  }
  snprintf(path, sizeof path, "/proc/%d/stat", r.tgid);
  if (ReadSmall(path, buf, sizeof buf) > 0) {
    // "pid (comm) state ppid ..."; comm may hold spaces and parentheses.
    const char* open = strchr(buf, '(');
    const char* close = strrchr(buf, ')');
    if (open && close && close > open) {
      r.comm.assign(open + 1, close);
      // Field 22 (starttime) is the 20th field after ") ".
      const char* p = close + 1;
      int field = 2;
      while (*p && field < 22) {
        if (*p == ' ') ++field;
        ++p;
      }
      if (field == 22) r.start = strtoull(p, nullptr, 10);
    }
  }
  snprintf(path, sizeof path, "/proc/%d/exe", r.tgid);
  ssize_t n = ::readlink(path, buf, sizeof buf - 1);
  if (n > 0) r.exe.assign(buf, static_cast<size_t>(n));
  if (r.exe.empty()) r.exe = r.comm.empty() ? "?" : "[" + r.comm + "]";
  if (r.comm.empty()) r.comm = "?";
  return r;
}

uint64_t InfoKey(const Opener& p) { return (static_cast<uint64_t>(p.pid) << 40) ^ p.start; }

inline void Bump(Counters& c, IoOp op, uint64_t bytes, bool from_cache) {
  switch (op) {
    case IoOp::kOpen:
      ++c.opens;
      break;
    case IoOp::kCreate:
      ++c.creates;
      break;
    case IoOp::kRead:
      ++c.reads;
      c.read_bytes += bytes;
      if (from_cache) {
        ++c.cached_reads;
        c.cached_bytes += bytes;
      }
      break;
    case IoOp::kWrite:
      ++c.writes;
      c.write_bytes += bytes;
      break;
  }
}

}  // namespace

RecorderOptions RecorderOptions::FromEnvironment(std::string control_socket) {
  RecorderOptions o;
  o.control_socket = std::move(control_socket);
  o.auto_start = true;
  if (const char* v = getenv("MFS_LOCALITY")) {
    std::string s(v);
    if (s == "off" || s == "0" || s == "no" || s == "false") o.enabled = false;
  }
  if (const char* v = getenv("MFS_LOCALITY_FLUSH_MS")) {
    long ms = strtol(v, nullptr, 10);
    if (ms >= 10 && ms <= 60000) o.flush_interval = std::chrono::milliseconds(ms);
  }
  return o;
}

IoRecorder::IoRecorder(RecorderOptions options)
    : options_(std::move(options)), on_(options_.enabled) {
  auto flush = std::max<int64_t>(1, options_.flush_interval.count());
  ttl_epochs_ = static_cast<uint32_t>(
      std::clamp<int64_t>((options_.tid_ttl.count() + flush - 1) / flush, 1, 1 << 20));
}

IoRecorder::~IoRecorder() {
  {
    std::lock_guard lock(loop_mu_);
    stop_ = true;
  }
  loop_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  Flush().IgnoreError();  // best effort: mfsd may be gone already
}

void IoRecorder::Start() {
  std::lock_guard lock(loop_mu_);
  if (stop_ || started_.load()) return;
  thread_ = std::thread([this] { Loop(); });
  started_.store(true);
}

IoRecorder::Shard& IoRecorder::ShardForThisThread() {
  // Each thread keeps using the shard it hashes to, so FUSE workers rarely
  // share a mutex.
  thread_local const size_t index = std::hash<std::thread::id>()(std::this_thread::get_id());
  return shards_[index % kShards];
}

IoRecorder::TidEntry IoRecorder::ResolveLocked(Shard& s, pid_t tid, uint32_t epoch) {
  auto it = s.tids.find(tid);
  if (it != s.tids.end() && epoch < it->second.expires) return it->second;
  resolutions_.fetch_add(1, std::memory_order_relaxed);
  Resolved r = ResolveFromProc(tid);
  TidEntry t{Opener{r.tgid, r.start}, epoch + ttl_epochs_};
  s.tids[tid] = t;
  auto& info = s.infos[InfoKey(t.proc)];
  info.comm = std::move(r.comm);
  info.exe = std::move(r.exe);
  return t;
}

void IoRecorder::AddLocked(Shard& s, const Opener& p, uint32_t node, IoOp op, uint64_t bytes,
                           bool from_cache) {
  Bump(s.counts[ProcKey{p.pid, p.start, node}], op, bytes, from_cache);
}

void IoRecorder::Record(pid_t tid, uint32_t owner_node, IoOp op, uint64_t bytes, bool from_cache) {
  if (!on_.load(std::memory_order_relaxed) || tid <= 0 || owner_node == 0 || owner_node > kMaxNodeId) return;
  MaybeStart();
  Shard& s = ShardForThisThread();
  uint32_t epoch = epoch_.load(std::memory_order_relaxed);
  std::lock_guard lock(s.mu);
  if (s.hit && s.hit_tid == tid && s.hit_node == owner_node && epoch < s.hit_expires) {
    Bump(*s.hit, op, bytes, from_cache);
    return;
  }
  TidEntry t = ResolveLocked(s, tid, epoch);
  Counters& c = s.counts[ProcKey{t.proc.pid, t.proc.start, owner_node}];
  s.hit_tid = tid;
  s.hit_node = owner_node;
  s.hit_expires = t.expires;
  s.hit = &c;
  Bump(c, op, bytes, from_cache);
}

Opener IoRecorder::CaptureOpener(pid_t tid) {
  if (!on_.load(std::memory_order_relaxed) || tid <= 0) return Opener{};
  Shard& s = ShardForThisThread();
  std::lock_guard lock(s.mu);
  return ResolveLocked(s, tid, epoch_.load(std::memory_order_relaxed)).proc;
}

void IoRecorder::RecordFor(const Opener& opener, uint32_t owner_node, IoOp op, uint64_t bytes,
                           bool from_cache) {
  if (!on_.load(std::memory_order_relaxed) || opener.pid <= 0 || owner_node == 0 || owner_node > kMaxNodeId) return;
  MaybeStart();
  Shard& s = ShardForThisThread();
  std::lock_guard lock(s.mu);
  if (!s.infos.count(InfoKey(opener))) {
    // Captured on another shard: look the name up here once (the process
    // may be gone; then its name is unknown, its bytes still count).
    Resolved r = ResolveFromProc(opener.pid);
    auto& info = s.infos[InfoKey(opener)];
    info.comm = r.start == opener.start ? r.comm : "?";
    info.exe = r.start == opener.start ? r.exe : "?";
  }
  AddLocked(s, opener, owner_node, op, bytes, from_cache);
}

void IoRecorder::Collect() {
  uint32_t now = epoch_.fetch_add(1, std::memory_order_relaxed) + 1;
  for (Shard& s : shards_) {
    std::unordered_map<ProcKey, Counters, ProcKeyHash> counts;
    std::unordered_map<uint64_t, ProcInfo> infos;
    {
      std::lock_guard lock(s.mu);
      if (s.counts.empty() && s.tids.empty()) continue;
      counts.swap(s.counts);
      s.hit = nullptr;
      // Forget resolutions that expired, and names nobody refers to.
      std::erase_if(s.tids, [&](const auto& kv) { return now >= kv.second.expires; });
      for (const auto& [k, c] : counts) {
        Opener p{k.pid, k.start};
        auto it = s.infos.find(InfoKey(p));
        if (it != s.infos.end()) infos[InfoKey(p)] = it->second;
      }
      std::unordered_map<uint64_t, ProcInfo> keep;
      for (const auto& [tid, t] : s.tids) {
        auto it = s.infos.find(InfoKey(t.proc));
        if (it != s.infos.end()) keep.emplace(it->first, it->second);
      }
      s.infos.swap(keep);
    }
    for (auto& [k, c] : counts) {
      auto idx = pending_index_.find(k);
      if (idx != pending_index_.end()) {
        pending_[idx->second].c.Add(c);
        continue;
      }
      if (pending_.size() >= kMaxPending) {
        dropped_.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      Entry e;
      e.pid = k.pid;
      e.start = k.start;
      e.node = k.node;
      e.c = c;
      auto info = infos.find(InfoKey(Opener{k.pid, k.start}));
      if (info != infos.end()) {
        e.comm = info->second.comm;
        e.exe = info->second.exe;
      }
      pending_index_[k] = pending_.size();
      pending_.push_back(std::move(e));
    }
  }
}

Status IoRecorder::Flush() {
  std::lock_guard lock(flush_mu_);
  Collect();
  // With mfsd at the other end, an empty report still goes: its reply says
  // whether accounting is switched on.
  const bool poll = options_.enabled && !options_.sink && !options_.control_socket.empty();
  if (pending_.empty() && !poll) return Status::OK();
  Status s;
  size_t sent = 0;
  std::optional<control::Client> client;
  bool first = true;
  while (sent < pending_.size() || (first && poll)) {
    first = false;
    size_t n = std::min(kMaxEntriesPerReport, pending_.size() - sent);
    Batch chunk(pending_.begin() + static_cast<ptrdiff_t>(sent),
                pending_.begin() + static_cast<ptrdiff_t>(sent + n));
    if (options_.sink) {
      s = options_.sink(chunk);
    } else if (options_.control_socket.empty()) {
      s = Status::OK();  // accounting with nowhere to report: discard
    } else {
      if (!client) {
        auto c = control::Client::Connect(options_.control_socket, 2000);
        if (!c.ok()) {
          s = c.status();
          break;
        }
        client.emplace(std::move(c).value());
      }
      nlohmann::json req = EncodeReport(chunk);
      req["accounting"] = on_.load(std::memory_order_relaxed);  // what the client does now
      auto r = client->Call(req);
      s = r.ok() ? Status::OK() : r.status();
      if (r.ok() && r->contains("accounting") && (*r)["accounting"].is_boolean()) {
        bool want = (*r)["accounting"].get<bool>();
        if (on_.exchange(want) != want)
          spdlog::info("locality: accounting switched {} by mfsd", want ? "on" : "off");
      }
    }
    if (!s.ok()) break;
    sent += n;
    if (n) batches_sent_.fetch_add(1, std::memory_order_relaxed);
  }
  if (sent > 0) {
    pending_.erase(pending_.begin(), pending_.begin() + static_cast<ptrdiff_t>(sent));
    pending_index_.clear();
    for (size_t i = 0; i < pending_.size(); ++i) {
      pending_index_[ProcKey{pending_[i].pid, pending_[i].start, pending_[i].node}] = i;
    }
  }
  if (!s.ok()) {
    send_failures_.fetch_add(1, std::memory_order_relaxed);
    // A request mfsd refused as malformed would be refused again: drop it.
    if (s.code() == EINVAL || s.code() == E2BIG) {
      dropped_.fetch_add(pending_.size(), std::memory_order_relaxed);
      pending_.clear();
      pending_index_.clear();
    }
  }
  return s;
}

void IoRecorder::Loop() {
  std::unique_lock lock(loop_mu_);
  bool warned = false;
  while (!stop_) {
    loop_cv_.wait_for(lock, options_.flush_interval, [this] { return stop_; });
    if (stop_) break;
    lock.unlock();
    Status s = Flush();
    if (!s.ok() && !warned) {
      spdlog::warn("locality: cannot report I/O to mfsd (will retry): {}", s.ToString());
      warned = true;
    } else if (s.ok()) {
      warned = false;
    }
    lock.lock();
  }
}

IoRecorder::Stats IoRecorder::stats() const {
  return Stats{batches_sent_.load(), send_failures_.load(), dropped_.load(), resolutions_.load()};
}

}  // namespace mfs::locality

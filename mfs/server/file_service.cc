#include "mfs/server/file_service.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <condition_variable>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

#include "mfs/base/coding.h"
#include "mfs/base/log.h"
#include "mfs/client/caller.h"
#include "mfs/client/fs_protocol.h"

namespace mfs::server {

namespace ops = client::ops;
namespace proto = client::proto;
using client::Caller;
using client::ScopedCreds;

namespace {
constexpr size_t kMaxInterestKeys = 200000;
// How long a change waits for a node to drop a listing it breaks.
constexpr std::chrono::milliseconds kListingBreakTimeout{2000};
constexpr uint32_t kMaxDirBatch = 4096;

Status Bad(const char* what) { return Status::Error(EBADMSG, std::string("malformed ") + what); }

}  // namespace

FileService::FileService(const FileServiceOptions& opts)
    : opts_(opts),
      handles_(opts.secret, opts.self_id),
      pool_(opts.threads ? opts.threads : 4),
      max_pinned_(opts.max_pinned_dirs) {}

FileService::~FileService() { Stop(); }

Result<std::unique_ptr<FileService>> FileService::Create(const FileServiceOptions& opts) {
  std::unique_ptr<FileService> s(new FileService(opts));
  MFS_ASSIGN_OR_RETURN(s->root_, ops::OpenRoot(opts.export_path));
  // Probe: kernel file handles must work here (CAP_DAC_READ_SEARCH, and a
  // file system that exports handles).
  auto h = s->handles_.Make(s->root_.get());
  if (!h.ok()) return h.status().Annotate("file service: export " + opts.export_path);
  auto back = s->handles_.Open(*h);
  if (!back.ok())
    return back.status().Annotate("file service needs CAP_DAC_READ_SEARCH (open_by_handle_at)");
  s->fine_ctime_ = client::ops::HasFineChangeTimes(s->root_.get());
  if (!s->fine_ctime_)
    spdlog::info("file service: export {} has coarse change times: pushes carry none",
                 opts.export_path);
  if (struct rlimit rl; getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
    s->max_pinned_ = std::min<size_t>(s->max_pinned_, rl.rlim_cur / 4);
  if (!opts.interest_map.empty()) {
    // Without it the mount reports every change: slower, still coherent.
    if (auto m = client::InterestMap::Create(opts.interest_map); m.ok())
      s->interest_map_ = std::move(*m);
    else
      spdlog::warn("file service: {} (the mount reports every change)", m.status().ToString());
  }
  return s;
}

void FileService::Stop() {
  if (stopped_.exchange(true)) return;
  pool_.join();
}

size_t FileService::open_files() const {
  std::lock_guard<std::mutex> l(mu_);
  return files_.size();
}

size_t FileService::interest_size() const {
  std::lock_guard<std::mutex> l(mu_);
  return interest_.size();
}

size_t FileService::pinned_dirs() const {
  std::lock_guard<std::mutex> l(mu_);
  return pinned_.size();
}

void FileService::PinDir(const wire::Connection* conn, const std::string& handle,
                         const std::string& key, int fd) {
  std::lock_guard<std::mutex> l(mu_);
  if (auto it = pinned_.find(handle); it != pinned_.end()) {
    it->second.holders.insert(conn);
    pinned_lru_.splice(pinned_lru_.begin(), pinned_lru_, it->second.lru);
    return;
  }
  if (max_pinned_ == 0) return;
  if (pinned_.size() >= max_pinned_) Unpin(pinned_.find(pinned_lru_.back()));
  int d = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (d < 0) return;  // EMFILE: unpinned, a removed directory says ESTALE
  PinnedDir& p = pinned_[handle];
  p.fd = UniqueFd(d);
  p.key = key;
  p.holders.insert(conn);
  p.lru = pinned_lru_.insert(pinned_lru_.begin(), handle);
  pinned_keys_[key] = handle;
}

FileService::PinMap::iterator FileService::Unpin(PinMap::iterator it) {
  pinned_keys_.erase(it->second.key);
  pinned_lru_.erase(it->second.lru);
  return pinned_.erase(it);
}

FileService::PinMap::iterator FileService::DropHolder(PinMap::iterator it,
                                                      const wire::Connection* conn) {
  it->second.holders.erase(conn);
  return it->second.holders.empty() ? Unpin(it) : std::next(it);
}

bool FileService::DirPinned(const std::string& key) const {
  std::lock_guard<std::mutex> l(mu_);
  return pinned_keys_.count(key) != 0;
}

Result<UniqueFd> FileService::OpenHandle(std::string_view handle) {
  Result<UniqueFd> fd = handles_.Open(handle);
  if (fd.ok() || fd.status().code() != ESTALE) return fd;
  std::lock_guard<std::mutex> l(mu_);
  auto it = pinned_.find(std::string(handle));
  if (it == pinned_.end()) return fd;
  int d = fcntl(it->second.fd.get(), F_DUPFD_CLOEXEC, 0);
  if (d < 0) return Status::FromErrno("dup of a pinned directory");
  return UniqueFd(d);
}

void FileService::Removed(const wire::Connection* from, int victim) {
  auto st = ops::Stat(victim);
  if (!st.ok()) return;
  std::string key = ops::FileKey(*st);
  // Our own mount holds its files by fd: it can always stat them again.
  Changed(from, key, "", !S_ISDIR(st->st_mode) || DirPinned(key), client::CtimeNs(*st));
  if (st->st_nlink == 0) ForgetKey(key);
}

// The LockWaits token of the lock request the current thread serves.
static thread_local uint64_t tl_wait_token = 0;

// Bookkeeping that touches no disk (a change report from our own mount, a
// watch subscription, a forgotten directory), done on the network thread:
// a hop to the pool would cost two thread wake-ups per created, written or
// removed file on the local fast path, and kForgetDir stays in frame order
// with the lookups that hand the directory out again.
static bool Bookkeeping(uint16_t type) {
  return type == proto::kChanged || type == proto::kWatch || type == proto::kForgetDir;
}

void FileService::Handle(const wire::Connection::Ptr& conn, wire::Frame frame) {
  if (stopped_) return conn->ReplyError(frame, Status::Unavailable("file service stopping"));
  // A lock request that may wait gets a thread of its own: waiters must
  // never hold up the workers, nor the unlock that would release them.
  const std::string& p = frame.payload;
  bool waits = (frame.type() == proto::kSetLk && !p.empty() && p.back() != 0) ||
               (frame.type() == proto::kFlock && p.size() >= 4 &&
                !(DecodeFixed32(p.data() + p.size() - 4) & LOCK_NB) &&
                (DecodeFixed32(p.data() + p.size() - 4) & ~LOCK_NB) != LOCK_UN);
  if (Bookkeeping(frame.type()))  // a change report may be answered later: OnChanged
    return frame.type() == proto::kChanged ? OnChanged(conn, frame) : Execute(conn, frame);
  if (frame.type() == proto::kCancelWait) {
    if (p.size() != 16) return;  // one-way: nothing to answer
    uint64_t fh = DecodeFixed64(p.data()), owner = DecodeFixed64(p.data() + 8);
    return CancelWaits(conn.get(), &fh, owner);
  }
  if (!waits) {
    boost::asio::post(pool_, [this, conn, frame = std::move(frame)]() { Execute(conn, frame); });
    return;
  }
  // Registered here, in frame order, so that a kCancelWait that follows
  // finds it even before the waiting thread runs.
  uint64_t token = 0;
  WaitKey key{conn.get(), 0, 0};
  if (p.size() >= 16) {
    key.fh = DecodeFixed64(p.data());
    key.owner = DecodeFixed64(p.data() + 8);
    token = client::ops::LockWaits::NewToken();
    std::lock_guard<std::mutex> l(waits_mu_);
    waits_.emplace(key, token);
  }
  std::thread([this, conn, frame = std::move(frame), token, key]() {
    tl_wait_token = token;
    Execute(conn, frame);
    tl_wait_token = 0;
    if (token == 0) return;
    {
      std::lock_guard<std::mutex> l(waits_mu_);
      auto [b, e] = waits_.equal_range(key);
      for (auto it = b; it != e; ++it)
        if (it->second == token) {
          waits_.erase(it);
          break;
        }
    }
    client::ops::LockWaits::Forget(token);
  }).detach();
}

// Cancels the waits of `conn` (all of them when `fh` is null): they fail
// with EINTR.
void FileService::CancelWaits(const wire::Connection* conn, const uint64_t* fh, uint64_t owner) {
  std::vector<uint64_t> tokens;
  {
    std::lock_guard<std::mutex> l(waits_mu_);
    for (auto& [k, t] : waits_)
      if (k.conn == conn && (!fh || (k.fh == *fh && k.owner == owner))) tokens.push_back(t);
  }
  if (tokens.empty()) return;
  // Off the network thread: a cancel signals the waiter until it has left.
  std::thread([tokens] {
    for (uint64_t t : tokens) client::ops::LockWaits::Cancel(t);
  }).detach();
}

// The kernel of the calling node applied the caller's umask already; the
// worker must not apply mfsd's again. umask is per fs_struct, so each worker
// thread takes a private one (unshare(CLONE_FS)) with umask 0, leaving the
// rest of mfsd alone.
static void PrivateUmask() {
  thread_local bool done = false;
  if (done) return;
  done = true;
  if (unshare(CLONE_FS) == 0) umask(0);
  else spdlog::warn("file service: unshare(CLONE_FS): {}", strerror(errno));
}

void FileService::Execute(const wire::Connection::Ptr& conn, const wire::Frame& frame) {
  if (!Bookkeeping(frame.type())) PrivateUmask();
  std::string out;
  Status s;
  try {
    s = Dispatch(conn, frame, &out);
  } catch (const std::bad_alloc&) {
    s = Status::PosixError("file service", ENOMEM);
  } catch (const std::exception& e) {
    s = Status::Error(EIO, std::string("file service: ") + e.what());
  }
  if (frame.header.request_id == 0) return;  // a one-way message
  if (s.ok()) conn->Reply(frame, std::move(out));
  else conn->ReplyError(frame, s);
}

// The answers that the listing holders a change broke still owe.
class FileService::ListingBreaks {
 public:
  explicit ListingBreaks(int pending) : pending_(pending) {}
  void Answered() {
    std::function<void()> then;
    {
      std::lock_guard<std::mutex> l(mu_);
      if (--pending_ > 0) return;
      then = std::move(then_);
    }
    cv_.notify_all();
    if (then) then();
  }
  // Bounded: every break is a call with a timeout.
  void Wait() {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [this] { return pending_ <= 0; });
  }
  // Runs `f` once all are answered (now, if they are).
  void Then(std::function<void()> f) {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (pending_ > 0) {
        then_ = std::move(f);
        return;
      }
    }
    f();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int pending_;
  std::function<void()> then_;
};

void FileService::OnChanged(const wire::Connection::Ptr& conn, const wire::Frame& frame) {
  const bool call = frame.header.request_id != 0;
  Reader r(frame.payload);
  std::string key(r.Bytes());
  std::string name(r.Bytes());
  uint8_t flags = r.done() ? 0 : r.U8();
  int64_t ctime = r.done() ? client::kCtimeUnknown : r.I64();
  if (!r.done()) {
    if (call) conn->ReplyError(frame, Bad("changed"));
    return;
  }
  // Only the node's own mount reports changes it made on the export.
  if (conn->peer_id() != opts_.self_id) {
    if (call)
      conn->ReplyError(frame,
                       Status::PermissionDenied("changes are reported by the owner's mount only"));
    return;
  }
  changes_reported_.fetch_add(1, std::memory_order_relaxed);
  std::shared_ptr<ListingBreaks> breaks;
  if (!(flags & proto::kChangedDir) || DirPinned(key))
    Changed(conn.get(), key, name, true, ctime, &breaks);
  if (flags & proto::kChangedGone) ForgetKey(key);
  if (!call) return;
  if (!breaks) return conn->Reply(frame, "");
  breaks->Then([conn, frame] { conn->Reply(frame, ""); });
}

void FileService::OnClose(const wire::Connection::Ptr& conn) {
  std::vector<std::shared_ptr<OpenFile>> drop;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (auto it = files_.begin(); it != files_.end();) {
      if (it->second->owner == conn.get()) {
        drop.push_back(std::move(it->second));
        it = files_.erase(it);
      } else {
        ++it;
      }
    }
    for (auto it = interest_.begin(); it != interest_.end();) {
      if (auto w = it->second.find(conn.get()); w != it->second.end()) {
        Unwatched(it->first, w->first, w->second);
        it->second.erase(w);
      }
      if (it->second.empty()) {
        dir_gen_.erase(it->first);
        it = interest_.erase(it);
      } else {
        ++it;
      }
    }
    if (watch_all_.erase(conn.get()) && Counted(conn.get())) interest_map_.RemoveAll();
    for (auto it = pinned_.begin(); it != pinned_.end();) it = DropHolder(it, conn.get());
  }
  // Dropping the files closes them. Locks this connection took go too: a
  // peer that died or lost its connection must not block the file for
  // everybody else (documented: locks do not survive a reconnect). A slot
  // re-taken over a newer connection belongs to that one and stays.
  CancelWaits(conn.get(), nullptr, 0);
  size_t n = locks_.ReleaseHolder(reinterpret_cast<uintptr_t>(conn.get()));
  if (n) spdlog::info("peer {} went away: released {} lock description(s)", conn->peer_id(), n);
}

uint64_t FileService::AddFile(const wire::Connection::Ptr& conn, UniqueFd fd, UniqueFd path_fd) {
  auto f = std::make_shared<OpenFile>();
  struct stat st;
  if (fstat(fd.get(), &st) == 0) f->key = ops::FileKey(st);
  f->fd = std::move(fd);
  f->path_fd = std::move(path_fd);
  f->owner = conn.get();
  f->owner_conn = conn;
  std::lock_guard<std::mutex> l(mu_);
  if (++adds_since_sweep_ >= 64) {
    adds_since_sweep_ = 0;
    for (auto it = files_.begin(); it != files_.end();) {
      auto c = it->second->owner_conn.lock();
      it = (!c || c->closed()) ? files_.erase(it) : std::next(it);
    }
  }
  uint64_t id = next_fh_++;
  files_.emplace(id, std::move(f));
  return id;
}

Result<std::shared_ptr<FileService::OpenFile>> FileService::File(uint64_t fh) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = files_.find(fh);
  if (it == files_.end()) return Status::Error(EBADF, "unknown open file (server restarted?)");
  return it->second;
}

bool FileService::NoteInterest(const wire::Connection::Ptr& conn, const std::string& key,
                               const std::string& handle) {
  // Listings no change will break once their holders are forgotten:
  // dropped now (one-way, best effort), outside the lock.
  std::vector<std::pair<wire::Connection::Ptr, std::string>> drop;
  bool fresh = false;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (interest_.size() > kMaxInterestKeys) {  // clients fall back to timeouts
      for (auto& [k, m] : interest_)
        for (auto& [c, w] : m) {
          if (auto p = w.conn.lock(); p && w.listed)
            drop.emplace_back(std::move(p),
                              InvalidateMessage(w.handle, k, "", client::kCtimeUnknown));
          Unwatched(k, c, w);
        }
      interest_.clear();
      dir_gen_.clear();
    }
    auto& m = interest_[key];
    if (m.emplace(conn.get(), Watcher{conn, handle}).second && Counted(conn.get())) {
      interest_map_.Add(key);
      fresh = true;
    }
  }
  for (auto& [c, msg] : drop) c->Send(proto::kInvalidate, std::move(msg));
  return fresh;
}

std::string FileService::InvalidateMessage(const std::string& handle, const std::string& key,
                                           const std::string& name, int64_t ctime) const {
  std::string msg;
  Writer w(&msg);
  w.Bytes(handle);
  w.Bytes(key);
  w.Bytes(name);
  if (fine_ctime_ && ctime != client::kCtimeUnknown) w.I64(ctime);
  return msg;
}

void FileService::Unwatched(const std::string& key, const wire::Connection* c, const Watcher& w) {
  if (Counted(c)) interest_map_.Remove(key);
  if (w.listed) interest_map_.Remove(client::ListingSlotKey(key));
}

uint64_t FileService::Changed(const wire::Connection* from, const std::string& key,
                              const std::string& name, bool peers, int64_t ctime,
                              std::shared_ptr<ListingBreaks>* later) {
  struct Target {
    wire::Connection::Ptr conn;
    std::string handle;
    bool breaks_listing;
  };
  std::vector<Target> targets;
  uint64_t gen = 0;
  int breaks = 0;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!name.empty()) {
      if (auto g = dir_gen_.find(key); g != dir_gen_.end()) gen = ++g->second;
    }
    auto it = interest_.find(key);
    if (peers && it != interest_.end()) {
      for (auto& [c, w] : it->second) {
        if (c == from) continue;
        // Bumped and broken under one lock with PutListing's check: a
        // listing is either older than this change and broken by it, or
        // read after it (its generation then differs from the one read).
        const bool breaking = w.listed && !name.empty();
        if (breaking) {
          w.listed = false;
          interest_map_.Remove(client::ListingSlotKey(key));
        }
        if (auto p = w.conn.lock()) {
          targets.push_back({std::move(p), w.handle, breaking});
          breaks += breaking;
        }
      }
    }
    for (auto& [c, w] : watch_all_) {
      if (c == from) continue;
      // Read after the change was made (interest_map.h, "Ordering").
      if (w.held && !w.held->MayBeHeld(key)) continue;
      if (auto p = w.conn.lock()) targets.push_back({std::move(p), std::string(), false});
    }
  }
  auto pending = breaks ? std::make_shared<ListingBreaks>(breaks) : nullptr;
  for (auto& t : targets) {
    if (t.conn->peer_id() == opts_.self_id)
      own_mount_pushes_.fetch_add(1, std::memory_order_relaxed);
    std::string msg = InvalidateMessage(t.handle, key, name, ctime);
    if (!t.breaks_listing) {
      t.conn->Send(proto::kInvalidate, std::move(msg));
      continue;
    }
    t.conn->Call(
        proto::kInvalidate, std::move(msg),
        [pending, peer = t.conn->peer_id()](Result<wire::Frame> f) {
          if (!f.ok())
            spdlog::warn(
                "file service: node {} did not answer a listing break: {} (its lookups may "
                "miss that change until its entry_timeout)",
                peer, f.status().ToString());
          pending->Answered();
        },
        kListingBreakTimeout);
  }
  if (!pending) return gen;
  listing_breaks_.fetch_add(static_cast<uint64_t>(breaks), std::memory_order_relaxed);
  if (later) {
    *later = std::move(pending);
  } else {
    pending->Wait();
  }
  return gen;
}

uint64_t FileService::ChangedFd(const wire::Connection* from, int fd, const std::string& name) {
  auto st = ops::Stat(fd);
  return st.ok() ? Changed(from, ops::FileKey(*st), name, true, client::CtimeNs(*st)) : 0;
}

uint64_t FileService::DirGen(const wire::Connection* conn, const std::string& key) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = interest_.find(key);
  if (it == interest_.end() || !it->second.count(conn)) return 0;
  auto [g, made] = dir_gen_.try_emplace(key, next_gen_base_);
  if (made) next_gen_base_ += uint64_t{1} << 32;
  return g->second;
}

uint64_t FileService::DirGenOf(int dirfd, const wire::Connection* conn) {
  auto st = ops::Stat(dirfd);
  return st.ok() ? DirGen(conn, ops::FileKey(*st)) : 0;
}

bool FileService::PutListing(const wire::Connection::Ptr& conn, int dirfd, std::string* out) {
  auto st = ops::Stat(dirfd);
  if (!st.ok()) return false;
  const std::string key = ops::FileKey(*st);
  const std::string slot = client::ListingSlotKey(key);
  // A change while the directory is read voids the read: tried again a
  // few times (a busy directory may keep changing; the client then waits
  // before it asks again).
  for (int attempt = 0; attempt < 3; ++attempt) {
    const uint64_t gen = DirGen(conn.get(), key);
    if (gen == 0) return false;
    // Raised before the read (interest_map.h, "Ordering"): a change our
    // own mount makes after it waits for the break; one before is in it.
    interest_map_.Add(slot);
    auto dir = ops::Reopen(dirfd, O_RDONLY | O_DIRECTORY);
    auto entries = dir.ok() ? ops::ReadDirFrom(dir->get(), 0, proto::kMaxListing + 3)
                            : Result<std::vector<ops::DirEntryAt>>(dir.status());
    if (!entries.ok() || entries->size() > proto::kMaxListing + 2) {
      interest_map_.Remove(slot);
      return false;
    }
    enum { kRefused, kRaced, kKept } outcome = kRefused;
    bool newly = false;
    {
      std::lock_guard<std::mutex> l(mu_);
      // Unchanged while it was read: every name in it is one of `gen`,
      // and every later change breaks it (Changed).
      auto it = interest_.find(key);
      auto g = dir_gen_.find(key);
      if (it != interest_.end() && g != dir_gen_.end()) {
        if (auto w = it->second.find(conn.get()); w != it->second.end()) {
          outcome = g->second == gen ? kKept : kRaced;
          if (outcome == kKept) {
            newly = !w->second.listed;
            w->second.listed = true;
          }
        }
      }
    }
    if (!newly) interest_map_.Remove(slot);  // held already, or not sent
    if (outcome == kRaced) continue;
    if (outcome == kRefused) return false;
    listings_sent_.fetch_add(1, std::memory_order_relaxed);
    Writer w(out);
    w.Bytes("");  // no handle: nothing has that name
    w.U64(gen);
    std::vector<const std::string*> names;
    for (const auto& e : *entries)
      if (e.name != "." && e.name != "..") names.push_back(&e.name);
    w.U32(static_cast<uint32_t>(names.size()));
    for (const std::string* n : names) w.Bytes(*n);
    return true;
  }
  return false;
}

void FileService::ForgetKey(const std::string& key) {
  std::lock_guard<std::mutex> l(mu_);
  for (const auto& [id, f] : files_)
    if (f->key == key) return;  // still open through us: its changes still matter
  auto it = interest_.find(key);
  if (it == interest_.end()) return;
  for (const auto& [c, w] : it->second) Unwatched(key, c, w);
  interest_.erase(it);
  dir_gen_.erase(key);
}

Status FileService::PutEntry(const wire::Connection::Ptr& conn, int fd, std::string* out) {
  MFS_ASSIGN_OR_RETURN(struct stat st, ops::Stat(fd));
  MFS_ASSIGN_OR_RETURN(std::string h, handles_.Make(fd));
  // A new peer's interest is in the InterestMap before the stat it gets:
  // a change the mount did not report (it saw no interest) is in that stat.
  const std::string key = ops::FileKey(st);
  if (S_ISDIR(st.st_mode)) PinDir(conn.get(), h, key, fd);
  if (NoteInterest(conn, key, h)) {
    MFS_ASSIGN_OR_RETURN(st, ops::Stat(fd));
  }
  Writer w(out);
  w.Bytes(h);
  proto::PutStat(w, st);
  return Status::OK();
}

Status FileService::Dispatch(const wire::Connection::Ptr& conn, const wire::Frame& frame,
                             std::string* out) {
  Reader r(frame.payload);
  Writer w(out);
  const wire::Connection* self = conn.get();
  auto open_handle = [&](std::string_view h) { return OpenHandle(h); };
  switch (frame.type()) {
    case proto::kGetRoot: {
      if (!r.done()) return Bad("getroot");
      return PutEntry(conn, root_.get(), out);
    }
    case proto::kLookup: {
      Caller c = proto::GetCaller(r);
      std::string_view dh = r.Bytes();
      std::string name(r.Bytes());
      uint8_t lookup_flags = r.done() ? 0 : r.U8();
      if (!r.done()) return Bad("lookup");
      MFS_ASSIGN_OR_RETURN(UniqueFd dir, open_handle(dh));
      ScopedCreds creds(c);
      Result<UniqueFd> fd = ops::OpenPath(dir.get(), name);
      if (fd.ok()) return PutEntry(conn, fd->get(), out);
      // Nothing by that name: with kLookupListing, every name there is, so
      // that the client answers its next misses itself.
      if (fd.status().code() == ENOENT && (lookup_flags & proto::kLookupListing) &&
          PutListing(conn, dir.get(), out))
        return Status::OK();
      return fd.status();
    }
    case proto::kGetAttr: {
      std::string_view h = r.Bytes();
      uint64_t fh = r.U64();
      if (!r.done()) return Bad("getattr");
      struct stat st;
      if (fh != 0) {
        MFS_ASSIGN_OR_RETURN(auto f, File(fh));
        if (fstat(f->fd.get(), &st) < 0) return Status::FromErrno("fstat");
      } else {
        MFS_ASSIGN_OR_RETURN(UniqueFd fd, open_handle(h));
        MFS_ASSIGN_OR_RETURN(st, ops::Stat(fd.get()));
      }
      proto::PutStat(w, st);
      return Status::OK();
    }
    case proto::kSetAttr: {
      Caller c = proto::GetCaller(r);
      std::string_view h = r.Bytes();
      uint64_t fh = r.U64();
      client::SetAttrIn in;
      in.valid = r.U32();
      in.mode = r.U32();
      in.uid = r.U32();
      in.gid = r.U32();
      in.size = r.I64();
      in.atime.tv_sec = r.I64();
      in.atime.tv_nsec = r.U32();
      in.mtime.tv_sec = r.I64();
      in.mtime.tv_nsec = r.U32();
      if (!r.done()) return Bad("setattr");
      MFS_ASSIGN_OR_RETURN(UniqueFd fd, open_handle(h));
      int open_fd = -1;
      std::shared_ptr<OpenFile> f;
      if (fh != 0) {
        auto fr = File(fh);
        if (fr.ok()) f = *fr, open_fd = f->fd.get();
      }
      Result<struct stat> st = ops::SetAttrAs(c, fd.get(), open_fd, in);
      if (!st.ok()) return st.status();
      proto::PutStat(w, *st);
      Changed(self, ops::FileKey(*st), "", true, client::CtimeNs(*st));
      return Status::OK();
    }
    case proto::kMakeNode: {
      Caller c = proto::GetCaller(r);
      std::string_view dh = r.Bytes();
      std::string name(r.Bytes());
      mode_t mode = r.U32();
      dev_t rdev = r.U64();
      std::string link(r.Bytes());
      if (!r.done()) return Bad("mknod");
      MFS_ASSIGN_OR_RETURN(UniqueFd dir, open_handle(dh));
      const uint64_t gen_before = DirGenOf(dir.get(), self);
      {
        ScopedCreds creds(c);
        MFS_RETURN_IF_ERROR(ops::MakeNode(dir.get(), name, mode, rdev, link));
      }
      const uint64_t gen_after = ChangedFd(self, dir.get(), name);
      MFS_ASSIGN_OR_RETURN(UniqueFd fd, ops::OpenPath(dir.get(), name));
      MFS_RETURN_IF_ERROR(PutEntry(conn, fd.get(), out));
      w.U64(gen_before);  // the directory's generations (DirGen)
      w.U64(gen_after);
      return Status::OK();
    }
    case proto::kLink: {
      Caller c = proto::GetCaller(r);
      std::string_view h = r.Bytes();
      std::string_view dh = r.Bytes();
      std::string name(r.Bytes());
      if (!r.done()) return Bad("link");
      MFS_ASSIGN_OR_RETURN(UniqueFd fd, open_handle(h));
      MFS_ASSIGN_OR_RETURN(UniqueFd dir, open_handle(dh));
      {
        ScopedCreds creds(c);
        MFS_RETURN_IF_ERROR(ops::Link(fd.get(), dir.get(), name));
      }
      ChangedFd(self, dir.get(), name);
      ChangedFd(self, fd.get());
      return PutEntry(conn, fd.get(), out);
    }
    case proto::kRemove: {
      Caller c = proto::GetCaller(r);
      std::string_view dh = r.Bytes();
      std::string name(r.Bytes());
      bool dir_flag = r.U8() != 0;
      if (!r.done()) return Bad("remove");
      MFS_ASSIGN_OR_RETURN(UniqueFd dir, open_handle(dh));
      auto victim = ops::OpenPath(dir.get(), name);
      const uint64_t gen_before = DirGenOf(dir.get(), self);
      {
        ScopedCreds creds(c);
        MFS_RETURN_IF_ERROR(ops::Remove(dir.get(), name, dir_flag));
      }
      const uint64_t gen_after = ChangedFd(self, dir.get(), name);
      if (victim.ok()) {
        Removed(self, victim->get());
      }
      // The directory's attributes afterwards (optional: spares the client
      // the GETATTR its kernel sends next), then its generations.
      if (auto st = ops::Stat(dir.get()); st.ok()) {
        proto::PutStat(w, *st);
        w.U64(gen_before);
        w.U64(gen_after);
      }
      return Status::OK();
    }
    case proto::kRename: {
      Caller c = proto::GetCaller(r);
      std::string_view dh = r.Bytes();
      std::string name(r.Bytes());
      std::string_view ndh = r.Bytes();
      std::string newname(r.Bytes());
      unsigned flags = r.U32();
      if (!r.done()) return Bad("rename");
      MFS_ASSIGN_OR_RETURN(UniqueFd dir, open_handle(dh));
      MFS_ASSIGN_OR_RETURN(UniqueFd ndir, open_handle(ndh));
      auto moved = ops::OpenPath(dir.get(), name);
      auto replaced = ops::OpenPath(ndir.get(), newname);
      {
        ScopedCreds creds(c);
        MFS_RETURN_IF_ERROR(ops::Rename(dir.get(), name, ndir.get(), newname, flags));
      }
      ChangedFd(self, dir.get(), name);
      ChangedFd(self, ndir.get(), newname);
      if (moved.ok()) ChangedFd(self, moved->get());
      if (replaced.ok()) {
        Removed(self, replaced->get());
      }
      return Status::OK();
    }
    case proto::kReadLink: {
      std::string_view h = r.Bytes();
      if (!r.done()) return Bad("readlink");
      MFS_ASSIGN_OR_RETURN(UniqueFd fd, open_handle(h));
      MFS_ASSIGN_OR_RETURN(std::string t, ops::ReadLink(fd.get()));
      w.Bytes(t);
      return Status::OK();
    }
    case proto::kAccess: {
      Caller c = proto::GetCaller(r);
      std::string_view h = r.Bytes();
      int mask = static_cast<int>(r.U32());
      if (!r.done()) return Bad("access");
      MFS_ASSIGN_OR_RETURN(UniqueFd fd, open_handle(h));
      ScopedCreds creds(c);
      return ops::Access(fd.get(), mask);
    }
    case proto::kOpen: {
      Caller c = proto::GetCaller(r);
      std::string_view h = r.Bytes();
      // O_DIRECT is the client's business (its kernel bypasses its page
      // cache); here the data moves through unaligned frame buffers, which
      // O_DIRECT would refuse with EINVAL.
      int flags = static_cast<int>(r.U32()) & ~O_DIRECT;
      if (!r.done()) return Bad("open");
      MFS_ASSIGN_OR_RETURN(UniqueFd pfd, open_handle(h));
      Result<UniqueFd> fd = [&]() {
        ScopedCreds creds(c);
        return ops::Reopen(pfd.get(), flags);
      }();
      if (!fd.ok()) return fd.status();
      if (flags & O_TRUNC) ChangedFd(self, pfd.get());
      struct stat st;
      bool have_st = fstat(fd->get(), &st) == 0;
      w.U64(AddFile(conn, std::move(*fd), std::move(pfd)));
      // The file's attributes at the open: the client revalidates its
      // kernel's cached attributes with them (close-to-open).
      if (have_st) proto::PutStat(w, st);
      return Status::OK();
    }
    case proto::kCreate: {
      Caller c = proto::GetCaller(r);
      std::string_view dh = r.Bytes();
      std::string name(r.Bytes());
      mode_t mode = r.U32();
      int flags = static_cast<int>(r.U32()) & ~O_DIRECT;  // as in kOpen
      if (!r.done()) return Bad("create");
      MFS_ASSIGN_OR_RETURN(UniqueFd dir, open_handle(dh));
      const uint64_t gen_before = DirGenOf(dir.get(), self);
      bool created = false;
      Result<UniqueFd> fd = [&]() {
        ScopedCreds creds(c);
        return ops::Create(dir.get(), name, mode, flags, &created);
      }();
      if (!fd.ok()) return fd.status();
      const uint64_t gen_after = ChangedFd(self, dir.get(), name);
      MFS_ASSIGN_OR_RETURN(UniqueFd pfd, ops::OpenPath(dir.get(), name));
      MFS_RETURN_IF_ERROR(PutEntry(conn, pfd.get(), out));
      w.U64(AddFile(conn, std::move(*fd), std::move(pfd)));
      // Then the parent now, and whether this call made the file (a file
      // just made has no security.capability: the client answers the
      // kernel's check before the first write itself).
      if (auto st = ops::Stat(dir.get()); st.ok()) {
        proto::PutStat(w, *st);
        w.U8(created ? 1 : 0);
        w.U64(gen_before);  // the directory's generations (DirGen)
        w.U64(gen_after);
      }
      return Status::OK();
    }
    case proto::kRead: {
      uint64_t fh = r.U64();
      off_t off = r.I64();
      uint32_t size = r.U32();
      if (!r.done() || size > proto::kMaxIo) return Bad("read");
      MFS_ASSIGN_OR_RETURN(auto f, File(fh));
      MFS_ASSIGN_OR_RETURN(*out, ops::PRead(f->fd.get(), size, off));
      return Status::OK();
    }
    case proto::kWrite: {
      uint64_t fh = r.U64();
      off_t off = r.I64();
      std::string_view data = r.Bytes();
      // Optional trailing byte: the writer lacks CAP_FSETID, clear the
      // set-id bits first (FUSE HANDLE_KILLPRIV_V2 on the client).
      bool kill_suid = r.remaining() > 0 && r.U8() != 0;
      if (!r.done() || data.size() > proto::kMaxIo) return Bad("write");
      MFS_ASSIGN_OR_RETURN(auto f, File(fh));
      if (kill_suid) MFS_RETURN_IF_ERROR(ops::KillSuid(f->fd.get()));
      MFS_ASSIGN_OR_RETURN(size_t n, ops::PWrite(f->fd.get(), data, off));
      w.U32(static_cast<uint32_t>(n));
      // The file's attributes afterwards (optional: the client answers its
      // kernel's next GETATTR from them).
      auto st = ops::Stat(f->fd.get());
      if (st.ok()) proto::PutStat(w, *st);
      Changed(self, f->key, "", true, st.ok() ? client::CtimeNs(*st) : client::kCtimeUnknown);
      return Status::OK();
    }
    case proto::kFlush: {
      uint64_t fh = r.U64();
      uint64_t owner = r.U64();
      if (!r.done()) return Bad("flush");
      MFS_ASSIGN_OR_RETURN(auto f, File(fh));
      locks_.ReleaseOwner(f->key + "@n" + std::to_string(conn->peer_id()), owner);
      int d = dup(f->fd.get());
      if (d < 0 || close(d) < 0) return Status::FromErrno("flush");
      return Status::OK();
    }
    case proto::kFsync: {
      uint64_t fh = r.U64();
      bool datasync = r.U8() != 0;
      if (!r.done()) return Bad("fsync");
      MFS_ASSIGN_OR_RETURN(auto f, File(fh));
      if ((datasync ? fdatasync(f->fd.get()) : fsync(f->fd.get())) < 0)
        return Status::FromErrno("fsync");
      return Status::OK();
    }
    case proto::kRelease: {
      uint64_t fh = r.U64();
      if (!r.done()) return Bad("release");
      std::lock_guard<std::mutex> l(mu_);
      auto it = files_.find(fh);
      if (it != files_.end() && it->second->owner == self) files_.erase(it);
      return Status::OK();
    }
    case proto::kReadDir: {
      Caller c = proto::GetCaller(r);
      std::string_view h = r.Bytes();
      uint64_t off = r.U64();
      uint32_t max = std::min(r.U32(), kMaxDirBatch);
      bool plus = r.U8() != 0;
      if (!r.done()) return Bad("readdir");
      MFS_ASSIGN_OR_RETURN(UniqueFd pfd, open_handle(h));
      ScopedCreds creds(c);
      MFS_ASSIGN_OR_RETURN(UniqueFd dfd, ops::Reopen(pfd.get(), O_RDONLY | O_DIRECTORY));
      // Offsets are the file system's own cookies, so entries added or
      // removed between two batches never shift the others.
      MFS_ASSIGN_OR_RETURN(auto batch, ops::ReadDirFrom(dfd.get(), off, max));
      std::string body;
      Writer b(&body);
      uint32_t n = 0;
      for (const auto& e : batch) {
        std::string entry;
        Writer ew(&entry);
        ew.Bytes(e.name);
        ew.U64(e.next);
        ew.U32(e.type);
        ew.U64(e.ino);
        bool has = false;
        std::string ent;
        if (plus && e.name != "." && e.name != "..") {
          auto fd = ops::OpenPath(pfd.get(), e.name);
          if (fd.ok() && PutEntry(conn, fd->get(), &ent).ok()) has = true;
          else if (!fd.ok()) continue;  // vanished
        }
        ew.U8(has ? 1 : 0);
        if (has) ew.Raw(ent);
        b.Raw(entry);
        ++n;
      }
      w.U32(n);
      w.Raw(body);
      return Status::OK();
    }
    case proto::kStatFs: {
      std::string_view h = r.Bytes();
      if (!r.done()) return Bad("statfs");
      MFS_ASSIGN_OR_RETURN(UniqueFd fd, open_handle(h));
      MFS_ASSIGN_OR_RETURN(struct statvfs s, ops::StatFs(fd.get()));
      proto::PutStatvfs(w, s);
      return Status::OK();
    }
    case proto::kSetXattr: {
      Caller c = proto::GetCaller(r);
      std::string_view h = r.Bytes();
      std::string name(r.Bytes());
      std::string value(r.Bytes());
      int flags = static_cast<int>(r.U32());
      if (!r.done()) return Bad("setxattr");
      MFS_ASSIGN_OR_RETURN(UniqueFd fd, open_handle(h));
      {
        ScopedCreds creds(c);
        MFS_RETURN_IF_ERROR(ops::SetXattr(fd.get(), name, value, flags));
      }
      ChangedFd(self, fd.get());
      return Status::OK();
    }
    case proto::kGetXattr: {
      Caller c = proto::GetCaller(r);
      std::string_view h = r.Bytes();
      std::string name(r.Bytes());
      if (!r.done()) return Bad("getxattr");
      MFS_ASSIGN_OR_RETURN(UniqueFd fd, open_handle(h));
      ScopedCreds creds(c);
      MFS_ASSIGN_OR_RETURN(std::string v, ops::GetXattr(fd.get(), name));
      w.Bytes(v);
      return Status::OK();
    }
    case proto::kListXattr: {
      Caller c = proto::GetCaller(r);
      std::string_view h = r.Bytes();
      if (!r.done()) return Bad("listxattr");
      MFS_ASSIGN_OR_RETURN(UniqueFd fd, open_handle(h));
      ScopedCreds creds(c);
      MFS_ASSIGN_OR_RETURN(std::string v, ops::ListXattr(fd.get()));
      w.Bytes(v);
      return Status::OK();
    }
    case proto::kRemoveXattr: {
      Caller c = proto::GetCaller(r);
      std::string_view h = r.Bytes();
      std::string name(r.Bytes());
      if (!r.done()) return Bad("removexattr");
      MFS_ASSIGN_OR_RETURN(UniqueFd fd, open_handle(h));
      {
        ScopedCreds creds(c);
        MFS_RETURN_IF_ERROR(ops::RemoveXattr(fd.get(), name));
      }
      ChangedFd(self, fd.get());
      return Status::OK();
    }
    case proto::kFallocate: {
      uint64_t fh = r.U64();
      int mode = static_cast<int>(r.U32());
      off_t off = r.I64();
      off_t len = r.I64();
      if (!r.done()) return Bad("fallocate");
      MFS_ASSIGN_OR_RETURN(auto f, File(fh));
      MFS_RETURN_IF_ERROR(ops::Fallocate(f->fd.get(), mode, off, len));
      ChangedFd(self, f->fd.get());
      return Status::OK();
    }
    case proto::kCopyRange: {
      uint64_t in = r.U64();
      off_t off_in = r.I64();
      uint64_t outfh = r.U64();
      off_t off_out = r.I64();
      uint64_t len = r.U64();
      if (!r.done()) return Bad("copy_file_range");
      MFS_ASSIGN_OR_RETURN(auto fi, File(in));
      MFS_ASSIGN_OR_RETURN(auto fo, File(outfh));
      MFS_ASSIGN_OR_RETURN(size_t n, ops::CopyFileRange(fi->fd.get(), off_in, fo->fd.get(),
                                                         off_out, len));
      w.U64(n);
      ChangedFd(self, fo->fd.get());
      return Status::OK();
    }
    case proto::kGetLk:
    case proto::kSetLk: {
      uint64_t fh = r.U64();
      client::LockIn in;
      in.owner = r.U64();
      in.type = static_cast<int>(r.U32());
      in.start = r.I64();
      in.len = r.I64();
      in.pid = static_cast<pid_t>(r.U32());
      in.wait = r.U8() != 0;
      if (!r.done()) return Bad("lock");
      MFS_ASSIGN_OR_RETURN(auto f, File(fh));
      std::string key = f->key + "@n" + std::to_string(conn->peer_id());
      const auto holder = reinterpret_cast<uintptr_t>(conn.get());
      if (frame.type() == proto::kSetLk)
        return locks_.SetLk(f->path_fd.get(), key, in, holder, tl_wait_token);
      MFS_ASSIGN_OR_RETURN(client::LockIn outl, locks_.GetLk(f->path_fd.get(), key, in, holder));
      w.U32(static_cast<uint32_t>(outl.type));
      w.I64(outl.start);
      w.I64(outl.len);
      w.U32(static_cast<uint32_t>(outl.pid));
      return Status::OK();
    }
    case proto::kFlock: {
      uint64_t fh = r.U64();
      uint64_t owner = r.U64();
      int op = static_cast<int>(r.U32());
      if (!r.done()) return Bad("flock");
      MFS_ASSIGN_OR_RETURN(auto f, File(fh));
      return locks_.Flock(f->path_fd.get(), f->key + "@n" + std::to_string(conn->peer_id()), owner,
                          op, reinterpret_cast<uintptr_t>(conn.get()), tl_wait_token);
    }
    case proto::kWatch: {
      uint8_t all = r.U8();
      // Our own mount may name its InterestMap: its pid and the map's id.
      uint32_t pid = 0;
      uint64_t map_id = 0;
      if (!r.done()) {
        pid = r.U32();
        map_id = r.U64();
      }
      if (!r.done()) return Bad("watch");
      std::shared_ptr<const client::InterestMap> held;
      if (all && map_id != 0 && conn->peer_id() == opts_.self_id && !opts_.interest_map.empty()) {
        auto m = client::InterestMap::Open(
            client::InterestMap::MountPathFor(opts_.interest_map, pid), map_id);
        if (m.ok()) {
          held = std::make_shared<const client::InterestMap>(std::move(*m));
        } else {
          spdlog::warn("own mount's {}: every change is pushed to it", m.status().ToString());
        }
      }
      if (all) {
        std::lock_guard<std::mutex> l(mu_);
        if (watch_all_.insert_or_assign(self, AllWatcher{conn, std::move(held)}).second &&
            Counted(self))
          interest_map_.AddAll();
      }
      // The reply names our InterestMap (0: none) for our own mount.
      if (conn->peer_id() == opts_.self_id) w.U64(interest_map_.id());
      return Status::OK();
    }
    case proto::kHold: {
      // A client that reconnected still caches these files: register its
      // interest again, as the replies that handed them out did (a restarted
      // mfsd, or a new connection, knows nothing of them).
      uint32_t n = r.U32();
      if (n > proto::kMaxHold) return Bad("hold: too many handles");
      std::vector<std::string_view> handles;
      handles.reserve(n);
      for (uint32_t i = 0; i < n; ++i) handles.push_back(r.Bytes());
      if (!r.done()) return Bad("hold");
      uint32_t held = 0;
      for (std::string_view h : handles) {
        auto fd = open_handle(h);
        if (!fd.ok()) continue;  // gone since: the client's next use says ESTALE
        auto st = ops::Stat(fd->get());
        if (!st.ok()) continue;
        const std::string key = ops::FileKey(*st);
        if (S_ISDIR(st->st_mode)) PinDir(self, std::string(h), key, fd->get());
        NoteInterest(conn, key, std::string(h));
        ++held;
      }
      w.U32(held);
      return Status::OK();
    }
    case proto::kForgetDir: {
      // One-way, on the network thread (Bookkeeping).
      std::string h(r.Bytes());
      if (!r.done()) return Bad("forgetdir");
      std::lock_guard<std::mutex> l(mu_);
      if (auto it = pinned_.find(h); it != pinned_.end()) DropHolder(it, self);
      return Status::OK();
    }
    default:
      return Status::Error(ENOSYS, "unknown file service message " + std::to_string(frame.type()));
  }
}

}  // namespace mfs::server

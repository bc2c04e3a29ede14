#include "mfs/client/remote_backend.h"

#include <fcntl.h>
#include <sys/file.h>

#include <climits>
#include <future>
#include <optional>

#include "mfs/base/coding.h"
#include "mfs/base/log.h"
#include "mfs/client/client.h"
#include "mfs/client/fs_protocol.h"
#include "mfs/client/local_ops.h"
#include "mfs/wire/auth.h"

namespace mfs::client {

namespace asio = boost::asio;
using wire::Connection;
using wire::Frame;

namespace {

// Requests that may wait for another owner (blocking locks) get no timeout
// short of an hour.
constexpr std::chrono::milliseconds kLockWait{3600 * 1000};

std::string RemoteKey(uint32_t node, std::string_view handle) {
  return "R" + std::to_string(node) + ":" + std::string(handle);
}

Status Malformed(const char* what) {
  return Status::Error(EBADMSG, std::string("malformed reply to ") + what);
}

}  // namespace

RemoteBackend::RemoteBackend(Client* client, const RemoteOptions& opts, std::string secret)
    : client_(client), opts_(opts), secret_(std::move(secret)) {}

RemoteBackend::~RemoteBackend() { Stop(); }

Result<std::unique_ptr<RemoteBackend>> RemoteBackend::Create(Client* client,
                                                             const RemoteOptions& opts) {
  MFS_ASSIGN_OR_RETURN(std::string secret, wire::LoadSecret(opts.secret_file));
  return std::unique_ptr<RemoteBackend>(new RemoteBackend(client, opts, std::move(secret)));
}

Status RemoteBackend::Start(Invalidator* inval) {
  inval_ = inval;
  work_ = std::make_unique<asio::executor_work_guard<asio::io_context::executor_type>>(
      io_.get_executor());
  for (int i = 0; i < 1; ++i) threads_.emplace_back([this] { io_.run(); });
  inval_thread_ = std::thread([this] { InvalLoop(); });
  WatchOwn();
  return Status::OK();
}

void RemoteBackend::Stop() {
  {
    std::lock_guard<std::mutex> l(inval_mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  inval_cv_.notify_all();
  std::vector<Connection::Ptr> conns;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (auto& [id, p] : peers_)
      if (p.conn) conns.push_back(p.conn);
  }
  for (auto& c : conns) c->Close(Status::Unavailable("client stopping"));
  work_.reset();
  io_.stop();
  for (auto& t : threads_) t.join();
  threads_.clear();
  if (inval_thread_.joinable()) inval_thread_.join();
}

// Keeps a connection to our own mfsd open and subscribed to every change
// made to our export by peers, so the fast path's kernel cache stays
// coherent. Retried every second while mfsd is away.
void RemoteBackend::WatchOwn() {
  {
    std::lock_guard<std::mutex> l(inval_mu_);
    if (stopping_) return;
  }
  std::string p;
  Writer w(&p);
  w.U8(1);
  if (opts_.held_map_id != 0) {
    w.U32(opts_.held_map_pid);
    w.U64(opts_.held_map_id);
  }
  Call(opts_.self_id, proto::kWatch, std::move(p), [this](Result<Frame> r) {
    if (r.ok()) {  // OnClosed re-subscribes
      // Subscribed again (mfsd restarted, or the connection broke): what
      // peers changed meanwhile was not pushed to us.
      if (watched_.exchange(true)) {
        Changing();
        for (const auto& i : client_->table().Where(
                 [](const Inode& n) { return n.kind == InodeKind::kLocal; }))
          InvalidateCached(i, std::string());
      }
      Reader rd(r->payload);
      uint64_t id = rd.U64();
      if (!rd.done() || id == 0 || opts_.interest_map.empty()) return;  // an mfsd without one
      auto m = InterestMap::Open(opts_.interest_map, id);
      if (!m.ok()) {
        spdlog::warn("{}: every local change is reported", m.status().ToString());
        return;
      }
      std::lock_guard<std::mutex> l(mu_);
      own_interest_ = std::make_shared<const InterestMap>(std::move(*m));
      return;
    }
    auto t = std::make_shared<asio::steady_timer>(io_, std::chrono::seconds(1));
    t->async_wait([this, t](boost::system::error_code e) {
      if (!e) WatchOwn();
    });
  });
}

Result<wire::tcp::endpoint> RemoteBackend::EndpointOf(uint32_t node) {
  if (node == opts_.self_id) return wire::ParseEndpoint(opts_.address, opts_.port);
  if (auto a = client_->AddressOf(node)) return wire::ParseEndpoint(*a, opts_.port);
  // A cluster on one host puts node i on 127.0.0.i (mfs-cluster).
  if (opts_.address.rfind("127.", 0) == 0)
    return wire::ParseEndpoint("127.0.0." + std::to_string(node), opts_.port);
  return Status::Unavailable("no address known for node " + std::to_string(node));
}

void RemoteBackend::Call(uint32_t node, uint16_t type, std::string payload, FrameCb cb,
                         std::chrono::milliseconds timeout) {
  if (timeout.count() == 0) timeout = opts_.call_timeout;
  // Transport failures become EHOSTDOWN; the server's own errors keep theirs.
  auto wrapped = [this, node, cb = std::move(cb)](Result<Frame> r) {
    if (!r.ok()) {
      int e = r.status().code();
      bool transport = e == ENOTCONN || e == ECONNRESET || e == EPIPE || e == ECONNABORTED ||
                       e == ECONNREFUSED || e == ESHUTDOWN || e == EHOSTUNREACH ||
                       e == ENETUNREACH || e == ETIMEDOUT || e == EHOSTDOWN;
      if (transport) {
        if (e == ETIMEDOUT) {
          // The node stopped answering: drop the connection so the next
          // request reconnects (or fails fast) instead of queueing behind it.
          Connection::Ptr c;
          {
            std::lock_guard<std::mutex> l(mu_);
            c = peers_[node].conn;
          }
          if (c) c->Close(r.status());
        }
        return cb(Status::Error(EHOSTDOWN, "node " + std::to_string(node) + ": " +
                                               r.status().message()));
      }
    }
    cb(std::move(r));
  };
  std::unique_lock<std::mutex> l(mu_);
  Peer& p = peers_[node];
  if (p.conn && !p.conn->closed()) {
    Connection::Ptr c = p.conn;
    l.unlock();
    c->Call(type, std::move(payload), std::move(wrapped), timeout);
    return;
  }
  auto now = std::chrono::steady_clock::now();
  if (!p.connecting && p.failed_at.time_since_epoch().count() != 0 &&
      now - p.failed_at < opts_.retry_after) {
    Status why = Status::Error(EHOSTDOWN, "node " + std::to_string(node) +
                                              " unreachable: " + p.last_error.message());
    l.unlock();
    wrapped(why);
    return;
  }
  p.queue.push_back(Pending{type, std::move(payload), std::move(wrapped), timeout});
  if (p.connecting) return;
  p.connecting = true;
  l.unlock();
  Connect(node);
}

void RemoteBackend::Connect(uint32_t node) {
  auto fail_all = [this, node](const Status& s) {
    std::vector<Pending> q;
    {
      std::lock_guard<std::mutex> l(mu_);
      Peer& p = peers_[node];
      p.connecting = false;
      p.failed_at = std::chrono::steady_clock::now();
      p.last_error = s;
      q.swap(p.queue);
    }
    for (auto& pend : q) pend.cb(Status::Error(EHOSTDOWN, s.message()));
  };
  auto ep = EndpointOf(node);
  if (!ep.ok()) return fail_all(ep.status());
  auto local = wire::ParseEndpoint(opts_.address, 0);
  wire::tcp::endpoint bind_ep = local.ok() ? *local : wire::tcp::endpoint();
  bind_ep.port(0);
  wire::AuthConfig auth;
  auth.secret = secret_;
  auth.self_id = opts_.self_id;
  auth.role = wire::PeerRole::kClient;
  auth.handshake_timeout = opts_.connect_timeout;
  Connection::Connect(
      io_, bind_ep, *ep, auth,
      [this, node](const Connection::Ptr& c, Frame f) { OnPush(node, c, f); },
      [this, node](const Connection::Ptr& c, const Status&) { OnClosed(node, c); },
      [this, node, fail_all](Result<Connection::Ptr> r) {
        if (!r.ok()) return fail_all(r.status());
        if ((*r)->peer_id() != node) {
          (*r)->Close(Status::Error(EPROTO, "wrong node"));
          return fail_all(Status::Error(EPROTO, "address of node " + std::to_string(node) +
                                                    " answered as node " +
                                                    std::to_string((*r)->peer_id())));
        }
        std::vector<Pending> q;
        bool again = false;
        {
          std::lock_guard<std::mutex> l(mu_);
          Peer& p = peers_[node];
          p.connecting = false;
          p.conn = *r;
          again = ++p.generation > 1;
          p.failed_at = {};
          q.swap(p.queue);
        }
        if (again && node != opts_.self_id) Rehold(node, *r);
        for (auto& pend : q)
          (*r)->Call(pend.type, std::move(pend.payload), std::move(pend.cb), pend.timeout);
      });
}

void RemoteBackend::OnClosed(uint32_t node, const Connection::Ptr& c) {
  // Pushed invalidations may have been lost with the connection.
  Changing();
  file_epoch_.fetch_add(1, std::memory_order_acq_rel);
  conn_epoch_.fetch_add(1, std::memory_order_acq_rel);
  bool resubscribe = false;
  {
    std::lock_guard<std::mutex> l(mu_);
    Peer& p = peers_[node];
    if (p.conn == c) p.conn.reset();
    resubscribe = node == opts_.self_id;
    // Until the next kWatch reply names the new mfsd's map, report all.
    if (resubscribe) own_interest_.reset();
  }
  if (resubscribe) {
    auto t = std::make_shared<asio::steady_timer>(io_, std::chrono::milliseconds(200));
    t->async_wait([this, t](boost::system::error_code e) {
      if (!e) WatchOwn();
    });
  } else {
    ReconnectWhileCached(node);
  }
  // Our view of that node's files may be stale now. Until we are connected
  // again attribute timeouts bound the staleness; then Rehold makes pushed
  // invalidations resume for every file we hold and drops what was cached.
}

void RemoteBackend::Rehold(uint32_t node, const Connection::Ptr& c) {
  std::vector<InodePtr> held = client_->table().Where(
      [node](const Inode& i) { return i.kind == InodeKind::kRemote && i.node == node; });
  for (size_t at = 0; at < held.size(); at += proto::kMaxHold) {
    auto batch = std::make_shared<std::vector<InodePtr>>(
        held.begin() + at, held.begin() + std::min(held.size(), at + proto::kMaxHold));
    std::string p;
    Writer w(&p);
    w.U32(static_cast<uint32_t>(batch->size()));
    for (const auto& i : *batch) w.Bytes(i->handle);
    // Dropped only once mfsd has the interest again: a change after that is
    // pushed, one before it is in what the kernel reads next.
    c->Call(proto::kHold, std::move(p), [this, c, batch](Result<Frame> r) {
      if (!r.ok() && c->closed()) return;  // gone again: the next connection does it
      if (!r.ok()) spdlog::warn("hold: {} (attribute timeouts bound staleness)", r.status().ToString());
      Changing();
      for (const auto& i : *batch) InvalidateCached(i, std::string());
    });
  }
  if (!held.empty()) spdlog::info("node {}: holding {} file(s) again", node, held.size());
}

void RemoteBackend::ReconnectWhileCached(uint32_t node) {
  auto t = std::make_shared<asio::steady_timer>(io_, std::chrono::seconds(1));
  t->async_wait([this, t, node](boost::system::error_code e) {
    if (e) return;
    {
      std::lock_guard<std::mutex> l(inval_mu_);
      if (stopping_) return;
    }
    {
      std::lock_guard<std::mutex> l(mu_);
      Peer& p = peers_[node];
      if (p.conn && !p.conn->closed()) return;  // connected: Rehold ran
      if (p.connecting) return ReconnectWhileCached(node);
    }
    if (!client_->table().Any(
            [node](const Inode& i) { return i.kind == InodeKind::kRemote && i.node == node; }))
      return;
    std::string p;
    Writer(&p).U32(0);  // an empty kHold: connects (and so reholds) if it can
    Call(node, proto::kHold, std::move(p), [this, node](Result<Frame> r) {
      if (!r.ok() && r.status().code() == EHOSTDOWN) ReconnectWhileCached(node);
    });
  });
}

void RemoteBackend::OnPush(uint32_t node, const Connection::Ptr& c, const Frame& f) {
  if (f.type() != proto::kInvalidate) return;
  // Sent as a call, it breaks a listing of ours: answered once it is dropped.
  const bool call = f.header.request_id != 0;
  Reader r(f.payload);
  std::string handle(r.Bytes());
  std::string key(r.Bytes());
  std::string name(r.Bytes());
  int64_t ctime = r.done() ? kCtimeUnknown : r.I64();
  if (!r.done()) {
    if (call) c->ReplyError(f, Malformed("invalidate"));
    return;
  }
  Changing();
  InodePtr inode = node == opts_.self_id
                       ? client_->table().Find("L" + std::to_string(opts_.self_id) + ":" + key)
                       : client_->table().Find(RemoteKey(node, handle));
  if (inode) InvalidateCached(inode, name, ctime);
  if (call) c->Reply(f, "");
}

void RemoteBackend::InvalidateCached(const InodePtr& inode, const std::string& name,
                                     int64_t ctime) {
  inode->change_gen.fetch_add(1, std::memory_order_acq_rel);  // voids its post_attr
  inode->no_caps = false;
  if (S_ISDIR(inode->type)) ForgetListing(inode);
  {
    std::lock_guard<std::mutex> l(inval_mu_);
    if (inval_queue_.size() > 100000) inval_queue_.clear();
    inval_queue_.push_back({inode->id, std::string(), ctime});
    if (!name.empty()) inval_queue_.push_back({inode->id, name, kCtimeUnknown});
  }
  inval_cv_.notify_one();
}

void RemoteBackend::InvalLoop() {
  std::unique_lock<std::mutex> l(inval_mu_);
  for (;;) {
    inval_cv_.wait(l, [this] { return stopping_ || !inval_queue_.empty(); });
    if (stopping_) return;
    PendingInval p = std::move(inval_queue_.front());
    inval_queue_.pop_front();
    l.unlock();
    if (inval_) {
      if (p.name.empty()) {
        inval_->InvalidateInode(p.ino, p.ctime);
      } else {
        inval_->InvalidateEntry(p.ino, p.name);
      }
    }
    l.lock();
  }
}

void RemoteBackend::LocalChanged(const std::string& key, const std::string& name, uint8_t flags,
                                 int fd) {
  Connection::Ptr c;
  bool listed;  // a name changed in a directory a peer may hold a listing of
  {
    std::lock_guard<std::mutex> l(mu_);
    // No peer holds the file (or the directory whose entry changed): nobody
    // to tell. The change is done; the map is read after it (see
    // interest_map.h for why that order makes skipping safe).
    if (own_interest_ && !own_interest_->MayBeHeld(key)) return;
    listed = !name.empty() && (!own_interest_ || own_interest_->MayBeHeld(ListingSlotKey(key)));
    auto it = peers_.find(opts_.self_id);
    if (it != peers_.end()) c = it->second.conn;
  }
  if (!c || c->closed()) return;
  std::string p;
  Writer w(&p);
  w.Bytes(key);
  w.Bytes(name);
  if (struct stat st; fd >= 0 && fstat(fd, &st) == 0) {
    w.U8(flags);
    w.I64(CtimeNs(st));
  } else if (flags) {
    w.U8(flags);
  }
  // Then the change is done only once mfsd has had the listings dropped
  // (file_service.h, PutListing).
  if (!listed) return c->Send(proto::kChanged, std::move(p));
  auto done = std::make_shared<std::promise<void>>();
  std::future<void> answered = done->get_future();
  c->Call(
      proto::kChanged, std::move(p), [done](Result<Frame>) { done->set_value(); },
      kListingReportTimeout);
  answered.wait();
}

// ---- operations -----------------------------------------------------------

// A request that starts with the caller's credentials, then `bytes`
// fields (handles, names); more fields are appended with a Writer.
template <class... S>
static std::string CallerRequest(const Caller& c, const S&... bytes) {
  std::string p;
  Writer w(&p);
  proto::PutCaller(w, c);
  (w.Bytes(bytes), ...);
  return p;
}

Result<EntryOut> RemoteBackend::DecodeEntry(uint32_t node, Reader& r) {
  std::string handle(r.Bytes());
  struct stat st = proto::GetStat(r);
  if (!r.ok() || handle.empty()) return Malformed("entry");
  InodePtr p = client_->table().Ref(RemoteKey(node, handle), [&](uint64_t id) {
    auto i = std::make_shared<Inode>(id, InodeKind::kRemote, node);
    i->type = st.st_mode & S_IFMT;
    i->handle = handle;
    return i;
  });
  if (!p) return Status::PosixError("inode table", ENOMEM);
  p->remote_ino = st.st_ino;
  st.st_ino = ShownIno(node, st.st_ino);
  return EntryOut{std::move(p), st};
}

Result<EntryOut> RemoteBackend::EntryReply(uint32_t node, Reader& r) {
  auto e = DecodeEntry(node, r);
  if (e.ok() && !r.done()) {
    client_->table().Forget(e->inode->id, 1);
    return Malformed("entry");
  }
  return e;
}

void RemoteBackend::EntryCall(uint32_t node, uint16_t type, std::string payload, Cb<EntryOut> cb) {
  Call(node, type, std::move(payload), [this, node, cb = std::move(cb)](Result<Frame> f) {
    if (!f.ok()) return cb(f.status());
    Reader r(f->payload);
    cb(EntryReply(node, r));
  });
}

// ---- directory listings ---------------------------------------------------

static std::atomic<uint64_t> g_listing_answers{0};

uint64_t RemoteBackend::listing_answers() {
  return g_listing_answers.load(std::memory_order_relaxed);
}

RemoteBackend::Known RemoteBackend::KnownName(const InodePtr& dir, const std::string& name) {
  const double timeout = client_->options().entry_timeout;
  if (timeout <= 0 || !S_ISDIR(dir->type)) return Known::kAsk;  // never cached: never asked
  // Not ENOENT but whatever the owner's file system says (ENAMETOOLONG),
  // and names a listing leaves out.
  if (name.size() > NAME_MAX || name == "." || name == "..") return Known::kAsk;
  auto now = std::chrono::steady_clock::now();
  std::lock_guard<std::mutex> l(dir->listing_mu);
  if (dir->listing && (dir->listing->conn_epoch != conn_epoch_.load(std::memory_order_acquire) ||
                       now >= dir->listing->until))
    dir->listing.reset();
  if (dir->listing) return dir->listing->names.count(name) ? Known::kPresent : Known::kAbsent;
  return now >= dir->listing_retry ? Known::kAskListing : Known::kAsk;
}

void RemoteBackend::TakeListing(const InodePtr& dir, std::shared_ptr<DirListing> listing,
                                uint64_t inval_before) {
  std::lock_guard<std::mutex> l(dir->listing_mu);
  // An invalidation or a lost connection since the lookup was sent: the
  // names may be older than what they voided.
  if (dir->listing_inval != inval_before ||
      listing->conn_epoch != conn_epoch_.load(std::memory_order_acquire))
    return;
  dir->listing.reset();  // its names leave the budget first
  if (!listing->Charge(static_cast<int64_t>(listing->names.size()))) return;
  listing->until = std::chrono::steady_clock::now() + EntryTimeout();
  dir->listing = std::move(listing);
}

void RemoteBackend::ListingChanged(const InodePtr& dir, const std::string& name, bool exists,
                                   uint64_t gen_before, uint64_t gen_after) {
  std::lock_guard<std::mutex> l(dir->listing_mu);
  DirListing* known = dir->listing.get();
  if (!known) return;
  // Ours was the only change since the names were known: they still are.
  if (gen_before == 0 || known->gen != gen_before || gen_after != gen_before + 1 ||
      known->conn_epoch != conn_epoch_.load(std::memory_order_acquire)) {
    dir->listing.reset();
    return;
  }
  if (exists) {
    if (!known->names.count(name)) {
      if (!known->Charge(1)) {
        dir->listing.reset();
        return;
      }
      known->names.insert(name);
    }
  } else if (known->names.erase(name)) {
    known->Uncharge(1);
  }
  known->gen = gen_after;
  known->until = std::chrono::steady_clock::now() + EntryTimeout();
}

void RemoteBackend::ForgetListing(const InodePtr& dir) {
  std::lock_guard<std::mutex> l(dir->listing_mu);
  ++dir->listing_inval;
  dir->listing.reset();
}

std::chrono::steady_clock::duration RemoteBackend::EntryTimeout() const {
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(client_->options().entry_timeout));
}

// The generations that end a changing reply (0, 0 if absent: no listing
// survives the change).
static std::pair<uint64_t, uint64_t> GetGens(Reader& r) {
  if (r.remaining() == 0) return {0, 0};
  uint64_t before = r.U64();
  return {before, r.U64()};
}

Result<EntryOut> RemoteBackend::MadeEntry(uint32_t node, const InodePtr& parent, Reader& r) {
  auto e = DecodeEntry(node, r);
  if (!e.ok()) ForgetListing(parent);  // made or not: unknown
  return e;
}

Status RemoteBackend::MadeName(const InodePtr& parent, const std::string& name, const EntryOut& e,
                               Reader& r, const char* what) {
  auto [before, after] = GetGens(r);
  if (!r.done()) {
    client_->table().Forget(e.inode->id, 1);
    ForgetListing(parent);
    return Malformed(what);
  }
  ListingChanged(parent, name, true, before, after);
  return Status::OK();
}

void RemoteBackend::StatCall(uint32_t node, uint16_t type, std::string payload,
                             Cb<struct stat> cb) {
  Call(node, type, std::move(payload), [node, type, cb = std::move(cb)](Result<Frame> f) {
    if (!f.ok()) return cb(f.status());
    Reader r(f->payload);
    struct stat st = proto::GetStat(r);
    if (!r.done()) return cb(Malformed(type == proto::kGetAttr ? "getattr" : "setattr"));
    st.st_ino = ShownIno(node, st.st_ino);
    cb(st);
  });
}

void RemoteBackend::DoneCall(uint32_t node, uint16_t type, std::string payload, DoneCb cb) {
  Call(node, type, std::move(payload), [cb = std::move(cb)](Result<Frame> f) {
    cb(f.ok() ? Status::OK() : f.status());
  });
}

void RemoteBackend::Remember(const InodePtr& inode, const struct stat& st, const Change& change) {
  if ((st.st_mode & S_IFMT) != inode->type || client_->options().attr_timeout <= 0) return;
  auto until = std::chrono::steady_clock::now() +
               std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                   std::chrono::duration<double>(client_->options().attr_timeout));
  std::lock_guard<std::mutex> l(inode->post_mu);
  if (S_ISDIR(st.st_mode)) {
    if (epoch_.load(std::memory_order_acquire) != change.epoch ||
        inflight_.load(std::memory_order_acquire) != 1)
      return;
    inode->post_epoch = change.epoch;
  } else if (S_ISREG(st.st_mode)) {
    if (change.inode != inode || file_epoch_.load(std::memory_order_acquire) != change.file_epoch ||
        structural_inflight_.load(std::memory_order_acquire) != 0 ||
        inode->change_gen.load(std::memory_order_acquire) != change.gen ||
        inode->changes_inflight.load(std::memory_order_acquire) != 1)
      return;
    inode->post_epoch = change.file_epoch;
    inode->post_gen = change.gen;
  } else {
    return;
  }
  inode->post_attr = st;
  inode->post_attr.st_ino = ShownIno(inode->node, st.st_ino);
  inode->post_until = until;
}

bool RemoteBackend::Remembered(const InodePtr& inode, struct stat* st) {
  std::lock_guard<std::mutex> l(inode->post_mu);
  if (inode->post_epoch == 0) return false;
  bool current = S_ISDIR(inode->post_attr.st_mode)
                     ? inode->post_epoch == epoch_.load(std::memory_order_acquire)
                     : inode->post_epoch == file_epoch_.load(std::memory_order_acquire) &&
                           inode->post_gen == inode->change_gen.load(std::memory_order_acquire);
  if (!current || std::chrono::steady_clock::now() >= inode->post_until) {
    inode->post_epoch = 0;
    return false;
  }
  *st = inode->post_attr;
  return true;
}

void RemoteBackend::RootEntry(uint32_t node, Cb<EntryOut> cb) {
  EntryCall(node, proto::kGetRoot, std::string(), std::move(cb));
}

void RemoteBackend::Lookup(const Caller& c, const InodePtr& parent, const std::string& name,
                           Cb<EntryOut> cb) {
  const Known known = KnownName(parent, name);
  if (known == Known::kAbsent) {
    g_listing_answers.fetch_add(1, std::memory_order_relaxed);
    return cb(Status::Error(ENOENT, "no such name (directory listing)"));
  }
  std::string p = CallerRequest(c, parent->handle, name);
  if (known != Known::kAskListing)
    return EntryCall(parent->node, proto::kLookup, std::move(p), std::move(cb));
  Writer(&p).U8(proto::kLookupListing);
  uint64_t inval_before;
  {
    std::lock_guard<std::mutex> l(parent->listing_mu);
    inval_before = parent->listing_inval;
  }
  auto listing = std::make_shared<DirListing>();  // shared: std::function is copyable
  listing->conn_epoch = conn_epoch_.load(std::memory_order_acquire);
  uint32_t node = parent->node;
  Call(node, proto::kLookup, std::move(p),
       [this, node, parent, name, inval_before, listing, cb = std::move(cb)](Result<Frame> f) {
         if (!f.ok()) {
           // The owner could not vouch for the names (too many, or not
           // held): do not ask again for a while.
           if (f.status().code() == ENOENT) {
             std::lock_guard<std::mutex> l(parent->listing_mu);
             parent->listing_retry = std::chrono::steady_clock::now() + kListingRetry;
           }
           return cb(f.status());
         }
         Reader r(f->payload);
         if (f->payload.size() < 4 || DecodeFixed32(f->payload.data()) != 0)
           return cb(EntryReply(node, r));
         // No handle: nothing has the name, and these are the names there are.
         r.Bytes();
         listing->gen = r.U64();
         uint32_t n = r.U32();
         if (!r.ok() || n > proto::kMaxListing) return cb(Malformed("lookup listing"));
         listing->names.reserve(n);
         for (uint32_t i = 0; i < n && r.ok(); ++i) listing->names.emplace(r.Bytes());
         if (!r.done() || listing->gen == 0 || listing->names.count(name))
           return cb(Malformed("lookup listing"));
         TakeListing(parent, listing, inval_before);
         cb(Status::Error(ENOENT, "no such name"));
       });
}

void RemoteBackend::GetAttr(const Caller&, const InodePtr& inode, FileHandle* fh,
                            Cb<struct stat> cb) {
  (void)fh;  // attributes by handle: valid whatever the open file's state
  if (struct stat st; Remembered(inode, &st)) return cb(st);
  std::string p;
  Writer w(&p);
  w.Bytes(inode->handle);
  w.U64(0);
  StatCall(inode->node, proto::kGetAttr, std::move(p), std::move(cb));
}

void RemoteBackend::SetAttr(const Caller& c, const InodePtr& inode, FileHandle* fh,
                            const SetAttrIn& in, Cb<struct stat> cb) {
  ChangePtr change = BeginChangeOf(inode);
  std::string p = CallerRequest(c, inode->handle);
  Writer w(&p);
  w.U64(fh ? fh->remote_fh.load() : 0);
  w.U32(in.valid);
  w.U32(in.mode);
  w.U32(in.uid);
  w.U32(in.gid);
  w.I64(in.size);
  w.I64(in.atime.tv_sec);
  w.U32(static_cast<uint32_t>(in.atime.tv_nsec));
  w.I64(in.mtime.tv_sec);
  w.U32(static_cast<uint32_t>(in.mtime.tv_nsec));
  StatCall(inode->node, proto::kSetAttr, std::move(p), Holding(std::move(change), std::move(cb)));
}

void RemoteBackend::MakeNode(const Caller& c, const InodePtr& parent, const std::string& name,
                             mode_t mode, dev_t rdev, const std::string& link, Cb<EntryOut> cb) {
  ChangePtr change = BeginChange();
  std::string p = CallerRequest(c, parent->handle, name);
  Writer w(&p);
  w.U32(mode);
  w.U64(rdev);
  w.Bytes(link);
  uint32_t node = parent->node;
  Call(node, proto::kMakeNode, std::move(p),
       [this, node, parent, name, change, cb = std::move(cb)](Result<Frame> f) {
         if (!f.ok()) {
           ForgetListing(parent);
           return cb(f.status());
         }
         Reader r(f->payload);
         auto e = MadeEntry(node, parent, r);
         if (!e.ok()) return cb(e.status());
         if (Status s = MadeName(parent, name, *e, r, "mknod"); !s.ok()) return cb(s);
         cb(std::move(e));
       });
}

void RemoteBackend::Link(const Caller& c, const InodePtr& inode, const InodePtr& newparent,
                         const std::string& name, Cb<EntryOut> cb) {
  ChangePtr change = BeginChange(inode);  // its nlink, and newparent
  std::string p = CallerRequest(c, inode->handle, newparent->handle, name);
  // A change of names that carries no generations: listings of the
  // directory taken while it is in flight are not kept, nor is one after.
  ForgetListing(newparent);
  EntryCall(inode->node, proto::kLink, std::move(p),
            Holding(change, [this, newparent, cb = std::move(cb)](Result<EntryOut> e) {
              ForgetListing(newparent);
              cb(std::move(e));
            }));
}

void RemoteBackend::Remove(const Caller& c, const InodePtr& parent, const std::string& name,
                           bool dir, DoneCb cb) {
  std::string p = CallerRequest(c, parent->handle, name);
  Writer w(&p);
  w.U8(dir ? 1 : 0);
  ChangePtr change = BeginChange(nullptr, /*structural=*/true);
  Call(parent->node, proto::kRemove, std::move(p),
       [this, parent, name, change, cb = std::move(cb)](Result<Frame> f) {
         if (!f.ok()) {
           ForgetListing(parent);
           return cb(f.status());
         }
         Reader r(f->payload);
         uint64_t before = 0, after = 0;
         if (r.remaining() > 0) {  // the directory's attributes afterwards
           struct stat st = proto::GetStat(r);
           std::tie(before, after) = GetGens(r);
           if (r.done()) Remember(parent, st, *change);
         }
         if (r.done()) {
           ListingChanged(parent, name, false, before, after);
         } else {
           ForgetListing(parent);
         }
         cb(Status::OK());
       });
}

void RemoteBackend::Rename(const Caller& c, const InodePtr& parent, const std::string& name,
                           const InodePtr& newparent, const std::string& newname, unsigned flags,
                           DoneCb cb) {
  ChangePtr change = BeginChange(nullptr, /*structural=*/true);
  std::string p = CallerRequest(c, parent->handle, name, newparent->handle, newname);
  Writer w(&p);
  w.U32(flags);
  ForgetListing(parent);  // as in Link
  ForgetListing(newparent);
  DoneCall(parent->node, proto::kRename, std::move(p),
           Holding(change, [this, parent, newparent, cb = std::move(cb)](Status s) {
             ForgetListing(parent);
             ForgetListing(newparent);
             cb(std::move(s));
           }));
}

void RemoteBackend::ReadLink(const Caller&, const InodePtr& inode, Cb<std::string> cb) {
  std::string p;
  Writer(&p).Bytes(inode->handle);
  Call(inode->node, proto::kReadLink, std::move(p), [cb = std::move(cb)](Result<Frame> f) {
    if (!f.ok()) return cb(f.status());
    Reader r(f->payload);
    std::string t(r.Bytes());
    if (!r.done()) return cb(Malformed("readlink"));
    cb(std::move(t));
  });
}

void RemoteBackend::Access(const Caller& c, const InodePtr& inode, int mask, DoneCb cb) {
  std::string p = CallerRequest(c, inode->handle);
  Writer w(&p);
  w.U32(static_cast<uint32_t>(mask));
  DoneCall(inode->node, proto::kAccess, std::move(p), std::move(cb));
}

void RemoteBackend::Open(const Caller& c, const InodePtr& inode, int flags,
                         Cb<std::unique_ptr<FileHandle>> cb) {
  std::string p = CallerRequest(c, inode->handle);
  Writer w(&p);
  w.U32(static_cast<uint32_t>(flags));
  uint32_t node = inode->node;
  ChangePtr change = (flags & O_TRUNC) ? BeginChangeOf(inode) : nullptr;  // truncates the file
  Call(node, proto::kOpen, std::move(p),
       [this, node, inode, flags, change, cb = std::move(cb)](Result<Frame> f) {
         if (!f.ok()) return cb(f.status());
         Reader r(f->payload);
         uint64_t id = r.U64();
         std::optional<struct stat> st;
         if (r.ok() && r.remaining() > 0) st = proto::GetStat(r);  // the file, opened
         if (!r.done()) return cb(Malformed("open"));
         // Close-to-open: this open's stat is newer than the attributes a
         // write of ours left (another node may have written since, its
         // Invalidate still on its way), and the open drops the kernel's if
         // they differ (RevalidateAtOpen): the GETATTR that follows must
         // reach the owner, not be answered from them.
         inode->change_gen.fetch_add(1, std::memory_order_acq_rel);
         auto fh = std::make_unique<FileHandle>();
         fh->inode = inode;
         fh->flags = flags;
         fh->remote_fh = id;
         if (st) {
           fh->open_ctime = CtimeNs(*st);
           fh->open_nlink = st->st_nlink;
         }
         {
           std::lock_guard<std::mutex> l(mu_);
           fh->remote_epoch = peers_[node].generation;
         }
         cb(std::move(fh));
       });
}

void RemoteBackend::Create(const Caller& c, const InodePtr& parent, const std::string& name,
                           mode_t mode, int flags, Cb<CreateOut> cb) {
  std::string p = CallerRequest(c, parent->handle, name);
  Writer w(&p);
  w.U32(mode);
  w.U32(static_cast<uint32_t>(flags));
  uint32_t node = parent->node;
  ChangePtr change = BeginChange(nullptr, /*structural=*/(flags & O_EXCL) == 0);
  Call(node, proto::kCreate, std::move(p),
       [this, node, flags, parent, name, change, cb = std::move(cb)](Result<Frame> f) {
         if (!f.ok()) {
           ForgetListing(parent);  // EEXIST where the listing had no name...
           return cb(f.status());
         }
         Reader r(f->payload);
         auto e = MadeEntry(node, parent, r);
         if (!e.ok()) return cb(e.status());
         uint64_t id = r.U64();
         std::optional<struct stat> dir_st;
         if (r.ok() && r.remaining() > 0) dir_st = proto::GetStat(r);  // the parent afterwards
         bool created = flags & O_EXCL;
         if (r.ok() && r.remaining() > 0) created = r.U8() != 0;  // this call made the file
         if (Status s = MadeName(parent, name, *e, r, "create"); !s.ok()) return cb(s);
         // A file just made has no security.capability: the kernel's check
         // before the first write is answered here, not by the owner.
         if (created) e->inode->no_caps = true;
         if (dir_st) Remember(parent, *dir_st, *change);
         auto fh = std::make_unique<FileHandle>();
         fh->inode = e->inode;
         fh->flags = flags;
         fh->remote_fh = id;
         {
           std::lock_guard<std::mutex> l(mu_);
           fh->remote_epoch = peers_[node].generation;
         }
         cb(CreateOut{std::move(*e), std::move(fh)});
       });
}

// Open files outlive connections: one opened on an older connection (the
// server restarted, or the link broke) is reopened by handle first.
void RemoteBackend::CallFile(FileHandle* fh, uint16_t type,
                             std::function<std::string(uint64_t)> build, FrameCb cb,
                             std::chrono::milliseconds timeout) {
  uint32_t node = fh->inode->node;
  bool current;
  {
    std::lock_guard<std::mutex> l(mu_);
    Peer& p = peers_[node];
    current = p.conn && !p.conn->closed() && p.generation == fh->remote_epoch;
  }
  if (current) return Call(node, type, build(fh->remote_fh), std::move(cb), timeout);
  std::string p;
  Writer w(&p);
  proto::PutCaller(w, Caller{});  // the open was permitted when first made
  w.Bytes(fh->inode->handle);
  w.U32(static_cast<uint32_t>(fh->flags & ~(O_TRUNC | O_CREAT | O_EXCL)));
  Call(node, proto::kOpen, std::move(p),
       [this, node, fh, type, build = std::move(build), cb = std::move(cb),
        timeout](Result<Frame> f) mutable {
         if (!f.ok()) return cb(f.status());
         Reader r(f->payload);
         uint64_t id = r.U64();
         if (r.ok() && r.remaining() > 0) proto::GetStat(r);  // the file's stat: not needed here
         if (!r.done()) return cb(Malformed("reopen"));
         fh->remote_fh = id;
         {
           std::lock_guard<std::mutex> l(mu_);
           fh->remote_epoch = peers_[node].generation;
         }
         Call(node, type, build(id), std::move(cb), timeout);
       });
}

void RemoteBackend::Read(FileHandle* fh, size_t size, off_t off, Cb<std::string> cb) {
  if (size > proto::kMaxIo) size = proto::kMaxIo;
  CallFile(
      fh, proto::kRead,
      [size, off](uint64_t id) {
        std::string p;
        Writer w(&p);
        w.U64(id);
        w.I64(off);
        w.U32(static_cast<uint32_t>(size));
        return p;
      },
      [cb = std::move(cb)](Result<Frame> f) {
        if (!f.ok()) return cb(f.status());
        cb(std::move(f->payload));
      });
}

void RemoteBackend::Write(FileHandle* fh, std::string data, off_t off, bool kill_suid,
                          Cb<size_t> cb) {
  if (data.size() > proto::kMaxIo) data.resize(proto::kMaxIo);
  auto shared = std::make_shared<std::string>(std::move(data));
  ChangePtr change = BeginChangeOf(fh->inode);
  InodePtr inode = fh->inode;
  CallFile(
      fh, proto::kWrite,
      [shared, off, kill_suid](uint64_t id) {
        std::string p;
        p.reserve(shared->size() + 25);
        Writer w(&p);
        w.U64(id);
        w.I64(off);
        w.Bytes(*shared);
        if (kill_suid) w.U8(1);  // optional: older owners never see it set
        return p;
      },
      [this, inode, change, cb = std::move(cb)](Result<Frame> f) {
        if (!f.ok()) return cb(f.status());
        Reader r(f->payload);
        uint32_t n = r.U32();
        std::optional<struct stat> st;
        if (r.ok() && r.remaining() > 0) st = proto::GetStat(r);  // the file afterwards
        if (!r.done()) return cb(Malformed("write"));
        // The kernel drops the file's attributes after a write and asks
        // again at the next stat: answered from these (see Remember).
        if (st) Remember(inode, *st, *change);
        cb(static_cast<size_t>(n));
      });
}

void RemoteBackend::Flush(FileHandle* fh, uint64_t lock_owner, DoneCb cb) {
  // Writes are synchronous on the owner, so a flush has nothing to report
  // unless it must drop the owner's record locks: skip the round trip.
  if (!fh->inode->locked) return cb(Status::OK());
  CallFile(
      fh, proto::kFlush,
      [lock_owner](uint64_t id) {
        std::string p;
        Writer w(&p);
        w.U64(id);
        w.U64(lock_owner);
        return p;
      },
      [cb = std::move(cb)](Result<Frame> f) { cb(f.ok() ? Status::OK() : f.status()); });
}

void RemoteBackend::Fsync(FileHandle* fh, bool datasync, DoneCb cb) {
  CallFile(
      fh, proto::kFsync,
      [datasync](uint64_t id) {
        std::string p;
        Writer w(&p);
        w.U64(id);
        w.U8(datasync ? 1 : 0);
        return p;
      },
      [cb = std::move(cb)](Result<Frame> f) { cb(f.ok() ? Status::OK() : f.status()); });
}

void RemoteBackend::Release(std::unique_ptr<FileHandle> fh) {
  uint32_t node = fh->inode->node;
  Connection::Ptr conn;
  {
    std::lock_guard<std::mutex> l(mu_);
    Peer& p = peers_[node];
    if (p.conn && !p.conn->closed() && p.generation == fh->remote_epoch) conn = p.conn;
  }
  if (!conn) return;  // the server dropped it with the old connection
  std::string p;
  Writer(&p).U64(fh->remote_fh);
  // One-way: nothing waits for a release (the kernel sends it after the
  // close returned), and an answer would only wake the io thread.
  conn->Send(proto::kRelease, std::move(p));
}

void RemoteBackend::OpenDir(const Caller& c, const InodePtr& inode,
                            Cb<std::unique_ptr<DirHandle>> cb) {
  // Permission to read the directory is checked now, as open(2) would.
  std::string p = CallerRequest(c, inode->handle);
  Writer w(&p);
  w.U32(R_OK);
  Call(inode->node, proto::kAccess, std::move(p), [inode, cb = std::move(cb)](Result<Frame> f) {
    if (!f.ok()) return cb(f.status());
    auto dh = std::make_unique<DirHandle>();
    dh->inode = inode;
    cb(std::move(dh));
  });
}

void RemoteBackend::ReadDir(const Caller& c, DirHandle* dh, uint64_t off, size_t max, bool plus,
                            Cb<std::vector<DirEntryOut>> cb) {
  std::string p = CallerRequest(c, dh->inode->handle);
  Writer w(&p);
  w.U64(off);
  w.U32(static_cast<uint32_t>(std::min<size_t>(max, 4096)));
  w.U8(plus ? 1 : 0);
  uint32_t node = dh->inode->node;
  Call(node, proto::kReadDir, std::move(p), [this, node, cb = std::move(cb)](Result<Frame> f) {
    if (!f.ok()) return cb(f.status());
    Reader r(f->payload);
    uint32_t n = r.U32();
    std::vector<DirEntryOut> out;
    for (uint32_t i = 0; i < n && r.ok(); ++i) {
      DirEntryOut e;
      e.name = std::string(r.Bytes());
      e.next_off = r.U64();
      e.type = r.U32();
      e.ino = ShownIno(node, r.U64());
      if (r.U8()) {
        auto ent = DecodeEntry(node, r);
        if (!ent.ok()) break;
        e.has_entry = true;
        e.entry = std::move(*ent);
        e.ino = e.entry.attr.st_ino;
      }
      out.push_back(std::move(e));
    }
    if (!r.done()) {
      for (auto& e : out)
        if (e.has_entry) client_->table().Forget(e.entry.inode->id, 1);
      return cb(Malformed("readdir"));
    }
    cb(std::move(out));
  });
}

void RemoteBackend::ReleaseDir(std::unique_ptr<DirHandle>) {}

void RemoteBackend::Forgotten(const InodePtr& inode) {
  // The owner keeps open the directories we hold (so that one removed
  // while a process here has it open stays reachable): let it go. Files
  // are not pinned, so nothing is sent for them.
  if (!S_ISDIR(inode->type)) return;
  Connection::Ptr conn;
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = peers_.find(inode->node);
    if (it != peers_.end() && it->second.conn && !it->second.conn->closed()) conn = it->second.conn;
  }
  if (!conn) return;  // its pins went with the old connection
  std::string p;
  Writer(&p).Bytes(inode->handle);
  conn->Send(proto::kForgetDir, std::move(p));
}

void RemoteBackend::StatFs(const Caller&, const InodePtr& inode, Cb<struct statvfs> cb) {
  std::string p;
  Writer(&p).Bytes(inode->handle);
  Call(inode->node, proto::kStatFs, std::move(p), [cb = std::move(cb)](Result<Frame> f) {
    if (!f.ok()) return cb(f.status());
    Reader r(f->payload);
    struct statvfs s = proto::GetStatvfs(r);
    if (!r.done()) return cb(Malformed("statfs"));
    cb(s);
  });
}

void RemoteBackend::SetXattr(const Caller& c, const InodePtr& inode, const std::string& name,
                             std::string value, int flags, DoneCb cb) {
  ChangePtr change = BeginChangeOf(inode);
  std::string p = CallerRequest(c, inode->handle, name, value);
  Writer w(&p);
  w.U32(static_cast<uint32_t>(flags));
  inode->no_caps = false;
  DoneCall(inode->node, proto::kSetXattr, std::move(p), Holding(change, std::move(cb)));
}

static void BytesReply(Result<Frame> f, const char* what, const Cb<std::string>& cb) {
  if (!f.ok()) return cb(f.status());
  Reader r(f->payload);
  std::string v(r.Bytes());
  if (!r.done()) return cb(Malformed(what));
  cb(std::move(v));
}

void RemoteBackend::GetXattr(const Caller& c, const InodePtr& inode, const std::string& name,
                             Cb<std::string> cb) {
  static const std::string kCaps = "security.capability";
  if (name == kCaps && inode->no_caps) return cb(Status::Error(ENODATA, kCaps));
  if (name == kCaps) {
    cb = [inode, cb = std::move(cb)](Result<std::string> r) {
      if (!r.ok() && r.status().code() == ENODATA) inode->no_caps = true;
      cb(std::move(r));
    };
  }
  std::string p = CallerRequest(c, inode->handle, name);
  Call(inode->node, proto::kGetXattr, std::move(p),
       [cb = std::move(cb)](Result<Frame> f) { BytesReply(std::move(f), "getxattr", cb); });
}

void RemoteBackend::ListXattr(const Caller& c, const InodePtr& inode, Cb<std::string> cb) {
  std::string p = CallerRequest(c, inode->handle);
  Call(inode->node, proto::kListXattr, std::move(p),
       [cb = std::move(cb)](Result<Frame> f) { BytesReply(std::move(f), "listxattr", cb); });
}

void RemoteBackend::RemoveXattr(const Caller& c, const InodePtr& inode, const std::string& name,
                                DoneCb cb) {
  ChangePtr change = BeginChangeOf(inode);
  std::string p = CallerRequest(c, inode->handle, name);
  inode->no_caps = false;
  DoneCall(inode->node, proto::kRemoveXattr, std::move(p), Holding(change, std::move(cb)));
}

void RemoteBackend::Fallocate(FileHandle* fh, int mode, off_t off, off_t len, DoneCb cb) {
  ChangePtr change = BeginChangeOf(fh->inode);
  CallFile(
      fh, proto::kFallocate,
      [mode, off, len](uint64_t id) {
        std::string p;
        Writer w(&p);
        w.U64(id);
        w.U32(static_cast<uint32_t>(mode));
        w.I64(off);
        w.I64(len);
        return p;
      },
      [change, cb = std::move(cb)](Result<Frame> f) { cb(f.ok() ? Status::OK() : f.status()); });
}

void RemoteBackend::CopyFileRange(FileHandle* in, off_t off_in, FileHandle* out, off_t off_out,
                                  size_t len, Cb<size_t> cb) {
  uint64_t in_id = in->remote_fh;
  bool same_epoch = in->remote_epoch == out->remote_epoch;
  if (!same_epoch) return cb(Status::Error(EXDEV, "files opened on different connections"));
  ChangePtr change = BeginChangeOf(out->inode);
  CallFile(
      out, proto::kCopyRange,
      [in_id, off_in, off_out, len](uint64_t out_id) {
        std::string p;
        Writer w(&p);
        w.U64(in_id);
        w.I64(off_in);
        w.U64(out_id);
        w.I64(off_out);
        w.U64(len);
        return p;
      },
      [change, cb = std::move(cb)](Result<Frame> f) {
        if (!f.ok()) return cb(f.status());
        Reader r(f->payload);
        uint64_t n = r.U64();
        if (!r.done()) return cb(Malformed("copy_file_range"));
        cb(static_cast<size_t>(n));
      });
}

static std::string LockPayload(uint64_t id, const LockIn& in) {
  std::string p;
  Writer w(&p);
  w.U64(id);
  w.U64(in.owner);
  w.U32(static_cast<uint32_t>(in.type));
  w.I64(in.start);
  w.I64(in.len);
  w.U32(static_cast<uint32_t>(in.pid));
  w.U8(in.wait ? 1 : 0);
  return p;
}

void RemoteBackend::GetLk(FileHandle* fh, const LockIn& in, Cb<LockIn> cb) {
  fh->inode->locked = true;
  CallFile(
      fh, proto::kGetLk, [in](uint64_t id) { return LockPayload(id, in); },
      [in, cb = std::move(cb)](Result<Frame> f) {
        if (!f.ok()) return cb(f.status());
        Reader r(f->payload);
        LockIn out = in;
        out.type = static_cast<int>(r.U32());
        out.start = r.I64();
        out.len = r.I64();
        out.pid = static_cast<pid_t>(r.U32());
        if (!r.done()) return cb(Malformed("getlk"));
        cb(out);
      });
}

// Makes a waiting lock request on `node` cancellable through `token`: the
// owner is sent kCancelWait for (file id, lock owner) on the connection
// the request went out on, and fails the wait with EINTR.
void RemoteBackend::CancellableWait(uint64_t token, uint32_t node, uint64_t file_id,
                                    uint64_t owner) {
  if (token == 0) return;
  Connection::Ptr c;
  {
    std::lock_guard<std::mutex> l(mu_);
    c = peers_[node].conn;
  }
  if (!c) return;
  std::weak_ptr<wire::Connection> weak = c;
  ops::LockWaits::SetCanceller(token, [weak, file_id, owner] {
    auto conn = weak.lock();
    if (!conn || conn->closed()) return;
    std::string p;
    Writer w(&p);
    w.U64(file_id);
    w.U64(owner);
    conn->Send(proto::kCancelWait, std::move(p));
  });
}

void RemoteBackend::SetLk(FileHandle* fh, const LockIn& in, DoneCb cb) {
  fh->inode->locked = true;
  uint32_t node = fh->inode->node;
  CallFile(
      fh, proto::kSetLk,
      [this, in, node](uint64_t id) {
        if (in.wait) CancellableWait(in.wait_token, node, id, in.owner);
        return LockPayload(id, in);
      },
      [cb = std::move(cb)](Result<Frame> f) { cb(f.ok() ? Status::OK() : f.status()); },
      in.wait ? kLockWait : std::chrono::milliseconds(0));
}

void RemoteBackend::Flock(FileHandle* fh, uint64_t owner, int op, uint64_t wait_token, DoneCb cb) {
  uint32_t node = fh->inode->node;
  CallFile(
      fh, proto::kFlock,
      [this, owner, op, node, wait_token](uint64_t id) {
        CancellableWait(wait_token, node, id, owner);
        std::string p;
        Writer w(&p);
        w.U64(id);
        w.U64(owner);
        w.U32(static_cast<uint32_t>(op));
        return p;
      },
      [cb = std::move(cb)](Result<Frame> f) { cb(f.ok() ? Status::OK() : f.status()); },
      (op & LOCK_NB) ? std::chrono::milliseconds(0) : kLockWait);
}

}  // namespace mfs::client

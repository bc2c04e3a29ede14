// RemoteBackend: /mfs/<id>/... for every node but this one.
//
// Each operation becomes one request to the owning node's file service
// (mfs/client/fs_protocol.h) over an authenticated wire::Connection (role
// kClient, our node id, bound to our node address); the FUSE request is
// answered from the reply callback, so no FUSE thread ever waits on the
// network. Connections are made on first use and remade after a failure.
//
// Failures: while a node is unreachable every operation on its files fails
// at once with EHOSTDOWN (a dead node never hangs a caller beyond the
// connect/handshake timeout); when it is back, the next operation
// reconnects. Inodes are named by server handles that survive an mfsd
// restart, and open files are reopened by handle on the new connection, so
// open files keep working without a remount (their record locks do not
// survive: documented in mfs(7)).
//
// Coherence: the server pushes kInvalidate for files this node holds; they
// are handed to the Invalidator on a separate thread (never from a network
// thread that a FUSE request may be waiting on). The same channel, opened to
// this node's own mfsd with kWatch, reports changes remote peers make to
// our export (the fast path caches it), and LocalChanged() tells our mfsd
// about changes the fast path made -- only those to files a peer may hold,
// as mfsd's InterestMap (named in the kWatch reply) says.
//
// Thread-safe. Lock order: mu_ (peers) before nothing; inval_mu_ is a leaf.
#pragma once

#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "mfs/base/asio.h"
#include "mfs/base/coding.h"
#include "mfs/client/backend.h"
#include "mfs/client/interest_map.h"
#include "mfs/wire/connection.h"

namespace mfs::client {

class Client;

// Receives pushed invalidations (implemented by the FUSE layer).
class Invalidator {
 public:
  virtual ~Invalidator() = default;
  // `ctime`: the file's change time after the change (kCtimeUnknown: not
  // known), for skipping one an open here already saw.
  virtual void InvalidateInode(uint64_t ino, int64_t ctime) = 0;
  virtual void InvalidateEntry(uint64_t parent, const std::string& name) = 0;
};

struct RemoteOptions {
  uint32_t self_id = 0;
  std::string address = "127.0.0.1";  // our node address: source of connections
  uint16_t port = 7420;               // peers' port when an address has none
  std::string secret_file;
  std::vector<std::string> peers;
  std::chrono::milliseconds call_timeout{10000};
  std::chrono::milliseconds connect_timeout{2000};
  std::chrono::milliseconds retry_after{1000};  // fail fast this long after a failure
  // Our mfsd's InterestMap ("" = none: every local change is reported).
  std::string interest_map;
  // Our own InterestMap (LocalBackend::SetHeldMap), named in kWatch so that
  // mfsd pushes only changes of files our kernel holds: the pid in its
  // file name (InterestMap::MountPathFor) and its id. 0 = none.
  uint32_t held_map_pid = 0;
  uint64_t held_map_id = 0;
};

class RemoteBackend : public Backend {
 public:
  static Result<std::unique_ptr<RemoteBackend>> Create(Client* client, const RemoteOptions& opts);
  ~RemoteBackend() override;

  // Starts the network threads and the invalidation thread; subscribes to
  // our own mfsd's change feed. REQUIRES: called once, after any fork.
  Status Start(Invalidator* inval);
  // Before Start(): our own InterestMap, named in kWatch (RemoteOptions).
  void SetHeldMap(uint32_t pid, uint64_t id) {
    opts_.held_map_pid = pid;
    opts_.held_map_id = id;
  }
  void Stop();
  // Lookups answered ENOENT from a directory listing, by every backend of
  // this process (user.mfs.requests).
  static uint64_t listing_answers();

  // /mfs/<node> itself.
  void RootEntry(uint32_t node, Cb<EntryOut> cb);
  // The fast path changed file `key` (st_dev:st_ino), and maybe `name` in
  // it; `flags`: proto::ChangedFlags, for a file that lost a name. `fd`
  // (-1 = none): the file, stated for the change time the report carries
  // when a peer holds it.
  void LocalChanged(const std::string& key, const std::string& name, uint8_t flags = 0,
                    int fd = -1);

  void Lookup(const Caller&, const InodePtr& parent, const std::string& name,
              Cb<EntryOut> cb) override;
  void GetAttr(const Caller&, const InodePtr& inode, FileHandle* fh, Cb<struct stat> cb) override;
  void SetAttr(const Caller&, const InodePtr& inode, FileHandle* fh, const SetAttrIn& in,
               Cb<struct stat> cb) override;
  void MakeNode(const Caller&, const InodePtr& parent, const std::string& name, mode_t mode,
                dev_t rdev, const std::string& link, Cb<EntryOut> cb) override;
  void Link(const Caller&, const InodePtr& inode, const InodePtr& newparent,
            const std::string& name, Cb<EntryOut> cb) override;
  void Remove(const Caller&, const InodePtr& parent, const std::string& name, bool dir,
              DoneCb cb) override;
  void Rename(const Caller&, const InodePtr& parent, const std::string& name,
              const InodePtr& newparent, const std::string& newname, unsigned flags,
              DoneCb cb) override;
  void ReadLink(const Caller&, const InodePtr& inode, Cb<std::string> cb) override;
  void Access(const Caller&, const InodePtr& inode, int mask, DoneCb cb) override;
  void Open(const Caller&, const InodePtr& inode, int flags,
            Cb<std::unique_ptr<FileHandle>> cb) override;
  void Create(const Caller&, const InodePtr& parent, const std::string& name, mode_t mode,
              int flags, Cb<CreateOut> cb) override;
  void Read(FileHandle* fh, size_t size, off_t off, Cb<std::string> cb) override;
  void Write(FileHandle* fh, std::string data, off_t off, bool kill_suid,
             Cb<size_t> cb) override;
  void Flush(FileHandle* fh, uint64_t lock_owner, DoneCb cb) override;
  void Fsync(FileHandle* fh, bool datasync, DoneCb cb) override;
  void Release(std::unique_ptr<FileHandle> fh) override;
  void OpenDir(const Caller&, const InodePtr& inode, Cb<std::unique_ptr<DirHandle>> cb) override;
  void ReadDir(const Caller&, DirHandle* dh, uint64_t off, size_t max, bool plus,
               Cb<std::vector<DirEntryOut>> cb) override;
  void ReleaseDir(std::unique_ptr<DirHandle> dh) override;
  void Forgotten(const InodePtr& inode) override;
  void StatFs(const Caller&, const InodePtr& inode, Cb<struct statvfs> cb) override;
  void SetXattr(const Caller&, const InodePtr& inode, const std::string& name, std::string value,
                int flags, DoneCb cb) override;
  void GetXattr(const Caller&, const InodePtr& inode, const std::string& name,
                Cb<std::string> cb) override;
  void ListXattr(const Caller&, const InodePtr& inode, Cb<std::string> cb) override;
  void RemoveXattr(const Caller&, const InodePtr& inode, const std::string& name,
                   DoneCb cb) override;
  void Fallocate(FileHandle* fh, int mode, off_t off, off_t len, DoneCb cb) override;
  void CopyFileRange(FileHandle* in, off_t off_in, FileHandle* out, off_t off_out, size_t len,
                     Cb<size_t> cb) override;
  void GetLk(FileHandle* fh, const LockIn& in, Cb<LockIn> cb) override;
  void SetLk(FileHandle* fh, const LockIn& in, DoneCb cb) override;
  void Flock(FileHandle* fh, uint64_t owner, int op, uint64_t wait_token, DoneCb cb) override;

 private:
  RemoteBackend(Client* client, const RemoteOptions& opts, std::string secret);

  using FrameCb = std::function<void(Result<wire::Frame>)>;
  // Sends one request to `node`, connecting first if needed.
  void Call(uint32_t node, uint16_t type, std::string payload, FrameCb cb,
            std::chrono::milliseconds timeout = std::chrono::milliseconds(0));
  // Calls with an open file: reopens it first if its connection is gone.
  void CancellableWait(uint64_t token, uint32_t node, uint64_t file_id, uint64_t owner);
  void CallFile(FileHandle* fh, uint16_t type, std::function<std::string(uint64_t fh)> build,
                FrameCb cb, std::chrono::milliseconds timeout = std::chrono::milliseconds(0));
  void Connect(uint32_t node);
  Result<wire::tcp::endpoint> EndpointOf(uint32_t node);
  void OnPush(uint32_t node, const wire::Connection::Ptr& c, const wire::Frame& f);
  void OnClosed(uint32_t node, const wire::Connection::Ptr& c);
  // After a lost connection to `node`: tells its mfsd (kHold) which of its
  // files we still cache, then drops what the kernel cached of them (what
  // changed while we were away was not pushed to us).
  void Rehold(uint32_t node, const wire::Connection::Ptr& c);
  // Reconnects to `node` every second while we cache any of its files and
  // no request of ours does, so that pushed invalidations resume.
  void ReconnectWhileCached(uint32_t node);
  // Voids what we and the kernel cached of `inode` (a pushed change;
  // `ctime`: the file's change time after it, if the owner sent one).
  void InvalidateCached(const InodePtr& inode, const std::string& name,
                        int64_t ctime = kCtimeUnknown);
  Result<EntryOut> DecodeEntry(uint32_t node, Reader& r);
  // DecodeEntry of a whole reply.
  Result<EntryOut> EntryReply(uint32_t node, Reader& r);

  // Directory listings (docs/wire-fs.md). The kernel looks every new name
  // up before it creates it, and a remote lookup that finds nothing is a
  // round trip the create right after it cannot share. So a lookup that
  // misses in a directory whose names we do not know asks for them
  // (kLookupListing); the owner sends them with the directory's generation
  // when it can vouch for them (we hold the directory, so every change of
  // its names by anyone else is pushed to us; at most kMaxListing names).
  // While they are known, a lookup of any other name is answered ENOENT
  // here. They are kept up to date by our own creates, mknods and removes,
  // whose replies carry the generation before and after (so that no
  // change came between), and dropped by any pushed invalidation of the
  // directory, by our own renames and links there, by any failed change
  // there, by a lost connection, and entry_timeout after they were last
  // confirmed. A change by anyone else breaks them before it completes:
  // its invalidation comes as a call, answered (OnPush) once they are
  // dropped. entry_timeout 0 turns them off. All listings of the process
  // together hold at most DirListing::kMaxNames names.
  enum class Known { kAbsent, kPresent, kAsk, kAskListing };
  Known KnownName(const InodePtr& dir, const std::string& name);
  void TakeListing(const InodePtr& dir, std::shared_ptr<DirListing> listing, uint64_t inval_before);
  // Our own change of `name` in `dir` (now `exists`), with the owner's
  // generations of `dir` before and after it (0: none).
  void ListingChanged(const InodePtr& dir, const std::string& name, bool exists,
                      uint64_t gen_before, uint64_t gen_after);
  void ForgetListing(const InodePtr& dir);
  // The entry that starts a reply to a request that made a name in
  // `parent` (if malformed, the listing is forgotten), and the end of it
  // that made `name` as `e`: the
  // generations, then nothing (else `e` and the listing are forgotten).
  Result<EntryOut> MadeEntry(uint32_t node, const InodePtr& parent, Reader& r);
  Status MadeName(const InodePtr& parent, const std::string& name, const EntryOut& e, Reader& r,
                  const char* what);
  std::chrono::steady_clock::duration EntryTimeout() const;
  static constexpr std::chrono::seconds kListingRetry{1};
  // Longer than mfsd waits for the breaks (kListingBreakTimeout).
  static constexpr std::chrono::milliseconds kListingReportTimeout{3000};
  void EntryCall(uint32_t node, uint16_t type, std::string payload, Cb<EntryOut> cb);
  void DoneCall(uint32_t node, uint16_t type, std::string payload, DoneCb cb);
  // A call answered by a stat (GetAttr, SetAttr), st_ino as shown.
  void StatCall(uint32_t node, uint16_t type, std::string payload, Cb<struct stat> cb);
  void WatchOwn();
  void InvalLoop();
  // Post-operation attributes (Inode::post_attr) of directories (after our
  // create or remove in them) and of regular files (after our write).
  // Every request that may change a file's or directory's attributes holds
  // a Change from before it is sent until its reply has been handled.
  // Directories: a Change bumps the epoch, which voids every remembered
  // set; Remember() keeps a directory's `st` only if no other change began
  // after `change` and none begun earlier is still in flight (the owner's
  // workers may run requests in any order, so the reply of a later change
  // can carry attributes from before an earlier one ran).
  // Regular files, whose attributes are read long after the write (a
  // create-heavy program writes many files, then stats them): a Change
  // names the file it changes (`file`, its change_gen is bumped) or, when
  // it may touch files it cannot name (remove, rename, create without
  // O_EXCL: `structural`), bumps the file epoch. A change of a regular
  // file alone (BeginChangeOf) leaves the directories' epoch alone. A file's `st` is kept
  // only if neither moved since `change` began, no other change of that
  // file and no structural change is in flight.
  // Pushed invalidations and lost connections bump the epochs alone.
  struct Change {
    Change(RemoteBackend* b, InodePtr file, bool structural, bool dirs)
        : backend(b), inode(std::move(file)), structural(structural), dirs(dirs) {
      if (dirs) {
        b->inflight_.fetch_add(1, std::memory_order_acq_rel);
        epoch = b->Changing();
      }
      if (structural) {
        b->structural_inflight_.fetch_add(1, std::memory_order_acq_rel);
        b->file_epoch_.fetch_add(1, std::memory_order_acq_rel);
      }
      file_epoch = b->file_epoch_.load(std::memory_order_acquire);
      if (inode) {
        inode->changes_inflight.fetch_add(1, std::memory_order_acq_rel);
        gen = inode->change_gen.fetch_add(1, std::memory_order_acq_rel) + 1;
      }
    }
    ~Change() {
      if (inode) inode->changes_inflight.fetch_sub(1, std::memory_order_acq_rel);
      if (structural) backend->structural_inflight_.fetch_sub(1, std::memory_order_acq_rel);
      if (dirs) backend->inflight_.fetch_sub(1, std::memory_order_acq_rel);
    }
    Change(const Change&) = delete;
    Change& operator=(const Change&) = delete;
    RemoteBackend* backend;
    InodePtr inode;
    bool structural, dirs;
    uint64_t epoch = 0, file_epoch = 0, gen = 0;  // epoch 0: never a directory's
  };
  using ChangePtr = std::shared_ptr<Change>;
  // `dirs`: may change a directory's attributes (false only for changes of
  // a regular file's data or attributes: writes, truncation, chmod...).
  ChangePtr BeginChange(InodePtr file = nullptr, bool structural = false, bool dirs = true) {
    return std::make_shared<Change>(this, std::move(file), structural, dirs);
  }
  // A change of `inode` itself, of its data or attributes (no names).
  ChangePtr BeginChangeOf(const InodePtr& inode) {
    return BeginChange(inode, false, !S_ISREG(inode->type));
  }
  // `cb` wrapped so that it holds `change` until it is destroyed.
  template <class F>
  static auto Holding(ChangePtr change, F cb) {
    return [change = std::move(change), cb = std::move(cb)](auto&&... a) mutable {
      cb(std::forward<decltype(a)>(a)...);
    };
  }
  uint64_t Changing() { return epoch_.fetch_add(1, std::memory_order_acq_rel) + 1; }
  void Remember(const InodePtr& inode, const struct stat& st, const Change& change);
  bool Remembered(const InodePtr& inode, struct stat* st);

  Client* client_;
  RemoteOptions opts_;
  std::string secret_;
  boost::asio::io_context io_;
  std::unique_ptr<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work_;
  std::vector<std::thread> threads_;

  struct Pending {
    uint16_t type;
    std::string payload;
    FrameCb cb;
    std::chrono::milliseconds timeout;
  };
  struct Peer {
    wire::Connection::Ptr conn;
    uint64_t generation = 0;  // bumped on every new connection
    bool connecting = false;
    std::chrono::steady_clock::time_point failed_at{};
    Status last_error;
    std::vector<Pending> queue;
  };
  std::mutex mu_;
  std::map<uint32_t, Peer> peers_;
  // Our mfsd's InterestMap while we are subscribed to it (guarded by mu_).
  std::shared_ptr<const InterestMap> own_interest_;
  std::atomic<bool> watched_{false};  // subscribed to our mfsd once already

  Invalidator* inval_ = nullptr;
  std::mutex inval_mu_;
  std::condition_variable inval_cv_;
  struct PendingInval {
    uint64_t ino;
    std::string name;  // "" = the inode
    int64_t ctime;
  };
  std::deque<PendingInval> inval_queue_;
  bool stopping_ = false;
  std::thread inval_thread_;
  std::atomic<uint64_t> epoch_{1};
  std::atomic<int64_t> inflight_{0};  // Changes alive
  std::atomic<uint64_t> file_epoch_{1};
  std::atomic<int64_t> structural_inflight_{0};
  std::atomic<uint64_t> conn_epoch_{1};  // bumped by every lost connection
};

}  // namespace mfs::client

// FileService: this node's export, served to authenticated peers.
//
// Lives in mfsd, registered for frame types 64..191 (see
// mfs/client/fs_protocol.h and docs/wire-fs.md). Each request is decoded on
// the network thread and executed on a worker pool — disk work never runs on
// the network threads — under the caller's credentials (ScopedCreds), with
// the same local_ops the FUSE fast path uses. Files are named by HandleCodec
// handles (kernel file handles + MAC), so a client keeps working across an
// mfsd restart; open files are numbered per server instance and reopened by
// the client after a reconnect.
//
// Coherence: the service remembers which connections hold which files
// (every handle it hands out registers interest) and, after any change it
// makes or is told about (kChanged from the local mount), sends kInvalidate
// to every other interested connection. A connection that sends kWatch gets
// every change (the node's own mount, which caches this export directly).
// The counts of interest per file are mirrored in an InterestMap the mount
// reads, so that it reports only the changes some peer may care about.
//
// Thread-safe. Lock order: mu_ (open files, interest) is a leaf.
#pragma once

#include <atomic>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>

#include "mfs/base/asio.h"
#include "mfs/base/status.h"
#include "mfs/base/unique_fd.h"
#include "mfs/client/interest_map.h"
#include "mfs/client/local_ops.h"
#include "mfs/server/handles.h"
#include "mfs/wire/connection.h"

namespace mfs::server {

struct FileServiceOptions {
  uint32_t self_id = 0;
  std::string export_path;
  std::string secret;
  unsigned threads = 4;
  // The InterestMap shared with this node's mount ("" = none: the mount
  // then reports every change it makes).
  std::string interest_map;
  // Directories peers hold kept open (FileService::PinnedDir); also at most
  // a quarter of the descriptor limit.
  size_t max_pinned_dirs = 4096;
};

class FileService {
 public:
  static Result<std::unique_ptr<FileService>> Create(const FileServiceOptions& opts);
  ~FileService();
  FileService(const FileService&) = delete;
  FileService& operator=(const FileService&) = delete;

  // Frame handler for types 64..191.
  void Handle(const wire::Connection::Ptr& conn, wire::Frame frame);
  // A connection went away: its open files, locks and interest go too.
  // (mfsd's Daemon has no close hook yet, so AddFile also sweeps files of
  // connections that are gone.)
  void OnClose(const wire::Connection::Ptr& conn);
  // Stops the workers (pending requests finish first).
  void Stop();

  size_t open_files() const;
  // Files with registered interest, and connections watching everything.
  size_t interest_size() const;
  // Directories held open for peers (PinnedDir).
  size_t pinned_dirs() const;
  // The export gives every change after a stat a new change time (probed
  // at creation: ops::HasFineChangeTimes); pushes then carry it.
  bool fine_change_times() const { return fine_ctime_; }
  // Change reports (kChanged) received from this node's mount.
  uint64_t changes_reported() const { return changes_reported_.load(std::memory_order_relaxed); }
  // Invalidations pushed to this node's own mount (peers' changes of files
  // its kernel may hold).
  uint64_t own_mount_pushes() const { return own_mount_pushes_.load(std::memory_order_relaxed); }
  // Directory listings sent, and broken by a change (PutListing).
  uint64_t listings_sent() const { return listings_sent_.load(std::memory_order_relaxed); }
  uint64_t listing_breaks() const { return listing_breaks_.load(std::memory_order_relaxed); }

 private:
  explicit FileService(const FileServiceOptions& opts);
  void Execute(const wire::Connection::Ptr& conn, const wire::Frame& frame);
  Status Dispatch(const wire::Connection::Ptr& conn, const wire::Frame& frame, std::string* out);

  struct OpenFile {
    UniqueFd fd;
    std::string key;  // FileKey of the backing file
    const wire::Connection* owner = nullptr;
    std::weak_ptr<wire::Connection> owner_conn;
    UniqueFd path_fd;  // O_PATH, for lock fds
  };
  Result<std::shared_ptr<OpenFile>> File(uint64_t fh);
  uint64_t AddFile(const wire::Connection::Ptr& conn, UniqueFd fd, UniqueFd path_fd);

  // Entry reply: handle + stat, registering the connection's interest.
  Status PutEntry(const wire::Connection::Ptr& conn, int fd, std::string* out);
  // Returns whether the connection is a peer that was not yet interested
  // (its interest is then in the InterestMap, and the caller stats again).
  bool NoteInterest(const wire::Connection::Ptr& conn, const std::string& key,
                    const std::string& handle);
  // Does `conn`'s interest go into the InterestMap? (Every peer's but our
  // own mount's: the map tells that mount whom its changes concern.)
  bool Counted(const wire::Connection* conn) const { return conn->peer_id() != opts_.self_id; }
  // Tells every interested connection but `from` that a file (and maybe a
  // name in it) changed; with `peers` false only our own mount. `ctime`:
  // the file's change time after the change, sent along when this export
  // has fine-grained change times (a client skips the invalidation of a
  // change its newest open already saw: inode_table.h, opened_ctime).
  // Returns the directory's generation after a change of `name` in it
  // (0: none is kept, see DirGen). A connection that holds a listing of
  // the directory is sent the push as a call, and Changed returns once
  // every such one has answered (it dropped the listing) or timed out;
  // with `later`, it returns at once and hands the wait over.
  class ListingBreaks;
  uint64_t Changed(const wire::Connection* from, const std::string& key, const std::string& name,
                   bool peers = true, int64_t ctime = client::kCtimeUnknown,
                   std::shared_ptr<ListingBreaks>* later = nullptr);
  uint64_t ChangedFd(const wire::Connection* from, int fd, const std::string& name = "");
  // kInvalidate's payload (the change time only where it is fine-grained).
  std::string InvalidateMessage(const std::string& handle, const std::string& key,
                                const std::string& name, int64_t ctime) const;
  // Directory generations (docs/wire-fs.md, "Directory listings"): for a
  // directory `conn` holds, a number that every change of a name in it that
  // this service makes or is told of (Changed with a name) bumps by one;
  // 0 if `conn` does not hold it (its changes might not reach it). A
  // client that knows a directory's names at generation g and is told of
  // a change of its own that went from g to g + 1 knows them still.
  // Generations of a directory nobody holds are dropped with its interest;
  // a new record starts at a base no earlier one used.
  uint64_t DirGen(const wire::Connection* conn, const std::string& key);
  uint64_t DirGenOf(int dirfd, const wire::Connection* conn);
  // After a lookup found nothing: the directory's names and generation
  // (kLookupListing), if `conn` holds it and it has at most kMaxListing
  // names. Returns false when it cannot vouch for them.
  //
  // A connection sent a listing holds it until a change of the
  // directory's names by anyone else breaks it (Changed): so that no
  // change completes while a node may still answer lookups from names
  // older than it (as AFS breaks callbacks). The owner's own mount learns
  // from the InterestMap slot of client::ListingSlotKey(key) that its
  // reports of such changes must wait for mfsd's answer.
  bool PutListing(const wire::Connection::Ptr& conn, int dirfd, std::string* out);
  // kChanged (on the network thread): answered, when it is a call, once
  // the listings it breaks are.
  void OnChanged(const wire::Connection::Ptr& conn, const wire::Frame& frame);
  // After a remove or a rename over it, `victim` (opened before): its
  // invalidation is pushed, except to peers for a directory they could not
  // stat again (its handle opens only while pinned, below). A file with no
  // name left and no open file here can change no more: who held it is
  // forgotten (ForgetKey; its interest records would otherwise pile up
  // until the table overflows).
  void Removed(const wire::Connection* from, int victim);
  void ForgetKey(const std::string& key);

  // Directories peers hold, kept open here. A removed directory's kernel
  // handle opens only while its dentry lives (it has no path to reconnect
  // through), but a peer may still have it open or as its cwd and must see
  // what a native file system shows -- st_nlink 0, ENOENT for names in it
  // and for a listing -- rather than ESTALE. The pin keeps the dentry;
  // OpenHandle falls back to the pin's fd where the handle still fails. At
  // most max_pinned_ (a quarter of the fd limit, up to 4096), the least
  // recently handed out going first. A pin goes when the last connection
  // holding it says it forgot the directory (kForgetDir) or closes, or by
  // this bound; a removed directory stays on the disk as an orphan until
  // then. Unpinned, a removed directory answers ESTALE, and
  // its removal is not pushed to peers (they keep their cached attributes
  // until they expire).
  struct PinnedDir {
    UniqueFd fd;
    std::string key;
    std::set<const wire::Connection*> holders;
    std::list<std::string>::iterator lru;  // in pinned_lru_
  };
  void PinDir(const wire::Connection* conn, const std::string& handle, const std::string& key,
              int fd);
  bool DirPinned(const std::string& key) const;  // mu_ not held
  Result<UniqueFd> OpenHandle(std::string_view handle);

  FileServiceOptions opts_;
  HandleCodec handles_;
  UniqueFd root_;
  bool fine_ctime_ = false;
  boost::asio::thread_pool pool_;
  client::ops::OfdLockTable locks_;

  mutable std::mutex mu_;
  // Lock requests waiting now: (connection, file id, lock owner) -> the
  // LockWaits token that cancels them (kCancelWait, connection closed).
  struct WaitKey {
    const wire::Connection* conn;
    uint64_t fh, owner;
    auto operator<=>(const WaitKey&) const = default;
  };
  std::mutex waits_mu_;  // a leaf lock
  std::multimap<WaitKey, uint64_t> waits_;
  void CancelWaits(const wire::Connection* conn, const uint64_t* fh, uint64_t owner);
  uint64_t next_fh_ = 1;
  uint64_t adds_since_sweep_ = 0;
  std::unordered_map<uint64_t, std::shared_ptr<OpenFile>> files_;
  using PinMap = std::unordered_map<std::string, PinnedDir>;
  PinMap pinned_;                                             // handle -> directory
  std::unordered_map<std::string, std::string> pinned_keys_;  // its FileKey -> handle
  std::list<std::string> pinned_lru_;                         // handles, most recent first
  // mu_ held. Unpin drops the pin; DropHolder drops `conn` from its holders
  // and the pin with the last. Both return the next pin.
  PinMap::iterator Unpin(PinMap::iterator it);
  PinMap::iterator DropHolder(PinMap::iterator it, const wire::Connection* conn);
  size_t max_pinned_;
  struct Watcher {
    std::weak_ptr<wire::Connection> conn;
    std::string handle;
    bool listed = false;  // holds a listing of the directory (PutListing)
  };
  // file key -> connection -> handle it knows the file by
  std::unordered_map<std::string, std::map<const wire::Connection*, Watcher>> interest_;
  // Erasing a watcher from interest_ (mu_ held): its slots in interest_map_ go.
  void Unwatched(const std::string& key, const wire::Connection* c, const Watcher& w);
  struct AllWatcher {
    std::weak_ptr<wire::Connection> conn;
    // Our own mount's InterestMap (kWatch named it): push only the changes
    // of files its kernel holds. Null: push every change.
    std::shared_ptr<const client::InterestMap> held;
  };
  std::map<const wire::Connection*, AllWatcher> watch_all_;
  client::InterestMap interest_map_;  // mirrors interest_ and watch_all_ of counted peers
  // DirGen: directory key -> generation, for keys in interest_ only.
  std::unordered_map<std::string, uint64_t> dir_gen_;
  uint64_t next_gen_base_ = uint64_t{1} << 32;
  std::atomic<uint64_t> changes_reported_{0};
  std::atomic<uint64_t> own_mount_pushes_{0};
  std::atomic<uint64_t> listings_sent_{0};
  std::atomic<uint64_t> listing_breaks_{0};
  std::atomic<bool> stopped_{false};
};

}  // namespace mfs::server

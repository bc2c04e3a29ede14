// InodeTable: the client's map from FUSE node ids to the objects they name.
//
// Every inode the kernel knows is one Inode here, found by node id (the
// number the kernel sends back) and by a key naming the object it stands
// for: (owning node, st_dev, st_ino) for a local file — the O_PATH fd the
// Inode holds keeps that inode number from being reused; one that holds a
// kernel handle instead is checked against it (Ref's `same`) — or (owning
// node, server handle) for a remote file. Lookup counts follow the kernel's rules:
// every reply that hands the kernel an entry (lookup, create, mknod, mkdir,
// symlink, link, each readdirplus entry) adds one, FORGET subtracts what it
// says, and an Inode leaves the table when its count reaches zero. Handlers
// hold an InodePtr while they work, so a concurrent FORGET never frees an
// inode under them. Unknown node ids (a stale or forged number) give ESTALE,
// never a crash.
//
// Thread-safe: one mutex guards the maps and all lookup counts. Lock order:
// nothing else is locked while it is held, except that Ref's `make` and
// `same` for a local inode may make the file's kernel handle, which takes
// KernelHandles' mutex (a leaf) inside it.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <climits>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "mfs/base/unique_fd.h"
#include "mfs/client/fs_protocol.h"
#include "mfs/client/interest_map.h"

namespace mfs::client {

enum class InodeKind : uint8_t {
  kRoot,    // /mfs itself
  kMagic,   // /mfs/here, home, magic, lastexec, selected: per-caller symlinks
  kLocal,   // a file in this node's export, served from an O_PATH fd
  kRemote,  // a file in another node's export, named by a server handle
};

// Reserved node ids (FUSE_ROOT_ID is 1).
inline constexpr uint64_t kRootIno = 1;
inline constexpr uint64_t kFirstMagicIno = 2;  // 2..6, in MagicName order
inline constexpr uint64_t kFirstDynamicIno = 16;

// kRemote directory: every name in it, as its owner vouched for them
// (remote_backend.h, Directory listings).
struct DirListing {
  DirListing() = default;
  DirListing(const DirListing&) = delete;
  DirListing& operator=(const DirListing&) = delete;
  ~DirListing() { total_names.fetch_sub(charged, std::memory_order_relaxed); }
  // Counts `n` more names against the process's budget of kMaxNames;
  // false, and nothing counted, past it.
  bool Charge(int64_t n) {
    if (total_names.fetch_add(n, std::memory_order_relaxed) + n > kMaxNames) {
      total_names.fetch_sub(n, std::memory_order_relaxed);
      return false;
    }
    charged += n;
    return true;
  }
  void Uncharge(int64_t n) {
    total_names.fetch_sub(n, std::memory_order_relaxed);
    charged -= n;
  }

  static constexpr int64_t kMaxNames = int64_t{1} << 20;  // in all listings: ~64 MiB
  static inline std::atomic<int64_t> total_names{0};
  std::unordered_set<std::string> names;
  int64_t charged = 0;      // names counted against the budget
  uint64_t gen = 0;         // the owner's generation of the directory (DirGen)
  uint64_t conn_epoch = 0;  // RemoteBackend's connection epoch when taken
  std::chrono::steady_clock::time_point until{};
};

struct Inode {
  Inode(uint64_t id_, InodeKind kind_, uint32_t node_) : id(id_), kind(kind_), node(node_) {}
  Inode(const Inode&) = delete;
  Inode& operator=(const Inode&) = delete;
  ~Inode();

  const uint64_t id;
  const InodeKind kind;
  const uint32_t node;  // owning node
  mode_t type = 0;      // S_IFMT bits, fixed for the inode's life
  // kLocal: an O_PATH fd on the backing file, or none once the local
  // backend's inodes hold their share of the descriptor limit; then
  // `handle` names the file (LocalBackend::Path opens it per operation).
  UniqueFd fd;
  // kRemote: the owner's handle for the file. kLocal without fd: the
  // kernel's handle for it (kernel_handles.h).
  std::string handle;
  // kLocal with fd: the count of such fds, dropped when the inode goes.
  std::shared_ptr<std::atomic<int64_t>> fd_count;
  std::string key;
  uint64_t nlookup = 0;  // guarded by the table mutex
  // kRemote: the number of the backing file on its owner, for st_ino.
  std::atomic<uint64_t> remote_ino{0};
  // A record lock was asked for on this file (any open file of it): closes
  // must then reach the owner to drop the closing process's locks.
  std::atomic<bool> locked{false};
  // kRemote: the owner said the file has no security.capability; the kernel
  // asks before every write. Cleared by any invalidation of the file.
  std::atomic<bool> no_caps{false};
  // kRemote: the attributes the owner sent back with our own last create or
  // remove in this directory, or our own last write to this regular file
  // (post-operation attributes, as NFS's wcc data), so that the GETATTR the
  // kernel sends after each such change (it drops its cached attributes) is
  // answered without a round trip. Valid only while post_epoch equals the
  // backend's change epoch (no other change of ours, no invalidation pushed
  // since) and before post_until (attr_timeout). Guarded by post_mu.
  // Regular files are guarded by the backend's file epoch (bumped by
  // changes that may touch files they do not name: remove, rename, create
  // without O_EXCL, a lost connection) and by change_gen, bumped by every
  // change of ours that names this file and every invalidation of it.
  std::mutex post_mu;
  struct stat post_attr {};
  uint64_t post_epoch = 0;  // 0: none
  uint64_t post_gen = 0;
  std::chrono::steady_clock::time_point post_until{};
  // The change time (ns) in the attributes we last gave the kernel for this
  // inode (entry and attribute replies): an open that finds the file's
  // ctime different drops the kernel's cached attributes first, so the
  // open sees what a writer on another node did before its close
  // (close-to-open), whether or not the owner's invalidation has arrived.
  std::atomic<int64_t> told_ctime{kCtimeUnknown};
  // The change time of the file at its newest open here. That open left
  // the kernel nothing older: it dropped the pages (keep_cache = 0) and,
  // if they differed, the attributes (RevalidateAtOpen). A pushed
  // invalidation for a change no newer is redundant, and harmful: a
  // reverse invalidation that lands while the kernel's GETATTR after that
  // open is in flight makes the kernel drop the fresh reply, and the read
  // that asked for it goes on with the old size (fuse_fs.cc,
  // InvalidateInode). Written and read under FuseFs's inval_mu.
  int64_t opened_ctime = kCtimeUnknown;
  // Open files of this inode here (the FUSE layer counts opens, creates and
  // releases): a file with no name left is reachable by a path only through
  // one of them (/proc/PID/fd), or through a stale directory entry.
  std::atomic<int32_t> opens{0};
  // Set once the kernel was told ESTALE for a name under this directory
  // (it had been removed: fuse_fs.cc, ErrIn).
  std::atomic<bool> stale_told{false};
  std::atomic<uint64_t> change_gen{0};
  // kRemote directory: its names while known (a lookup of any other name is
  // answered ENOENT without a round trip), and no listing asked for again
  // before listing_retry (the owner refused one). listing_inval is bumped
  // by every invalidation of the directory and by our own changes of names
  // in it that carry no generations: a listing asked for before is not
  // taken. Guarded by listing_mu.
  std::mutex listing_mu;
  std::shared_ptr<DirListing> listing;
  std::chrono::steady_clock::time_point listing_retry{};
  uint64_t listing_inval = 0;
  std::atomic<int64_t> changes_inflight{0};  // Changes naming this inode
  // kLocal: the mount's InterestMap, whose slot for this file the inode
  // holds up from its making to its destruction (so mfsd pushes peers'
  // changes of it); held_seq orders that against stats (LocalBackend).
  // Both set before the inode enters the table, constant after.
  std::shared_ptr<InterestMap> held_in;
  std::string held_key;  // the FileKey whose slot it holds
  uint64_t held_seq = 0;
};
using InodePtr = std::shared_ptr<Inode>;

class InodeTable {
 public:
  InodeTable() = default;
  InodeTable(const InodeTable&) = delete;
  InodeTable& operator=(const InodeTable&) = delete;

  // The inode with node id `id`, or nullptr.
  InodePtr Get(uint64_t id) const;

  // Finds the inode with `key` or inserts the one `make(id)` builds, and
  // adds one lookup. Returns nullptr if make() does (out of memory etc.).
  // An inode found for which `same` says false (the key now names another
  // object: a deleted file's inode number reused) gives up the key to the
  // one make() builds, and stays reachable by node id until forgotten.
  // `make` and `same` run under the table mutex.
  InodePtr Ref(const std::string& key, const std::function<InodePtr(uint64_t id)>& make,
               const std::function<bool(const Inode&)>& same = {});
  // The inode with `key`, without adding a lookup; nullptr if none.
  InodePtr Find(const std::string& key) const;
  // Adds one lookup to an inode already in the table (link, re-reply).
  void AddRef(const InodePtr& inode);
  // Drops n lookups; removes the inode at zero. Unknown ids are ignored
  // (the kernel may forget what an old process instance handed out).
  void Forget(uint64_t id, uint64_t n);
  // Called with each inode Forget removes, outside the table's mutex. Set
  // before the table is used.
  void SetOnRemove(std::function<void(const InodePtr&)> f) { on_remove_ = std::move(f); }

  // The inodes `pred` picks (called under the table's mutex: keep it short).
  std::vector<InodePtr> Where(const std::function<bool(const Inode&)>& pred) const;
  bool Any(const std::function<bool(const Inode&)>& pred) const;
  size_t size() const;
  uint64_t total_lookups() const;

 private:
  mutable std::mutex mu_;
  std::unordered_map<uint64_t, InodePtr> by_id_;
  std::unordered_map<std::string, uint64_t> by_key_;
  uint64_t next_id_ = kFirstDynamicIno;
  std::function<void(const InodePtr&)> on_remove_;
};

}  // namespace mfs::client

// Client: the logic behind the /mfs mount, free of FUSE types.
//
// It owns the inode table, the backend for this node's export (LocalBackend)
// and the one for every other node's (RemoteBackend), and the namespace at
// the top of /mfs: one directory per live node, plus the per-process magic
// symlinks here, home, magic, lastexec and selected. Those resolve through
// the process → node mapping that mfsd owns (control op "proc.where",
// filled in by migration); until mfsd answers it, every one of them is this
// node.
//
// Thread-safe: called concurrently from FUSE worker threads.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "mfs/client/backend.h"
#include "mfs/client/caller.h"
#include "mfs/client/inode_table.h"
#include "mfs/client/local_backend.h"
#include "mfs/client/locality.h"

namespace mfs::client {

// The per-process magic entries, in inode-number order from kFirstMagicIno.
enum class Magic : int { kHere = 0, kHome, kMagic, kLastExec, kSelected, kCount };
const char* MagicName(Magic m);

struct ClientOptions {
  uint32_t self_id = 0;
  std::string export_path;
  std::string control_socket;  // "" = no mfsd: only this node is listed
  double attr_timeout = 1.0;   // seconds the kernel may cache attributes
  double entry_timeout = 1.0;
  // The most O_PATH fds local inodes hold (local_backend.h); -1: half of
  // RLIMIT_NOFILE for files, three quarters for directories.
  int64_t path_fds = -1;
};

// Where a process is, as mfsd reports it.
struct ProcPlace {
  uint32_t here = 0, home = 0, magic = 0, lastexec = 0, selected = 0;
};

class Client {
 public:
  static Result<std::unique_ptr<Client>> Create(const ClientOptions& opts);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  const ClientOptions& options() const { return opts_; }
  uint32_t self() const { return opts_.self_id; }
  InodeTable& table() { return table_; }
  LocalBackend& local() { return *local_; }

  // The inode for a FUSE node id (root and magic included); null = ESTALE.
  InodePtr Get(uint64_t ino) const;
  // The backend serving an inode of kind kLocal or kRemote.
  Backend* BackendFor(const Inode& inode);
  void SetRemote(std::unique_ptr<Backend> remote, std::function<void(uint32_t, Cb<EntryOut>)> root);

  // --- the top of the namespace ---
  struct stat RootAttr() const;
  struct stat MagicAttr(Magic m) const;
  void LookupRoot(const Caller& c, const std::string& name, Cb<EntryOut> cb);
  std::vector<DirEntryOut> ListRoot();
  // The target of /mfs/<magic> for this caller: the node id as text.
  std::string ReadMagic(const Caller& c, Magic m);
  // The nodes listed in /mfs: this one plus the live peers mfsd reports.
  std::vector<uint32_t> LiveNodes();
  bool IsLive(uint32_t node);
  // A node mfsd knows (in any state) but that is not alive now.
  bool IsKnownDown(uint32_t node);
  // The address mfsd reports for a node ("A.B.C.D:port"), if any.
  std::optional<std::string> AddressOf(uint32_t node);
  ProcPlace Where(pid_t tid);

  // --- locality hook ---
  // REQUIRES: called before the mount serves requests (not synchronised).
  void SetIoObserver(std::shared_ptr<IoObserver> o);
  void AccountIo(pid_t tid, uint32_t node, IoOp op, uint64_t bytes);
  // Whether the observer counts I/O right now (false without one).
  bool Accounting() const { return observer_ && observer_->Accounting(); }

  // The synthetic location xattr on every file.
  static constexpr const char* kNodeXattr = "user.mfs.node";
  // On /mfs: "<inodes> <lookups>" the kernel holds (leak checks).
  static constexpr const char* kInodesXattr = "user.mfs.inodes";
  // On /mfs: "<passthrough negotiated 0|1> <inodes passed through now>
  // <passthrough opens since the mount>".
  static constexpr const char* kPassthroughXattr = "user.mfs.passthrough";
  // On /mfs: "<FUSE over io_uring in use 0|1> <queues> <entries registered>
  // <requests taken off the rings> <ring threads found starved>".
  static constexpr const char* kUringXattr = "user.mfs.uring";
  // On /mfs: "<FUSE requests read> <network requests sent>" since the
  // mount (benchmarks count the requests a workload costs).
  static constexpr const char* kRequestsXattr = "user.mfs.requests";

 private:
  explicit Client(const ClientOptions& opts);
  static pid_t ProcessOf(pid_t tid);

  ClientOptions opts_;
  InodeTable table_;
  std::unique_ptr<LocalBackend> local_;
  std::unique_ptr<Backend> remote_;
  std::function<void(uint32_t, Cb<EntryOut>)> remote_root_;
  InodePtr root_;
  timespec started_{};  // times shown for /mfs and the magic links
  InodePtr magic_[static_cast<int>(Magic::kCount)];

  // One thread at a time asks mfsd for the live nodes, without mu_ held
  // (a slow mfsd must not stall every FUSE thread behind the caches).
  std::mutex refresh_mu_;
  std::mutex mu_;  // guards the caches below; a leaf lock
  std::vector<uint32_t> live_;
  std::map<uint32_t, std::string> addresses_;
  std::vector<uint32_t> known_;  // every node mfsd reported, dead ones included
  std::chrono::steady_clock::time_point live_at_{};
  struct WhereEntry {
    ProcPlace place;
    std::chrono::steady_clock::time_point at;
  };
  std::unordered_map<pid_t, WhereEntry> where_;
  bool where_unsupported_ = false;
  std::shared_ptr<IoObserver> observer_;
};

}  // namespace mfs::client

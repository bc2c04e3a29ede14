// Backend: the operations of one kind of storage behind /mfs/<id>.
//
// LocalBackend works on this node's export directly (the fast path: no
// network, no mfsd); RemoteBackend sends each operation to the owning
// node's file service. Both present the same asynchronous interface: every
// method calls its callback exactly once, on any thread — the local backend
// before it returns, the remote one from a network thread when the reply (or
// the failure) arrives. Callbacks must not block.
//
// Entries handed back (EntryOut) carry one lookup count the caller must
// either give to the kernel or drop with InodeTable::Forget.
#pragma once

#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <time.h>

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "mfs/base/status.h"
#include "mfs/base/unique_fd.h"
#include "mfs/client/caller.h"
#include "mfs/client/inode_table.h"

namespace mfs::client {

// The st_ino /mfs shows for file `ino` of node `node`: unique across nodes
// (the node id in the top byte), stable across lookups and restarts.
inline uint64_t ShownIno(uint32_t node, uint64_t ino) {
  return ino ^ (static_cast<uint64_t>(node) << 56);
}

template <typename T>
using Cb = std::function<void(Result<T>)>;
using DoneCb = std::function<void(Status)>;

struct EntryOut {
  InodePtr inode;
  struct stat attr {};
};

// What SetAttr changes (our own bits, decoupled from FUSE's).
enum SetAttrBits : uint32_t {
  kSetMode = 1u << 0,
  kSetUid = 1u << 1,
  kSetGid = 1u << 2,
  kSetSize = 1u << 3,
  kSetAtime = 1u << 4,
  kSetMtime = 1u << 5,
  kSetAtimeNow = 1u << 6,
  kSetMtimeNow = 1u << 7,
};
struct SetAttrIn {
  uint32_t valid = 0;
  mode_t mode = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  off_t size = 0;
  timespec atime{};
  timespec mtime{};
};

// An open file. `fd` is set for local files (the fast path reads and writes
// it directly); remote files carry the server's open-file id.
struct FileHandle {
  InodePtr inode;
  UniqueFd fd;
  std::atomic<uint64_t> remote_fh{0};
  std::atomic<uint64_t> remote_epoch{0};  // connection generation that issued remote_fh
  int flags = 0;
  std::atomic<bool> written{false};  // data changed since the last flush
  // Set by the FUSE layer: the kernel reads and writes this local file
  // itself (FUSE passthrough), so `written` never sees its writes; a
  // writable one counts as changed at every flush.
  bool passthrough = false;
  bool cached_io = false;  // the FUSE layer counted it as a page-cache open
  // The file's ctime (CtimeNs) and link count when it was opened, if the
  // backend knows them.
  std::optional<int64_t> open_ctime;
  std::optional<nlink_t> open_nlink;
};

struct DirEntryOut {
  std::string name;
  uint64_t next_off = 0;
  mode_t type = 0;   // S_IFMT bits
  uint64_t ino = 0;  // st_ino as shown
  bool has_entry = false;
  EntryOut entry;    // readdirplus: a referenced entry
};

struct DirHandle {
  InodePtr inode;
  struct Raw {
    std::string name;
    uint64_t ino;
    mode_t type;
  };
  std::vector<Raw> snapshot;  // local: read at opendir and at offset 0
  UniqueFd fd;                // local: O_RDONLY|O_DIRECTORY
};

struct CreateOut {
  EntryOut entry;
  std::unique_ptr<FileHandle> fh;
};

// A POSIX record lock request (F_GETLK/F_SETLK[W]) or flock.
struct LockIn {
  uint64_t owner = 0;
  int type = 0;  // F_RDLCK, F_WRLCK, F_UNLCK
  off_t start = 0;
  off_t len = 0;  // 0 = to EOF
  pid_t pid = 0;
  bool wait = false;
  uint64_t wait_token = 0;  // LockWaits token (0 = none): cancelled -> EINTR
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual void Lookup(const Caller&, const InodePtr& parent, const std::string& name,
                      Cb<EntryOut> cb) = 0;
  virtual void GetAttr(const Caller&, const InodePtr& inode, FileHandle* fh,
                       Cb<struct stat> cb) = 0;
  virtual void SetAttr(const Caller&, const InodePtr& inode, FileHandle* fh, const SetAttrIn& in,
                       Cb<struct stat> cb) = 0;
  // mknod, mkdir (S_IFDIR in mode) and symlink (S_IFLNK, target in link).
  virtual void MakeNode(const Caller&, const InodePtr& parent, const std::string& name,
                        mode_t mode, dev_t rdev, const std::string& link, Cb<EntryOut> cb) = 0;
  virtual void Link(const Caller&, const InodePtr& inode, const InodePtr& newparent,
                    const std::string& name, Cb<EntryOut> cb) = 0;
  virtual void Remove(const Caller&, const InodePtr& parent, const std::string& name, bool dir,
                      DoneCb cb) = 0;
  virtual void Rename(const Caller&, const InodePtr& parent, const std::string& name,
                      const InodePtr& newparent, const std::string& newname, unsigned flags,
                      DoneCb cb) = 0;
  virtual void ReadLink(const Caller&, const InodePtr& inode, Cb<std::string> cb) = 0;
  virtual void Access(const Caller&, const InodePtr& inode, int mask, DoneCb cb) = 0;
  virtual void Open(const Caller&, const InodePtr& inode, int flags,
                    Cb<std::unique_ptr<FileHandle>> cb) = 0;
  virtual void Create(const Caller&, const InodePtr& parent, const std::string& name, mode_t mode,
                      int flags, Cb<CreateOut> cb) = 0;
  virtual void Read(FileHandle* fh, size_t size, off_t off, Cb<std::string> cb) = 0;
  virtual void Write(FileHandle* fh, std::string data, off_t off, bool kill_suid,
                     Cb<size_t> cb) = 0;
  virtual void Flush(FileHandle* fh, uint64_t lock_owner, DoneCb cb) = 0;
  virtual void Fsync(FileHandle* fh, bool datasync, DoneCb cb) = 0;
  virtual void Release(std::unique_ptr<FileHandle> fh) = 0;
  virtual void OpenDir(const Caller&, const InodePtr& inode, Cb<std::unique_ptr<DirHandle>> cb) = 0;
  // Entries from `off` on (at most `max`); with `plus`, each carries a
  // referenced entry (except "." and "..").
  virtual void ReadDir(const Caller&, DirHandle* dh, uint64_t off, size_t max, bool plus,
                       Cb<std::vector<DirEntryOut>> cb) = 0;
  virtual void ReleaseDir(std::unique_ptr<DirHandle> dh) = 0;
  // The kernel forgot `inode` (its last lookup): it left the inode table.
  virtual void Forgotten(const InodePtr&) {}
  virtual void StatFs(const Caller&, const InodePtr& inode, Cb<struct statvfs> cb) = 0;
  virtual void SetXattr(const Caller&, const InodePtr& inode, const std::string& name,
                        std::string value, int flags, DoneCb cb) = 0;
  // size 0 asks for the length only (returned as a string of that many NULs
  // is wasteful, so the result is the value; the caller checks sizes).
  virtual void GetXattr(const Caller&, const InodePtr& inode, const std::string& name,
                        Cb<std::string> cb) = 0;
  virtual void ListXattr(const Caller&, const InodePtr& inode, Cb<std::string> cb) = 0;
  virtual void RemoveXattr(const Caller&, const InodePtr& inode, const std::string& name,
                           DoneCb cb) = 0;
  virtual void Fallocate(FileHandle* fh, int mode, off_t off, off_t len, DoneCb cb) = 0;
  virtual void CopyFileRange(FileHandle* in, off_t off_in, FileHandle* out, off_t off_out,
                             size_t len, Cb<size_t> cb) = 0;
  // POSIX record locks and flock, held by the owning node.
  virtual void GetLk(FileHandle* fh, const LockIn& in, Cb<LockIn> cb) = 0;
  virtual void SetLk(FileHandle* fh, const LockIn& in, DoneCb cb) = 0;
  // `wait_token`: a LockWaits token (0 = none) whose cancellation ends a
  // waiting request with EINTR (a FUSE interrupt).
  virtual void Flock(FileHandle* fh, uint64_t owner, int op, uint64_t wait_token, DoneCb cb) = 0;
};

}  // namespace mfs::client

// LocalBackend: /mfs/<self>/... served straight from this node's export.
//
// The fast path of the design: each Inode owns an O_PATH fd on the backing
// file (passthrough_hp style), every operation is the matching system call
// on those fds, run on the FUSE thread under the caller's credentials; open
// files are real fds the FUSE layer splices to and from. Nothing crosses
// mfsd or the network.
//
// The kernel keeps an inode (and so its Inode here) for as long as it
// caches the entry, which with plenty of memory is for ever: one fd per
// inode would run the mount out of descriptors after RLIMIT_NOFILE files
// (20,000 here, and root cannot raise the hard limit without
// CAP_SYS_RESOURCE). So inodes hold fds only up to a budget, half the
// limit for files and three quarters for directories (lookups start from
// them); past it a new inode keeps the kernel's file handle instead and
// each operation on it opens an fd by handle for its own length (Path()).
// Where handles do not work (no CAP_DAC_READ_SEARCH, a file system
// without them) every inode keeps its fd, as before.
//
// Thread-safe: state is the InodeTable (own mutex) and the lock table.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "mfs/client/backend.h"
#include "mfs/client/kernel_handles.h"
#include "mfs/client/local_ops.h"

namespace mfs::client {

class LocalBackend : public Backend {
 public:
  // `hidden_dev`: st_dev of the /mfs mount itself, never shown inside the
  // export (an export of "/" would otherwise contain /mfs again); 0 = none.
  // `path_fds`: the fd budget for inodes, files and directories alike;
  // -1: the default (see above).
  LocalBackend(InodeTable* table, uint32_t self, UniqueFd root, dev_t hidden_dev,
               int64_t path_fds = -1);

  // The export root as an entry (one lookup).
  Result<EntryOut> RootEntry();
  void set_hidden_dev(dev_t d) { hidden_dev_ = d; }
  // Called after every change the fast path makes: (file key st_dev:st_ino,
  // name changed in it or "", for a file that lost a name
  // proto::ChangedFlags, and an fd of the file, valid during the call).
  // Set before serving; used for coherence.
  using ChangeHook =
      std::function<void(const std::string& key, const std::string& name, uint8_t flags, int fd)>;
  void SetChangeHook(ChangeHook h) { on_change_ = std::move(h); }
  ops::OfdLockTable& locks() { return locks_; }
  // The mount's InterestMap (interest_map.h): every local inode made from
  // now on holds its file's slot up. Set before serving, or never.
  void SetHeldMap(std::shared_ptr<InterestMap> m) { held_ = std::move(m); }

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

  // The fds local inodes hold now, and the budgets (see above); -1: handles
  // unusable, no limit.
  int64_t path_fds() const { return fd_count_->load(std::memory_order_relaxed); }
  int64_t file_fd_budget() const { return file_budget_; }
  int64_t dir_fd_budget() const { return dir_budget_; }

 private:
  // An inode's O_PATH fd for the length of one operation: its own, or one
  // opened by its handle. Get it before ScopedCreds: opening by handle
  // needs CAP_DAC_READ_SEARCH, which a caller's fsuid drops.
  class PathFd {
   public:
    explicit PathFd(int borrowed) : fd_(borrowed) {}
    explicit PathFd(UniqueFd owned) : owned_(std::move(owned)), fd_(owned_.get()) {}
    int get() const { return fd_; }

   private:
    UniqueFd owned_;
    int fd_;
  };
  Result<PathFd> Path(const InodePtr& inode);

  // Wraps an O_PATH fd just opened into a referenced entry.
  Result<EntryOut> MakeEntry(UniqueFd fd);
  // `name` in the directory `dirfd` (a PathFd's), as an entry.
  Result<EntryOut> LookupIn(int dirfd, const std::string& name);
  std::string LockKey(const InodePtr& inode) const { return inode->key; }
  void Changed(const InodePtr& inode, const std::string& name = "");
  // `victim`: an O_PATH fd on a file that just lost a name (or -1): its
  // attributes changed (st_nlink), and it may be gone.
  void ChangedVictim(int victim);

  InodeTable* table_;
  const uint32_t self_;
  UniqueFd root_;
  dev_t hidden_dev_;
  ops::OfdLockTable locks_;
  ChangeHook on_change_;
  std::shared_ptr<InterestMap> held_;
  std::atomic<uint64_t> held_seq_{0};  // slots raised so far
  ops::KernelHandles handles_;
  int64_t file_budget_ = -1;  // -1: every inode keeps its fd
  int64_t dir_budget_ = -1;
  std::shared_ptr<std::atomic<int64_t>> fd_count_ = std::make_shared<std::atomic<int64_t>>(0);
};

}  // namespace mfs::client

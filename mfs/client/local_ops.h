// local_ops: the file operations on a local directory tree, as small
// wrappers over the system calls that keep the errno (mergerfs style).
//
// Used twice: by LocalBackend (the FUSE client's fast path on this node's
// export) and by the file service in mfsd (which serves the same export to
// peers). Every name argument is checked by CheckName() first — one path
// component, no "/", not "." or "..", at most NAME_MAX bytes — and every
// operation works relative to a directory fd with that single component and
// without following a final symlink, so nothing here ever leaves the tree
// the fds belong to.
//
// The caller runs these under the requesting user's credentials
// (ScopedCreds), so the kernel checks permissions. Thread-safe: no state
// except OfdLockTable, which has its own mutex.
#pragma once

#include <sys/stat.h>
#include <sys/statvfs.h>

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "mfs/base/status.h"
#include "mfs/base/unique_fd.h"
#include "mfs/client/backend.h"

namespace mfs::client::ops {

// "/proc/self/fd/N": reopens an O_PATH fd with real access checks.
std::string ProcPath(int fd);

Status CheckName(const std::string& name);

// O_PATH|O_NOFOLLOW open of one entry of `dirfd`.
Result<UniqueFd> OpenPath(int dirfd, const std::string& name);
Result<UniqueFd> OpenRoot(const std::string& path);
Result<struct stat> Stat(int fd);
// Whether the file system under `dirfd` gives a file a new change time at
// every change that follows a stat of it (multigrain timestamps), rather
// than at most once per clock tick. Probed on an unnamed O_TMPFILE file,
// which leaves nothing behind; false if that cannot be made.
bool HasFineChangeTimes(int dirfd);
Result<struct stat> SetAttr(int path_fd, int open_fd, const SetAttrIn& in);
// SetAttr under the caller's credentials. One exception: the kernel clears
// set-user/group-ID bits after a write by a non-owner by sending a chmod on
// the writer's behalf (FUSE without handle_killpriv); the permission was
// the kernel's to check (default_permissions), so a chmod that only drops
// those bits and is refused to the caller is done with the daemon's rights.
Result<struct stat> SetAttrAs(const Caller& c, int path_fd, int open_fd, const SetAttrIn& in);
Status MakeNode(int dirfd, const std::string& name, mode_t mode, dev_t rdev,
                const std::string& link);
Status Link(int fd, int newdirfd, const std::string& name);
Status Remove(int dirfd, const std::string& name, bool dir);
Status Rename(int dirfd, const std::string& name, int newdirfd, const std::string& newname,
              unsigned flags);
Result<std::string> ReadLink(int fd);
Status Access(int fd, int mask);
// Opens the file an O_PATH fd names, for I/O (O_CREAT/O_EXCL/O_NOFOLLOW removed).
Result<UniqueFd> Reopen(int path_fd, int flags);
// `created` (if given): whether this call made the file (without O_EXCL it
// tries O_EXCL first, so that it can tell).
Result<UniqueFd> Create(int dirfd, const std::string& name, mode_t mode, int flags,
                        bool* created = nullptr);
Result<std::string> PRead(int fd, size_t size, off_t off);
Result<size_t> PWrite(int fd, std::string_view data, off_t off);
// What the kernel does before a write by a caller without CAP_FSETID:
// clears set-user-ID, and set-group-ID when group-executable. `fd` must be
// a real (not O_PATH) descriptor of the file. Needed with FUSE
// HANDLE_KILLPRIV_V2, where the file system kills them, not the kernel.
Status KillSuid(int fd);
Result<std::vector<DirHandle::Raw>> ReadDirAll(int dirfd);
// Up to `max` entries of an O_RDONLY directory fd from the file system's own
// position cookie `off` (0 = start); each entry's `next` is the cookie after
// it (getdents64 d_off, stable across opens on ext4, xfs, btrfs ...).
struct DirEntryAt {
  std::string name;
  uint64_t ino;
  mode_t type;
  uint64_t next;
};
Result<std::vector<DirEntryAt>> ReadDirFrom(int dirfd, uint64_t off, size_t max);
Result<struct statvfs> StatFs(int fd);
Status SetXattr(int fd, const std::string& name, const std::string& value, int flags);
Result<std::string> GetXattr(int fd, const std::string& name);
Result<std::string> ListXattr(int fd);
Status RemoveXattr(int fd, const std::string& name);
Status Fallocate(int fd, int mode, off_t off, off_t len);
Result<size_t> CopyFileRange(int in, off_t off_in, int out, off_t off_out, size_t len);

// Lock waits that another thread can cancel (a FUSE interrupt: the waiting
// process got a signal, or was killed). A waiter blocks in the kernel
// (F_OFD_SETLKW, flock) as before, so the kernel's queueing and wake-ups
// are kept; Cancel() marks the wait and sends the waiting thread a signal
// with an empty handler (installed without SA_RESTART, so the call returns
// EINTR) until the wait has ended, which closes the window between the
// waiter's check and its system call. The wait then fails with EINTR.
// Tokens are plain numbers, so a cancel that comes after the wait ended
// (or before it began) is harmless. Thread-safe, process-wide.
class LockWaits {
 public:
  // A new token, registered until Forget(); cancelling it before the wait
  // begins makes the wait fail at once.
  static uint64_t NewToken();
  static void Cancel(uint64_t token);
  static void Forget(uint64_t token);
  // For a wait that happens elsewhere (on another node): `fn` runs once,
  // on a thread of its own, when the token is cancelled — at once if it
  // already was.
  static void SetCanceller(uint64_t token, std::function<void()> fn);
  // The tokens registered, for leak checks.
  static size_t size();
  // Used by OfdLockTable around a blocking call: Begin() fails (EINTR)
  // when the token is already cancelled. Token 0 = not cancellable.
  static Status Begin(uint64_t token);
  static bool Cancelled(uint64_t token);
  static void End(uint64_t token);
};

// Record locks and flock held for many owners on one node's files: each
// (file, owner) pair gets its own open file description of the backing
// file, locked with OFD locks (F_OFD_SETLK, Linux 3.15) or flock, so the
// kernel arbitrates between local processes (fast path) and remote ones
// (served by mfsd) alike. Thread-safe.
class OfdLockTable {
 public:
  // `file` is any fd of the backing file (O_PATH is fine); `key` names the
  // file uniquely (st_dev:st_ino); `owner` the lock owner. `holder` tags
  // the lock with whoever asked (the file service passes its connection) so
  // that ReleaseHolder() can drop everything a vanished peer held.
  Result<LockIn> GetLk(int file, const std::string& key, const LockIn& in, uintptr_t holder = 0);
  // A waiting request (in.wait, or flock without LOCK_NB) with a
  // LockWaits token ends with EINTR when the token is cancelled.
  Status SetLk(int file, const std::string& key, const LockIn& in, uintptr_t holder = 0,
               uint64_t wait_token = 0);
  Status Flock(int file, const std::string& key, uint64_t owner, int op, uintptr_t holder = 0,
               uint64_t wait_token = 0);
  // Drops an owner's POSIX locks on a file (close semantics).
  void ReleaseOwner(const std::string& key, uint64_t owner);
  void ReleaseFlock(const std::string& key, uint64_t owner);
  // Drops every lock last taken by `holder` (a peer's connection closed).
  // Returns how many lock descriptions were dropped.
  size_t ReleaseHolder(uintptr_t holder);
  size_t size() const;

 private:
  struct Slot {
    std::shared_ptr<UniqueFd> fd;
    uintptr_t holder = 0;
  };
  Result<std::shared_ptr<UniqueFd>> FdFor(int file, const std::string& slot, uintptr_t holder);
  mutable std::mutex mu_;
  std::map<std::string, Slot> fds_;
};

std::string FileKey(const struct stat& st);

}  // namespace mfs::client::ops

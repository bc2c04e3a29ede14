#include "mfs/client/local_ops.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>

#include "mfs/client/caller.h"

namespace mfs::client::ops {

std::string ProcPath(int fd) { return "/proc/self/fd/" + std::to_string(fd); }

Status CheckName(const std::string& name) {
  if (name.empty() || name == "." || name == "..")
    return Status::Error(EINVAL, "invalid name '" + name + "'");
  if (name.size() > NAME_MAX) return Status::PosixError("name", ENAMETOOLONG);
  if (name.find('/') != std::string::npos || name.find('\0') != std::string::npos)
    return Status::Error(EINVAL, "name contains '/' or NUL");
  return Status::OK();
}

// A name that is not in `dirfd` because the directory itself was removed
// (rmdir, or renamed over) answers ESTALE rather than ENOENT: the caller
// reached the directory through an entry its kernel still held, and ESTALE
// makes the kernel walk the path again, revalidating every entry (the FUSE
// layer answers ENOENT after telling it once, see fuse_fs.cc). Costs an
// fstat, on ENOENT only.
namespace {
Status InDir(int dirfd, Status s) {
  if (s.code() != ENOENT) return s;
  struct stat st;
  if (fstat(dirfd, &st) == 0 && S_ISDIR(st.st_mode) && st.st_nlink == 0)
    return Status::Error(ESTALE, s.message() + ": the directory was removed");
  return s;
}
}  // namespace

Result<UniqueFd> OpenPath(int dirfd, const std::string& name) {
  MFS_RETURN_IF_ERROR(CheckName(name));
  int fd = openat(dirfd, name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return InDir(dirfd, Status::FromErrno("openat " + name));
  return UniqueFd(fd);
}

Result<UniqueFd> OpenRoot(const std::string& path) {
  int fd = open(path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno("open " + path);
  return UniqueFd(fd);
}

Result<struct stat> Stat(int fd) {
  struct stat st;
  if (fstatat(fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0)
    return Status::FromErrno("fstatat");
  return st;
}

bool HasFineChangeTimes(int dirfd) {
  UniqueFd f(openat(dirfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
  if (!f.valid()) return false;
  // Without multigrain timestamps a write right after a stat keeps the
  // coarse tick's time; five in a row all in one tick is the common case.
  for (int i = 0; i < 5; ++i) {
    struct stat before, after;
    if (fstat(f.get(), &before) != 0 || pwrite(f.get(), "x", 1, i) != 1 ||
        fstat(f.get(), &after) != 0)
      return false;
    if (CtimeNs(before) == CtimeNs(after)) return false;
  }
  return true;
}

Result<struct stat> SetAttr(int path_fd, int open_fd, const SetAttrIn& in) {
  const std::string proc = ProcPath(path_fd);
  if (in.valid & kSetMode) {
    int r = open_fd >= 0 ? fchmod(open_fd, in.mode) : chmod(proc.c_str(), in.mode);
    if (r < 0) return Status::FromErrno("chmod");
  }
  if (in.valid & (kSetUid | kSetGid)) {
    uid_t u = (in.valid & kSetUid) ? in.uid : static_cast<uid_t>(-1);
    gid_t g = (in.valid & kSetGid) ? in.gid : static_cast<gid_t>(-1);
    if (fchownat(path_fd, "", u, g, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0)
      return Status::FromErrno("chown");
  }
  if (in.valid & kSetSize) {
    int r = open_fd >= 0 ? ftruncate(open_fd, in.size) : truncate(proc.c_str(), in.size);
    if (r < 0) return Status::FromErrno("truncate");
  }
  if (in.valid & (kSetAtime | kSetMtime | kSetAtimeNow | kSetMtimeNow)) {
    timespec tv[2];
    tv[0].tv_sec = 0;
    tv[1].tv_sec = 0;
    tv[0].tv_nsec = UTIME_OMIT;
    tv[1].tv_nsec = UTIME_OMIT;
    if (in.valid & kSetAtimeNow) tv[0].tv_nsec = UTIME_NOW;
    else if (in.valid & kSetAtime) tv[0] = in.atime;
    if (in.valid & kSetMtimeNow) tv[1].tv_nsec = UTIME_NOW;
    else if (in.valid & kSetMtime) tv[1] = in.mtime;
    int r = open_fd >= 0 ? futimens(open_fd, tv) : utimensat(AT_FDCWD, proc.c_str(), tv, 0);
    if (r < 0) return Status::FromErrno("utimensat");
  }
  return Stat(path_fd);
}

Result<struct stat> SetAttrAs(const Caller& c, int path_fd, int open_fd, const SetAttrIn& in) {
  Result<struct stat> r = [&]() {
    ScopedCreds creds(c);
    return SetAttr(path_fd, open_fd, in);
  }();
  if (r.ok() || r.status().code() != EPERM || in.valid != kSetMode) return r;
  auto st = Stat(path_fd);
  constexpr mode_t kIds = S_ISUID | S_ISGID;
  if (!st.ok() || !(st->st_mode & kIds) ||
      (st->st_mode & 07777 & ~kIds) != (in.mode & 07777) || (in.mode & kIds & ~st->st_mode))
    return r;
  return SetAttr(path_fd, open_fd, in);
}

Status MakeNode(int dirfd, const std::string& name, mode_t mode, dev_t rdev,
                const std::string& link) {
  MFS_RETURN_IF_ERROR(CheckName(name));
  int r;
  if (S_ISDIR(mode)) {
    r = mkdirat(dirfd, name.c_str(), mode & 07777);
  } else if (S_ISLNK(mode)) {
    if (link.size() >= PATH_MAX) return Status::PosixError("symlink", ENAMETOOLONG);
    r = symlinkat(link.c_str(), dirfd, name.c_str());
  } else {
    r = mknodat(dirfd, name.c_str(), mode, rdev);
  }
  if (r < 0) return InDir(dirfd, Status::FromErrno("create " + name));
  return Status::OK();
}

Status Link(int fd, int newdirfd, const std::string& name) {
  MFS_RETURN_IF_ERROR(CheckName(name));
  if (linkat(AT_FDCWD, ProcPath(fd).c_str(), newdirfd, name.c_str(), AT_SYMLINK_FOLLOW) < 0)
    return InDir(newdirfd, Status::FromErrno("link " + name));
  return Status::OK();
}

Status Remove(int dirfd, const std::string& name, bool dir) {
  MFS_RETURN_IF_ERROR(CheckName(name));
  if (unlinkat(dirfd, name.c_str(), dir ? AT_REMOVEDIR : 0) < 0)
    return InDir(dirfd, Status::FromErrno((dir ? "rmdir " : "unlink ") + name));
  return Status::OK();
}

Status Rename(int dirfd, const std::string& name, int newdirfd, const std::string& newname,
              unsigned flags) {
  MFS_RETURN_IF_ERROR(CheckName(name));
  MFS_RETURN_IF_ERROR(CheckName(newname));
  if (syscall(SYS_renameat2, dirfd, name.c_str(), newdirfd, newname.c_str(), flags) < 0) {
    Status s = InDir(dirfd, Status::FromErrno("rename " + name));
    return s.code() == ENOENT ? InDir(newdirfd, std::move(s)) : s;
  }
  return Status::OK();
}

Result<std::string> ReadLink(int fd) {
  std::string buf(PATH_MAX + 1, '\0');
  ssize_t n = readlinkat(fd, "", buf.data(), buf.size());
  if (n < 0) return Status::FromErrno("readlink");
  buf.resize(static_cast<size_t>(n));
  return buf;
}

Status Access(int fd, int mask) {
  if (faccessat(AT_FDCWD, ProcPath(fd).c_str(), mask, AT_EACCESS) < 0)
    return Status::FromErrno("access");
  return Status::OK();
}

Result<UniqueFd> Reopen(int path_fd, int flags) {
  flags &= ~(O_NOFOLLOW | O_CREAT | O_EXCL | O_PATH);
  int fd = open(ProcPath(path_fd).c_str(), flags | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno("open");
  return UniqueFd(fd);
}

Result<UniqueFd> Create(int dirfd, const std::string& name, mode_t mode, int flags,
                        bool* created) {
  MFS_RETURN_IF_ERROR(CheckName(name));
  flags &= ~(O_NOFOLLOW | O_PATH);
  flags |= O_CREAT | O_CLOEXEC | O_NOFOLLOW;
  if (created) {
    *created = false;
    int fd = openat(dirfd, name.c_str(), flags | O_EXCL, mode);
    if (fd >= 0) {
      *created = true;
      return UniqueFd(fd);
    }
    if (errno != EEXIST || (flags & O_EXCL)) return InDir(dirfd, Status::FromErrno("create " + name));
    // It exists: open it as asked (if it is gone again, this makes it, and
    // `created` stays false: the conservative answer).
  }
  int fd = openat(dirfd, name.c_str(), flags, mode);
  if (fd < 0) return InDir(dirfd, Status::FromErrno("create " + name));
  return UniqueFd(fd);
}

Result<std::string> PRead(int fd, size_t size, off_t off) {
  std::string buf(size, '\0');
  size_t got = 0;
  while (got < size) {
    ssize_t n = pread(fd, buf.data() + got, size - got, off + static_cast<off_t>(got));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno("pread");
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  buf.resize(got);
  return buf;
}

Status KillSuid(int fd) {
  struct stat st;
  if (fstat(fd, &st) < 0) return Status::FromErrno("stat");
  if (!S_ISREG(st.st_mode)) return Status::OK();
  mode_t kill = 0;
  if (st.st_mode & S_ISUID) kill |= S_ISUID;
  if ((st.st_mode & (S_ISGID | S_IXGRP)) == (S_ISGID | S_IXGRP)) kill |= S_ISGID;
  if (kill == 0) return Status::OK();
  if (fchmod(fd, st.st_mode & 07777 & ~kill) < 0) return Status::FromErrno("clear set-id bits");
  return Status::OK();
}

Result<size_t> PWrite(int fd, std::string_view data, off_t off) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = pwrite(fd, data.data() + done, data.size() - done, off + static_cast<off_t>(done));
    if (n < 0) {
      if (errno == EINTR) continue;
      if (done > 0) break;
      return Status::FromErrno("pwrite");
    }
    done += static_cast<size_t>(n);
  }
  return done;
}

Result<std::vector<DirHandle::Raw>> ReadDirAll(int dirfd) {
  if (lseek(dirfd, 0, SEEK_SET) < 0) return Status::FromErrno("rewind dir");
  std::vector<DirHandle::Raw> out;
  std::string buf(64 * 1024, '\0');
  for (;;) {
    long n = syscall(SYS_getdents64, dirfd, buf.data(), buf.size());
    if (n < 0) return Status::FromErrno("getdents64");
    if (n == 0) break;
    for (long pos = 0; pos < n;) {
      auto* d = reinterpret_cast<struct dirent64*>(buf.data() + pos);
      out.push_back({d->d_name, d->d_ino, static_cast<mode_t>(DTTOIF(d->d_type))});
      pos += d->d_reclen;
    }
  }
  return out;
}

Result<std::vector<DirEntryAt>> ReadDirFrom(int dirfd, uint64_t off, size_t max) {
  if (lseek(dirfd, static_cast<off_t>(off), SEEK_SET) < 0) return Status::FromErrno("seek dir");
  std::vector<DirEntryAt> out;
  // Small reads so that the kernel's position stays exact at `max`.
  std::string buf(std::min<size_t>(64 * 1024, 512 + max * 64), '\0');
  while (out.size() < max) {
    long n = syscall(SYS_getdents64, dirfd, buf.data(), buf.size());
    if (n < 0) return Status::FromErrno("getdents64");
    if (n == 0) break;
    for (long pos = 0; pos < n && out.size() < max;) {
      auto* d = reinterpret_cast<struct dirent64*>(buf.data() + pos);
      out.push_back({d->d_name, d->d_ino, static_cast<mode_t>(DTTOIF(d->d_type)),
                     static_cast<uint64_t>(d->d_off)});
      pos += d->d_reclen;
    }
  }
  return out;
}

Result<struct statvfs> StatFs(int fd) {
  struct statvfs s;
  if (fstatvfs(fd, &s) < 0) return Status::FromErrno("statfs");
  return s;
}

Status SetXattr(int fd, const std::string& name, const std::string& value, int flags) {
  if (setxattr(ProcPath(fd).c_str(), name.c_str(), value.data(), value.size(), flags) < 0)
    return Status::FromErrno("setxattr " + name);
  return Status::OK();
}

Result<std::string> GetXattr(int fd, const std::string& name) {
  const std::string p = ProcPath(fd);
  for (int tries = 0; tries < 4; ++tries) {
    ssize_t n = getxattr(p.c_str(), name.c_str(), nullptr, 0);
    if (n < 0) return Status::FromErrno("getxattr " + name);
    std::string buf(static_cast<size_t>(n), '\0');
    ssize_t m = getxattr(p.c_str(), name.c_str(), buf.data(), buf.size());
    if (m >= 0) {
      buf.resize(static_cast<size_t>(m));
      return buf;
    }
    if (errno != ERANGE) return Status::FromErrno("getxattr " + name);
  }
  return Status::PosixError("getxattr " + name, ERANGE);
}

Result<std::string> ListXattr(int fd) {
  const std::string p = ProcPath(fd);
  for (int tries = 0; tries < 4; ++tries) {
    ssize_t n = listxattr(p.c_str(), nullptr, 0);
    if (n < 0) return Status::FromErrno("listxattr");
    std::string buf(static_cast<size_t>(n), '\0');
    ssize_t m = listxattr(p.c_str(), buf.data(), buf.size());
    if (m >= 0) {
      buf.resize(static_cast<size_t>(m));
      return buf;
    }
    if (errno != ERANGE) return Status::FromErrno("listxattr");
  }
  return Status::PosixError("listxattr", ERANGE);
}

Status RemoveXattr(int fd, const std::string& name) {
  if (removexattr(ProcPath(fd).c_str(), name.c_str()) < 0)
    return Status::FromErrno("removexattr " + name);
  return Status::OK();
}

Status Fallocate(int fd, int mode, off_t off, off_t len) {
  if (fallocate(fd, mode, off, len) < 0) return Status::FromErrno("fallocate");
  return Status::OK();
}

Result<size_t> CopyFileRange(int in, off_t off_in, int out, off_t off_out, size_t len) {
  loff_t a = off_in, b = off_out;
  ssize_t n = copy_file_range(in, &a, out, &b, len, 0);
  if (n < 0) return Status::FromErrno("copy_file_range");
  return static_cast<size_t>(n);
}

std::string FileKey(const struct stat& st) {
  return std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
}

Result<std::shared_ptr<UniqueFd>> OfdLockTable::FdFor(int file, const std::string& slot,
                                                      uintptr_t holder) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = fds_.find(slot);
  if (it != fds_.end()) {
    if (holder != 0) it->second.holder = holder;
    return it->second.fd;
  }
  // Root opens a private description of the file for this owner; the
  // kernel already checked the caller's open mode against the lock type.
  int fd = open(ProcPath(file).c_str(), O_RDWR | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0 && (errno == EISDIR || errno == EACCES || errno == EROFS || errno == ETXTBSY))
    fd = open(ProcPath(file).c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) return Status::FromErrno("open for lock");
  auto p = std::make_shared<UniqueFd>(fd);
  fds_.emplace(slot, Slot{p, holder});
  return p;
}

static std::string PosixSlot(const std::string& key, uint64_t owner) {
  return key + "/p" + std::to_string(owner);
}
static std::string FlockSlot(const std::string& key, uint64_t owner) {
  return key + "/f" + std::to_string(owner);
}

Result<LockIn> OfdLockTable::GetLk(int file, const std::string& key, const LockIn& in,
                                   uintptr_t holder) {
  MFS_ASSIGN_OR_RETURN(auto fd, FdFor(file, PosixSlot(key, in.owner), holder));
  struct flock fl {};
  fl.l_type = static_cast<short>(in.type);
  fl.l_whence = SEEK_SET;
  fl.l_start = in.start;
  fl.l_len = in.len;
  if (fcntl(fd->get(), F_OFD_GETLK, &fl) < 0) return Status::FromErrno("F_OFD_GETLK");
  LockIn out = in;
  out.type = fl.l_type;
  out.start = fl.l_start;
  out.len = fl.l_len;
  out.pid = fl.l_pid;
  return out;
}

namespace {

// The signal that breaks a waiting thread out of its lock call.
int WakeSignal() { return SIGRTMIN + 2; }

struct WaitState {
  bool cancelled = false;
  pid_t tid = 0;  // the waiting thread while it is inside Begin..End
  std::function<void()> canceller;
};

void RunCanceller(std::function<void()> fn) {
  if (!fn) return;
  try {
    std::thread(std::move(fn)).detach();
  } catch (const std::exception&) {
    // no thread to spare: the wait ends when the lock is granted instead
  }
}

struct WaitRegistry {
  std::mutex mu;
  uint64_t next = 1;
  std::map<uint64_t, WaitState> waits;
};

WaitRegistry& Registry() {
  static WaitRegistry* r = [] {
    struct sigaction sa {};
    sa.sa_handler = [](int) {};
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;  // no SA_RESTART: the lock call returns EINTR
    sigaction(WakeSignal(), &sa, nullptr);
    return new WaitRegistry;
  }();
  return *r;
}

}  // namespace

uint64_t LockWaits::NewToken() {
  WaitRegistry& r = Registry();
  std::lock_guard<std::mutex> l(r.mu);
  uint64_t t = r.next++;
  r.waits[t];
  return t;
}

void LockWaits::Cancel(uint64_t token) {
  if (token == 0) return;
  WaitRegistry& r = Registry();
  // Signal the waiter until it has left its wait (bounded: 5 s).
  for (int i = 0; i < 5000; ++i) {
    {
      std::lock_guard<std::mutex> l(r.mu);
      auto it = r.waits.find(token);
      if (it == r.waits.end()) return;
      it->second.cancelled = true;
      if (it->second.canceller) return RunCanceller(std::move(it->second.canceller));
      if (it->second.tid == 0) return;  // not waiting (yet): Begin() fails
      // Under the lock, so the thread is still inside Begin..End.
      syscall(SYS_tgkill, getpid(), it->second.tid, WakeSignal());
    }
    usleep(1000);
  }
}

void LockWaits::SetCanceller(uint64_t token, std::function<void()> fn) {
  if (token == 0) return;
  WaitRegistry& r = Registry();
  std::unique_lock<std::mutex> l(r.mu);
  auto it = r.waits.find(token);
  if (it == r.waits.end()) return;
  if (!it->second.cancelled) {
    it->second.canceller = std::move(fn);
    return;
  }
  l.unlock();
  RunCanceller(std::move(fn));
}

size_t LockWaits::size() {
  WaitRegistry& r = Registry();
  std::lock_guard<std::mutex> l(r.mu);
  return r.waits.size();
}

void LockWaits::Forget(uint64_t token) {
  if (token == 0) return;
  WaitRegistry& r = Registry();
  std::lock_guard<std::mutex> l(r.mu);
  r.waits.erase(token);
}

Status LockWaits::Begin(uint64_t token) {
  if (token == 0) return Status::OK();
  WaitRegistry& r = Registry();
  std::lock_guard<std::mutex> l(r.mu);
  auto it = r.waits.find(token);
  if (it == r.waits.end()) return Status::OK();
  if (it->second.cancelled) return Status::PosixError("lock wait interrupted", EINTR);
  it->second.tid = static_cast<pid_t>(syscall(SYS_gettid));
  return Status::OK();
}

bool LockWaits::Cancelled(uint64_t token) {
  if (token == 0) return false;
  WaitRegistry& r = Registry();
  std::lock_guard<std::mutex> l(r.mu);
  auto it = r.waits.find(token);
  return it != r.waits.end() && it->second.cancelled;
}

void LockWaits::End(uint64_t token) {
  if (token == 0) return;
  WaitRegistry& r = Registry();
  std::lock_guard<std::mutex> l(r.mu);
  auto it = r.waits.find(token);
  if (it != r.waits.end()) it->second.tid = 0;
}

namespace {

// Runs a lock call that may block, retrying on EINTR unless the wait was
// cancelled. Returns the call's result (errno set on failure).
template <typename F>
int WaitableLock(uint64_t token, F&& call) {
  if (Status s = LockWaits::Begin(token); !s.ok()) {
    errno = EINTR;
    return -1;
  }
  // Threads started from libfuse's workers inherit their mask, which
  // blocks every signal.
  sigset_t wake, old;
  sigemptyset(&wake);
  sigaddset(&wake, WakeSignal());
  if (token != 0) pthread_sigmask(SIG_UNBLOCK, &wake, &old);
  int r;
  do {
    r = call();
  } while (r < 0 && errno == EINTR && !LockWaits::Cancelled(token));
  int e = errno;
  LockWaits::End(token);
  if (token != 0) pthread_sigmask(SIG_SETMASK, &old, nullptr);
  errno = e;
  return r;
}

}  // namespace

Status OfdLockTable::SetLk(int file, const std::string& key, const LockIn& in, uintptr_t holder,
                           uint64_t wait_token) {
  MFS_ASSIGN_OR_RETURN(auto fd, FdFor(file, PosixSlot(key, in.owner), holder));
  struct flock fl {};
  fl.l_type = static_cast<short>(in.type);
  fl.l_whence = SEEK_SET;
  fl.l_start = in.start;
  fl.l_len = in.len;
  int r = WaitableLock(in.wait ? wait_token : 0,
                       [&] { return fcntl(fd->get(), in.wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl); });
  if (r < 0) return Status::FromErrno("F_OFD_SETLK");
  return Status::OK();
}

Status OfdLockTable::Flock(int file, const std::string& key, uint64_t owner, int op,
                           uintptr_t holder, uint64_t wait_token) {
  MFS_ASSIGN_OR_RETURN(auto fd, FdFor(file, FlockSlot(key, owner), holder));
  int r = WaitableLock((op & LOCK_NB) ? 0 : wait_token, [&] { return flock(fd->get(), op); });
  if (r < 0) return Status::FromErrno("flock");
  if ((op & ~LOCK_NB) == LOCK_UN) ReleaseFlock(key, owner);
  return Status::OK();
}

void OfdLockTable::ReleaseOwner(const std::string& key, uint64_t owner) {
  std::shared_ptr<UniqueFd> drop;
  std::lock_guard<std::mutex> l(mu_);
  auto it = fds_.find(PosixSlot(key, owner));
  if (it == fds_.end()) return;
  drop = std::move(it->second.fd);
  fds_.erase(it);
}

void OfdLockTable::ReleaseFlock(const std::string& key, uint64_t owner) {
  std::lock_guard<std::mutex> l(mu_);
  fds_.erase(FlockSlot(key, owner));
}

size_t OfdLockTable::ReleaseHolder(uintptr_t holder) {
  std::vector<std::shared_ptr<UniqueFd>> drop;  // closed outside the lock
  std::lock_guard<std::mutex> l(mu_);
  for (auto it = fds_.begin(); it != fds_.end();) {
    if (it->second.holder == holder) {
      drop.push_back(std::move(it->second.fd));
      it = fds_.erase(it);
    } else {
      ++it;
    }
  }
  return drop.size();
}

size_t OfdLockTable::size() const {
  std::lock_guard<std::mutex> l(mu_);
  return fds_.size();
}

}  // namespace mfs::client::ops

#include "mfs/client/local_backend.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <new>
#include <optional>
#include <thread>

#include "mfs/client/fs_protocol.h"

namespace mfs::client {

LocalBackend::LocalBackend(InodeTable* table, uint32_t self, UniqueFd root, dev_t hidden_dev,
                           int64_t path_fds)
    : table_(table), self_(self), root_(std::move(root)), hidden_dev_(hidden_dev) {
  if (!handles_.Usable(root_.get())) return;
  rlimit r{};
  if (path_fds >= 0) {
    file_budget_ = dir_budget_ = path_fds;
  } else if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur != RLIM_INFINITY) {
    file_budget_ = std::max<int64_t>(1, static_cast<int64_t>(r.rlim_cur) / 2);
    dir_budget_ = std::max<int64_t>(1, static_cast<int64_t>(r.rlim_cur) * 3 / 4);
  }
}

Result<LocalBackend::PathFd> LocalBackend::Path(const InodePtr& inode) {
  if (inode->fd.valid()) return PathFd(inode->fd.get());
  MFS_ASSIGN_OR_RETURN(UniqueFd fd, handles_.Open(inode->handle));
  return PathFd(std::move(fd));
}

Result<EntryOut> LocalBackend::MakeEntry(UniqueFd fd) {
  // A slot raised after this point (by us below, or by another thread
  // making the same inode) may have missed a change of mfsd's that came
  // after our stat: then stat again (interest_map.h).
  const uint64_t seq_before = held_seq_.load(std::memory_order_seq_cst);
  MFS_ASSIGN_OR_RETURN(struct stat st, ops::Stat(fd.get()));
  if (hidden_dev_ != 0 && st.st_dev == hidden_dev_)
    return Status::Error(ENOENT, "the /mfs mount is not shown inside an export");
  std::string key = "L" + std::to_string(self_) + ":" + ops::FileKey(st);
  // Past the budget a new inode keeps the file's handle, not the fd. The
  // handle is made only when needed: for that, or to check an inode found
  // that keeps one.
  const int64_t budget = S_ISDIR(st.st_mode) ? dir_budget_ : file_budget_;
  std::optional<std::string> handle;  // "": the file has none
  auto our_handle = [&]() -> const std::string& {
    if (!handle) {
      auto h = handles_.Make(fd.get());
      handle = h.ok() ? std::move(*h) : std::string();
    }
    return *handle;
  };
  const int raw_fd = fd.get();  // ours until make() takes it
  InodePtr p;
  try {
    // An inode that keeps only a handle does not pin its inode number: the
    // file may be gone and the number reused, so the one found by key must
    // be the same file.
    auto same = [&](const Inode& old) { return old.fd.valid() || old.handle == our_handle(); };
    p = table_->Ref(
        key,
        [&](uint64_t id) {
          auto i = std::make_shared<Inode>(id, InodeKind::kLocal, self_);
          i->type = st.st_mode & S_IFMT;
          if (budget < 0 || fd_count_->load(std::memory_order_relaxed) < budget ||
              our_handle().empty()) {
            i->fd = std::move(fd);
            i->fd_count = fd_count_;
            fd_count_->fetch_add(1, std::memory_order_relaxed);
          } else {
            i->handle = std::move(*handle);
          }
          if (held_) {
            i->held_key = key.substr(key.find(':') + 1);
            held_->Add(i->held_key);
            i->held_in = held_;
            i->held_seq = held_seq_.fetch_add(1, std::memory_order_seq_cst) + 1;
          }
          return i;
        },
        same);
  } catch (const std::bad_alloc&) {
    return Status::PosixError("inode table", ENOMEM);
  }
  if (!p) return Status::PosixError("inode table", ENOMEM);
  if (p->held_seq > seq_before) {
    MFS_ASSIGN_OR_RETURN(st, ops::Stat(raw_fd));  // ours, or now the inode's
  }
  st.st_ino = ShownIno(self_, st.st_ino);
  return EntryOut{std::move(p), st};
}

void LocalBackend::Changed(const InodePtr& inode, const std::string& name) {
  if (!on_change_) return;
  const std::string& k = inode->key;  // "L<node>:<dev>:<ino>"
  // The change time matters only for a file's own changes (a push of one
  // that an open saw is skipped); an entry change in a directory needs none,
  // and an inode without an fd reports none (the push then always goes).
  on_change_(k.substr(k.find(':') + 1), name, 0, name.empty() ? inode->fd.get() : -1);
}

void LocalBackend::ChangedVictim(int victim) {
  struct stat st;
  if (!on_change_ || victim < 0 || fstat(victim, &st) != 0) return;
  uint8_t flags = st.st_nlink == 0 ? proto::kChangedGone : 0;
  if (S_ISDIR(st.st_mode)) {
    if (!flags) return;  // (not reached: a directory has one name)
    flags |= proto::kChangedDir;
  }
  on_change_(ops::FileKey(st), "", flags, victim);
}

Result<EntryOut> LocalBackend::RootEntry() {
  int fd = fcntl(root_.get(), F_DUPFD_CLOEXEC, 0);
  if (fd < 0) return Status::FromErrno("dup export root");
  return MakeEntry(UniqueFd(fd));
}

Result<EntryOut> LocalBackend::LookupIn(int dirfd, const std::string& name) {
  MFS_ASSIGN_OR_RETURN(UniqueFd fd, ops::OpenPath(dirfd, name));
  return MakeEntry(std::move(fd));
}

void LocalBackend::Lookup(const Caller& c, const InodePtr& parent, const std::string& name,
                          Cb<EntryOut> cb) {
  Result<EntryOut> r = [&]() -> Result<EntryOut> {
    MFS_ASSIGN_OR_RETURN(PathFd dir, Path(parent));
    ScopedCreds creds(c);
    return LookupIn(dir.get(), name);
  }();
  cb(std::move(r));
}

void LocalBackend::GetAttr(const Caller&, const InodePtr& inode, FileHandle* fh,
                           Cb<struct stat> cb) {
  struct stat st;
  if (fh && fh->fd.valid()) {
    if (fstat(fh->fd.get(), &st) < 0) return cb(Status::FromErrno("stat"));
  } else {
    auto f = Path(inode);
    if (!f.ok()) return cb(f.status());
    if (fstatat(f->get(), "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0)
      return cb(Status::FromErrno("stat"));
  }
  st.st_ino = ShownIno(self_, st.st_ino);
  cb(st);
}

void LocalBackend::SetAttr(const Caller& c, const InodePtr& inode, FileHandle* fh,
                           const SetAttrIn& in, Cb<struct stat> cb) {
  auto f = Path(inode);
  if (!f.ok()) return cb(f.status());
  Result<struct stat> r = ops::SetAttrAs(c, f->get(), fh && fh->fd.valid() ? fh->fd.get() : -1, in);
  if (r.ok()) {
    r->st_ino = ShownIno(self_, r->st_ino);
    Changed(inode);
  }
  cb(std::move(r));
}

void LocalBackend::MakeNode(const Caller& c, const InodePtr& parent, const std::string& name,
                            mode_t mode, dev_t rdev, const std::string& link, Cb<EntryOut> cb) {
  Result<EntryOut> r = [&]() -> Result<EntryOut> {
    MFS_ASSIGN_OR_RETURN(PathFd dir, Path(parent));
    ScopedCreds creds(c);
    MFS_RETURN_IF_ERROR(ops::MakeNode(dir.get(), name, mode, rdev, link));
    return LookupIn(dir.get(), name);
  }();
  if (r.ok()) Changed(parent, name);
  cb(std::move(r));
}

void LocalBackend::Link(const Caller& c, const InodePtr& inode, const InodePtr& newparent,
                        const std::string& name, Cb<EntryOut> cb) {
  Result<EntryOut> r = [&]() -> Result<EntryOut> {
    MFS_ASSIGN_OR_RETURN(PathFd file, Path(inode));
    MFS_ASSIGN_OR_RETURN(PathFd dir, Path(newparent));
    ScopedCreds creds(c);
    MFS_RETURN_IF_ERROR(ops::Link(file.get(), dir.get(), name));
    return LookupIn(dir.get(), name);
  }();
  if (r.ok()) {
    Changed(newparent, name);
    Changed(inode);
  }
  cb(std::move(r));
}

void LocalBackend::Remove(const Caller& c, const InodePtr& parent, const std::string& name,
                          bool dir, DoneCb cb) {
  auto d = Path(parent);
  if (!d.ok()) return cb(d.status());
  // The file itself, for its attributes on other nodes (st_nlink) and to
  // tell mfsd when it is gone.
  auto victim = ops::OpenPath(d->get(), name);
  Status s;
  {
    ScopedCreds creds(c);
    s = ops::Remove(d->get(), name, dir);
  }
  if (s.ok()) {
    Changed(parent, name);
    ChangedVictim(victim.ok() ? victim->get() : -1);
  }
  cb(s);
}

void LocalBackend::Rename(const Caller& c, const InodePtr& parent, const std::string& name,
                          const InodePtr& newparent, const std::string& newname, unsigned flags,
                          DoneCb cb) {
  auto from = Path(parent);
  if (!from.ok()) return cb(from.status());
  auto to = Path(newparent);
  if (!to.ok()) return cb(to.status());
  auto replaced = ops::OpenPath(to->get(), newname);  // a file renamed over
  Status s;
  {
    ScopedCreds creds(c);
    s = ops::Rename(from->get(), name, to->get(), newname, flags);
  }
  if (s.ok()) {
    Changed(parent, name);
    Changed(newparent, newname);
    ChangedVictim(replaced.ok() ? replaced->get() : -1);
  }
  cb(s);
}

void LocalBackend::ReadLink(const Caller&, const InodePtr& inode, Cb<std::string> cb) {
  auto f = Path(inode);
  if (!f.ok()) return cb(f.status());
  cb(ops::ReadLink(f->get()));
}

void LocalBackend::Access(const Caller& c, const InodePtr& inode, int mask, DoneCb cb) {
  auto f = Path(inode);
  if (!f.ok()) return cb(f.status());
  Status s;
  {
    ScopedCreds creds(c);
    s = ops::Access(f->get(), mask);
  }
  cb(s);
}

void LocalBackend::Open(const Caller& c, const InodePtr& inode, int flags,
                        Cb<std::unique_ptr<FileHandle>> cb) {
  Result<UniqueFd> fd = [&]() -> Result<UniqueFd> {
    MFS_ASSIGN_OR_RETURN(PathFd f, Path(inode));
    ScopedCreds creds(c);
    return ops::Reopen(f.get(), flags);
  }();
  if (!fd.ok()) return cb(fd.status());
  auto fh = std::make_unique<FileHandle>();
  fh->inode = inode;
  fh->fd = std::move(*fd);
  fh->flags = flags;
  struct stat st;
  if (fstat(fh->fd.get(), &st) == 0) {
    fh->open_ctime = CtimeNs(st);
    fh->open_nlink = st.st_nlink;
  }
  cb(std::move(fh));
}

void LocalBackend::Create(const Caller& c, const InodePtr& parent, const std::string& name,
                          mode_t mode, int flags, Cb<CreateOut> cb) {
  Result<CreateOut> r = [&]() -> Result<CreateOut> {
    MFS_ASSIGN_OR_RETURN(PathFd dir, Path(parent));
    ScopedCreds creds(c);
    MFS_ASSIGN_OR_RETURN(UniqueFd fd, ops::Create(dir.get(), name, mode, flags));
    MFS_ASSIGN_OR_RETURN(EntryOut e, LookupIn(dir.get(), name));
    auto fh = std::make_unique<FileHandle>();
    fh->inode = e.inode;
    fh->fd = std::move(fd);
    fh->flags = flags;
    return CreateOut{std::move(e), std::move(fh)};
  }();
  if (r.ok()) Changed(parent, name);
  cb(std::move(r));
}

void LocalBackend::Read(FileHandle* fh, size_t size, off_t off, Cb<std::string> cb) {
  cb(ops::PRead(fh->fd.get(), size, off));
}

void LocalBackend::Write(FileHandle* fh, std::string data, off_t off, bool kill_suid,
                         Cb<size_t> cb) {
  fh->written = true;
  if (kill_suid) {
    if (Status s = ops::KillSuid(fh->fd.get()); !s.ok()) return cb(s);
  }
  cb(ops::PWrite(fh->fd.get(), data, off));
}

void LocalBackend::Flush(FileHandle* fh, uint64_t lock_owner, DoneCb cb) {
  // close() of a dup reports deferred write errors (NFS-style) as the
  // kernel's own close would; then the owner's record locks go.
  int d = dup(fh->fd.get());
  int r = d < 0 ? -1 : close(d);
  Status s = r < 0 ? Status::FromErrno("flush") : Status::OK();
  locks_.ReleaseOwner(LockKey(fh->inode), lock_owner);
  bool writable = (fh->flags & O_ACCMODE) != O_RDONLY;
  if (fh->written.exchange(false) || (fh->flags & O_TRUNC) || (fh->passthrough && writable))
    Changed(fh->inode);
  cb(s);
}

void LocalBackend::Fsync(FileHandle* fh, bool datasync, DoneCb cb) {
  int r = datasync ? fdatasync(fh->fd.get()) : fsync(fh->fd.get());
  cb(r < 0 ? Status::FromErrno("fsync") : Status::OK());
}

void LocalBackend::Release(std::unique_ptr<FileHandle>) {}

void LocalBackend::OpenDir(const Caller& c, const InodePtr& inode,
                           Cb<std::unique_ptr<DirHandle>> cb) {
  Result<UniqueFd> fd = [&]() -> Result<UniqueFd> {
    MFS_ASSIGN_OR_RETURN(PathFd f, Path(inode));
    ScopedCreds creds(c);
    return ops::Reopen(f.get(), O_RDONLY | O_DIRECTORY);
  }();
  if (!fd.ok()) return cb(fd.status());
  auto dh = std::make_unique<DirHandle>();
  dh->inode = inode;
  dh->fd = std::move(*fd);
  cb(std::move(dh));
}

void LocalBackend::ReadDir(const Caller& c, DirHandle* dh, uint64_t off, size_t max, bool plus,
                           Cb<std::vector<DirEntryOut>> cb) {
  if (off == 0 || dh->snapshot.empty()) {
    auto all = ops::ReadDirAll(dh->fd.get());
    if (!all.ok()) return cb(all.status());
    dh->snapshot = std::move(*all);
  }
  std::vector<DirEntryOut> out;
  // Entries are looked up in the directory's open fd: no handle to open.
  ScopedCreds creds(c);
  for (uint64_t i = off; i < dh->snapshot.size() && out.size() < max; ++i) {
    const DirHandle::Raw& raw = dh->snapshot[i];
    DirEntryOut e;
    e.name = raw.name;
    e.next_off = i + 1;
    e.type = raw.type;
    e.ino = ShownIno(self_, raw.ino);
    if (plus && raw.name != "." && raw.name != "..") {
      auto r = LookupIn(dh->fd.get(), raw.name);
      if (!r.ok()) continue;  // gone since the snapshot: skip it
      e.has_entry = true;
      e.entry = std::move(*r);
      e.ino = e.entry.attr.st_ino;
    }
    out.push_back(std::move(e));
  }
  cb(std::move(out));
}

void LocalBackend::ReleaseDir(std::unique_ptr<DirHandle>) {}

void LocalBackend::StatFs(const Caller&, const InodePtr& inode, Cb<struct statvfs> cb) {
  auto f = Path(inode);
  if (!f.ok()) return cb(f.status());
  cb(ops::StatFs(f->get()));
}

void LocalBackend::SetXattr(const Caller& c, const InodePtr& inode, const std::string& name,
                            std::string value, int flags, DoneCb cb) {
  auto f = Path(inode);
  if (!f.ok()) return cb(f.status());
  Status s;
  {
    ScopedCreds creds(c);
    s = ops::SetXattr(f->get(), name, value, flags);
  }
  if (s.ok()) Changed(inode);
  cb(s);
}

void LocalBackend::GetXattr(const Caller& c, const InodePtr& inode, const std::string& name,
                            Cb<std::string> cb) {
  Result<std::string> r = [&]() -> Result<std::string> {
    MFS_ASSIGN_OR_RETURN(PathFd f, Path(inode));
    ScopedCreds creds(c);
    return ops::GetXattr(f.get(), name);
  }();
  cb(std::move(r));
}

void LocalBackend::ListXattr(const Caller& c, const InodePtr& inode, Cb<std::string> cb) {
  Result<std::string> r = [&]() -> Result<std::string> {
    MFS_ASSIGN_OR_RETURN(PathFd f, Path(inode));
    ScopedCreds creds(c);
    return ops::ListXattr(f.get());
  }();
  cb(std::move(r));
}

void LocalBackend::RemoveXattr(const Caller& c, const InodePtr& inode, const std::string& name,
                               DoneCb cb) {
  auto f = Path(inode);
  if (!f.ok()) return cb(f.status());
  Status s;
  {
    ScopedCreds creds(c);
    s = ops::RemoveXattr(f->get(), name);
  }
  if (s.ok()) Changed(inode);
  cb(s);
}

void LocalBackend::Fallocate(FileHandle* fh, int mode, off_t off, off_t len, DoneCb cb) {
  Status s = ops::Fallocate(fh->fd.get(), mode, off, len);
  if (s.ok()) fh->written = true;
  cb(s);
}

void LocalBackend::CopyFileRange(FileHandle* in, off_t off_in, FileHandle* out, off_t off_out,
                                 size_t len, Cb<size_t> cb) {
  auto r = ops::CopyFileRange(in->fd.get(), off_in, out->fd.get(), off_out, len);
  if (r.ok()) out->written = true;
  cb(std::move(r));
}

// Locks use the open file's own fd (any fd of the backing file will do).
void LocalBackend::GetLk(FileHandle* fh, const LockIn& in, Cb<LockIn> cb) {
  cb(locks_.GetLk(fh->fd.get(), LockKey(fh->inode), in));
}

// A lock request that may wait runs on its own thread, so that waiting
// lockers never occupy the FUSE worker threads (the kernel keeps the file
// open, and so the inode referenced, until the request is answered). The
// thread has its own fd of the file: the handle's may be closed under it.
void LocalBackend::SetLk(FileHandle* fh, const LockIn& in, DoneCb cb) {
  InodePtr inode = fh->inode;
  if (!in.wait) return cb(locks_.SetLk(fh->fd.get(), LockKey(inode), in));
  int d = fcntl(fh->fd.get(), F_DUPFD_CLOEXEC, 0);
  if (d < 0) return cb(Status::FromErrno("dup for lock wait"));
  std::thread([this, inode, in, f = UniqueFd(d), cb = std::move(cb)] {
    cb(locks_.SetLk(f.get(), LockKey(inode), in, 0, in.wait_token));
  }).detach();
}

void LocalBackend::Flock(FileHandle* fh, uint64_t owner, int op, uint64_t wait_token, DoneCb cb) {
  InodePtr inode = fh->inode;
  if ((op & LOCK_NB) || (op & ~LOCK_NB) == LOCK_UN)
    return cb(locks_.Flock(fh->fd.get(), LockKey(inode), owner, op));
  int d = fcntl(fh->fd.get(), F_DUPFD_CLOEXEC, 0);
  if (d < 0) return cb(Status::FromErrno("dup for lock wait"));
  std::thread([this, inode, owner, op, wait_token, f = UniqueFd(d), cb = std::move(cb)] {
    cb(locks_.Flock(f.get(), LockKey(inode), owner, op, 0, wait_token));
  }).detach();
}

}  // namespace mfs::client

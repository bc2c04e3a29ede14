#include "mfs/client/local_backend.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <new>
#include <thread>

#include "mfs/client/fs_protocol.h"

namespace mfs::client {

LocalBackend::LocalBackend(InodeTable* table, uint32_t self, UniqueFd root, dev_t hidden_dev)
    : table_(table), self_(self), root_(std::move(root)), hidden_dev_(hidden_dev) {}

Result<EntryOut> LocalBackend::MakeEntry(UniqueFd fd) {
  // A slot raised after this point (by us below, or by another thread
  // making the same inode) may have missed a change of mfsd's that came
  // after our stat: then stat again (interest_map.h).
  const uint64_t seq_before = held_seq_.load(std::memory_order_seq_cst);
  MFS_ASSIGN_OR_RETURN(struct stat st, ops::Stat(fd.get()));
  if (hidden_dev_ != 0 && st.st_dev == hidden_dev_)
    return Status::Error(ENOENT, "the /mfs mount is not shown inside an export");
  std::string key = "L" + std::to_string(self_) + ":" + ops::FileKey(st);
  InodePtr p;
  try {
    p = table_->Ref(key, [&](uint64_t id) {
      auto i = std::make_shared<Inode>(id, InodeKind::kLocal, self_);
      i->type = st.st_mode & S_IFMT;
      i->fd = std::move(fd);
      if (held_) {
        i->held_key = key.substr(key.find(':') + 1);
        held_->Add(i->held_key);
        i->held_in = held_;
        i->held_seq = held_seq_.fetch_add(1, std::memory_order_seq_cst) + 1;
      }
      return i;
    });
  } catch (const std::bad_alloc&) {
    return Status::PosixError("inode table", ENOMEM);
  }
  if (!p) return Status::PosixError("inode table", ENOMEM);
  if (p->held_seq > seq_before) {
    MFS_ASSIGN_OR_RETURN(st, ops::Stat(p->fd.get()));
  }
  st.st_ino = ShownIno(self_, st.st_ino);
  return EntryOut{std::move(p), st};
}

void LocalBackend::Changed(const InodePtr& inode, const std::string& name) {
  if (!on_change_) return;
  const std::string& k = inode->key;  // "L<node>:<dev>:<ino>"
  // The change time matters only for a file's own changes (a push of one
  // that an open saw is skipped); an entry change in a directory needs none.
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

Result<EntryOut> LocalBackend::LookupSync(const InodePtr& parent, const std::string& name) {
  MFS_ASSIGN_OR_RETURN(UniqueFd fd, ops::OpenPath(parent->fd.get(), name));
  return MakeEntry(std::move(fd));
}

void LocalBackend::Lookup(const Caller& c, const InodePtr& parent, const std::string& name,
                          Cb<EntryOut> cb) {
  Result<EntryOut> r = [&]() -> Result<EntryOut> {
    ScopedCreds creds(c);
    return LookupSync(parent, name);
  }();
  cb(std::move(r));
}

void LocalBackend::GetAttr(const Caller&, const InodePtr& inode, FileHandle* fh,
                           Cb<struct stat> cb) {
  struct stat st;
  int r = fh && fh->fd.valid() ? fstat(fh->fd.get(), &st)
                               : fstatat(inode->fd.get(), "", &st,
                                         AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW);
  if (r < 0) return cb(Status::FromErrno("stat"));
  st.st_ino = ShownIno(self_, st.st_ino);
  cb(st);
}

void LocalBackend::SetAttr(const Caller& c, const InodePtr& inode, FileHandle* fh,
                           const SetAttrIn& in, Cb<struct stat> cb) {
  Result<struct stat> r =
      ops::SetAttrAs(c, inode->fd.get(), fh && fh->fd.valid() ? fh->fd.get() : -1, in);
  if (r.ok()) {
    r->st_ino = ShownIno(self_, r->st_ino);
    Changed(inode);
  }
  cb(std::move(r));
}

void LocalBackend::MakeNode(const Caller& c, const InodePtr& parent, const std::string& name,
                            mode_t mode, dev_t rdev, const std::string& link, Cb<EntryOut> cb) {
  Result<EntryOut> r = [&]() -> Result<EntryOut> {
    ScopedCreds creds(c);
    MFS_RETURN_IF_ERROR(ops::MakeNode(parent->fd.get(), name, mode, rdev, link));
    return LookupSync(parent, name);
  }();
  if (r.ok()) Changed(parent, name);
  cb(std::move(r));
}

void LocalBackend::Link(const Caller& c, const InodePtr& inode, const InodePtr& newparent,
                        const std::string& name, Cb<EntryOut> cb) {
  Result<EntryOut> r = [&]() -> Result<EntryOut> {
    ScopedCreds creds(c);
    MFS_RETURN_IF_ERROR(ops::Link(inode->fd.get(), newparent->fd.get(), name));
    return LookupSync(newparent, name);
  }();
  if (r.ok()) {
    Changed(newparent, name);
    Changed(inode);
  }
  cb(std::move(r));
}

void LocalBackend::Remove(const Caller& c, const InodePtr& parent, const std::string& name,
                          bool dir, DoneCb cb) {
  // The file itself, for its attributes on other nodes (st_nlink) and to
  // tell mfsd when it is gone.
  auto victim = ops::OpenPath(parent->fd.get(), name);
  Status s;
  {
    ScopedCreds creds(c);
    s = ops::Remove(parent->fd.get(), name, dir);
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
  auto replaced = ops::OpenPath(newparent->fd.get(), newname);  // a file renamed over
  Status s;
  {
    ScopedCreds creds(c);
    s = ops::Rename(parent->fd.get(), name, newparent->fd.get(), newname, flags);
  }
  if (s.ok()) {
    Changed(parent, name);
    Changed(newparent, newname);
    ChangedVictim(replaced.ok() ? replaced->get() : -1);
  }
  cb(s);
}

void LocalBackend::ReadLink(const Caller&, const InodePtr& inode, Cb<std::string> cb) {
  cb(ops::ReadLink(inode->fd.get()));
}

void LocalBackend::Access(const Caller& c, const InodePtr& inode, int mask, DoneCb cb) {
  Status s;
  {
    ScopedCreds creds(c);
    s = ops::Access(inode->fd.get(), mask);
  }
  cb(s);
}

void LocalBackend::Open(const Caller& c, const InodePtr& inode, int flags,
                        Cb<std::unique_ptr<FileHandle>> cb) {
  Result<UniqueFd> fd = [&]() {
    ScopedCreds creds(c);
    return ops::Reopen(inode->fd.get(), flags);
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
    ScopedCreds creds(c);
    MFS_ASSIGN_OR_RETURN(UniqueFd fd, ops::Create(parent->fd.get(), name, mode, flags));
    MFS_ASSIGN_OR_RETURN(EntryOut e, LookupSync(parent, name));
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
  Result<UniqueFd> fd = [&]() {
    ScopedCreds creds(c);
    return ops::Reopen(inode->fd.get(), O_RDONLY | O_DIRECTORY);
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
  ScopedCreds creds(c);
  for (uint64_t i = off; i < dh->snapshot.size() && out.size() < max; ++i) {
    const DirHandle::Raw& raw = dh->snapshot[i];
    DirEntryOut e;
    e.name = raw.name;
    e.next_off = i + 1;
    e.type = raw.type;
    e.ino = ShownIno(self_, raw.ino);
    if (plus && raw.name != "." && raw.name != "..") {
      auto r = LookupSync(dh->inode, raw.name);
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
  cb(ops::StatFs(inode->fd.get()));
}

void LocalBackend::SetXattr(const Caller& c, const InodePtr& inode, const std::string& name,
                            std::string value, int flags, DoneCb cb) {
  Status s;
  {
    ScopedCreds creds(c);
    s = ops::SetXattr(inode->fd.get(), name, value, flags);
  }
  if (s.ok()) Changed(inode);
  cb(s);
}

void LocalBackend::GetXattr(const Caller& c, const InodePtr& inode, const std::string& name,
                            Cb<std::string> cb) {
  Result<std::string> r = [&]() {
    ScopedCreds creds(c);
    return ops::GetXattr(inode->fd.get(), name);
  }();
  cb(std::move(r));
}

void LocalBackend::ListXattr(const Caller& c, const InodePtr& inode, Cb<std::string> cb) {
  Result<std::string> r = [&]() {
    ScopedCreds creds(c);
    return ops::ListXattr(inode->fd.get());
  }();
  cb(std::move(r));
}

void LocalBackend::RemoveXattr(const Caller& c, const InodePtr& inode, const std::string& name,
                               DoneCb cb) {
  Status s;
  {
    ScopedCreds creds(c);
    s = ops::RemoveXattr(inode->fd.get(), name);
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

void LocalBackend::GetLk(FileHandle* fh, const LockIn& in, Cb<LockIn> cb) {
  cb(locks_.GetLk(fh->inode->fd.get(), LockKey(fh->inode), in));
}

// A lock request that may wait runs on its own thread, so that waiting
// lockers never occupy the FUSE worker threads (the kernel keeps the file
// open, and so the inode referenced, until the request is answered).
void LocalBackend::SetLk(FileHandle* fh, const LockIn& in, DoneCb cb) {
  InodePtr inode = fh->inode;
  if (!in.wait) return cb(locks_.SetLk(inode->fd.get(), LockKey(inode), in));
  std::thread([this, inode, in, cb = std::move(cb)] {
    cb(locks_.SetLk(inode->fd.get(), LockKey(inode), in, 0, in.wait_token));
  }).detach();
}

void LocalBackend::Flock(FileHandle* fh, uint64_t owner, int op, uint64_t wait_token, DoneCb cb) {
  InodePtr inode = fh->inode;
  if ((op & LOCK_NB) || (op & ~LOCK_NB) == LOCK_UN)
    return cb(locks_.Flock(inode->fd.get(), LockKey(inode), owner, op));
  std::thread([this, inode, owner, op, wait_token, cb = std::move(cb)] {
    cb(locks_.Flock(inode->fd.get(), LockKey(inode), owner, op, 0, wait_token));
  }).detach();
}

}  // namespace mfs::client

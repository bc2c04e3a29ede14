#define FUSE_USE_VERSION 314
#include "mfs/fuse/fuse_fs.h"

#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <linux/fuse.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <mutex>
#include <new>
#include <optional>
#include <sstream>
#include <unordered_map>
#include <vector>

#include "mfs/base/log.h"
#include "mfs/client/local_ops.h"
#include "mfs/fuse/uring.h"
#include "mfs/wire/connection.h"

namespace mfs::fuse {

using client::Backend;
using client::Caller;
using client::Client;
using client::DirEntryOut;
using client::DirHandle;
using client::EntryOut;
using client::FileHandle;
using client::InodeKind;
using client::InodePtr;
using client::IoOp;
using client::Magic;

// FUSE passthrough, from the kernel's uapi <linux/fuse.h> of protocol 7.40
// (Linux 6.9); the installed header (7.38, libfuse 3.14's era) lacks them.
namespace uapi {
constexpr uint32_t kInitPassthroughFlags2 = 1u << (37 - 32);  // FUSE_PASSTHROUGH
constexpr uint32_t kInitOverIoUringFlags2 = 1u << (41 - 32);  // FUSE_OVER_IO_URING
constexpr uint32_t kFopenPassthrough = 1u << 7;               // FOPEN_PASSTHROUGH
struct BackingMap {                                           // struct fuse_backing_map
  int32_t fd;
  uint32_t flags;
  uint64_t padding;
};
struct OpenOut {  // struct fuse_open_out; 7.38 calls backing_id "padding"
  uint64_t fh;
  uint32_t open_flags;
  int32_t backing_id;
};
static_assert(sizeof(OpenOut) == sizeof(fuse_open_out));
constexpr unsigned long kBackingOpen = _IOW(229, 1, BackingMap);  // FUSE_DEV_IOC_BACKING_OPEN
constexpr unsigned long kBackingClose = _IOW(229, 2, uint32_t);   // FUSE_DEV_IOC_BACKING_CLOSE
// fuse_init_out.max_stack_depth follows flags2 (7.38: unused[0]).
constexpr size_t kMaxStackDepthOffset = offsetof(fuse_init_out, flags2) + 4;
}  // namespace uapi

// How the kernel does I/O on one local inode's open files: all through its
// page cache (requests to us) or all passthrough to one backing file (the
// kernel refuses a mix: EIO at open).
struct IoMode {
  int cached_opens = 0;
  int passthrough_opens = 0;
  int32_t backing_id = -1;
};

// Everything a handler needs, reached through the request's userdata.
struct FuseCtx {
  Client* client;
  double attr_timeout;
  double entry_timeout;
  // The kernel agreed to FUSE_HANDLE_KILLPRIV_V2: it no longer asks for
  // security.capability before each write nor clears set-id bits itself;
  // writes by callers without CAP_FSETID must clear them here.
  std::atomic<bool> killpriv_v2{false};
  Passthrough passthrough_mode = Passthrough::kAuto;
  // The kernel agreed to FUSE_PASSTHROUGH and registering backing files
  // works; cleared for good when the kernel refuses one.
  std::atomic<bool> passthrough{false};
  fuse_session* se = nullptr;
  int dev_fd = -1;                                // the FUSE device (ioctls)
  std::mutex io_mu;                               // guards io_modes; a leaf lock
  std::unordered_map<uint64_t, IoMode> io_modes;  // by node id, while open
  std::atomic<uint64_t> passthrough_opens_total{0};
  // Orders pushed inode invalidations against opens (Inode::opened_ctime),
  // so that none an open made redundant reaches the kernel after its OPEN
  // reply. Guards the Inode::opened_ctime fields and the two below; never
  // held across a notify (one that drops pages waits for reads in flight,
  // whose replies may need the thread that waits for this lock).
  std::mutex inval_mu;
  uint64_t notifying_ino = 0;                       // a pushed invalidation being passed on
  std::vector<std::function<void()>> after_notify;  // open replies it holds up
  // FUSE over io_uring, when agreed at INIT: where replies to requests taken
  // off its rings go. Set before any request is served; owned by FuseFs.
  UringTransport* uring = nullptr;
};

// FUSE requests read from the device by this process (user.mfs.requests).
static std::atomic<uint64_t> g_fuse_requests{0};
// Pushed invalidations not passed on: an open here had seen the change.
static std::atomic<uint64_t> g_invalidations_seen{0};

namespace {

FuseCtx& C(fuse_req_t req) { return *static_cast<FuseCtx*>(fuse_req_userdata(req)); }

Caller CallerOf(fuse_req_t req) {
  const fuse_ctx* ctx = fuse_req_ctx(req);
  Caller c;
  c.pid = ctx->pid;
  c.uid = ctx->uid;
  c.gid = ctx->gid;
  if (c.uid != 0) {
    std::vector<gid_t> g(32);
    int n = fuse_req_getgroups(req, static_cast<int>(g.size()), g.data());
    if (n > static_cast<int>(g.size())) {
      g.resize(static_cast<size_t>(n));
      n = fuse_req_getgroups(req, static_cast<int>(g.size()), g.data());
    }
    if (n > 0) {
      g.resize(std::min(static_cast<size_t>(n), g.size()));
      c.groups = std::move(g);
    }
  }
  return c;
}

int Err(const Status& s) { return s.code() > 0 ? s.code() : EIO; }

bool IsMagic(const InodePtr& i) { return i->kind == InodeKind::kMagic; }
bool IsRoot(const InodePtr& i) { return i->kind == InodeKind::kRoot; }
bool IsFile(const InodePtr& i) {
  return i->kind == InodeKind::kLocal || i->kind == InodeKind::kRemote;
}

// Looks up `ino`; replies ESTALE and returns null if it is unknown.
InodePtr Get(fuse_req_t req, fuse_ino_t ino) {
  InodePtr p = C(req).client->Get(ino);
  if (!p) fuse_reply_err(req, ESTALE);
  return p;
}

void FillEntry(fuse_req_t req, const EntryOut& e, fuse_entry_param* fe) {
  std::memset(fe, 0, sizeof(*fe));
  fe->ino = e.inode->id;
  fe->attr = e.attr;
  e.inode->told_ctime.store(client::CtimeNs(e.attr), std::memory_order_relaxed);
  if (IsMagic(e.inode)) {
    fe->attr_timeout = 0;
    fe->entry_timeout = 0;
  } else {
    fe->attr_timeout = C(req).attr_timeout;
    fe->entry_timeout = C(req).entry_timeout;
  }
}

// The errno of a failed operation on a name under `dir`. ESTALE there means
// the directory was removed (ops::InDir): the kernel reached it through an
// entry it still held, and on ESTALE it walks the path again with every
// entry revalidated, which ends at the directory that replaced it, if any.
// The kernel is told so once per directory; whoever reaches it after that
// does so through a cwd or an open fd, where a native file system answers
// ENOENT.
int ErrIn(const InodePtr& dir, const Status& s) {
  int e = Err(s);
  if (e == ESTALE && dir && dir->stale_told.exchange(true)) return ENOENT;
  return e;
}

void ReplyEntry(fuse_req_t req, Result<EntryOut> r, const InodePtr& dir = nullptr) {
  if (!r.ok()) {
    fuse_reply_err(req, ErrIn(dir, r.status()));
    return;
  }
  fuse_entry_param fe;
  FillEntry(req, *r, &fe);
  Client* c = C(req).client;
  uint64_t id = fe.ino;
  bool counted = IsFile(r->inode);
  if (fuse_reply_entry(req, &fe) != 0 && counted) c->table().Forget(id, 1);
}

void ReplyAttr(fuse_req_t req, const InodePtr& inode, Result<struct stat> r) {
  if (!r.ok()) {
    fuse_reply_err(req, Err(r.status()));
    return;
  }
  inode->told_ctime.store(client::CtimeNs(*r), std::memory_order_relaxed);
  fuse_reply_attr(req, &*r, IsMagic(inode) ? 0 : C(req).attr_timeout);
}

// Close-to-open: the file changed since the attributes the kernel may hold
// for it (another node wrote and closed it, and the owner's invalidation
// may still be on its way): drop them before the open completes, so that
// the reads after it ask for the size again. The pages go with
// keep_cache = 0.
// `reply` sends the OPEN reply: now, or, while a pushed invalidation of
// this inode that this open may have made redundant is being passed on,
// right after it (FuseFs::InvalidateInode).
void RevalidateAtOpen(FuseCtx& x, const InodePtr& inode, const FileHandle& fh,
                      std::function<void()> reply) {
  if (!fh.open_ctime || !x.se) return reply();
  int64_t ctime = *fh.open_ctime;
  auto revalidate = [&x, inode, ctime] {
    if (inode->told_ctime.load(std::memory_order_relaxed) != ctime)
      fuse_lowlevel_notify_inval_inode(x.se, inode->id, -1, 0);
  };
  {
    std::lock_guard<std::mutex> l(x.inval_mu);
    inode->opened_ctime = std::max(inode->opened_ctime, ctime);
    if (x.notifying_ino == inode->id) {
      x.after_notify.push_back([revalidate, reply = std::move(reply)] {
        revalidate();
        reply();
      });
      return;
    }
  }
  revalidate();
  reply();
}

void ReplyErr(fuse_req_t req, const Status& s) { fuse_reply_err(req, s.ok() ? 0 : Err(s)); }

// ---- passthrough ----------------------------------------------------------

// The backing id the next OPEN/CREATE reply written by this thread must
// carry (libfuse 3.14's fuse_reply_open cannot set it): set just before
// fuse_reply_open/_create, consumed by IoWritev, cleared after.
thread_local int32_t tl_backing_id = -1;

ssize_t IoWritev(int fd, iovec* iov, int count, void* userdata) {
  if (tl_backing_id >= 0 && count >= 2 && iov[0].iov_len == sizeof(fuse_out_header) &&
      iov[count - 1].iov_len >= sizeof(uapi::OpenOut)) {
    fuse_out_header oh;
    std::memcpy(&oh, iov[0].iov_base, sizeof oh);
    if (oh.error == 0) {
      // Both replies end with the fuse_open_out (CREATE: entry_out first).
      char* p = static_cast<char*>(iov[count - 1].iov_base) + iov[count - 1].iov_len -
                sizeof(uapi::OpenOut);
      uapi::OpenOut o;
      std::memcpy(&o, p, sizeof o);
      o.open_flags = (o.open_flags | uapi::kFopenPassthrough) & ~FOPEN_DIRECT_IO;
      o.backing_id = tl_backing_id;
      std::memcpy(p, &o, sizeof o);
    }
    tl_backing_id = -1;
  }
  if (UringTransport* u = static_cast<FuseCtx*>(userdata)->uring) {
    if (auto n = u->TakeReply(iov, count)) return *n;
  }
  return writev(fd, iov, count);
}
ssize_t IoRead(int fd, void* buf, size_t len, void*) {
  ssize_t n = read(fd, buf, len);
  if (n > 0) g_fuse_requests.fetch_add(1, std::memory_order_relaxed);
  return n;
}
ssize_t IoSplice(int fdin, off_t* offin, int fdout, off_t* offout, size_t len, unsigned flags,
                 void* userdata) {
  auto* x = static_cast<FuseCtx*>(userdata);
  if (x->uring && fdout == x->dev_fd && fdin != x->dev_fd && !offin) {
    if (auto n = x->uring->TakeSpliceReply(fdin, len)) return *n;
  }
  return splice(fdin, offin, fdout, offout, len, flags);
}

// Decides how the kernel does I/O on a local file just opened, and counts
// the open. Returns the backing id to reply with, or -1 (page cache).
int32_t BeginIo(FuseCtx& x, const Caller& caller, FileHandle& fh) {
  bool want = x.passthrough.load(std::memory_order_relaxed) && fh.inode->type == S_IFREG &&
              x.passthrough_mode != Passthrough::kOff &&
              (x.passthrough_mode == Passthrough::kOn || !x.client->Accounting());
  // The kernel writes a passthrough file with mount.mfs's credentials, so
  // set-id bits would survive a write by a caller without CAP_FSETID: such
  // files keep to the path where mount.mfs clears them.
  if (want && caller.uid != 0 && (fh.flags & O_ACCMODE) != O_RDONLY) {
    struct stat st;
    if (fstat(fh.fd.get(), &st) != 0 || (st.st_mode & S_ISUID) ||
        (st.st_mode & (S_ISGID | S_IXGRP)) == (S_ISGID | S_IXGRP))
      want = false;
  }
  std::lock_guard<std::mutex> l(x.io_mu);
  IoMode& m = x.io_modes[fh.inode->id];
  if (m.passthrough_opens == 0 && (m.cached_opens > 0 || !want)) {
    ++m.cached_opens;
    fh.cached_io = true;
    return -1;
  }
  if (m.passthrough_opens == 0) {
    uapi::BackingMap map{fh.fd.get(), 0, 0};
    int id = ioctl(x.dev_fd, uapi::kBackingOpen, &map);
    if (id < 0) {
      int e = errno;
      if (e != ENOMEM && e != EMFILE && e != ENFILE) {
        if (x.passthrough.exchange(false))
          spdlog::warn("fuse passthrough disabled: backing file refused: {}", std::strerror(e));
      }
      ++m.cached_opens;
      fh.cached_io = true;
      return -1;
    }
    m.backing_id = id;
  }
  ++m.passthrough_opens;
  fh.passthrough = true;
  x.passthrough_opens_total.fetch_add(1, std::memory_order_relaxed);
  return m.backing_id;
}

// The open counted by BeginIo ended (released, or its reply failed).
void EndIo(FuseCtx& x, FileHandle& fh) {
  if (!fh.passthrough && !fh.cached_io) return;
  std::lock_guard<std::mutex> l(x.io_mu);
  auto it = x.io_modes.find(fh.inode->id);
  if (it == x.io_modes.end()) return;
  IoMode& m = it->second;
  if (fh.passthrough && --m.passthrough_opens == 0) {
    uint32_t id = static_cast<uint32_t>(m.backing_id);
    if (ioctl(x.dev_fd, uapi::kBackingClose, &id) < 0)
      spdlog::warn("fuse passthrough: closing backing id {}: {}", id, std::strerror(errno));
    m.backing_id = -1;
  }
  if (fh.cached_io) --m.cached_opens;
  fh.passthrough = fh.cached_io = false;
  if (m.passthrough_opens <= 0 && m.cached_opens <= 0) x.io_modes.erase(it);
}

FileHandle* Fh(fuse_file_info* fi) {
  return fi ? reinterpret_cast<FileHandle*>(static_cast<uintptr_t>(fi->fh)) : nullptr;
}
DirHandle* Dh(fuse_file_info* fi) {
  return reinterpret_cast<DirHandle*>(static_cast<uintptr_t>(fi->fh));
}

// Turns exceptions into errnos at the C boundary. Handlers only throw (out
// of memory) before they hand the request to a backend.
template <typename F>
void Guard(fuse_req_t req, F&& f) {
  try {
    f();
  } catch (const std::bad_alloc&) {
    fuse_reply_err(req, ENOMEM);
  } catch (...) {
    fuse_reply_err(req, EIO);
  }
}

// ---- handlers -------------------------------------------------------------

void OpInit(void* userdata, fuse_conn_info* conn) {
  (void)userdata;
  auto want = [&](unsigned cap) {
    if (conn->capable & cap) conn->want |= cap;
  };
  want(FUSE_CAP_SPLICE_WRITE);
  want(FUSE_CAP_SPLICE_MOVE);
  want(FUSE_CAP_SPLICE_READ);
  want(FUSE_CAP_FLOCK_LOCKS);
  want(FUSE_CAP_POSIX_LOCKS);
  want(FUSE_CAP_READDIRPLUS);
  want(FUSE_CAP_PARALLEL_DIROPS);
  want(FUSE_CAP_ASYNC_DIO);
  // Page cache is dropped at open (close-to-open) and by pushed
  // invalidations; the kernel must not keep writes back from us.
  conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
  conn->max_write = 1u << 20;
  conn->max_readahead = 1u << 20;
}

void OpLookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Guard(req, [&] {
    InodePtr p = Get(req, parent);
    if (!p) return;
    if (IsRoot(p)) {
      C(req).client->LookupRoot(CallerOf(req), name, [req](Result<EntryOut> r) {
        ReplyEntry(req, std::move(r));
      });
      return;
    }
    if (IsMagic(p)) return (void)fuse_reply_err(req, ENOTDIR);
    Backend* b = C(req).client->BackendFor(*p);
    b->Lookup(CallerOf(req), p, name, [req, p](Result<EntryOut> r) { ReplyEntry(req, std::move(r), p); });
  });
}

void OpForget(fuse_req_t req, fuse_ino_t ino, uint64_t n) {
  C(req).client->table().Forget(ino, n);
  fuse_reply_none(req);
}

void OpForgetMulti(fuse_req_t req, size_t count, fuse_forget_data* f) {
  for (size_t i = 0; i < count; ++i) C(req).client->table().Forget(f[i].ino, f[i].nlookup);
  fuse_reply_none(req);
}

void OpGetattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Guard(req, [&] {
    InodePtr p = Get(req, ino);
    if (!p) return;
    Client* c = C(req).client;
    if (IsRoot(p)) return ReplyAttr(req, p, c->RootAttr());
    if (IsMagic(p)) return ReplyAttr(req, p, c->MagicAttr(static_cast<Magic>(ino - client::kFirstMagicIno)));
    c->BackendFor(*p)->GetAttr(CallerOf(req), p, Fh(fi),
                               [req, p](Result<struct stat> r) { ReplyAttr(req, p, std::move(r)); });
  });
}

void OpSetattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int valid, fuse_file_info* fi) {
  Guard(req, [&] {
    InodePtr p = Get(req, ino);
    if (!p) return;
    if (!IsFile(p)) return (void)fuse_reply_err(req, EPERM);
    client::SetAttrIn in;
    if (valid & FUSE_SET_ATTR_MODE) in.valid |= client::kSetMode, in.mode = attr->st_mode;
    if (valid & FUSE_SET_ATTR_UID) in.valid |= client::kSetUid, in.uid = attr->st_uid;
    if (valid & FUSE_SET_ATTR_GID) in.valid |= client::kSetGid, in.gid = attr->st_gid;
    if (valid & FUSE_SET_ATTR_SIZE) in.valid |= client::kSetSize, in.size = attr->st_size;
    if (valid & FUSE_SET_ATTR_ATIME) in.valid |= client::kSetAtime, in.atime = attr->st_atim;
    if (valid & FUSE_SET_ATTR_MTIME) in.valid |= client::kSetMtime, in.mtime = attr->st_mtim;
    if (valid & FUSE_SET_ATTR_ATIME_NOW) in.valid |= client::kSetAtimeNow;
    if (valid & FUSE_SET_ATTR_MTIME_NOW) in.valid |= client::kSetMtimeNow;
    C(req).client->BackendFor(*p)->SetAttr(
        CallerOf(req), p, Fh(fi), in,
        [req, p](Result<struct stat> r) { ReplyAttr(req, p, std::move(r)); });
  });
}

void OpReadlink(fuse_req_t req, fuse_ino_t ino) {
  Guard(req, [&] {
    InodePtr p = Get(req, ino);
    if (!p) return;
    Client* c = C(req).client;
    if (IsMagic(p)) {
      std::string t = c->ReadMagic(CallerOf(req), static_cast<Magic>(ino - client::kFirstMagicIno));
      return (void)fuse_reply_readlink(req, t.c_str());
    }
    if (!IsFile(p)) return (void)fuse_reply_err(req, EINVAL);
    c->BackendFor(*p)->ReadLink(CallerOf(req), p, [req](Result<std::string> r) {
      if (!r.ok()) return (void)fuse_reply_err(req, Err(r.status()));
      fuse_reply_readlink(req, r->c_str());
    });
  });
}

// Creation in the top directory is refused; in a node's tree it goes to
// the parent's backend.
void MakeNode(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev,
              const char* link) {
  Guard(req, [&] {
    InodePtr p = Get(req, parent);
    if (!p) return;
    if (IsRoot(p)) return (void)fuse_reply_err(req, EPERM);
    if (IsMagic(p)) return (void)fuse_reply_err(req, ENOTDIR);
    C(req).client->BackendFor(*p)->MakeNode(
        CallerOf(req), p, name, mode, rdev, link ? link : "",
        [req, p](Result<EntryOut> r) { ReplyEntry(req, std::move(r), p); });
  });
}

void OpMknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) {
  MakeNode(req, parent, name, mode, rdev, nullptr);
}
void OpMkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  MakeNode(req, parent, name, S_IFDIR | (mode & 07777), 0, nullptr);
}
void OpSymlink(fuse_req_t req, const char* link, fuse_ino_t parent, const char* name) {
  MakeNode(req, parent, name, S_IFLNK | 0777, 0, link);
}

void Remove(fuse_req_t req, fuse_ino_t parent, const char* name, bool dir) {
  Guard(req, [&] {
    InodePtr p = Get(req, parent);
    if (!p) return;
    if (IsRoot(p)) return (void)fuse_reply_err(req, EPERM);
    if (IsMagic(p)) return (void)fuse_reply_err(req, ENOTDIR);
    C(req).client->BackendFor(*p)->Remove(CallerOf(req), p, name, dir,
                                          [req, p](Status s) { fuse_reply_err(req, s.ok() ? 0 : ErrIn(p, s)); });
  });
}
void OpUnlink(fuse_req_t req, fuse_ino_t parent, const char* name) { Remove(req, parent, name, false); }
void OpRmdir(fuse_req_t req, fuse_ino_t parent, const char* name) { Remove(req, parent, name, true); }

void OpRename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
              const char* newname, unsigned flags) {
  Guard(req, [&] {
    InodePtr p = Get(req, parent);
    if (!p) return;
    InodePtr np = Get(req, newparent);
    if (!np) return;
    if (!IsFile(p) || !IsFile(np)) return (void)fuse_reply_err(req, EPERM);
    if (p->node != np->node || p->kind != np->kind) return (void)fuse_reply_err(req, EXDEV);
    C(req).client->BackendFor(*p)->Rename(CallerOf(req), p, name, np, newname, flags,
                                          [req, p](Status s) { fuse_reply_err(req, s.ok() ? 0 : ErrIn(p, s)); });
  });
}

void OpLink(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char* newname) {
  Guard(req, [&] {
    InodePtr p = Get(req, ino);
    if (!p) return;
    InodePtr np = Get(req, newparent);
    if (!np) return;
    if (!IsFile(p)) return (void)fuse_reply_err(req, EPERM);
    if (!IsFile(np)) return (void)fuse_reply_err(req, IsRoot(np) ? EPERM : ENOTDIR);
    if (p->node != np->node || p->kind != np->kind) return (void)fuse_reply_err(req, EXDEV);
    C(req).client->BackendFor(*p)->Link(CallerOf(req), p, np, newname,
                                        [req, np](Result<EntryOut> r) { ReplyEntry(req, std::move(r), np); });
  });
}

void OpAccess(fuse_req_t req, fuse_ino_t ino, int mask) {
  Guard(req, [&] {
    InodePtr p = Get(req, ino);
    if (!p) return;
    if (!IsFile(p)) {
      bool denied = (mask & W_OK) && fuse_req_ctx(req)->uid != 0 && IsRoot(p);
      return (void)fuse_reply_err(req, denied ? EACCES : 0);
    }
    C(req).client->BackendFor(*p)->Access(CallerOf(req), p, mask,
                                          [req](Status s) { ReplyErr(req, s); });
  });
}

void OpOpen(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Guard(req, [&] {
    InodePtr p = Get(req, ino);
    if (!p) return;
    if (!IsFile(p)) return (void)fuse_reply_err(req, IsRoot(p) ? EISDIR : EINVAL);
    fuse_file_info info = *fi;
    Caller caller = CallerOf(req);
    Client* c = C(req).client;
    Backend* b = c->BackendFor(*p);
    FuseCtx* x = &C(req);
    b->Open(caller, p, info.flags,
            [req, info, c, b, x, caller, node = p->node,
             pid = caller.pid](Result<std::unique_ptr<FileHandle>> r) mutable {
              if (!r.ok()) return (void)fuse_reply_err(req, Err(r.status()));
              // The file has no name left and nothing here has it open: the
              // kernel came through a directory entry that another node's
              // rename or unlink made stale (its invalidation is on its way).
              // ESTALE makes the kernel look the path up again.
              if ((*r)->open_nlink == 0u && (*r)->inode->opens.load() == 0) {
                b->Release(std::move(*r));
                return (void)fuse_reply_err(req, ESTALE);
              }
              FileHandle* h = r->release();  // owned by the reply below, run once
              RevalidateAtOpen(*x, h->inode, *h, [=]() mutable {
                std::unique_ptr<FileHandle> fh(h);
                InodePtr inode = fh->inode;
                // Counted before the reply: the RELEASE may follow it at
                // once, on another thread, and free the handle.
                inode->opens.fetch_add(1);
                info.fh = reinterpret_cast<uintptr_t>(fh.get());
                info.keep_cache = 0;
                int32_t backing = fh->fd.valid() ? BeginIo(*x, caller, *fh) : -1;
                info.direct_io = (info.flags & O_DIRECT) && backing < 0 ? 1 : 0;
                tl_backing_id = backing;
                int rr = fuse_reply_open(req, &info);
                tl_backing_id = -1;
                if (rr != 0) {
                  inode->opens.fetch_sub(1);
                  EndIo(*x, *fh);
                  b->Release(std::move(fh));
                  return;
                }
                fh.release();
                c->AccountIo(pid, node, IoOp::kOpen, 0);
              });
            });
  });
}

void OpCreate(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
              fuse_file_info* fi) {
  Guard(req, [&] {
    InodePtr p = Get(req, parent);
    if (!p) return;
    if (IsRoot(p)) return (void)fuse_reply_err(req, EPERM);
    if (IsMagic(p)) return (void)fuse_reply_err(req, ENOTDIR);
    fuse_file_info info = *fi;
    Caller caller = CallerOf(req);
    Client* c = C(req).client;
    Backend* b = c->BackendFor(*p);
    FuseCtx* x = &C(req);
    b->Create(caller, p, name, mode, info.flags,
              [req, p, info, c, b, x, caller, pid = caller.pid](Result<client::CreateOut> r) mutable {
                if (!r.ok()) return (void)fuse_reply_err(req, ErrIn(p, r.status()));
                fuse_entry_param fe;
                FillEntry(req, r->entry, &fe);
                info.fh = reinterpret_cast<uintptr_t>(r->fh.get());
                info.keep_cache = 0;
                int32_t backing = r->fh->fd.valid() ? BeginIo(*x, caller, *r->fh) : -1;
                info.direct_io = (info.flags & O_DIRECT) && backing < 0 ? 1 : 0;
                uint32_t node = r->entry.inode->node;
                InodePtr inode = r->fh->inode;
                inode->opens.fetch_add(1);  // before the reply, as in OpOpen
                tl_backing_id = backing;
                int rr = fuse_reply_create(req, &fe, &info);
                tl_backing_id = -1;
                if (rr != 0) {
                  inode->opens.fetch_sub(1);
                  EndIo(*x, *r->fh);
                  c->table().Forget(fe.ino, 1);
                  b->Release(std::move(r->fh));
                  return;
                }
                r->fh.release();
                c->AccountIo(pid, node, IoOp::kCreate, 0);
              });
  });
}

void OpRead(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info* fi) {
  Guard(req, [&] {
    FileHandle* fh = Fh(fi);
    Client* c = C(req).client;
    pid_t pid = fuse_req_ctx(req)->pid;
    uint32_t node = fh->inode->node;
    if (fh->fd.valid()) {
      // Fast path: the kernel splices from the backing file.
      fuse_bufvec buf = FUSE_BUFVEC_INIT(size);
      buf.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
      buf.buf[0].fd = fh->fd.get();
      buf.buf[0].pos = off;
      fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
      c->AccountIo(pid, node, IoOp::kRead, size);
      return;
    }
    c->BackendFor(*fh->inode)->Read(fh, size, off, [req, c, pid, node](Result<std::string> r) {
      if (!r.ok()) return (void)fuse_reply_err(req, Err(r.status()));
      fuse_reply_buf(req, r->data(), r->size());
      c->AccountIo(pid, node, IoOp::kRead, r->size());
    });
  });
}

void OpWriteBuf(fuse_req_t req, fuse_ino_t, fuse_bufvec* in, off_t off, fuse_file_info* fi) {
  Guard(req, [&] {
    FileHandle* fh = Fh(fi);
    Client* c = C(req).client;
    pid_t pid = fuse_req_ctx(req)->pid;
    uint32_t node = fh->inode->node;
    size_t size = fuse_buf_size(in);
    // libfuse 3.14 does not pass FUSE_WRITE_KILL_SUIDGID on; a caller other
    // than root is taken to lack CAP_FSETID (what the kernel checks).
    bool kill_suid = C(req).killpriv_v2.load(std::memory_order_relaxed) &&
                     fuse_req_ctx(req)->uid != 0;
    if (fh->fd.valid()) {
      if (kill_suid) {
        if (Status s = client::ops::KillSuid(fh->fd.get()); !s.ok())
          return (void)fuse_reply_err(req, Err(s));
      }
      fuse_bufvec out = FUSE_BUFVEC_INIT(size);
      out.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
      out.buf[0].fd = fh->fd.get();
      out.buf[0].pos = off;
      ssize_t n = fuse_buf_copy(&out, in, FUSE_BUF_SPLICE_MOVE);
      if (n < 0) return (void)fuse_reply_err(req, static_cast<int>(-n));
      fh->written = true;
      fuse_reply_write(req, static_cast<size_t>(n));
      c->AccountIo(pid, node, IoOp::kWrite, static_cast<uint64_t>(n));
      return;
    }
    std::string data(size, '\0');
    fuse_bufvec mem = FUSE_BUFVEC_INIT(size);
    mem.buf[0].mem = data.data();
    ssize_t n = fuse_buf_copy(&mem, in, static_cast<fuse_buf_copy_flags>(0));
    if (n < 0) return (void)fuse_reply_err(req, static_cast<int>(-n));
    data.resize(static_cast<size_t>(n));
    c->BackendFor(*fh->inode)->Write(fh, std::move(data), off, kill_suid,
                                     [req, c, pid, node](Result<size_t> r) {
                                       if (!r.ok()) return (void)fuse_reply_err(req, Err(r.status()));
                                       fuse_reply_write(req, *r);
                                       c->AccountIo(pid, node, IoOp::kWrite, *r);
                                     });
  });
}

void OpFlush(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  Guard(req, [&] {
    FileHandle* fh = Fh(fi);
    C(req).client->BackendFor(*fh->inode)->Flush(fh, fi->lock_owner,
                                                 [req](Status s) { ReplyErr(req, s); });
  });
}

void OpRelease(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  std::unique_ptr<FileHandle> fh(Fh(fi));
  fh->inode->opens.fetch_sub(1);
  EndIo(C(req), *fh);
  Backend* b = C(req).client->BackendFor(*fh->inode);
  if (fi->flock_release)
    b->Flock(fh.get(), fi->lock_owner, LOCK_UN, 0, [](Status s) { s.IgnoreError(); });
  b->Release(std::move(fh));
  fuse_reply_err(req, 0);
}

void OpFsync(fuse_req_t req, fuse_ino_t, int datasync, fuse_file_info* fi) {
  Guard(req, [&] {
    FileHandle* fh = Fh(fi);
    C(req).client->BackendFor(*fh->inode)->Fsync(fh, datasync != 0,
                                                 [req](Status s) { ReplyErr(req, s); });
  });
}

void OpOpendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Guard(req, [&] {
    InodePtr p = Get(req, ino);
    if (!p) return;
    if (IsRoot(p)) {
      fi->fh = 0;
      return (void)fuse_reply_open(req, fi);
    }
    if (IsMagic(p)) return (void)fuse_reply_err(req, ENOTDIR);
    fuse_file_info info = *fi;
    Backend* b = C(req).client->BackendFor(*p);
    b->OpenDir(CallerOf(req), p, [req, info, b](Result<std::unique_ptr<DirHandle>> r) mutable {
      if (!r.ok()) return (void)fuse_reply_err(req, Err(r.status()));
      info.fh = reinterpret_cast<uintptr_t>(r->get());
      if (fuse_reply_open(req, &info) != 0) return b->ReleaseDir(std::move(*r));
      r->release();
    });
  });
}

// Packs entries into a reply buffer; entries that do not fit give their
// lookup count back.
void PackDir(fuse_req_t req, size_t size, std::vector<DirEntryOut>& entries, bool plus) {
  std::string buf(size, '\0');
  size_t used = 0;
  Client* c = C(req).client;
  size_t i = 0;
  for (; i < entries.size(); ++i) {
    DirEntryOut& e = entries[i];
    size_t n;
    if (plus) {
      fuse_entry_param fe{};
      if (e.has_entry) {
        FillEntry(req, e.entry, &fe);
      } else {
        fe.attr.st_ino = e.ino;
        fe.attr.st_mode = e.type;
      }
      n = fuse_add_direntry_plus(req, buf.data() + used, size - used, e.name.c_str(), &fe,
                                 static_cast<off_t>(e.next_off));
    } else {
      struct stat st {};
      st.st_ino = e.ino;
      st.st_mode = e.type;
      n = fuse_add_direntry(req, buf.data() + used, size - used, e.name.c_str(), &st,
                            static_cast<off_t>(e.next_off));
    }
    if (n > size - used) break;
    used += n;
  }
  for (; i < entries.size(); ++i)
    if (entries[i].has_entry && IsFile(entries[i].entry.inode))
      c->table().Forget(entries[i].entry.inode->id, 1);
  fuse_reply_buf(req, buf.data(), used);
}

void DoReaddir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi,
               bool plus) {
  Guard(req, [&] {
    InodePtr p = Get(req, ino);
    if (!p) return;
    if (IsRoot(p)) {
      std::vector<DirEntryOut> all = C(req).client->ListRoot();
      std::vector<DirEntryOut> rest;
      for (auto& e : all)
        if (e.next_off > static_cast<uint64_t>(off)) rest.push_back(std::move(e));
      return PackDir(req, size, rest, plus);
    }
    DirHandle* dh = Dh(fi);
    size_t max = plus ? size / 96 + 1 : size / 24 + 1;
    C(req).client->BackendFor(*p)->ReadDir(
        CallerOf(req), dh, static_cast<uint64_t>(off), max, plus,
        [req, size, plus](Result<std::vector<DirEntryOut>> r) {
          if (!r.ok()) return (void)fuse_reply_err(req, Err(r.status()));
          PackDir(req, size, *r, plus);
        });
  });
}

void OpReaddir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  DoReaddir(req, ino, size, off, fi, false);
}
void OpReaddirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  DoReaddir(req, ino, size, off, fi, true);
}

void OpReleasedir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if (fi->fh != 0) {
    std::unique_ptr<DirHandle> dh(Dh(fi));
    C(req).client->BackendFor(*dh->inode)->ReleaseDir(std::move(dh));
  }
  (void)ino;
  fuse_reply_err(req, 0);
}

void OpFsyncdir(fuse_req_t req, fuse_ino_t, int datasync, fuse_file_info* fi) {
  DirHandle* dh = fi->fh ? Dh(fi) : nullptr;
  int r = 0;
  if (dh && dh->fd.valid()) r = datasync ? fdatasync(dh->fd.get()) : fsync(dh->fd.get());
  fuse_reply_err(req, r < 0 ? errno : 0);
}

void OpStatfs(fuse_req_t req, fuse_ino_t ino) {
  Guard(req, [&] {
    InodePtr p = Get(req, ino);
    if (!p) return;
    if (!IsFile(p)) {
      struct statvfs s {};
      s.f_bsize = 4096;
      s.f_frsize = 4096;
      s.f_namemax = 255;
      return (void)fuse_reply_statfs(req, &s);
    }
    C(req).client->BackendFor(*p)->StatFs(CallerOf(req), p, [req](Result<struct statvfs> r) {
      if (!r.ok()) return (void)fuse_reply_err(req, Err(r.status()));
      fuse_reply_statfs(req, &*r);
    });
  });
}

void ReplyXattr(fuse_req_t req, size_t size, Result<std::string> r) {
  if (!r.ok()) return (void)fuse_reply_err(req, Err(r.status()));
  if (size == 0) return (void)fuse_reply_xattr(req, r->size());
  if (r->size() > size) return (void)fuse_reply_err(req, ERANGE);
  fuse_reply_buf(req, r->data(), r->size());
}

void OpSetxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
                int flags) {
  Guard(req, [&] {
    InodePtr p = Get(req, ino);
    if (!p) return;
    if (!IsFile(p) || std::strcmp(name, Client::kNodeXattr) == 0)
      return (void)fuse_reply_err(req, EPERM);
    C(req).client->BackendFor(*p)->SetXattr(CallerOf(req), p, name, std::string(value, size),
                                            flags, [req](Status s) { ReplyErr(req, s); });
  });
}

void OpGetxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  Guard(req, [&] {
    InodePtr p = Get(req, ino);
    if (!p) return;
    if (std::strcmp(name, Client::kNodeXattr) == 0)
      return ReplyXattr(req, size, std::to_string(p->node));
    // On /mfs itself: how many inodes and lookups the kernel holds from us
    // (leak checks after a test run).
    if (IsRoot(p) && std::strcmp(name, Client::kInodesXattr) == 0) {
      auto& t = C(req).client->table();
      return ReplyXattr(req, size,
                        std::to_string(t.size()) + " " + std::to_string(t.total_lookups()));
    }
    if (IsRoot(p) && std::strcmp(name, Client::kRequestsXattr) == 0) {
      return ReplyXattr(
          req, size,
          std::to_string(g_fuse_requests.load() + (C(req).uring ? C(req).uring->requests() : 0)) +
              " " + std::to_string(wire::Connection::calls_made()) + " " +
              std::to_string(g_invalidations_seen.load()) + " " +
              std::to_string(client::RemoteBackend::listing_answers()));
    }
    // On /mfs itself: "<in use 0|1> <queues> <entries the kernel holds>
    // <requests taken off the rings> <ring threads found starved in
    // SCHED_IDLE>" (FUSE over io_uring).
    if (IsRoot(p) && std::strcmp(name, Client::kUringXattr) == 0) {
      UringTransport* u = C(req).uring;
      return ReplyXattr(
          req, size,
          u ? "1 " + std::to_string(u->queues()) + " " + std::to_string(u->live_entries()) + " " +
                  std::to_string(u->requests()) + " " + std::to_string(u->promotions())
            : std::string("0 0 0 0 0"));
    }
    // On /mfs itself: "<negotiated 0|1> <inodes with a backing file now>
    // <passthrough opens so far>" (tests and mfsstat-like checks).
    if (IsRoot(p) && std::strcmp(name, Client::kPassthroughXattr) == 0) {
      FuseCtx& x = C(req);
      size_t backed = 0;
      {
        std::lock_guard<std::mutex> l(x.io_mu);
        for (auto& [id, m] : x.io_modes) backed += m.passthrough_opens > 0;
      }
      return ReplyXattr(req, size,
                        std::string(x.passthrough ? "1 " : "0 ") + std::to_string(backed) + " " +
                            std::to_string(x.passthrough_opens_total.load()));
    }
    if (!IsFile(p)) return (void)fuse_reply_err(req, ENODATA);
    C(req).client->BackendFor(*p)->GetXattr(CallerOf(req), p, name,
                                            [req, size](Result<std::string> r) {
                                              ReplyXattr(req, size, std::move(r));
                                            });
  });
}

void OpListxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  Guard(req, [&] {
    InodePtr p = Get(req, ino);
    if (!p) return;
    if (!IsFile(p)) return ReplyXattr(req, size, std::string());
    C(req).client->BackendFor(*p)->ListXattr(CallerOf(req), p, [req, size](Result<std::string> r) {
      ReplyXattr(req, size, std::move(r));
    });
  });
}

void OpRemovexattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
  Guard(req, [&] {
    InodePtr p = Get(req, ino);
    if (!p) return;
    if (!IsFile(p) || std::strcmp(name, Client::kNodeXattr) == 0)
      return (void)fuse_reply_err(req, EPERM);
    C(req).client->BackendFor(*p)->RemoveXattr(CallerOf(req), p, name,
                                               [req](Status s) { ReplyErr(req, s); });
  });
}

void OpFallocate(fuse_req_t req, fuse_ino_t, int mode, off_t off, off_t len, fuse_file_info* fi) {
  Guard(req, [&] {
    FileHandle* fh = Fh(fi);
    C(req).client->BackendFor(*fh->inode)->Fallocate(fh, mode, off, len,
                                                     [req](Status s) { ReplyErr(req, s); });
  });
}

void OpCopyFileRange(fuse_req_t req, fuse_ino_t, off_t off_in, fuse_file_info* fi_in, fuse_ino_t,
                     off_t off_out, fuse_file_info* fi_out, size_t len, int flags) {
  Guard(req, [&] {
    FileHandle* in = Fh(fi_in);
    FileHandle* out = Fh(fi_out);
    if (flags != 0) return (void)fuse_reply_err(req, EINVAL);
    // Only within one node; otherwise the kernel falls back to copying.
    if (in->inode->node != out->inode->node || in->inode->kind != out->inode->kind)
      return (void)fuse_reply_err(req, EXDEV);
    C(req).client->BackendFor(*in->inode)->CopyFileRange(in, off_in, out, off_out, len,
                                                         [req](Result<size_t> r) {
                                                           if (!r.ok())
                                                             return (void)fuse_reply_err(req, Err(r.status()));
                                                           fuse_reply_write(req, *r);
                                                         });
  });
}

client::LockIn LockFrom(const struct flock* l, fuse_file_info* fi) {
  client::LockIn in;
  in.owner = fi->lock_owner;
  in.type = l->l_type;
  in.start = l->l_start;
  in.len = l->l_len;
  in.pid = l->l_pid;
  return in;
}

void OpGetlk(fuse_req_t req, fuse_ino_t, fuse_file_info* fi, struct flock* lock) {
  Guard(req, [&] {
    FileHandle* fh = Fh(fi);
    C(req).client->BackendFor(*fh->inode)->GetLk(fh, LockFrom(lock, fi),
                                                 [req](Result<client::LockIn> r) {
                                                   if (!r.ok()) return (void)fuse_reply_err(req, Err(r.status()));
                                                   struct flock out {};
                                                   out.l_type = static_cast<short>(r->type);
                                                   out.l_whence = SEEK_SET;
                                                   out.l_start = r->start;
                                                   out.l_len = r->len;
                                                   out.l_pid = r->pid;
                                                   fuse_reply_lock(req, &out);
                                                 });
  });
}

// A FUSE interrupt for a waiting lock request: the caller got a signal (or
// SIGKILL). `data` is the wait's LockWaits token, a number: harmless if the
// wait has ended.
void OnLockInterrupt(fuse_req_t, void* data) {
  client::ops::LockWaits::Cancel(reinterpret_cast<uintptr_t>(data));
}

// Makes a waiting lock request interruptible; returns its token (0 if the
// request does not wait or the backend cannot cancel it).
uint64_t InterruptibleWait(fuse_req_t req, const FileHandle& fh, bool waits) {
  if (!waits || !IsFile(fh.inode)) return 0;
  uint64_t token = client::ops::LockWaits::NewToken();
  fuse_req_interrupt_func(req, OnLockInterrupt, reinterpret_cast<void*>(token));
  return token;
}

void OpSetlk(fuse_req_t req, fuse_ino_t, fuse_file_info* fi, struct flock* lock, int sleep) {
  Guard(req, [&] {
    FileHandle* fh = Fh(fi);
    client::LockIn in = LockFrom(lock, fi);
    in.wait = sleep != 0;
    in.wait_token = InterruptibleWait(req, *fh, in.wait);
    C(req).client->BackendFor(*fh->inode)->SetLk(fh, in, [req, token = in.wait_token](Status s) {
      ReplyErr(req, s);
      client::ops::LockWaits::Forget(token);
    });
  });
}

void OpFlock(fuse_req_t req, fuse_ino_t, fuse_file_info* fi, int op) {
  Guard(req, [&] {
    FileHandle* fh = Fh(fi);
    uint64_t token = InterruptibleWait(req, *fh, !(op & LOCK_NB) && (op & ~LOCK_NB) != LOCK_UN);
    C(req)
        .client->BackendFor(*fh->inode)
        ->Flock(fh, fi->lock_owner, op, token, [req, token](Status s) {
          ReplyErr(req, s);
          client::ops::LockWaits::Forget(token);
        });
  });
}

fuse_lowlevel_ops MakeOps() {
  fuse_lowlevel_ops o{};
  o.init = OpInit;
  o.lookup = OpLookup;
  o.forget = OpForget;
  o.forget_multi = OpForgetMulti;
  o.getattr = OpGetattr;
  o.setattr = OpSetattr;
  o.readlink = OpReadlink;
  o.mknod = OpMknod;
  o.mkdir = OpMkdir;
  o.symlink = OpSymlink;
  o.unlink = OpUnlink;
  o.rmdir = OpRmdir;
  o.rename = OpRename;
  o.link = OpLink;
  o.access = OpAccess;
  o.open = OpOpen;
  o.create = OpCreate;
  o.read = OpRead;
  o.write_buf = OpWriteBuf;
  o.flush = OpFlush;
  o.release = OpRelease;
  o.fsync = OpFsync;
  o.opendir = OpOpendir;
  o.readdir = OpReaddir;
  o.readdirplus = OpReaddirplus;
  o.releasedir = OpReleasedir;
  o.fsyncdir = OpFsyncdir;
  o.statfs = OpStatfs;
  o.setxattr = OpSetxattr;
  o.getxattr = OpGetxattr;
  o.listxattr = OpListxattr;
  o.removexattr = OpRemovexattr;
  o.fallocate = OpFallocate;
  o.copy_file_range = OpCopyFileRange;
  o.getlk = OpGetlk;
  o.setlk = OpSetlk;
  o.flock = OpFlock;
  return o;
}

}  // namespace


FuseFs::FuseFs(client::Client* client, FuseOptions opts)
    : client_(client), opts_(std::move(opts)), ctx_(std::make_unique<FuseCtx>()) {
  ctx_->client = client_;
  ctx_->attr_timeout = client_->options().attr_timeout;
  ctx_->entry_timeout = client_->options().entry_timeout;
  ctx_->passthrough_mode = opts_.passthrough;
}

namespace {
// "auto", "on", "off" (also true/false, yes/no, 1/0) for an option `what`
// whose enum has kAuto, kOn and kOff.
template <typename E>
Result<E> ParseAutoOnOff(const std::string& s, const char* what) {
  if (s == "auto") return E::kAuto;
  if (s == "on" || s == "true" || s == "yes" || s == "1") return E::kOn;
  if (s == "off" || s == "false" || s == "no" || s == "0") return E::kOff;
  return Status::InvalidArgument(std::string(what) + " must be auto, on or off, not '" + s + "'");
}
}  // namespace

Result<Passthrough> ParsePassthrough(const std::string& s) {
  return ParseAutoOnOff<Passthrough>(s, "passthrough");
}

Result<IoUring> ParseIoUring(const std::string& s) {
  return ParseAutoOnOff<IoUring>(s, "io_uring");
}

bool FuseFs::passthrough_negotiated() const { return ctx_->passthrough.load(); }

FuseFs::~FuseFs() {
  Unmount();
  // The rings' threads go first (the connection is over), libfuse's session
  // after them: a ring thread may be inside it.
  ctx_->uring = nullptr;
  uring_.reset();
  if (se_) {
    if (signals_) fuse_remove_signal_handlers(se_);
    fuse_session_destroy(se_);
  }
}

namespace {
constexpr const char* kEnableUring = "/sys/module/fuse/parameters/enable_uring";

// io_uring = on: the kernel offers FUSE over io_uring at INIT only while
// its module parameter is set.
void EnableKernelUring() {
  std::ifstream in(kEnableUring);
  std::string v;
  if (!(in >> v)) {
    spdlog::info("fuse over io_uring: this kernel has none ({} missing)", kEnableUring);
    return;
  }
  if (v == "Y" || v == "1") return;
  std::ofstream out(kEnableUring);
  out << "Y\n";
  out.flush();
  if (!out)
    spdlog::warn("fuse over io_uring: cannot set {}: {}", kEnableUring, std::strerror(errno));
  else
    spdlog::info("fuse over io_uring: set {}", kEnableUring);
}
}  // namespace

Status FuseFs::Mount() {
  std::vector<std::string> argv_s{"mount.mfs"};
  if (opts_.debug) argv_s.push_back("-d");
  // default_permissions: the kernel checks permissions on every path step
  // from cached attributes (FUSE does not otherwise check search permission
  // on cached dentries, nor opens of FIFOs and devices); the owner's kernel
  // checks again under the caller's credentials.
  std::string o = "fsname=mfs,subtype=mfs,allow_other,default_permissions";
  if (!opts_.extra_options.empty()) o += "," + opts_.extra_options;
  argv_s.push_back("-o");
  argv_s.push_back(o);
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());
  fuse_lowlevel_ops ops = MakeOps();
  se_ = fuse_session_new(&args, &ops, sizeof(ops), ctx_.get());
  fuse_opt_free_args(&args);
  if (!se_) return Status::Error(EINVAL, "fuse_session_new failed (bad mount options?)");
  if (fuse_set_signal_handlers(se_) != 0) return Status::Error(EIO, "fuse_set_signal_handlers");
  signals_ = true;
  if (opts_.io_uring == IoUring::kOn) EnableKernelUring();  // before the kernel's INIT
  if (fuse_session_mount(se_, opts_.mountpoint.c_str()) != 0)
    return Status::Error(EIO, "cannot mount on " + opts_.mountpoint);
  mounted_ = true;
  // Our own device I/O, so that OPEN/CREATE replies can carry a backing id
  // (IoWritev); splice hooks given, or libfuse would stop splicing.
  ctx_->se = se_;
  ctx_->dev_fd = fuse_session_fd(se_);
  static const fuse_custom_io kIo = {IoWritev, IoRead, IoSplice, IoSplice};
  if (int r = fuse_session_custom_io(se_, &kIo, ctx_->dev_fd); r != 0)
    return Status::PosixError("fuse_session_custom_io", -r);
  return Status::OK();
}

void FuseFs::Daemonize(bool foreground) { fuse_daemonize(foreground ? 1 : 0); }

// Answers the kernel's INIT through libfuse, adding what libfuse 3.14 has
// no capability bit for when the kernel offers it:
// - FUSE_HANDLE_KILLPRIV_V2: without it the kernel sends a GETXATTR of
//   security.capability before every write (a FUSE super block never gets
//   SB_NOSEC otherwise);
// - FUSE_PASSTHROUGH (flags2, with max_stack_depth 1) unless passthrough is
//   off; the kernel ignores it next to FUSE_WRITEBACK_CACHE, which we never
//   ask for.
// libfuse writes its reply while the device's fd number points at a pipe;
// the reply, amended, then goes to the device. Runs before any worker
// exists, so nothing else reads or writes the fd.
Status FuseFs::NegotiateInit() {
  fuse_buf buf{};
  int n;
  do {
    n = fuse_session_receive_buf(se_, &buf);
  } while ((n == -EINTR || n == -EAGAIN) && !fuse_session_exited(se_));
  if (n <= 0) {
    std::free(buf.mem);
    return n == 0 || n == -ENODEV ? Status::OK() : Status::PosixError("fuse init", -n);
  }
  struct Free {
    void* p;
    ~Free() { std::free(p); }
  } owned{buf.mem};
  bool killpriv = false, passthrough = false, uring = false;
  if (!(buf.flags & FUSE_BUF_IS_FD) &&
      static_cast<size_t>(n) >= sizeof(fuse_in_header) + sizeof(fuse_init_in)) {
    fuse_in_header ih;
    fuse_init_in in;
    std::memcpy(&ih, buf.mem, sizeof ih);
    std::memcpy(&in, static_cast<char*>(buf.mem) + sizeof ih, sizeof in);
    bool init = ih.opcode == FUSE_INIT && in.major == 7;
    killpriv = init && in.minor >= 33 && (in.flags & FUSE_HANDLE_KILLPRIV_V2);
    passthrough = init && in.minor >= 40 && (in.flags & FUSE_INIT_EXT) &&
                  (in.flags2 & uapi::kInitPassthroughFlags2) &&
                  opts_.passthrough != Passthrough::kOff;
    if (init && opts_.passthrough != Passthrough::kOff && !passthrough)
      spdlog::info("fuse passthrough: not offered by the kernel (protocol 7.{})", in.minor);
    // FUSE over io_uring (7.42): the kernel offers it while
    // /sys/module/fuse/parameters/enable_uring is set.
    uring = init && in.minor >= 42 && (in.flags & FUSE_INIT_EXT) &&
            (in.flags2 & uapi::kInitOverIoUringFlags2) && opts_.io_uring != IoUring::kOff;
    if (init && opts_.io_uring != IoUring::kOff && !uring)
      spdlog::info("fuse over io_uring: not offered by the kernel (protocol 7.{}{})", in.minor,
                   in.minor >= 42 ? ", enable_uring off" : "");
  }
  bool offered = killpriv || passthrough || uring;
  int fd = fuse_session_fd(se_);
  int pipefd[2];
  int saved = offered ? fcntl(fd, F_DUPFD_CLOEXEC, 0) : -1;
  if (saved < 0 || pipe2(pipefd, O_CLOEXEC) < 0) {
    if (saved >= 0) close(saved);
    fuse_session_process_buf(se_, &buf);
    return Status::OK();
  }
  UniqueFd keep(saved), rd(pipefd[0]), wr(pipefd[1]);
  if (dup3(wr.get(), fd, O_CLOEXEC) < 0) {
    fuse_session_process_buf(se_, &buf);
    return Status::OK();
  }
  fuse_session_process_buf(se_, &buf);
  if (dup3(keep.get(), fd, O_CLOEXEC) < 0) return Status::FromErrno("restore the FUSE device fd");
  wr.Reset();
  char reply[1024];
  ssize_t m = read(rd.get(), reply, sizeof reply);
  if (m < static_cast<ssize_t>(sizeof(fuse_out_header))) return Status::Error(EIO, "no INIT reply");
  fuse_out_header oh;
  std::memcpy(&oh, reply, sizeof oh);
  char* out = reply + sizeof oh;
  if (oh.error == 0 && static_cast<size_t>(m) >= sizeof oh + offsetof(fuse_init_out, flags) + 4) {
    uint32_t flags;
    std::memcpy(&flags, out + offsetof(fuse_init_out, flags), sizeof flags);
    if (killpriv) {
      flags |= FUSE_HANDLE_KILLPRIV_V2;
      ctx_->killpriv_v2 = true;
    }
    if (passthrough && !(flags & FUSE_WRITEBACK_CACHE) &&
        static_cast<size_t>(m) >= sizeof oh + uapi::kMaxStackDepthOffset + 4) {
      uint32_t flags2, depth = 1;
      std::memcpy(&flags2, out + offsetof(fuse_init_out, flags2), sizeof flags2);
      flags |= FUSE_INIT_EXT;
      flags2 |= uapi::kInitPassthroughFlags2;
      std::memcpy(out + offsetof(fuse_init_out, flags2), &flags2, sizeof flags2);
      std::memcpy(out + uapi::kMaxStackDepthOffset, &depth, sizeof depth);
      ctx_->passthrough = true;  // confirmed by ProbePassthrough
    }
    if (uring && static_cast<size_t>(m) >= sizeof oh + offsetof(fuse_init_out, flags2) + 4) {
      // The rings' buffers must take the largest request and reply:
      // max(FUSE_MIN_READ_BUFFER, max_write, max_pages pages), as the kernel
      // sizes them.
      uint32_t max_write;
      uint16_t max_pages = 32;  // FUSE_DEFAULT_MAX_PAGES_PER_REQ
      std::memcpy(&max_write, out + offsetof(fuse_init_out, max_write), sizeof max_write);
      if (flags & FUSE_MAX_PAGES)
        std::memcpy(&max_pages, out + offsetof(fuse_init_out, max_pages), sizeof max_pages);
      long page = sysconf(_SC_PAGESIZE);
      size_t payload = std::max<size_t>(
          {8192, max_write, size_t{max_pages} * static_cast<size_t>(page > 0 ? page : 4096)});
      // A request answered later (a remote file's, a blocked lock's) holds
      // its entry until then, and one the kernel finds no entry for waits
      // in its queue: many entries, whose buffers cost address space only
      // until used (the rings reuse the last answered first). 512 per
      // queue, 4096 in all above 8 CPUs, at least 64 each.
      unsigned queues = UringTransport::PossibleCpus();
      unsigned depth = std::clamp(4096u / std::max(queues, 1u), 64u, 512u);
      auto t = UringTransport::Create(se_, ctx_->dev_fd, queues, depth, payload);
      if (t.ok()) {
        uring_ = std::move(*t);
        uint32_t flags2;
        std::memcpy(&flags2, out + offsetof(fuse_init_out, flags2), sizeof flags2);
        flags |= FUSE_INIT_EXT;
        flags2 |= uapi::kInitOverIoUringFlags2;
        std::memcpy(out + offsetof(fuse_init_out, flags2), &flags2, sizeof flags2);
      } else {
        spdlog::warn("fuse over io_uring not used: {}", t.status().ToString());
      }
    }
    std::memcpy(out + offsetof(fuse_init_out, flags), &flags, sizeof flags);
  }
  if (write(fd, reply, static_cast<size_t>(m)) != m) {
    ctx_->killpriv_v2 = false;
    ctx_->passthrough = false;
    uring_.reset();
    return Status::FromErrno("FUSE INIT reply");
  }
  if (uring_) {
    // The kernel now holds every request back until each queue has an
    // entry: the threads register theirs at once.
    ctx_->uring = uring_.get();
    uring_->Start();
    spdlog::info("fuse over io_uring: {} queues", uring_->queues());
  }
  if (ctx_->passthrough) ProbePassthrough();
  return Status::OK();
}

// Whether the kernel took FUSE_PASSTHROUGH: it does not say in INIT, but
// registering a backing file answers EPERM when it did not, and EISDIR for
// a directory (the export root) when it did — a probe that registers
// nothing.
void FuseFs::ProbePassthrough() {
  UniqueFd dir(open(client_->options().export_path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir.valid()) {
    ctx_->passthrough = false;
    spdlog::warn("fuse passthrough off: cannot open the export: {}", std::strerror(errno));
    return;
  }
  uapi::BackingMap map{dir.get(), 0, 0};
  int id = ioctl(ctx_->dev_fd, uapi::kBackingOpen, &map);
  int e = errno;
  if (id >= 0) {  // a kernel that takes directories: give it back
    uint32_t u = static_cast<uint32_t>(id);
    ioctl(ctx_->dev_fd, uapi::kBackingClose, &u);
  } else if (e != EISDIR) {
    ctx_->passthrough = false;
    spdlog::warn("fuse passthrough off: the kernel refuses backing files: {}", std::strerror(e));
    return;
  }
  spdlog::info("fuse passthrough negotiated (mode {})",
               opts_.passthrough == Passthrough::kOn ? "on" : "auto");
}

Status FuseFs::Run() {
  if (Status s = NegotiateInit(); !s.ok()) return s;
  fuse_loop_config* cfg = fuse_loop_cfg_create();
  if (!cfg) return Status::PosixError("fuse_loop_cfg_create", ENOMEM);
  fuse_loop_cfg_set_clone_fd(cfg, 0);
  fuse_loop_cfg_set_max_threads(cfg, opts_.max_threads);
  fuse_loop_cfg_set_idle_threads(cfg, opts_.max_threads / 2);
  int r = fuse_session_loop_mt(se_, cfg);
  fuse_loop_cfg_destroy(cfg);
  if (r < 0) return Status::PosixError("fuse loop", -r);
  return Status::OK();
}

void FuseFs::Stop() {
  if (!se_) return;
  fuse_session_exit(se_);
  if (mounted_ && umount2(opts_.mountpoint.c_str(), MNT_DETACH) == 0) return;
  Unmount();
}

void FuseFs::Unmount() {
  if (se_ && mounted_) {
    fuse_session_unmount(se_);
    mounted_ = false;
  }
}

// A pushed change the newest open here already saw is not passed on (see
// Inode::opened_ctime): the kernel lets a reverse invalidation void the
// GETATTR reply in flight, and the read after a close-to-open revalidation
// would then see the old size. Such a push comes when the owner's report of
// a change reaches it after the open here: the open and the change's push
// race on different connections.
void FuseFs::InvalidateInode(uint64_t ino, int64_t ctime) {
  if (!se_) return;
  FuseCtx& x = *ctx_;
  client::InodePtr inode = ctime != client::kCtimeUnknown ? client_->Get(ino) : nullptr;
  {
    std::lock_guard<std::mutex> l(x.inval_mu);
    if (inode && ctime <= inode->opened_ctime) {
      g_invalidations_seen.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    x.notifying_ino = ino;
  }
  fuse_lowlevel_notify_inval_inode(se_, ino, 0, 0);
  std::vector<std::function<void()>> held;
  {
    std::lock_guard<std::mutex> l(x.inval_mu);
    x.notifying_ino = 0;
    held.swap(x.after_notify);
  }
  for (auto& reply : held) reply();
}

void FuseFs::InvalidateEntry(uint64_t parent, const std::string& name) {
  if (se_) fuse_lowlevel_notify_inval_entry(se_, parent, name.c_str(), name.size());
}

Result<dev_t> MountDev(const std::string& mountpoint) {
  char real[PATH_MAX];
  if (!realpath(mountpoint.c_str(), real)) return Status::FromErrno("realpath " + mountpoint);
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  std::optional<dev_t> found;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string id, parent, majmin, root, mp;
    ls >> id >> parent >> majmin >> root >> mp;
    if (mp != real) continue;
    unsigned maj = 0, min = 0;
    if (std::sscanf(majmin.c_str(), "%u:%u", &maj, &min) == 2) found = makedev(maj, min);
  }
  if (!found) return Status::NotFound(std::string("no mount at ") + real);
  return *found;
}

}  // namespace mfs::fuse

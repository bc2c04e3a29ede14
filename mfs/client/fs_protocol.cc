#include "mfs/client/fs_protocol.h"

namespace mfs::client::proto {

void PutCaller(Writer& w, const Caller& c) {
  w.U32(static_cast<uint32_t>(c.pid));
  w.U32(c.uid);
  w.U32(c.gid);
  w.U32(static_cast<uint32_t>(c.groups.size()));
  for (gid_t g : c.groups) w.U32(g);
}

Caller GetCaller(Reader& r) {
  Caller c;
  c.pid = static_cast<pid_t>(r.U32());
  c.uid = r.U32();
  c.gid = r.U32();
  uint32_t n = r.U32();
  if (n > 65536 || n * 4 > r.remaining()) {
    r.Raw(r.remaining() + 1);  // poison the reader
    return c;
  }
  for (uint32_t i = 0; i < n; ++i) c.groups.push_back(r.U32());
  return c;
}

void PutStat(Writer& w, const struct stat& st) {
  w.U64(st.st_ino);
  w.U32(st.st_mode);
  w.U32(static_cast<uint32_t>(st.st_nlink));
  w.U32(st.st_uid);
  w.U32(st.st_gid);
  w.U64(st.st_rdev);
  w.I64(st.st_size);
  w.I64(st.st_blocks);
  w.U32(static_cast<uint32_t>(st.st_blksize));
  w.I64(st.st_atim.tv_sec);
  w.U32(static_cast<uint32_t>(st.st_atim.tv_nsec));
  w.I64(st.st_mtim.tv_sec);
  w.U32(static_cast<uint32_t>(st.st_mtim.tv_nsec));
  w.I64(st.st_ctim.tv_sec);
  w.U32(static_cast<uint32_t>(st.st_ctim.tv_nsec));
}

struct stat GetStat(Reader& r) {
  struct stat st {};
  st.st_ino = r.U64();
  st.st_mode = r.U32();
  st.st_nlink = r.U32();
  st.st_uid = r.U32();
  st.st_gid = r.U32();
  st.st_rdev = r.U64();
  st.st_size = r.I64();
  st.st_blocks = r.I64();
  st.st_blksize = r.U32();
  st.st_atim.tv_sec = r.I64();
  st.st_atim.tv_nsec = r.U32();
  st.st_mtim.tv_sec = r.I64();
  st.st_mtim.tv_nsec = r.U32();
  st.st_ctim.tv_sec = r.I64();
  st.st_ctim.tv_nsec = r.U32();
  return st;
}

void PutStatvfs(Writer& w, const struct statvfs& s) {
  w.U64(s.f_bsize);
  w.U64(s.f_frsize);
  w.U64(s.f_blocks);
  w.U64(s.f_bfree);
  w.U64(s.f_bavail);
  w.U64(s.f_files);
  w.U64(s.f_ffree);
  w.U64(s.f_favail);
  w.U64(s.f_namemax);
}

struct statvfs GetStatvfs(Reader& r) {
  struct statvfs s {};
  s.f_bsize = r.U64();
  s.f_frsize = r.U64();
  s.f_blocks = r.U64();
  s.f_bfree = r.U64();
  s.f_bavail = r.U64();
  s.f_files = r.U64();
  s.f_ffree = r.U64();
  s.f_favail = r.U64();
  s.f_namemax = r.U64();
  return s;
}

}  // namespace mfs::client::proto

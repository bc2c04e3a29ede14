// Caller: who issued a filesystem request, and ScopedCreds, which makes the
// current thread act with that caller's file-system credentials.
//
// Credentials model (see man/mfs.7, "Credentials"): every request carries the
// caller's fsuid, fsgid and supplementary groups. The node that touches the
// disk — this process for the local fast path, the owner's mfsd for a remote
// file — switches the worker thread to those credentials with setfsuid(2),
// setfsgid(2) and the raw setgroups system call (glibc's setgroups() would
// change every thread), so the owner's kernel does every permission check,
// sets ownership on creation and applies setgid-directory rules exactly as
// for a local process. Root on one node is root on every node (as NFS with
// no_root_squash): the cluster shares one secret and one user database.
//
// Thread-safety: a ScopedCreds changes only the calling thread; it must be
// destroyed on the thread that made it.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <vector>

namespace mfs::client {

struct Caller {
  pid_t pid = 0;  // thread id as FUSE reports it; client maps it to the process
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // filled for non-root callers only
};

class ScopedCreds {
 public:
  explicit ScopedCreds(const Caller& c);
  ~ScopedCreds();
  ScopedCreds(const ScopedCreds&) = delete;
  ScopedCreds& operator=(const ScopedCreds&) = delete;

 private:
  bool switched_ = false;
};

}  // namespace mfs::client

#include "mfs/client/caller.h"

#include <sys/fsuid.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace mfs::client {

// The daemon runs as root (uid 0, gid 0, no supplementary groups). Root
// callers with gid 0 need no switch at all: the common case costs nothing.
ScopedCreds::ScopedCreds(const Caller& c) {
  if (c.uid == 0 && c.gid == 0 && c.groups.empty()) return;
  switched_ = true;
  // Raw system call: per thread, unlike glibc's setgroups().
  syscall(SYS_setgroups, c.groups.size(), c.groups.data());
  setfsgid(c.gid);
  setfsuid(c.uid);
}

ScopedCreds::~ScopedCreds() {
  if (!switched_) return;
  setfsuid(0);
  setfsgid(0);
  syscall(SYS_setgroups, 0, nullptr);
}

}  // namespace mfs::client

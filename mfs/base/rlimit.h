// RaiseFdLimit: a daemon's descriptor soft limit up to its hard limit.
//
// mount.mfs and mfsd hold descriptors for other processes (backing files,
// files peers have open, directories peers hold), so the default soft
// limit of 1,024 is far too low for them; raising it needs no privilege.
#pragma once

#include <sys/resource.h>

namespace mfs {

inline void RaiseFdLimit() {
  rlimit r;
  if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
    r.rlim_cur = r.rlim_max;
    setrlimit(RLIMIT_NOFILE, &r);
  }
}

}  // namespace mfs

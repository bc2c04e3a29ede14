// MountSpawner: mfsd starts the node's /mfs mount ([node].mount) by running
// `mount.mfs cluster <mount> -o config=<file> -f` as a child process.
//
// The mount is a separate process so that it outlives an mfsd restart (the
// FUSE client reconnects to the new mfsd by itself); a new mfsd therefore
// does not start a second one when an mfs file system is already mounted
// there. Stop() asks the child to unmount (SIGTERM) and reaps it, bounded.
// Not thread-safe: call from the daemon's main thread.
#pragma once

#include <sys/types.h>

#include <string>

#include "mfs/base/status.h"

namespace mfs::server {

class MountSpawner {
 public:
  MountSpawner() = default;
  ~MountSpawner() { Stop(); }
  MountSpawner(const MountSpawner&) = delete;
  MountSpawner& operator=(const MountSpawner&) = delete;

  Status Start(const std::string& mountpoint, const std::string& config_path);
  void Stop();

  // True if a fuse.mfs file system is mounted at `mountpoint`.
  static bool IsMfsMounted(const std::string& mountpoint);

 private:
  pid_t pid_ = -1;
};

}  // namespace mfs::server

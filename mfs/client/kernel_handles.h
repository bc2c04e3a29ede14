// KernelHandles: the kernel's file handles (name_to_handle_at(2)) as plain
// strings, and the way back to an fd (open_by_handle_at(2)).
//
// A handle names a file for as long as it exists, whatever its names: it
// carries the inode's generation, so a file made later in a reused inode
// has another handle. Encoded as
//
//   u32 handle_type | u32 mount_id | u32 n | n bytes f_handle
//
// Used by mfsd's HandleCodec (which adds a MAC and hands handles to peers)
// and by the mount's local backend (which keeps a handle instead of an
// O_PATH fd once its inodes hold their share of the descriptor limit).
// open_by_handle_at needs CAP_DAC_READ_SEARCH in the effective set: call
// Open() before switching to a caller's fsuid, which drops it.
//
// Thread-safe: the mount map has its own mutex.
#pragma once

#include <fcntl.h>

#include <map>
#include <mutex>
#include <string>
#include <string_view>

#include "mfs/base/status.h"
#include "mfs/base/unique_fd.h"

namespace mfs::client::ops {

// A path as /proc/self/mountinfo writes it, with its octal escapes
// (space \040, tab \011, newline \012, backslash \134) undone.
std::string UnescapeMountInfoPath(std::string_view s);

class KernelHandles {
 public:
  KernelHandles() = default;
  KernelHandles(const KernelHandles&) = delete;
  KernelHandles& operator=(const KernelHandles&) = delete;

  // The handle of the file `fd` (any fd, O_PATH included) names;
  // EOPNOTSUPP if its file system has none.
  Result<std::string> Make(int fd);
  // An fd (O_PATH unless `flags` say otherwise) on the file `handle` names:
  // EBADMSG if malformed, ESTALE if the file is gone, EPERM without
  // CAP_DAC_READ_SEARCH.
  Result<UniqueFd> Open(std::string_view handle, int flags = O_PATH | O_NOFOLLOW);
  // Whether handles can be made and opened for files under `dirfd` here.
  bool Usable(int dirfd);

 private:
  Result<int> MountFd(int mount_id);

  std::mutex mu_;
  std::map<int, UniqueFd> mounts_;  // mount id -> fd on that mount's root
};

}  // namespace mfs::client::ops

// HandleCodec: server file handles that survive an mfsd restart and cannot
// be forged.
//
// A handle is the kernel's file handle for the file (name_to_handle_at(2)),
// which stays valid while the file exists — across restarts of mfsd — plus
// a MAC over it keyed by the cluster secret and this node's id:
//
//   kernel handle (kernel_handles.h) | 16 bytes MAC
//
// The server issues handles only for files it reached beneath its export
// root, and open_by_handle_at(2) (needs CAP_DAC_READ_SEARCH, probed at
// start) is only ever called on a handle whose MAC checks, so a client
// cannot name a file outside the export by inventing a handle. (A file
// renamed out of the export by a local user keeps its handle, as with NFS
// without subtree checking.)
//
// Thread-safe.
#pragma once

#include <string>
#include <string_view>

#include "mfs/base/status.h"
#include "mfs/base/unique_fd.h"
#include "mfs/client/kernel_handles.h"

namespace mfs::server {

class HandleCodec {
 public:
  HandleCodec(std::string_view secret, uint32_t node_id);
  HandleCodec(const HandleCodec&) = delete;
  HandleCodec& operator=(const HandleCodec&) = delete;

  // The handle for the file `fd` (any fd, O_PATH included) names.
  Result<std::string> Make(int fd);
  // An O_PATH fd for a handle; EBADMSG if malformed, ESTALE if forged or
  // the file is gone.
  Result<UniqueFd> Open(std::string_view handle);

 private:
  std::string Mac(std::string_view body) const;

  std::string key_;
  client::ops::KernelHandles kernel_;
};

}  // namespace mfs::server

// IoObserver: the one place where /mfs attributes file I/O to processes and
// nodes (issue 5, locality accounting, implements it).
//
// The client calls OnIo for every open, create, read and write, with the
// calling thread as FUSE reports it (a tid: the observer maps it to its
// process, caching as it sees fit — the client does not read /proc on this
// path), the node that owns the file and the bytes moved (0 for
// open/create; for a fast-path read, the bytes asked for). Called on FUSE
// and network threads, so implementations must be thread-safe and must not
// block.
#pragma once

#include <sys/types.h>

#include <cstdint>

namespace mfs::client {

enum class IoOp : uint8_t { kOpen, kCreate, kRead, kWrite };

class IoObserver {
 public:
  virtual ~IoObserver() = default;
  virtual void OnIo(pid_t tid, uint32_t owner_node, IoOp op, uint64_t bytes) = 0;
  // Whether OnIo counts right now (the run-time switch, `mfsctl accounting
  // on|off`). While it does not, the FUSE layer may hand local files to the
  // kernel (FUSE passthrough), whose reads and writes it then never sees.
  virtual bool Accounting() const { return true; }
};

}  // namespace mfs::client

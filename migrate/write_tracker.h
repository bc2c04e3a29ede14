// WriteTracker: which pages of a running process are written from a point in
// time on, without reading them — userfaultfd write-protection in
// asynchronous mode (UFFD_FEATURE_WP_ASYNC, Linux 6.7: the kernel resolves
// the write faults itself, the process never waits) read back with the
// PAGEMAP_SCAN ioctl of /proc/PID/pagemap (PAGE_IS_WRITTEN). This kernel has
// no soft-dirty bits (CONFIG_MEM_SOFT_DIRTY is off).
//
// The userfaultfd is made inside the process (an injected userfaultfd(2)),
// taken by the supervisor (pidfd_getfd) and closed in the process at once,
// so the process's fd table is as before when it runs again. Closing ours
// (the destructor) unregisters the ranges: the process's next write to each
// page costs one more minor fault, nothing else.
//
// Not thread-safe; Start from the thread that traces the process.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "mfs/base/status.h"
#include "mfs/base/unique_fd.h"
#include "migrate/tracee.h"

namespace mfs::migrate {

class WriteTracker {
 public:
  using Ranges = std::vector<std::pair<uint64_t, uint64_t>>;

  // Registers `ranges` (private anonymous memory, ascending) and
  // write-protects them: "written" starts now. ENOTSUP (or the kernel's
  // errno) where the kernel cannot. REQUIRES: t stopped with a gadget set;
  // its registers are clobbered (the caller restores them).
  static Result<std::unique_ptr<WriteTracker>> Start(Tracee& t, const Ranges& ranges);

  // The page ranges written since Start, or since the last Written(true)
  // (ascending, within the registered ranges). With `reset`, those pages are
  // write-protected again in the same scan (PM_SCAN_WP_MATCHING): "written"
  // starts over for them, with no write lost between. An error (never
  // "nothing written") when a range is no longer tracked: the process
  // exec'd, or a mapping was replaced.
  Result<Ranges> Written(bool reset = false);

  ~WriteTracker() = default;
  WriteTracker(const WriteTracker&) = delete;
  WriteTracker& operator=(const WriteTracker&) = delete;

 private:
  WriteTracker() = default;
  UniqueFd uffd_;
  UniqueFd pagemap_;  // Start's (write-protects)
  Ranges ranges_;
  pid_t pid_ = 0;
};

}  // namespace mfs::migrate

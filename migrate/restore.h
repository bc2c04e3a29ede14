// Restore: building a ProcessImage inside a stopped tracee.
//
// The tracee is either a fresh process made by SpawnRestoreTarget (a remote
// on another node, or a copy at home) or the frozen original itself (coming
// home: its pid, fds and children never left). Either way the algorithm is the
// same, done entirely with system calls run inside the tracee:
//   1. map a stub (Scratch) where neither the old nor the new layout has
//      anything, and run every further call from its `syscall`;
//   2. unregister rseq (the old area is about to vanish);
//   3. unmap everything but the stub and the kernel's special mappings;
//   4. move [vvar]/[vvar_vclock]/[vdso] to the image's addresses (mremap),
//      after checking that this kernel lays them out the same way;
//   5. map every VMA of the image (files by path, anonymous memory) writable
//      (a private anonymous one whose memory was prepared before the freeze
//      gets it moved there with mremap, see prepare.h), write the pages that
//      travelled, then set the final protections;
//   6. mm fields and exe (PR_SET_MM_MAP), signal handlers, timers, rlimits,
//      name, personality, robust list, alternate stack, clear-child-tid,
//      rseq (last of the memory-related calls), credentials, signal mask;
//   7. the caller's hook (e.g. installing the deputy's seccomp filter),
//      credentials, then the other threads: each is cloned from inside the
//      tracee (CLONE_VM|FS|FILES|SIGHAND|THREAD|SYSVSEM, so it inherits the
//      filter and credentials; auto-attached with PTRACE_O_TRACECLONE) and
//      given its robust list, alternate stack, clear-child-tid, rseq,
//      signal mask, pending signals and registers;
//   8. remove the stub unless asked to keep it, then set the registers
//      (general + XSAVE). The tracee is left stopped: the caller resumes it.
// Any error leaves the tracee unusable (its old memory is gone): the caller
// kills a fresh target, or — at home — never restores over the original
// before the image is complete and checked.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mfs/base/status.h"
#include "migrate/checkpoint.h"
#include "migrate/image.h"
#include "migrate/kernel_probe.h"
#include "migrate/prepare.h"
#include "migrate/tracee.h"

namespace mfs::migrate {

struct RestoreOptions {
  // Keep the stub mapped (a remote keeps it: its supervisor runs system calls
  // through it, and the seccomp filter lets calls from it through).
  bool keep_stub = false;
  // Maps a path of the image to the path to open here (e.g. under /mfs/<home>).
  std::function<std::string(const std::string&)> map_path;
  // Runs after the process state is set and before the registers are.
  std::function<Status(Tracee&, const Scratch&)> before_registers;
  // Memory prepared in the tracee before the freeze (prepare.h): Begin moves
  // its pieces onto the image's private anonymous mappings instead of mapping
  // fresh memory there, unmaps the rest, and records what it moved in
  // pieces_moved / pages_moved. Null or empty: none.
  PreparedMemory* prepared = nullptr;
};

struct RestoreResult {
  Scratch stub;                       // valid when keep_stub
  std::vector<std::string> warnings;  // e.g. an rlimit that could not be raised
  // The other threads (img.threads[1..], same order), re-created with clone
  // from inside the tracee and traced by the caller: stopped, their state
  // set. Dropping them detaches them (they run untraced).
  std::vector<std::unique_ptr<Tracee>> threads;
};

// Forks a process that only waits to be rebuilt, seizes it and stops it.
// `fds` lists (fd in the caller, fd number in the target) pairs to install;
// every other descriptor is closed. The target dies with the calling thread
// (PR_SET_PDEATHSIG).
Result<std::unique_ptr<Tracee>> SpawnRestoreTarget(const std::vector<std::pair<int, int>>& fds,
                                                   long ptrace_options);

// REQUIRES: t stopped; img complete (pages included).
Result<RestoreResult> Restore(Tracee& t, const ProcessImage& img, const KernelFeatures& k,
                              const RestoreOptions& opts);

// The same in three steps, so that pages can be written as they arrive:
// Begin (steps 1-5 up to the mappings; needs the image's header only),
// WritePages (any number of times, any order), Finish (the rest). `t` and
// `img` must outlive the Restorer; img.pages is not read. After an error
// the tracee is unusable (as for Restore). Not thread-safe.
class Restorer {
 public:
  Restorer(Tracee& t, const ProcessImage& img, const KernelFeatures& k, RestoreOptions opts);
  ~Restorer();
  Restorer(const Restorer&) = delete;
  Restorer& operator=(const Restorer&) = delete;

  Status Begin();
  // `data` (whole pages) at `addr`, which must lie in one of the image's
  // private mappings. REQUIRES: Begin succeeded.
  Status WritePages(uint64_t addr, std::string_view data);
  Result<RestoreResult> Finish();

 private:
  Tracee& t_;
  const ProcessImage& img_;
  const KernelFeatures& k_;
  RestoreOptions opts_;
  Scratch stub_;
  bool begun_ = false;
};

}  // namespace mfs::migrate

// Checkpoint: reading a stopped process into a ProcessImage.
//
// The process stays exactly as it was: every register the capture clobbers
// (it runs a few system calls inside the process to read state that ptrace
// does not expose: signal handlers, alternate stack, interval timers, brk,
// the clear-child-tid address) is restored before Capture returns.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "mfs/base/status.h"
#include "migrate/image.h"
#include "migrate/kernel_probe.h"
#include "migrate/tracee.h"

namespace mfs::migrate {

// A read-write area mapped inside a tracee for the migration's own use: page 0
// holds `syscall; int3` (the gadget), the rest is a buffer for arguments.
struct Scratch {
  uint64_t addr = 0;
  uint64_t size = 0;
  uint64_t gadget() const { return addr; }
  uint64_t buffer() const { return addr + kPageSize; }
  uint64_t buffer_size() const { return size - kPageSize; }
};

inline constexpr uint64_t kScratchSize = 1 << 20;

// Points the tracee's gadget at its [vdso] (located with the probed offset),
// maps a Scratch (at `hint` when non-zero, MAP_FIXED_NOREPLACE) and moves the
// gadget there. REQUIRES: t stopped. Leaves t's registers clobbered: the
// caller saved them.
Result<Scratch> MapScratch(Tracee& t, const KernelFeatures& k, uint64_t hint = 0,
                           uint64_t size = kScratchSize);

// Another thread of the process being captured: seized and stopped by the
// caller, its registers saved before anything was injected into it.
struct FrozenThread {
  Tracee* tracee = nullptr;
  CpuState saved;
  pid_t vtid = 0;  // the tid the program knows (0: the real one)
};

// Captures the stopped process whose main thread is `t` and whose other
// threads are `others` (all of them: EAGAIN if /proc counts more, e.g. one
// was created during the freeze). `exclude` lists address ranges (the
// scratch) that are not part of the process. A process that cannot move gets
// EBUSY with the reason as message (e.g. "writable shared mapping
// /dev/shm/x"). Pending signals are taken out of the process (process-wide
// and per thread) and travel in the image. The interval timers are stopped
// (an ITIMER_REAL tick would otherwise fire at the frozen original, or be
// lost between reading the timer and draining the signals): a caller that
// resumes the original re-arms them with RearmTimers. On error nothing of
// this has happened. Registers of `others` are restored before returning;
// those of `t` are the caller's (it holds `saved`).
// With read_pages false, img.pages lists the runs that travel (address, and
// one zero hash per page) without their contents: the caller reads them from
// the process while it stays frozen (SendImage's PageReader), so that reading
// overlaps sending.
// REQUIRES: t stopped, gadget and scratch mapped.
Result<ProcessImage> Capture(Tracee& t, const Scratch& scratch, const CpuState& saved,
                             const std::vector<FrozenThread>& others = {}, bool read_pages = true);

// Sets the three interval timers of the process of `t` (stopped, with a
// gadget) to `timers` (as captured).
Status RearmTimers(Tracee& t, const Scratch& scratch, const std::array<itimerval, 3>& timers);

// The open files of `pid` that move with it (DFSA, see image.h).
//   kMfs  (at home) the regular files on /mfs/<node>/... (not deleted, not
//         O_PATH, fd < 1000); every other fd stays at home, used through
//         the deputy.
//   kAll  (a remote) every fd, each of which must be a regular file (a
//         remote's own fds are its DFSA files); EBUSY otherwise.
// fds that share one open file description get the same group (kcmp).
// REQUIRES: the process is stopped (offsets do not move).
enum class FileScope { kMfs, kAll };
Result<std::vector<FileImage>> CaptureFiles(pid_t pid, FileScope scope);

// fd `fd` of `pid` as a DFSA file if it is one (a regular file on
// /mfs/<node>/..., as kMfs selects), else nullopt.
Result<std::optional<FileImage>> CaptureMfsFile(pid_t pid, int fd);

// Whether `path` names a file under /mfs/<numeric node>/.
bool IsMfsNodePath(const std::string& path);

// Why a process cannot be migrated at all ("" if it can, as far as the maps
// and /proc tell without stopping it).
std::string WhyNotMigratable(pid_t pid);

}  // namespace mfs::migrate

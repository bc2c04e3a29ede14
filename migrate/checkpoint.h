// Checkpoint: reading a stopped process into a ProcessImage.
//
// The process stays exactly as it was: every register the capture clobbers
// (it runs a few system calls inside the process to read state that ptrace
// does not expose: signal handlers, alternate stack, interval timers, brk,
// the clear-child-tid address) is restored before Capture returns.
#pragma once

#include <cstdint>
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

// Captures the stopped, single-threaded process `t`. `exclude` lists address
// ranges (the scratch) that are not part of the process. A process that
// cannot move gets EBUSY with the reason as message (e.g. "writable shared
// mapping /dev/shm/x"). Pending signals are taken out of the process and
// travel in the image (pending_signals). REQUIRES: t stopped, gadget and scratch mapped.
Result<ProcessImage> Capture(Tracee& t, const Scratch& scratch, const CpuState& saved);

// Why a process cannot be migrated at all ("" if it can, as far as the maps
// and /proc tell without stopping it).
std::string WhyNotMigratable(pid_t pid);

}  // namespace mfs::migrate

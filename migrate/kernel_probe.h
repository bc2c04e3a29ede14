// Kernel features that migration depends on, probed once at start and shown
// by `mfsps --check` (the idea of CRIU's kerndat). Nothing here is assumed
// from the kernel version: each field comes from trying the feature.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"

namespace mfs::migrate {

// One piece of the vDSO area as this kernel lays it out. Since Linux 6.13 the
// area is split into [vvar], [vvar_vclock] and [vdso] (Debian's CRIU 3.17
// only knows [vvar] + [vdso] and refuses the layout); the probe records the
// names, sizes and offsets relative to [vdso] instead of assuming them.
struct VdsoPart {
  std::string name;
  int64_t offset_from_vdso = 0;
  uint64_t size = 0;
};

struct KernelFeatures {
  std::vector<VdsoPart> vdso_layout;
  // Offset inside [vdso] of a `syscall` instruction: the gadget used to run a
  // system call inside a stopped tracee before we have mapped our own.
  int64_t vdso_syscall_offset = -1;
  bool rseq = false;                // glibc registered rseq for this thread
  bool ptrace_rseq_config = false;  // PTRACE_GET_RSEQ_CONFIGURATION (5.13)
  bool prctl_mm_map = false;        // PR_SET_MM_MAP_SIZE answers
  bool userfaultfd = false;
  bool pagemap_scan = false;        // PAGEMAP_SCAN ioctl (6.7)
  bool soft_dirty = false;          // CONFIG_MEM_SOFT_DIRTY
  bool seccomp_user_notif = false;  // SECCOMP_GET_NOTIF_SIZES answers
  bool time_namespace = false;

  nlohmann::json ToJson() const;
};

// Probes this process's kernel. Cheap (a few ms); call once.
KernelFeatures ProbeKernel();

}  // namespace mfs::migrate

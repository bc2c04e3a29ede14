#include "migrate/kernel_probe.h"

#include <fcntl.h>
#include <linux/seccomp.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>

#include "mfs/base/unique_fd.h"
#include "migrate/arch.h"
#include "migrate/proc_maps.h"

namespace mfs::migrate {
namespace {
// From linux/fs.h of 6.7+, absent from Debian 12's headers.
struct PmScanArg {
  uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages, category_inverted,
      category_mask, category_anyof_mask, return_mask;
};
constexpr unsigned long kPagemapScan = _IOWR('f', 16, PmScanArg);
}  // namespace

KernelFeatures ProbeKernel() {
  KernelFeatures k;
  auto maps = ReadMaps(getpid());
  if (maps.ok()) {
    const MapEntry* vdso = nullptr;
    for (const auto& e : *maps)
      if (e.path == "[vdso]") vdso = &e;
    if (vdso) {
      for (const auto& e : *maps) {
        if (e.path == "[vdso]" || e.path.rfind("[vvar", 0) == 0)
          k.vdso_layout.push_back({e.path, static_cast<int64_t>(e.start - vdso->start), e.size()});
      }
      const auto* p = reinterpret_cast<const uint8_t*>(vdso->start);
      for (uint64_t i = 0; i + 1 < vdso->size(); ++i) {
        if (p[i] == kSyscallInsn[0] && p[i + 1] == kSyscallInsn[1]) {
          k.vdso_syscall_offset = static_cast<int64_t>(i);
          break;
        }
      }
    }
  }
  k.prctl_mm_map = [] {
    unsigned int size = 0;
    return prctl(PR_SET_MM, PR_SET_MM_MAP_SIZE, &size, 0, 0) == 0 && size > 0;
  }();
  k.ptrace_rseq_config = true;  // refined by the tracer on first use
  k.rseq = [] {
    // glibc 2.35+ exports __rseq_size; 0 means not registered.
    extern const unsigned int __rseq_size __attribute__((weak));
    return &__rseq_size != nullptr && __rseq_size > 0;
  }();
  {
    int fd = static_cast<int>(syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
    k.userfaultfd = fd >= 0;
    if (fd >= 0) close(fd);
  }
  {
    UniqueFd fd(open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC));
    if (fd) {
      static char page[4096];
      page[0] = 1;
      PmScanArg a{};
      a.size = sizeof a;
      a.start = reinterpret_cast<uint64_t>(page) & ~4095ull;
      a.end = a.start + 4096;
      a.category_anyof_mask = 1;  // PAGE_IS_WPALLOWED
      a.return_mask = 1;
      k.pagemap_scan = ioctl(fd.get(), kPagemapScan, &a) >= 0 || errno != ENOTTY;
    }
  }
  {
    // Soft-dirty: bit 55 of a pagemap entry; after clear_refs "4" a written
    // page must show it. Without CONFIG_MEM_SOFT_DIRTY the write of "4" fails.
    UniqueFd cr(open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC));
    k.soft_dirty = cr && write(cr.get(), "4", 1) == 1;
    if (k.soft_dirty) {
      static volatile char probe[8192];
      probe[4096] = 1;
      UniqueFd pm(open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC));
      uint64_t entry = 0;
      uint64_t vpn = (reinterpret_cast<uint64_t>(&probe[4096]) >> 12);
      k.soft_dirty = pm && pread(pm.get(), &entry, 8, static_cast<off_t>(vpn * 8)) == 8 &&
                     (entry >> 55 & 1);
    }
  }
  {
    seccomp_notif_sizes sizes{};
    k.seccomp_user_notif = syscall(SYS_seccomp, SECCOMP_GET_NOTIF_SIZES, 0, &sizes) == 0;
  }
  k.time_namespace = access("/proc/self/ns/time", F_OK) == 0;
  return k;
}

nlohmann::json KernelFeatures::ToJson() const {
  nlohmann::json j;
  j["vdso_layout"] = nlohmann::json::array();
  for (const auto& p : vdso_layout)
    j["vdso_layout"].push_back({{"name", p.name}, {"offset", p.offset_from_vdso}, {"size", p.size}});
  j["vdso_syscall_offset"] = vdso_syscall_offset;
  j["rseq"] = rseq;
  j["prctl_mm_map"] = prctl_mm_map;
  j["userfaultfd"] = userfaultfd;
  j["pagemap_scan"] = pagemap_scan;
  j["soft_dirty"] = soft_dirty;
  j["seccomp_user_notif"] = seccomp_user_notif;
  j["time_namespace"] = time_namespace;
  return j;
}

}  // namespace mfs::migrate

#include "migrate/write_tracker.h"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <string>

namespace mfs::migrate {
namespace {

// Linux 6.7 uapi (linux/fs.h, linux/userfaultfd.h), newer than Debian 12's
// headers.
constexpr uint64_t kPageIsWpAllowed = 1 << 0;
constexpr uint64_t kPageIsWritten = 1 << 1;
constexpr uint64_t kPmScanWpMatching = 1 << 0;
constexpr uint64_t kPmScanCheckWpAsync = 1 << 1;
constexpr uint64_t kUffdFeatureWpUnpopulated = 1 << 13;
constexpr uint64_t kUffdFeatureWpAsync = 1 << 15;

struct PageRegion {
  uint64_t start, end, categories;
};
struct PmScanArg {
  uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages, category_inverted, category_mask,
      category_anyof_mask, return_mask;
};
constexpr unsigned long kPagemapScan = _IOWR('f', 16, PmScanArg);

}  // namespace

Result<std::unique_ptr<WriteTracker>> WriteTracker::Start(Tracee& t, const Ranges& ranges) {
  if (ranges.empty()) return Status::Error(EINVAL, "write tracking: no ranges");
  std::unique_ptr<WriteTracker> w(new WriteTracker());
  w->ranges_ = ranges;
  w->pid_ = t.tid();
  MFS_ASSIGN_OR_RETURN(int64_t fd, t.Syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
  if (fd < 0) return Status::PosixError("write tracking: userfaultfd in the process", static_cast<int>(-fd));
  {
    UniqueFd pidfd(static_cast<int>(syscall(SYS_pidfd_open, t.tid(), 0)));
    if (pidfd) w->uffd_.Reset(static_cast<int>(syscall(SYS_pidfd_getfd, pidfd.get(), static_cast<int>(fd), 0)));
  }
  const int err = errno;
  t.Syscall(SYS_close, static_cast<uint64_t>(fd)).status().IgnoreError();
  if (!w->uffd_) return Status::PosixError("write tracking: pidfd_getfd", err);
  uffdio_api api{};
  api.api = UFFD_API;
  api.features = kUffdFeatureWpAsync | kUffdFeatureWpUnpopulated;
  if (ioctl(w->uffd_.get(), UFFDIO_API, &api) != 0)
    return Status::FromErrno("write tracking: UFFDIO_API (WP_ASYNC needs Linux 6.7)");
  for (const auto& [s, e] : ranges) {
    uffdio_register reg{};
    reg.range.start = s;
    reg.range.len = e - s;
    reg.mode = UFFDIO_REGISTER_MODE_WP;
    if (ioctl(w->uffd_.get(), UFFDIO_REGISTER, &reg) != 0) return Status::FromErrno("write tracking: UFFDIO_REGISTER");
  }
  w->pagemap_.Reset(open(("/proc/" + std::to_string(t.tid()) + "/pagemap").c_str(), O_RDONLY | O_CLOEXEC));
  if (!w->pagemap_) return Status::FromErrno("write tracking: open pagemap");
  for (const auto& [s, e] : ranges) {
    PmScanArg a{};
    a.size = sizeof a;
    a.flags = kPmScanWpMatching | kPmScanCheckWpAsync;
    a.start = s;
    a.end = e;
    a.category_mask = kPageIsWpAllowed;
    if (ioctl(w->pagemap_.get(), kPagemapScan, &a) < 0) return Status::FromErrno("write tracking: PAGEMAP_SCAN");
    if (a.walk_end != e) return Status::Error(EAGAIN, "write tracking: write-protect stopped early");
  }
  return w;
}

Result<WriteTracker::Ranges> WriteTracker::Written(bool reset) {
  // A pagemap opened now: it reads the process's memory as it is now (after
  // an exec, Start's would read the old one), and with CHECK_WPASYNC a range
  // that is no longer registered (exec, a mapping replaced) fails the scan
  // rather than reading as unwritten.
  UniqueFd pagemap(open(("/proc/" + std::to_string(pid_) + "/pagemap").c_str(), O_RDONLY | O_CLOEXEC));
  if (!pagemap) return Status::FromErrno("write tracking: open pagemap");
  Ranges out;
  std::vector<PageRegion> vec(1024);
  for (const auto& [s, e] : ranges_) {
    uint64_t at = s;
    while (at < e) {
      PmScanArg a{};
      a.size = sizeof a;
      a.flags = kPmScanCheckWpAsync | (reset ? kPmScanWpMatching : 0);
      a.start = at;
      a.end = e;
      a.vec = reinterpret_cast<uint64_t>(vec.data());
      a.vec_len = vec.size();
      a.category_mask = kPageIsWritten;
      a.return_mask = kPageIsWritten;
      long n = ioctl(pagemap.get(), kPagemapScan, &a);
      if (n < 0) return Status::FromErrno("write tracking: PAGEMAP_SCAN");
      for (long i = 0; i < n; ++i) {
        if (!out.empty() && out.back().second == vec[i].start) out.back().second = vec[i].end;
        else out.push_back({vec[i].start, vec[i].end});
      }
      if (a.walk_end <= at) return Status::Error(EIO, "write tracking: PAGEMAP_SCAN made no progress");
      at = a.walk_end;
    }
  }
  return out;
}

}  // namespace mfs::migrate

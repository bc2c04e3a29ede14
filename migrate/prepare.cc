#include "migrate/prepare.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>

#include "mfs/base/coding.h"
#include "mfs/base/unique_fd.h"
#include "migrate/image.h"
#include "migrate/proc_maps.h"
#include "migrate/transfer.h"

namespace mfs::migrate {
namespace {

constexpr uint64_t kPmPresent = 1ull << 63;
constexpr uint64_t kPmSwapped = 1ull << 62;
constexpr uint64_t kPmd = 2ull << 20;
constexpr uint64_t kUserTop = 1ull << 57;  // above any user address (5-level paging)
constexpr size_t kMergeGapPages = 16;
constexpr uint64_t kPopulateChunk = 16ull << 20;

uint64_t RoundUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

}  // namespace

uint64_t PrepareHint::pages() const {
  uint64_t n = 0;
  for (const auto& a : areas)
    for (const auto& r : a.runs) n += r.second;
  return n;
}

Result<PrepareHint> ComputePrepareHint(pid_t pid) {
  MFS_ASSIGN_OR_RETURN(auto maps, ReadMaps(pid));
  UniqueFd pagemap(open(("/proc/" + std::to_string(pid) + "/pagemap").c_str(), O_RDONLY | O_CLOEXEC));
  if (!pagemap) return Status::FromErrno("open pagemap");
  PrepareHint h;
  std::vector<std::pair<uint64_t, uint64_t>> avoid;
  std::vector<uint64_t> pm;
  for (const auto& e : maps) {
    if (e.end > kUserTop) continue;  // [vsyscall]: no user mapping goes there
    avoid.push_back({e.start, e.end});
    // Room for the stack to grow (the restore keeps the same below it).
    if (e.path == "[stack]") avoid.push_back({e.start > (1ull << 30) ? e.start - (1ull << 30) : 0, e.start});
    if (!e.anonymous() || e.special() || e.shared || e.path == "[stack]" || e.prot == PROT_NONE) continue;
    PrepareArea a;
    a.start = e.start;
    a.end = e.end;
    uint64_t run_at = 0, run_pages = 0;
    auto flush = [&] {
      if (run_pages) a.runs.push_back({run_at, static_cast<uint32_t>(run_pages)});
      run_pages = 0;
    };
    // The pagemap in chunks: a large sparse mapping costs 8 bytes a page.
    constexpr size_t kChunk = 64 << 10;
    for (uint64_t at = e.start; at < e.end; at += kChunk * kPageSize) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(kChunk, (e.end - at) / kPageSize));
      pm.resize(n);
      ssize_t got = pread(pagemap.get(), pm.data(), n * 8, static_cast<off_t>(at / kPageSize * 8));
      if (got != static_cast<ssize_t>(n * 8)) return Status::FromErrno("read pagemap");
      for (size_t i = 0; i < n; ++i) {
        if (!(pm[i] & (kPmPresent | kPmSwapped))) continue;
        const uint64_t page = at + i * kPageSize;
        if (run_pages && page <= run_at + (run_pages + kMergeGapPages) * kPageSize &&
            run_pages < 0xffffffffu - kMergeGapPages - 1) {
          run_pages = (page - run_at) / kPageSize + 1;
        } else {
          flush();
          run_at = page;
          run_pages = 1;
        }
      }
    }
    flush();
    if (a.runs.empty()) continue;
    if (a.runs.size() > kMaxPrepareRuns) {
      const uint64_t first = a.runs.front().first;
      const uint64_t last = a.runs.back().first + a.runs.back().second * kPageSize;
      a.runs = {{first, static_cast<uint32_t>(std::min<uint64_t>((last - first) / kPageSize, 0xffffffffu))}};
    }
    h.areas.push_back(std::move(a));
  }
  if (h.areas.size() > kMaxPrepareAreas) {
    auto pages = [](const PrepareArea& a) {
      uint64_t n = 0;
      for (const auto& r : a.runs) n += r.second;
      return n;
    };
    std::stable_sort(h.areas.begin(), h.areas.end(),
                     [&](const PrepareArea& x, const PrepareArea& y) { return pages(x) > pages(y); });
    h.areas.resize(kMaxPrepareAreas);
    std::sort(h.areas.begin(), h.areas.end(),
              [](const PrepareArea& x, const PrepareArea& y) { return x.start < y.start; });
  }
  h.avoid = MergeRanges(std::move(avoid));
  if (h.avoid.size() > kMaxPrepareAvoid) return Status::Error(ENOTSUP, "too many mappings to prepare for");
  return h;
}

std::string EncodePrepareHint(const PrepareHint& h) {
  std::string out;
  Writer w(&out);
  w.U32(static_cast<uint32_t>(h.areas.size()));
  for (const auto& a : h.areas) {
    w.U64(a.start);
    w.U64(a.end);
    w.U32(static_cast<uint32_t>(a.runs.size()));
    for (const auto& [addr, pages] : a.runs) {
      w.U64(addr);
      w.U32(pages);
    }
  }
  w.U32(static_cast<uint32_t>(h.avoid.size()));
  for (const auto& [s, e] : h.avoid) {
    w.U64(s);
    w.U64(e);
  }
  return out;
}

Result<PrepareHint> DecodePrepareHint(std::string_view payload) {
  auto bad = [](const std::string& what) { return Status::Error(EBADMSG, "prepare hint: " + what); };
  auto aligned = [](uint64_t v) { return v % kPageSize == 0; };
  Reader rd(payload);
  PrepareHint h;
  const uint32_t nareas = rd.U32();
  if (!rd.ok() || nareas > kMaxPrepareAreas) return bad("area count");
  uint64_t prev_end = 0;
  for (uint32_t i = 0; i < nareas; ++i) {
    PrepareArea a;
    a.start = rd.U64();
    a.end = rd.U64();
    const uint32_t nruns = rd.U32();
    if (!rd.ok()) return bad("truncated area");
    if (!aligned(a.start) || !aligned(a.end) || a.start >= a.end || a.end > kUserTop || a.start < prev_end)
      return bad("area out of order or out of range");
    if (nruns == 0 || nruns > kMaxPrepareRuns) return bad("run count");
    uint64_t run_floor = a.start;
    for (uint32_t k = 0; k < nruns; ++k) {
      uint64_t addr = rd.U64();
      uint32_t pages = rd.U32();
      if (!rd.ok()) return bad("truncated run");
      if (!aligned(addr) || pages == 0 || addr < run_floor || pages > (a.end - addr) / kPageSize)
        return bad("run outside its area");
      run_floor = addr + pages * kPageSize;
      a.runs.push_back({addr, pages});
    }
    prev_end = a.end;
    h.areas.push_back(std::move(a));
  }
  const uint32_t navoid = rd.U32();
  if (!rd.ok() || navoid > kMaxPrepareAvoid) return bad("range count");
  for (uint32_t i = 0; i < navoid; ++i) {
    uint64_t s = rd.U64(), e = rd.U64();
    if (!rd.ok()) return bad("truncated range");
    if (s >= e || e > kUserTop) return bad("range empty or out of range");
    h.avoid.push_back({s, e});
  }
  if (!rd.done()) return bad("trailing bytes");
  return h;
}

std::vector<std::pair<uint64_t, uint64_t>> MergeRanges(std::vector<std::pair<uint64_t, uint64_t>> r) {
  std::sort(r.begin(), r.end());
  std::vector<std::pair<uint64_t, uint64_t>> out;
  for (const auto& x : r) {
    if (!out.empty() && x.first <= out.back().second) out.back().second = std::max(out.back().second, x.second);
    else out.push_back(x);
  }
  return out;
}

std::string EncodeRanges(const std::vector<std::pair<uint64_t, uint64_t>>& r) {
  std::string out;
  Writer w(&out);
  w.U32(static_cast<uint32_t>(r.size()));
  for (const auto& [s, e] : r) {
    w.U64(s);
    w.U64(e);
  }
  return out;
}

Result<std::vector<std::pair<uint64_t, uint64_t>>> DecodeRanges(std::string_view payload) {
  Reader rd(payload);
  const uint32_t n = rd.U32();
  if (!rd.ok() || n > kMaxPrepareAreas) return Status::Error(EBADMSG, "ranges: count");
  std::vector<std::pair<uint64_t, uint64_t>> out;
  for (uint32_t i = 0; i < n; ++i) {
    uint64_t s = rd.U64(), e = rd.U64();
    if (!rd.ok() || s >= e || e > kUserTop || (!out.empty() && s < out.back().second))
      return Status::Error(EBADMSG, "ranges: malformed");
    out.push_back({s, e});
  }
  if (!rd.done()) return Status::Error(EBADMSG, "ranges: trailing bytes");
  return out;
}

void WarmHeap(uint64_t bytes) {
  const size_t n = static_cast<size_t>(std::min<uint64_t>(bytes, (kBatchWindow + 2) * kBatchBytes));
  if (n == 0) return;
  void* p = malloc(n);
  if (!p) return;
  for (size_t i = 0; i < n; i += kPageSize) static_cast<volatile char*>(p)[i] = 0;
  free(p);
}

Result<PreparedMemory> PlanPrepared(const PrepareHint& hint, std::vector<std::pair<uint64_t, uint64_t>> used) {
  PreparedMemory m;
  // Pieces at the same offset modulo 2 MiB as their mappings, in order.
  std::vector<size_t> area_of;
  uint64_t off = 0;
  for (size_t i = 0; i < hint.areas.size(); ++i) {
    const PrepareArea& a = hint.areas[i];
    uint64_t at = RoundUp(off, kPmd) + a.start % kPmd;
    if (at + (a.end - a.start) > kMaxPrepareScratch) continue;  // past the cap: mapped as before
    m.pieces.push_back({at, a.start, a.end, 0});
    area_of.push_back(i);
    off = at + (a.end - a.start);
  }
  if (m.pieces.empty()) return m;
  m.size = RoundUp(off, kPmd);
  for (const auto& r : hint.avoid) used.push_back(r);
  used = MergeRanges(std::move(used));
  // Well away from where mmap and the restore's stub usually go, 2 MiB aligned
  // (so that the pieces keep their offsets), with 2 MiB free on each side.
  for (uint64_t a = 0x600000000000ull; a >= 0x10000000000ull + m.size; a -= 1ull << 30) {
    const uint64_t lo = a - kPmd, hi = a + m.size + kPmd;
    bool clash = false;
    for (const auto& [s, e] : used)
      if (lo < e && hi > s) {
        clash = true;
        break;
      }
    if (clash) continue;
    m.base = a;
    for (size_t p = 0; p < m.pieces.size(); ++p) {
      PreparedPiece& piece = m.pieces[p];
      piece.scratch += a;
      for (const auto& [addr, pages] : hint.areas[area_of[p]].runs) {
        uint64_t s = piece.scratch + (addr - piece.start), len = uint64_t{pages} * kPageSize;
        for (uint64_t done = 0; done < len; done += kPopulateChunk)
          m.populate.push_back({s + done, std::min(kPopulateChunk, len - done), p});
      }
    }
    return m;
  }
  return Status::Error(ENOMEM, "no free address range for the prepared memory");
}

}  // namespace mfs::migrate

// Preparing the destination's memory before the freeze (kPrepare).
//
// Writing the pages into the new process costs, on this kind of VM, mostly the
// kernel's faulting-in and zeroing of its fresh anonymous pages (1.4-8 µs a
// page with page_reporting: see bench/RESULTS.md). That work does not depend
// on the pages' contents, so it is done before the process is frozen:
//   1. home, still running the process: ComputePrepareHint reads its maps and
//      pagemap: the private anonymous mappings (not [stack], which must stay
//      MAP_GROWSDOWN) with the page runs present or swapped now, and every
//      range it uses; sent as kPrepare (EncodePrepareHint).
//   2. guest: PlanPrepared lays out one scratch region in the restore target
//      (made at accept time), one piece per hinted mapping, each piece at the
//      same offset modulo 2 MiB as its mapping (so that mremap can move whole
//      page tables), clear of the target's mappings and of every hinted
//      range; the guest maps it (private anonymous, read-write: the flags the
//      restore would map the mapping with) and populates the hinted runs
//      (MADV_POPULATE_WRITE, Linux 5.14; where refused, by writing zeros),
//      then answers. The home freezes only after the answer or a bounded
//      wait; a refused or failed kPrepare changes nothing but the speed.
//   3. guest, at kImage (Restorer::Begin): each private anonymous non-stack
//      mapping of the header that starts where a piece's mapping started
//      gets that piece moved onto it (mremap MREMAP_MAYMOVE|MREMAP_FIXED,
//      resized to the mapping's size: one VMA, as a fresh mmap would give);
//      the others are mapped as before; the rest of the scratch is unmapped
//      before the process runs. A header mapping that overlaps the scratch
//      makes the restore drop it whole (it is unmapped with the target's own
//      mappings).
//   Pre-copy (kPrecopy, between 2 and the freeze): the home sends the hinted
//   pages of the running process and the guest writes them into the pieces;
//   kImage's reply lists the mappings whose piece was moved in (EncodeRanges),
//   and pages pre-copied there with an unchanged hash at the freeze are not
//   sent again (transfer.h PageFilter); pre-copied pages freed since are sent
//   as zeros. With write tracking (write_tracker.h, started just before the
//   pre-copy) a pre-copied page not written since is not even read.
//
// Encoding of kPrepare's request (little-endian):
//   u32 nareas, per area: u64 start, u64 end, u32 nruns, nruns × (u64 addr,
//   u32 pages); then u32 navoid, navoid × (u64 start, u64 end).
// Reply: u32 pages populated, u32 microseconds spent.
// The decoder does no I/O and rejects anything malformed with EBADMSG.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mfs/base/status.h"

namespace mfs::migrate {

inline constexpr size_t kMaxPrepareAreas = 256;
inline constexpr size_t kMaxPrepareRuns = 256;    // per area
inline constexpr size_t kMaxPrepareAvoid = 8192;  // ranges
// The largest scratch the guest maps (virtual; only the runs are populated).
inline constexpr uint64_t kMaxPrepareScratch = 64ull << 30;

struct PrepareArea {
  uint64_t start = 0, end = 0;
  std::vector<std::pair<uint64_t, uint32_t>> runs;  // (addr, pages), ascending
};

struct PrepareHint {
  std::vector<PrepareArea> areas;                     // ascending, disjoint
  std::vector<std::pair<uint64_t, uint64_t>> avoid;  // [start, end) the process uses
  uint64_t pages() const;
};

// The hint for the running process `pid` (its maps and pagemap; cheap: no
// stop, no page contents). Areas without pages are left out; at most
// kMaxPrepareAreas (those with the most pages), runs closer than 16 pages
// merged, and an area with more than kMaxPrepareRuns runs populated whole.
Result<PrepareHint> ComputePrepareHint(pid_t pid);

std::string EncodePrepareHint(const PrepareHint& h);
Result<PrepareHint> DecodePrepareHint(std::string_view payload);

// One piece of the scratch: the hinted mapping [start, end) lies at `scratch`.
struct PreparedPiece {
  uint64_t scratch = 0;
  uint64_t start = 0, end = 0;
  uint64_t pages = 0;  // populated so far
};

// The scratch of one kPrepare in the restore target.
struct PreparedMemory {
  uint64_t base = 0, size = 0;  // the whole region (size 0: none)
  std::vector<PreparedPiece> pieces;
  // What to populate: (scratch address, length, piece index), in order.
  struct Span {
    uint64_t addr, len;
    size_t piece;
  };
  std::vector<Span> populate;
  // What a restore did with it (Restorer::Begin): the mappings [start, end)
  // that got their piece, ascending.
  size_t pieces_moved = 0;
  uint64_t pages_moved = 0;
  std::vector<std::pair<uint64_t, uint64_t>> moved;
};

// Address ranges: u32 n, n × (u64 start, u64 end); decoding rejects
// unsorted, empty or overlapping ranges (EBADMSG).
std::string EncodeRanges(const std::vector<std::pair<uint64_t, uint64_t>>& r);
// [start, end) ranges sorted, with overlapping and adjacent ones merged.
std::vector<std::pair<uint64_t, uint64_t>> MergeRanges(std::vector<std::pair<uint64_t, uint64_t>> r);
Result<std::vector<std::pair<uint64_t, uint64_t>>> DecodeRanges(std::string_view payload);

// Before the freeze, each supervisor touches the heap that page batches of
// `bytes` of pages will be built or received in (at most the batches in
// flight), so that the first batches after the freeze do not page-fault it
// in. Relies on the supervisor's heap not being trimmed while a move runs
// (mallopt in mfs-supervisor.cc; malloc_trim after the move).
void WarmHeap(uint64_t bytes);

// Lays out the scratch for `hint` clear of `used` (the target's mappings) and
// of hint.avoid. ENOMEM when there is no room.
Result<PreparedMemory> PlanPrepared(const PrepareHint& hint,
                                    std::vector<std::pair<uint64_t, uint64_t>> used);

}  // namespace mfs::migrate

#include "migrate/prepare.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

#include <gtest/gtest.h>

#include "migrate/image.h"

namespace mfs::migrate {
namespace {

TEST(Prepare, HintOfARunningProcessListsItsTouchedPages) {
  // 64 pages, of which 0-3 and 40-49 are touched: two runs (the gap of 36
  // pages is too wide to merge).
  const size_t n = 64 * kPageSize;
  auto* p = static_cast<char*>(mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(p, MAP_FAILED);
  // Guard pages so that the kernel does not merge it with a neighbour.
  ASSERT_EQ(mprotect(p, kPageSize, PROT_NONE), 0);
  ASSERT_EQ(mprotect(p + n - kPageSize, kPageSize, PROT_NONE), 0);
  for (int i = 1; i < 4; ++i) p[i * kPageSize] = 1;
  for (int i = 40; i < 50; ++i) p[i * kPageSize] = 1;
  auto h = ComputePrepareHint(getpid());
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  const uint64_t start = reinterpret_cast<uint64_t>(p) + kPageSize;
  const PrepareArea* found = nullptr;
  for (const auto& a : h->areas)
    if (a.start == start) found = &a;
  ASSERT_NE(found, nullptr);
  EXPECT_EQ(found->end, start + 62 * kPageSize);
  ASSERT_EQ(found->runs.size(), 2u);
  EXPECT_EQ(found->runs[0], std::make_pair(start, 3u));
  EXPECT_EQ(found->runs[1], std::make_pair(start + 39 * kPageSize, 10u));
  bool avoided = false;
  for (const auto& [s, e] : h->avoid) avoided = avoided || (s <= start && e >= found->end);
  EXPECT_TRUE(avoided);
  munmap(p, n);
}

TEST(Prepare, HintRoundTripsAndMalformedHintsAreRejected) {
  PrepareHint h;
  h.areas.push_back({0x10000000, 0x10400000, {{0x10000000, 16}, {0x10100000, 256}}});
  h.areas.push_back({0x20000000, 0x20001000, {{0x20000000, 1}}});
  h.avoid = {{0x10000000, 0x10400000}, {0x20000000, 0x20001000}, {0x7ffd0000, 0x7fff0000}};
  const std::string bytes = EncodePrepareHint(h);
  auto d = DecodePrepareHint(bytes);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  ASSERT_EQ(d->areas.size(), 2u);
  EXPECT_EQ(d->areas[0].runs, h.areas[0].runs);
  EXPECT_EQ(d->avoid, h.avoid);
  EXPECT_EQ(d->pages(), 273u);
  for (size_t cut = 0; cut < bytes.size(); ++cut)
    EXPECT_EQ(DecodePrepareHint(bytes.substr(0, cut)).status().code(), EBADMSG) << cut;
  EXPECT_EQ(DecodePrepareHint(bytes + "x").status().code(), EBADMSG);
  auto bad = [&](PrepareHint x) { return DecodePrepareHint(EncodePrepareHint(x)).status().code(); };
  PrepareHint x = h;
  std::swap(x.areas[0], x.areas[1]);  // out of order
  EXPECT_EQ(bad(x), EBADMSG);
  x = h;
  x.areas[0].runs[1].second = 4096;  // past the area's end
  EXPECT_EQ(bad(x), EBADMSG);
  x = h;
  x.areas[0].start += 1;  // not page aligned
  EXPECT_EQ(bad(x), EBADMSG);
  x = h;
  x.areas[1].runs.clear();
  EXPECT_EQ(bad(x), EBADMSG);
  x = h;
  x.avoid.push_back({0xffffffffff600000ull, 0xffffffffff601000ull});  // above user space
  EXPECT_EQ(bad(x), EBADMSG);
}

TEST(Prepare, PlanKeepsEachPieceAtItsMappingsOffsetAndClearOfEverything) {
  PrepareHint h;
  h.areas.push_back({0x55550000b000, 0x55550040b000, {{0x55550000b000, 1024}}});
  h.areas.push_back({0x7f0000123000, 0x7f0003123000, {{0x7f0000200000, 100}, {0x7f0001000000, 5000}}});
  h.avoid = {{0x55550000b000, 0x55550040b000}, {0x7f0000123000, 0x7f0003123000}};
  // A target mapping where the first choice would be.
  std::vector<std::pair<uint64_t, uint64_t>> used = {{0x600000100000, 0x600000200000}};
  auto m = PlanPrepared(h, used);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  ASSERT_EQ(m->pieces.size(), 2u);
  EXPECT_EQ(m->base % (2u << 20), 0u);
  EXPECT_FALSE(m->base < 0x600000200000 + (2u << 20) && m->base + m->size + (2u << 20) > 0x600000100000);
  for (size_t i = 0; i < 2; ++i) {
    const auto& p = m->pieces[i];
    EXPECT_EQ(p.start, h.areas[i].start);
    EXPECT_EQ(p.scratch % (2u << 20), p.start % (2u << 20));
    EXPECT_GE(p.scratch, m->base);
    EXPECT_LE(p.scratch + (p.end - p.start), m->base + m->size);
  }
  EXPECT_LE(m->pieces[0].scratch + (m->pieces[0].end - m->pieces[0].start), m->pieces[1].scratch);
  uint64_t pages = 0;
  for (const auto& sp : m->populate) {
    const auto& p = m->pieces[sp.piece];
    EXPECT_GE(sp.addr, p.scratch);
    EXPECT_LE(sp.addr + sp.len, p.scratch + (p.end - p.start));
    pages += sp.len / kPageSize;
  }
  EXPECT_EQ(pages, h.pages());
}

}  // namespace
}  // namespace mfs::migrate

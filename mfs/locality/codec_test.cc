#include "mfs/locality/codec.h"

#include <gtest/gtest.h>

namespace mfs::locality {
namespace {

TEST(CodecTest, HistoryRoundTrip) {
  HistoryPoint h{1700000000123, 10000, 1, 2, 3, 4, 5};
  auto d = DecodeHistory(EncodeHistory(h));
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->t_ms, h.t_ms);
  EXPECT_EQ(d->interval_ms, h.interval_ms);
  EXPECT_EQ(d->local(), 3u);
  EXPECT_EQ(d->remote(), 7u);
  EXPECT_EQ(d->cached, 5u);
  EXPECT_EQ(EncodeHistory(h).size(), 72u);
}

TEST(CodecTest, HistoryKeysSortByTime) {
  EXPECT_LT(HistoryKey(999), HistoryKey(1000));
  EXPECT_LT(HistoryKey(0xfffffff), HistoryKey(0x10000000));
}

TEST(CodecTest, CorruptHistoryIsRejectedNotTrusted) {
  std::string v = EncodeHistory(HistoryPoint{5, 1, 1, 1, 1, 1, 1});
  for (size_t i = 0; i < v.size(); ++i) {
    std::string bad = v;
    bad[i] ^= 0x40;
    auto d = DecodeHistory(bad);
    EXPECT_FALSE(d.ok()) << "flipped byte " << i;
    if (!d.ok()) {
      EXPECT_EQ(d.status().code(), EBADMSG);
    }
  }
  for (size_t n = 0; n < v.size(); ++n) EXPECT_FALSE(DecodeHistory(v.substr(0, n)).ok());
  EXPECT_FALSE(DecodeHistory("garbage that is long enough to try").ok());
}

TEST(CodecTest, ProfileRoundTripKeepsDecayedFigures) {
  Profile p;
  p.exe = "/usr/bin/cat";
  p.processes = 3;
  p.last_ms = 1000;
  Counters c;
  c.reads = 2;
  c.read_bytes = 4096;
  p.decayed[2].Add(c, 1000, 1000.0);
  c.read_bytes = 1024;
  p.decayed[3].Add(c, 1000, 1000.0);
  // Encoded one half-life later: figures are halved.
  auto d = DecodeProfile(EncodeProfile(p, 2000, 1000.0));
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->exe, p.exe);
  EXPECT_EQ(d->processes, 3u);
  ASSERT_EQ(d->decayed.size(), 2u);
  EXPECT_NEAR(d->decayed[2].read_bytes.At(2000, 1000.0), 2048, 1e-6);
  EXPECT_NEAR(d->decayed[3].read_bytes.At(3000, 1000.0), 256, 1e-6);
}

TEST(CodecTest, CorruptProfileIsRejected) {
  Profile p;
  p.exe = "/bin/x";
  p.decayed[1].Add(Counters{0, 0, 1, 10, 0, 0, 0, 0}, 1, 1000);
  std::string v = EncodeProfile(p, 1, 1000);
  for (size_t i = 0; i < v.size(); ++i) {
    std::string bad = v;
    bad[i] ^= 0x01;
    EXPECT_FALSE(DecodeProfile(bad).ok()) << "flipped byte " << i;
  }
  EXPECT_FALSE(DecodeProfile("").ok());
}

}  // namespace
}  // namespace mfs::locality

#include "mfs/locality/model.h"

#include <gtest/gtest.h>

#include "mfs/locality/report.h"

namespace mfs::locality {
namespace {

Entry Read(pid_t pid, uint32_t node, uint64_t bytes, bool cached = false) {
  Entry e;
  e.pid = pid;
  e.start = 100;
  e.comm = "job";
  e.exe = "/bin/job";
  e.node = node;
  e.c.reads = 1;
  e.c.read_bytes = bytes;
  if (cached) {
    e.c.cached_reads = 1;
    e.c.cached_bytes = bytes;
  }
  return e;
}

TEST(DecayTest, HalvesAfterOneHalfLife) {
  Decayed d;
  d.Add(1000, 0, 500);
  EXPECT_DOUBLE_EQ(d.At(0, 500), 1000);
  EXPECT_NEAR(d.At(500, 500), 500, 1e-9);
  EXPECT_NEAR(d.At(1500, 500), 125, 1e-9);
  d.Add(100, 500, 500);
  EXPECT_NEAR(d.At(500, 500), 600, 1e-9);
}

TEST(ModelTest, ProportionsPerNodeAndLocalShare) {
  LocalityModel m(ModelOptions{1, 60'000, 5'000, 100});
  m.Apply({Read(42, 1, 1000), Read(42, 2, 2000), Read(42, 3, 7000)}, 1000);
  ASSERT_EQ(m.processes().size(), 1u);
  auto j = m.ProcessJson(m.processes().at(42), 1000);
  EXPECT_EQ(j["where"], 1);
  EXPECT_EQ(j["main_node"], 3);
  EXPECT_NEAR(j["local_pct"].get<double>(), 10.0, 1e-9);
  EXPECT_NEAR(j["nodes"]["2"]["read_bytes"].get<double>(), 2000, 1e-9);
  EXPECT_EQ(j["total_bytes"], 10000);
  // 10000 bytes in a 5 s window.
  EXPECT_NEAR(j["rate_bps"].get<double>(), 2000, 1e-9);
  m.SetWhere(42, 3);
  j = m.ProcessJson(m.processes().at(42), 1000);
  EXPECT_NEAR(j["local_pct"].get<double>(), 70.0, 1e-9);
}

// A migrated process (a guest on node 2, home node 1, home pid 4242) is
// shown under its home identity, kept once learnt when it is gone.
TEST(ModelTest, GuestIsKnownByItsHomeIdentity) {
  LocalityModel m(ModelOptions{2, 60'000, 5'000, 100});
  m.Apply({Read(777, 3, 1000)}, 10);
  auto j = m.ProcessJson(m.processes().at(777), 10);
  EXPECT_EQ(j["home"], 2);
  EXPECT_EQ(j["home_pid"], 777);
  m.SetWhere(777, 2, 1, 4242);
  j = m.ProcessJson(m.processes().at(777), 10);
  EXPECT_EQ(j["pid"], 777);
  EXPECT_EQ(j["home"], 1);
  EXPECT_EQ(j["home_pid"], 4242);
  EXPECT_EQ(j["where"], 2);
  m.SetWhere(777, 0, kKeepHome, 0);  // it ended: proc.where no longer knows it
  j = m.ProcessJson(m.processes().at(777), 10);
  EXPECT_EQ(j["home"], 1);
  EXPECT_EQ(j["home_pid"], 4242);
  m.SetWhere(777, 2, 2, 777);  // known to run at home here
  j = m.ProcessJson(m.processes().at(777), 10);
  EXPECT_EQ(j["home"], 2);
  EXPECT_EQ(j["home_pid"], 777);
}

// The guest supervisor names the process before it runs; a reused pid (other
// start time) is not taken for it.
TEST(ModelTest, IdentityToldBeforeTheFirstReport) {
  LocalityModel m(ModelOptions{2, 60'000, 5'000, 100});
  m.SetIdentity(777, 100, 1, 4242);
  m.SetIdentity(888, 55, 1, 5000);
  m.Apply({Read(777, 3, 1000), Read(888, 3, 10)}, 10);  // Read() starts at 100
  auto j = m.ProcessJson(m.processes().at(777), 10);
  EXPECT_EQ(j["home"], 1);
  EXPECT_EQ(j["home_pid"], 4242);
  j = m.ProcessJson(m.processes().at(888), 10);
  EXPECT_EQ(j["home"], 2);
  EXPECT_EQ(j["home_pid"], 888);
}

// A remote restored from its home's executable through /mfs is the same
// program: its profile is the home's.
TEST(ModelTest, RemoteRunningItsHomesExecutableSharesItsProfile) {
  LocalityModel m(ModelOptions{2, 60'000, 5'000, 100});
  m.SetIdentity(777, 100, 1, 4242);
  Entry e = Read(777, 3, 1000);
  e.exe = "/mfs/1/bin/job";
  m.Apply({e}, 10);
  EXPECT_EQ(m.processes().at(777).exe, "/bin/job");
  EXPECT_EQ(m.profiles().count("/bin/job"), 1u);
  EXPECT_EQ(m.profiles().count("/mfs/1/bin/job"), 0u);
}

TEST(ModelTest, CachedReadsAreShown) {
  LocalityModel m(ModelOptions{1, 60'000, 5'000, 100});
  m.Apply({Read(7, 2, 4096, true)}, 10);
  auto j = m.ProcessJson(m.processes().at(7), 10);
  EXPECT_NEAR(j["nodes"]["2"]["cached_bytes"].get<double>(), 4096, 1e-9);
  EXPECT_NEAR(j["bytes"].get<double>(), 4096, 1e-9);
}

TEST(ModelTest, ReusedPidIsANewProcessAndProfilesCountProcesses) {
  LocalityModel m(ModelOptions{1, 60'000, 5'000, 100});
  m.Apply({Read(9, 1, 10)}, 1);
  Entry e = Read(9, 1, 20);
  e.start = 200;
  m.Apply({e}, 2);
  EXPECT_EQ(m.processes().at(9).start, 200u);
  EXPECT_EQ(m.processes().at(9).totals.at(1).read_bytes, 20u);
  EXPECT_EQ(m.profiles().at("/bin/job").processes, 2u);
  EXPECT_NEAR(m.profiles().at("/bin/job").decayed.at(1).read_bytes.At(2, 60'000), 30, 1e-3);
}

TEST(ModelTest, HistorySplitsLocalAndRemote) {
  LocalityModel m(ModelOptions{2, 60'000, 5'000, 100});
  m.Apply({Read(1, 2, 300), Read(1, 1, 100)}, 1000);
  auto h = m.TakeHistoryPoint(2000);
  EXPECT_EQ(h.local(), 300u);
  EXPECT_EQ(h.remote(), 100u);
  EXPECT_EQ(h.interval_ms, 1000);
  auto h2 = m.TakeHistoryPoint(3000);
  EXPECT_EQ(h2.local() + h2.remote(), 0u);
}

TEST(ModelTest, ExpireForgetsIdleProcessesAndBoundsCount) {
  LocalityModel m(ModelOptions{1, 100, 5'000, 2});
  m.Apply({Read(1, 1, 10)}, 0);
  m.Apply({Read(2, 1, 10)}, 1);
  m.Apply({Read(3, 1, 10)}, 2);
  m.Expire(3);
  EXPECT_EQ(m.processes().size(), 2u);
  EXPECT_FALSE(m.processes().count(1));
  m.Expire(100 * 100);
  EXPECT_TRUE(m.processes().empty());
  EXPECT_EQ(m.profiles().size(), 1u);  // profiles outlive processes
}

TEST(ReportTest, RoundTripAndValidation) {
  Batch b{Read(5, 3, 77)};
  auto d = DecodeReport(EncodeReport(b));
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  ASSERT_EQ(d->size(), 1u);
  EXPECT_EQ((*d)[0].pid, 5);
  EXPECT_EQ((*d)[0].node, 3u);
  EXPECT_EQ((*d)[0].c.read_bytes, 77u);
  EXPECT_EQ((*d)[0].exe, "/bin/job");
  using nlohmann::json;
  EXPECT_EQ(DecodeReport(json{{"op", "x"}}).status().code(), EINVAL);
  EXPECT_EQ(DecodeReport(json{{"entries", {{{"pid", 1}, {"node", 0}}}}}).status().code(), EINVAL);
  EXPECT_EQ(DecodeReport(json{{"entries", {{{"pid", -1}, {"node", 1}}}}}).status().code(), EINVAL);
  EXPECT_EQ(DecodeReport(json{{"entries", {{{"pid", 1}, {"node", 1}, {"read_bytes", "x"}}}}})
                .status()
                .code(),
            EINVAL);
  EXPECT_EQ(DecodeReport(json{{"entries", {1, 2}}}).status().code(), EINVAL);
}

}  // namespace
}  // namespace mfs::locality

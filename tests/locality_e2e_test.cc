// End to end through /mfs (issue 5): on a real 3-node cluster, a job on
// node 1 reads three files stored on nodes 1, 2 and 3 in proportions 1:2:3;
// mfsstat on node 1 reports those proportions within 1 %. Needs the FUSE
// client mounted by the cluster's nodes: skipped, with the reason, where
// /mfs is not mounted.
#include <gtest/gtest.h>

#include <fstream>

#include "tests/cluster_fixture.h"

namespace mfs::testing {
namespace {

using nlohmann::json;

class LocalityEndToEnd : public ClusterTest {};

TEST_F(LocalityEndToEnd, JobReadingThreeNodesIsReportedInProportion) {
  ClusterOptions o;
  o.config_extra = "[locality]\nhistory_interval_s = 1\n";
  ASSERT_TRUE(Up(3, o));
  ExecResult mounted = Exec(1, {"test", "-d", "/mfs/3"});
  if (!mounted.ok()) GTEST_SKIP() << "/mfs is not mounted in the cluster nodes (no FUSE client)";
  for (int i = 1; i <= 3; ++i) {
    std::ofstream(NodeDir(i) + "/export/locality-part")
        << std::string(static_cast<size_t>(i) << 20, static_cast<char>('a' + i));
  }
  ExecResult job = Exec(1, {"sh", "-c",
                            "cat /mfs/1/locality-part /mfs/2/locality-part /mfs/3/locality-part"
                            " > /dev/null & echo $!; wait"});
  ASSERT_TRUE(job.ok()) << job.Describe();
  std::string pid = job.out.substr(0, job.out.find('\n'));
  json p;
  bool seen = WaitFor(
      [&] {
        ExecResult r = Exec(1, {"mfsstat", "--json", "-p", pid});
        json j = json::parse(r.out, nullptr, false);
        if (j.is_discarded() || !j.contains("nodes") || j["nodes"].empty()) return false;
        for (const auto& x : j["nodes"][0]["processes"]) {
          if (x["total_bytes"].get<uint64_t>() >= (6u << 20)) {
            p = x;
            return true;
          }
        }
        return false;
      },
      15s, 200ms);
  ASSERT_TRUE(seen) << "the job's 6 MiB never showed in mfsstat on node 1";
  EXPECT_EQ(p["where"], 1);
  double total = 0;
  for (int i = 1; i <= 3; ++i) {
    total += p["totals"][std::to_string(i)]["read_bytes"].get<double>();
  }
  for (int i = 1; i <= 3; ++i) {
    std::string n = std::to_string(i);
    EXPECT_NEAR(p["totals"][n]["read_bytes"].get<double>() / total, i / 6.0, 0.01) << "node " << n;
    EXPECT_NEAR(p["nodes"][n]["bytes"].get<double>() / p["bytes"].get<double>(), i / 6.0, 0.01)
        << "node " << n;
  }
  EXPECT_NEAR(p["local_pct"].get<double>(), 100.0 / 6, 1.0);
  // The cluster-wide view from node 2 shows node 3 serving node 1.
  ExecResult all = Exec(2, {"mfsstat", "-a", "-N"});
  EXPECT_TRUE(all.ok()) << all.Describe();
  EXPECT_NE(all.out.find("node 3 served: cat[" + pid + "]@1 3.0M"), std::string::npos) << all.out;
}

// `mfsctl accounting off|on` switches the /mfs client's accounting at run
// time: I/O done while it is off never shows, I/O after it is on again does.
TEST_F(LocalityEndToEnd, AccountingSwitchedOffAndOnAtRunTime) {
  ASSERT_TRUE(Up(2));
  ExecResult mounted = Exec(1, {"test", "-d", "/mfs/2"});
  if (!mounted.ok()) GTEST_SKIP() << "/mfs is not mounted in the cluster nodes (no FUSE client)";
  std::ofstream(NodeDir(2) + "/export/switch-part") << std::string(1 << 20, 'z');
  auto client_is = [&](bool on) {
    ExecResult r = Exec(1, {"mfsctl", "accounting", "--json"});
    json j = json::parse(r.out, nullptr, false);
    return !j.is_discarded() && j["client"].is_boolean() && j["client"].get<bool>() == on;
  };
  // The client reports every 500 ms, so it has said "on" before long.
  ASSERT_TRUE(WaitFor([&] { return client_is(true); }, 15s, 100ms));
  ExecResult off = Exec(1, {"mfsctl", "accounting", "off"});
  ASSERT_TRUE(off.ok()) << off.Describe();
  EXPECT_NE(off.out.find("accounting off"), std::string::npos) << off.out;
  ASSERT_TRUE(WaitFor([&] { return client_is(false); }, 15s, 100ms));
  auto run_job = [&] {
    ExecResult job =
        Exec(1, {"sh", "-c", "cat /mfs/2/switch-part > /dev/null & echo $!; wait"});
    EXPECT_TRUE(job.ok()) << job.Describe();
    return job.out.substr(0, job.out.find('\n'));
  };
  auto shown = [&](const std::string& pid) {
    ExecResult r = Exec(1, {"mfsstat", "--json", "-p", pid});
    return r.ok();  // an unknown pid is an error (ENOENT)
  };
  std::string unseen = run_job();
  ASSERT_TRUE(Exec(1, {"mfsctl", "accounting", "on"}).ok());
  ASSERT_TRUE(WaitFor([&] { return client_is(true); }, 15s, 100ms));
  std::string seen = run_job();
  // Reports are sent in order: once the second job shows, anything the
  // first one had been charged would show too.
  EXPECT_TRUE(WaitFor([&] { return shown(seen); }, 15s, 200ms)) << "pid " << seen;
  EXPECT_FALSE(shown(unseen)) << "I/O done with accounting off was counted (pid " << unseen << ")";
  // Only root switches it; a bad state is refused by the command line.
  ExecResult bad = Exec(1, {"mfsctl", "accounting", "maybe"});
  EXPECT_NE(bad.exit_code, 0);
  ExecResult nobody = Exec(1, {"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                               "mfsctl", "accounting", "off"});
  EXPECT_EQ(nobody.exit_code, 1) << nobody.Describe();
  EXPECT_NE(nobody.err.find("only root"), std::string::npos) << nobody.err;
}

}  // namespace
}  // namespace mfs::testing

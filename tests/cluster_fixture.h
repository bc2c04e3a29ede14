// ClusterTest: a GoogleTest fixture that gives each test a real mfs cluster
// on this machine, started by mfs-cluster (man/mfs-cluster.1) in a private
// temporary directory, and always tears it down — even when the test fails
// or an assertion returns early.
//
//   TEST_F(ClusterTest, Something) {
//     ASSERT_TRUE(Up(3));
//     ExecResult r = Exec(1, {"mfsctl", "status", "--json"});
//     ...
//   }
//
// A machine that lacks what a cluster needs (root, mount namespaces, the
// util-linux tools) makes SetUp skip the test with the reason; partition
// tests call MFS_REQUIRE_IPTABLES() to skip without iptables.
//
// Every wait is bounded: each command has a deadline after which its process
// group is killed and the call fails.
//
// Thread-compatible: one test thread uses the fixture.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "mfs/base/status.h"

namespace mfs::testing {

using namespace std::chrono_literals;

// The outcome of a command run with RunCommand.
struct ExecResult {
  int exit_code = -1;      // exit status, or 128 + signal, or -1 if it never ran
  bool timed_out = false;  // the deadline passed and the command was killed
  std::string out;         // standard output
  std::string err;         // standard error
  // "exit 3: <stderr>" for failure messages.
  std::string Describe() const;
  bool ok() const { return exit_code == 0 && !timed_out; }
};

// Runs argv (argv[0] searched in PATH) with stdin from /dev/null, capturing
// stdout and stderr, and kills its whole process group at the deadline.
ExecResult RunCommand(const std::vector<std::string>& argv,
                      std::chrono::milliseconds timeout = 120s);

// Polls pred every `every` until it returns true or `timeout` passes.
bool WaitFor(const std::function<bool()>& pred, std::chrono::milliseconds timeout,
             std::chrono::milliseconds every = 100ms);

// Where the build put mfs-cluster, mfsd and mfsctl.
std::string BinDir();

// Why partition tests cannot run here, or nullopt if they can.
std::optional<std::string> IptablesMissing();

// A port on which 127.0.0.1 .. 127.0.0.n can all listen right now, outside
// the ephemeral range, chosen at random so that parallel runs differ.
int PickFreePort(int n);

struct ClusterOptions {
  // The nodes' port; 0 picks a free one (so that tests do not collide with
  // another cluster on this machine), retrying if it is taken meanwhile.
  int port = 0;
  // Membership timing for every node; short so tests run fast.
  int heartbeat_ms = 200;
  int dead_after_ms = 1500;
  // TOML appended to every node's config (a service's own section).
  std::string config_extra;
  // node id -> secret file contents used by that node instead of the
  // cluster's (written 0600 in the test's directory).
  std::map<int, std::string> node_secrets;
  // Further arguments for `mfs-cluster up` (--cpus, --mem, ...).
  std::vector<std::string> extra_args;
  std::chrono::seconds timeout = 30s;
};

class ClusterTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  // Starts an n-node cluster in dir(). The result says why it failed
  // (mfs-cluster's error line); use ASSERT_TRUE(Up(3)).
  ::testing::AssertionResult Up(int n, const ClusterOptions& options = {});

  // `mfs-cluster ARGS... --dir dir()`.
  ExecResult Cluster(std::vector<std::string> args, std::chrono::milliseconds timeout = 120s);

  // Runs argv on a node: in its mount namespace and cgroup, with the build's
  // bin directory first in PATH.
  ExecResult Exec(int node, const std::vector<std::string>& argv,
                  std::chrono::milliseconds timeout = 60s);

  ::testing::AssertionResult Kill(int node);
  ::testing::AssertionResult Stop(int node);
  ::testing::AssertionResult Start(int node);
  ::testing::AssertionResult Restart(int node);
  ::testing::AssertionResult Partition(int node);
  ::testing::AssertionResult Heal(int node);

  // One request on the node's control socket (dir()/nodeI/run/mfsd.sock,
  // which is /run/mfs/mfsd.sock inside the node).
  Result<nlohmann::json> Control(int node, const nlohmann::json& request);

  // `mfsctl status --json` run inside the node, parsed.
  Result<nlohmann::json> MfsctlStatus(int node);

  // State ("alive", "dead", ...) of peer `peer` as node `node` reports it,
  // or "" if the node does not list it (or does not answer).
  std::string PeerState(int node, int peer);

  const std::string& dir() const { return dir_; }
  std::string NodeDir(int node) const;
  std::string ReadLog(int node) const;
  int nodes() const { return nodes_; }
  // The port of the cluster Up started.
  int port() const { return port_; }
  // "127.0.0.I:PORT", node I's address as mfsd reports it.
  std::string Address(int node) const;

 private:
  ::testing::AssertionResult ClusterOk(std::vector<std::string> args);

  std::string dir_;  // private temp dir, removed in TearDown
  int nodes_ = 0;
  int port_ = 0;
};

// Skips the current test (from the test body) when iptables is unusable.
#define MFS_REQUIRE_IPTABLES()                                                  \
  do {                                                                          \
    if (auto why = ::mfs::testing::IptablesMissing()) GTEST_SKIP() << *why;     \
  } while (0)

}  // namespace mfs::testing

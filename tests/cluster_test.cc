// Integration tests of a real cluster on this machine: mfsd membership
// (alive, dead, refused) seen through `mfsctl status --json` run inside each
// node, and the mfs-cluster harness itself (namespaces, partitions, cgroups,
// bad input, teardown).
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "mfs/base/unique_fd.h"
#include "tests/cluster_fixture.h"

namespace mfs::testing {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::string ReadFile(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

class ClusterMembershipTest : public ClusterTest {
 protected:
  // True when every node in `observers` reports each of `peers` in `state`.
  bool Sees(const std::vector<int>& observers, const std::vector<int>& peers,
            const std::string& state, std::string* why = nullptr) {
    for (int o : observers) {
      for (int p : peers) {
        if (o == p) continue;
        std::string s = PeerState(o, p);
        if (s != state) {
          if (why) {
            *why = "node " + std::to_string(o) + " reports node " + std::to_string(p) + " as '" +
                   s + "'";
          }
          return false;
        }
      }
    }
    return true;
  }

  // Waits (bounded) for Sees(); the failure message says who saw what.
  ::testing::AssertionResult EventuallySees(const std::vector<int>& observers,
                                            const std::vector<int>& peers,
                                            const std::string& state,
                                            std::chrono::milliseconds timeout) {
    std::string why;
    if (WaitFor([&] { return Sees(observers, peers, state, &why); }, timeout, 100ms)) {
      return ::testing::AssertionSuccess();
    }
    return ::testing::AssertionFailure() << "after " << timeout.count() << " ms " << why;
  }
};

// All three nodes come up, and each one's `mfsctl status --json`, run in
// that node's namespace through the default socket, names itself and lists
// the other two as alive.
TEST_F(ClusterMembershipTest, ThreeNodesSeeEachOtherAlive) {
  ASSERT_TRUE(Up(3));
  EXPECT_TRUE(EventuallySees({1, 2, 3}, {1, 2, 3}, "alive", 15s));
  for (int i = 1; i <= 3; ++i) {
    auto status = MfsctlStatus(i);
    ASSERT_TRUE(status.ok()) << status.status().ToString();
    EXPECT_EQ((*status)["node"].value("id", 0), i);
    EXPECT_EQ((*status)["node"].value("address", ""), Address(i));
    // The harness wrote the fixture's membership timing into the config.
    EXPECT_EQ((*status)["node"].value("heartbeat_ms", 0), ClusterOptions{}.heartbeat_ms);
    EXPECT_EQ((*status)["node"].value("dead_after_ms", 0), ClusterOptions{}.dead_after_ms);
    std::set<int> alive;
    for (const auto& p : (*status)["peers"]) {
      if (p.value("state", "") == "alive") alive.insert(p.value("id", 0));
    }
    std::set<int> others;
    for (int j = 1; j <= 3; ++j) {
      if (j != i) others.insert(j);
    }
    EXPECT_EQ(alive, others) << "node " << i << ": " << status->dump();
  }
}

// A killed node is reported dead within dead_after_ms (plus slack for the
// sweep interval and the polling here), and alive again after a restart.
TEST_F(ClusterMembershipTest, KilledNodeIsDeadThenAliveAfterRestart) {
  ClusterOptions options;
  options.heartbeat_ms = 200;
  options.dead_after_ms = 1500;
  ASSERT_TRUE(Up(3, options));
  ASSERT_TRUE(EventuallySees({1, 2, 3}, {1, 2, 3}, "alive", 15s));

  auto killed_at = Clock::now();
  ASSERT_TRUE(Kill(3));
  const auto bound = std::chrono::milliseconds(options.dead_after_ms + 2 * options.heartbeat_ms +
                                               1500);
  EXPECT_TRUE(EventuallySees({1, 2}, {3}, "dead", bound));
  auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - killed_at);
  EXPECT_LE(took, bound);
  // Dead, not merely unheard: it took at least most of dead_after.
  EXPECT_GE(took.count(), options.dead_after_ms - 2 * options.heartbeat_ms);
  EXPECT_TRUE(Sees({1, 2}, {1, 2}, "alive"));

  ASSERT_TRUE(Restart(3));
  EXPECT_TRUE(EventuallySees({1, 2, 3}, {1, 2, 3}, "alive", 15s));
}

// A node stopped gracefully (SIGTERM) says goodbye: the others report it
// "left" well before dead_after_ms; started again, it is alive everywhere.
TEST_F(ClusterMembershipTest, StoppedNodeLeavesAndStartedNodeRejoins) {
  ClusterOptions options;
  options.dead_after_ms = 5000;  // long, so "left" cannot be a timeout
  ASSERT_TRUE(Up(3, options));
  ASSERT_TRUE(EventuallySees({1, 2, 3}, {1, 2, 3}, "alive", 15s));
  auto stopped_at = Clock::now();
  ASSERT_TRUE(Stop(2));
  EXPECT_TRUE(EventuallySees({1, 3}, {2}, "left", 4s));
  EXPECT_LT(Clock::now() - stopped_at, std::chrono::milliseconds(options.dead_after_ms));
  ExecResult st = Cluster({"status"});
  EXPECT_NE(st.out.find("127.0.0.2    -"), std::string::npos) << st.out;
  ASSERT_TRUE(Start(2));
  EXPECT_TRUE(EventuallySees({1, 2, 3}, {1, 2, 3}, "alive", 15s));
}

// A node whose secret is not the cluster's is refused: the others never list
// it alive (it never authenticates, so they do not even learn its id), it
// sees nobody alive, and its log says it was refused.
TEST_F(ClusterMembershipTest, NodeWithWrongSecretIsRefused) {
  ClusterOptions options;
  options.node_secrets[3] = "this-is-not-the-cluster-secret-0123456789";
  ASSERT_TRUE(Up(3, options));
  ASSERT_TRUE(EventuallySees({1, 2}, {1, 2}, "alive", 15s));

  // Long enough for many heartbeats and a full dead_after period.
  const auto watch = std::chrono::milliseconds(options.dead_after_ms + 10 * options.heartbeat_ms);
  const auto end = Clock::now() + watch;
  int rounds = 0;
  while (Clock::now() < end) {
    for (int o : {1, 2}) {
      auto status = MfsctlStatus(o);
      ASSERT_TRUE(status.ok()) << status.status().ToString();
      for (const auto& p : (*status)["peers"]) {
        bool is_node3 = p.value("id", 0) == 3 || p.value("address", "") == Address(3);
        EXPECT_FALSE(is_node3 && p.value("state", "") == "alive")
            << "node " << o << " lists the wrong-secret node as alive: " << p.dump();
        EXPECT_NE(p.value("id", 0), 3) << "node " << o << " learnt the refused node's id";
      }
    }
    EXPECT_EQ(PeerState(3, 1), "") << "the wrong-secret node learnt node 1";
    ++rounds;
  }
  EXPECT_GE(rounds, 2);

  std::string log3 = ReadLog(3);
  EXPECT_NE(log3.find("refused"), std::string::npos) << "node 3's log:\n" << log3;
  std::string log1 = ReadLog(1);
  EXPECT_NE(log1.find("refused connection from 127.0.0.3"), std::string::npos)
      << "node 1's log:\n" << log1;
}

// partition cuts one node off (both ways) and heal joins it again.
TEST_F(ClusterMembershipTest, PartitionAndHeal) {
  MFS_REQUIRE_IPTABLES();
  ClusterOptions options;
  ASSERT_TRUE(Up(3, options));
  ASSERT_TRUE(EventuallySees({1, 2, 3}, {1, 2, 3}, "alive", 15s));

  ASSERT_TRUE(Partition(2));
  const auto bound = std::chrono::milliseconds(options.dead_after_ms + 2 * options.heartbeat_ms +
                                               1500);
  EXPECT_TRUE(EventuallySees({1, 3}, {2}, "dead", bound));
  EXPECT_TRUE(EventuallySees({2}, {1, 3}, "dead", bound));
  EXPECT_TRUE(Sees({1, 3}, {1, 3}, "alive"));
  ExecResult st = Cluster({"status"});
  EXPECT_NE(st.out.find("partitioned"), std::string::npos) << st.out;

  ASSERT_TRUE(Heal(2));
  EXPECT_TRUE(EventuallySees({1, 2, 3}, {1, 2, 3}, "alive", 15s));
  st = Cluster({"status"});
  EXPECT_EQ(st.out.find("partitioned"), std::string::npos) << st.out;
}

// ---------------------------------------------------------------- harness

class ClusterHarnessTest : public ClusterTest {
 protected:
  // The tag mfs-cluster derives from the directory: it names the cluster's
  // keepers, iptables chain and cgroups.
  std::string Tag() {
    ExecResult r = RunCommand({"sh", "-c", "printf %s \"$(realpath -m \"$1\")\" | sha256sum", "sh",
                               dir()},
                              10s);
    return "mfs-" + r.out.substr(0, 10);
  }

  // Processes this cluster started that still run: mfsd (its command line
  // names dir()) and keepers (theirs names the tag).
  std::vector<std::string> Leftovers() {
    std::vector<std::string> found;
    std::string tag = Tag();
    for (const auto& e : fs::directory_iterator("/proc")) {
      std::string name = e.path().filename();
      if (name.find_first_not_of("0123456789") != std::string::npos) continue;
      std::string cmd = ReadFile(e.path().string() + "/cmdline");
      for (char& c : cmd) {
        if (c == '\0') c = ' ';
      }
      if (cmd.find(dir() + "/") != std::string::npos ||
          cmd.find("mfs-keeper[" + tag + "/") != std::string::npos) {
        found.push_back(name + ": " + cmd);
      }
    }
    return found;
  }

  bool ChainExists() {
    return RunCommand({"iptables", "-w", "10", "-L", Tag(), "-n"}, 30s).ok();
  }

  // Nothing of the cluster is left: no processes, no chain, no cgroups.
  void ExpectNothingLeft() {
    auto left = Leftovers();
    EXPECT_TRUE(left.empty()) << "left running: " << ::testing::PrintToString(left);
    if (!IptablesMissing()) {
      EXPECT_FALSE(ChainExists()) << "iptables chain " << Tag() << " left";
    }
    std::string tag = Tag();
    ExecResult cg = RunCommand({"find", "/sys/fs/cgroup", "-maxdepth", "8", "-name", tag}, 30s);
    EXPECT_EQ(cg.out, "") << "cgroups left";
    EXPECT_FALSE(fs::exists(dir() + "/cluster.env"));
  }
};

// exec runs in the node's own mount namespace, with its own /run/mfs, and
// passes the exit status and output through.
TEST_F(ClusterHarnessTest, ExecRunsInTheNodeNamespace) {
  ASSERT_TRUE(Up(2));
  std::set<std::string> namespaces;
  namespaces.insert(RunCommand({"stat", "-L", "-c", "%i", "/proc/self/ns/mnt"}).out);
  ExecResult st = Cluster({"status"});
  EXPECT_NE(st.out.find("port " + std::to_string(port())), std::string::npos) << st.out;
  for (int i = 1; i <= 2; ++i) {
    ExecResult ns = Exec(i, {"stat", "-L", "-c", "%i", "/proc/self/ns/mnt"});
    ASSERT_TRUE(ns.ok()) << ns.Describe();
    namespaces.insert(ns.out);
    // /run/mfs in the node is the node's run directory.
    ExecResult sock = Exec(i, {"stat", "-c", "%i", "/run/mfs/mfsd.sock"});
    ASSERT_TRUE(sock.ok()) << sock.Describe();
    EXPECT_EQ(sock.out, RunCommand({"stat", "-c", "%i", NodeDir(i) + "/run/mfsd.sock"}).out);
  }
  EXPECT_EQ(namespaces.size(), 3u) << "host and both nodes must differ";

  ExecResult r = Exec(2, {"sh", "-c", "echo out-$MFS_NODE; echo err >&2; exit 7"});
  EXPECT_EQ(r.exit_code, 7);
  EXPECT_EQ(r.out, "out-2\n");
  EXPECT_EQ(r.err, "err\n");
}

// The control request helper and `mfs-cluster control` reach the node.
TEST_F(ClusterHarnessTest, ControlReachesTheNode) {
  ASSERT_TRUE(Up(2));
  auto r = Control(2, {{"op", "status"}});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ((*r)["node"].value("id", 0), 2);
  ExecResult c = Cluster({"control", "1", R"({"op":"status"})"});
  ASSERT_TRUE(c.ok()) << c.Describe();
  auto j = nlohmann::json::parse(c.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << c.out;
  EXPECT_EQ(j["node"].value("id", 0), 1);
}

// --config-extra reaches every node's config; a [membership] table there
// replaces the generated one.
TEST_F(ClusterHarnessTest, ConfigExtraReachesEveryNode) {
  ClusterOptions options;
  options.config_extra = "[membership]\nheartbeat_ms = 300\ndead_after_ms = 2100\n";
  ASSERT_TRUE(Up(2, options));
  for (int i = 1; i <= 2; ++i) {
    auto r = Control(i, {{"op", "status"}});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ((*r)["node"].value("heartbeat_ms", 0), 300);
    EXPECT_EQ((*r)["node"].value("dead_after_ms", 0), 2100);
  }
}

// down stops everything, including what exec started, and is idempotent.
TEST_F(ClusterHarnessTest, DownStopsEverything) {
  ASSERT_TRUE(Up(3));
  // A background process started in node 1 (it outlives exec).
  ExecResult bg = Exec(1, {"sh", "-c", "setsid sleep 1000 </dev/null >/dev/null 2>&1 & echo $!"});
  ASSERT_TRUE(bg.ok()) << bg.Describe();
  pid_t sleeper = std::stoi(bg.out);
  EXPECT_EQ(::kill(sleeper, 0), 0);
  if (!IptablesMissing()) {
    ASSERT_TRUE(Partition(1));
    EXPECT_TRUE(ChainExists());
  }
  EXPECT_FALSE(Leftovers().empty());

  ExecResult down = Cluster({"down"});
  ASSERT_TRUE(down.ok()) << down.Describe();
  ExpectNothingLeft();
  EXPECT_TRUE(WaitFor([&] { return ::kill(sleeper, 0) != 0; }, 5s)) << "exec'd process survived";
  ExecResult again = Cluster({"down"});
  EXPECT_TRUE(again.ok()) << again.Describe();
}

// Per-node cgroups: cpuset, CPU quota, memory limit; exec joins them; down
// removes them.
TEST_F(ClusterHarnessTest, PerNodeCgroups) {
  bool v2 = fs::exists("/sys/fs/cgroup/cgroup.controllers");
  for (const char* c : {"cpuset", "cpu", "memory"}) {
    if (!v2 && !fs::exists(std::string("/sys/fs/cgroup/") + c + "/cgroup.procs")) {
      GTEST_SKIP() << "no cgroup v1 '" << c << "' controller at /sys/fs/cgroup/" << c;
    }
  }
  ClusterOptions options;
  options.extra_args = {"--cpus", "1=0", "--cpu-quota", "2=50", "--mem", "2=256M"};
  ASSERT_TRUE(Up(2, options));
  std::string tag = Tag();
  ExecResult cg1 = Exec(1, {"cat", "/proc/self/cgroup"});
  EXPECT_NE(cg1.out.find(tag + "/node1"), std::string::npos) << cg1.out;
  ExecResult cpus1 = Exec(1, {"sh", "-c", "grep Cpus_allowed_list /proc/self/status"});
  EXPECT_NE(cpus1.out.find("\t0\n"), std::string::npos) << cpus1.out;

  std::string groups = ReadFile(NodeDir(2) + "/cgroups");
  bool saw_mem = false, saw_cpu = false;
  std::stringstream lines(groups);
  for (std::string g; std::getline(lines, g);) {
    if (fs::exists(g + "/memory.limit_in_bytes")) {
      EXPECT_EQ(ReadFile(g + "/memory.limit_in_bytes"), "268435456\n");
      saw_mem = true;
    }
    if (fs::exists(g + "/memory.max")) {
      EXPECT_EQ(ReadFile(g + "/memory.max"), "268435456\n");
      saw_mem = true;
    }
    if (fs::exists(g + "/cpu.cfs_quota_us")) {
      EXPECT_EQ(ReadFile(g + "/cpu.cfs_quota_us"), "50000\n");
      saw_cpu = true;
    }
    if (fs::exists(g + "/cpu.max")) {
      EXPECT_EQ(ReadFile(g + "/cpu.max"), "50000 100000\n");
      saw_cpu = true;
    }
  }
  EXPECT_TRUE(saw_mem && saw_cpu) << "node 2's cgroups: " << groups;
  // mfsd itself runs in the node's groups.
  std::string mfsd_pid = ReadFile(NodeDir(2) + "/mfsd.pid");
  mfsd_pid = mfsd_pid.substr(0, mfsd_pid.find(' '));
  EXPECT_NE(ReadFile("/proc/" + mfsd_pid + "/cgroup").find(tag + "/node2"), std::string::npos);

  // Each node reports its own size (mfsstat, mfsmon), not the machine's.
  auto host = [&](int node) {
    ExecResult r = Exec(node, {"mfsstat", "--json"});
    nlohmann::json j = nlohmann::json::parse(r.out, nullptr, false);
    if (j.is_discarded() || !j.contains("nodes") || j["nodes"].empty()) {
      ADD_FAILURE() << "mfsstat on node " << node << ": " << r.Describe();
      return nlohmann::json::object();
    }
    return j["nodes"][0]["host"];
  };
  nlohmann::json h1 = host(1), h2 = host(2);
  EXPECT_DOUBLE_EQ(h1.value("cpus", 0.0), 1.0) << h1;   // cpuset "0"
  EXPECT_DOUBLE_EQ(h2.value("cpus", 0.0), 0.5) << h2;   // 50 % quota
  EXPECT_EQ(h2.value("mem_total", 0ull), 268435456ull) << h2;
  EXPECT_LE(h2.value("mem_available", ~0ull), 268435456ull) << h2;
  EXPECT_GT(h2.value("mem_available", 0ull), 0ull) << h2;
  EXPECT_TRUE(h2.value("cgroup_limited", false)) << h2;

  ASSERT_TRUE(Cluster({"down"}).ok());
  ExpectNothingLeft();
}

// ------------------------------------------------------------- bad input

// One line on stderr, naming the problem.
void ExpectOneLine(const ExecResult& r, const std::string& needle) {
  EXPECT_NE(r.exit_code, 0);
  EXPECT_FALSE(r.timed_out);
  EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

TEST_F(ClusterHarnessTest, BadNodeCountIsRefused) {
  for (std::string n : {"0", "251", "abc", "-1", "3x"}) {
    ExecResult r = Cluster({"up", n});
    EXPECT_EQ(r.exit_code, 2) << n;
    ExpectOneLine(r, "N must be a number in 1..250");
  }
  ExpectOneLine(Cluster({"up", "2", "--bogus", "1"}), "unknown option '--bogus'");
  ExpectOneLine(Cluster({"up", "2", "--cpus", "5=0"}), "node 5");
  ExpectOneLine(Cluster({"up", "2", "--mem", "lots"}), "bad size");
  ExpectNothingLeft();
}

TEST_F(ClusterHarnessTest, UnknownNodeIsRefused) {
  ExpectOneLine(Cluster({"exec", "1", "--", "true"}), "no cluster in");
  ASSERT_TRUE(Up(2));
  ExpectOneLine(Exec(0, {"true"}), "unknown node '0'");
  ExpectOneLine(Exec(3, {"true"}), "unknown node '3': the cluster in " + dir() + " has nodes 1..2");
  for (std::string node : {"0", "3", "x", "01", ""}) {
    ExpectOneLine(Cluster({"exec", node, "--", "true"}), "unknown node '" + node + "'");
    ExpectOneLine(Cluster({"kill", node}), "unknown node");
    ExpectOneLine(Cluster({"partition", node}), "unknown node");
  }
  // The cluster is untouched.
  ExecResult st = Cluster({"status"});
  EXPECT_TRUE(st.ok()) << st.Describe();
  EXPECT_EQ(std::count(st.out.begin(), st.out.end(), '\n'), 4) << st.out;
  EXPECT_EQ(st.out.find("down"), std::string::npos) << st.out;
  EXPECT_TRUE(Exec(2, {"true"}).ok());
}

TEST_F(ClusterHarnessTest, SecondUpInTheSameDirIsRefused) {
  ASSERT_TRUE(Up(2));
  ExpectOneLine(Cluster({"up", "2"}), "already running");
  EXPECT_TRUE(Control(1, {{"op", "status"}}).ok());
  EXPECT_TRUE(Control(2, {{"op", "status"}}).ok());
}

TEST_F(ClusterHarnessTest, PortInUseFailsCleanly) {
  const int port = PickFreePort(3);
  ASSERT_NE(port, 0);
  UniqueFd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(s.valid());
  int one = 1;
  ::setsockopt(s.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(0x7f000002);  // 127.0.0.2
  ASSERT_EQ(::bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0) << strerror(errno);
  ASSERT_EQ(::listen(s.get(), 1), 0);
  ExecResult r = Cluster({"up", "3", "--port", std::to_string(port)});
  ExpectOneLine(r, "127.0.0.2:" + std::to_string(port) + " is already in use");
  ExpectNothingLeft();
}

// mfsd refusing its configuration makes up fail, naming the node and the
// daemon's reason, and tear down the nodes it had started.
TEST_F(ClusterHarnessTest, FailingDaemonTearsDownWhatUpStarted) {
  ClusterOptions options;
  options.config_extra = "[[[ this is not TOML\n";
  options.timeout = 20s;
  auto up = Up(3, options);
  ASSERT_FALSE(up);
  EXPECT_NE(std::string(up.message()).find("node 1: mfsd exited"), std::string::npos)
      << up.message();
  ExpectNothingLeft();
}

}  // namespace
}  // namespace mfs::testing

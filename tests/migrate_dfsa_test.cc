// DFSA end to end (man/mfs-migration.7, DFSA): on a real 3-node mfs-cluster
// cluster with /mfs mounted in every node, real programs that use files on
// /mfs are moved while they run. Their files move with them (same fds,
// offsets, flags), their I/O on those files runs where they are (the home
// supervisor's per-call counters show none of it forwarded), what they print
// and write is byte for byte what an unmigrated run prints and writes, and
// the I/O they do away is attributed to their home identity in mfsstat.
// Skipped, with the reason, where the nodes have no /mfs.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <fstream>
#include <sstream>
#include <thread>

#include "tests/cluster_fixture.h"

namespace mfs::testing {
namespace {

using nlohmann::json;

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Deterministic bytes (xorshift), so that reference and migrated runs see
// the same input.
void WriteData(const std::string& path, size_t size, uint64_t seed) {
  std::string data(size, '\0');
  uint64_t x = seed | 1;
  for (size_t i = 0; i < size; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    data[i] = static_cast<char>(x >> 24);
  }
  std::ofstream(path, std::ios::binary) << data;
}

class Dfsa : public ClusterTest {
 protected:
  // Up(3) with /mfs; false (and the test skipped) without it.
  bool UpWithMfs() {
    ClusterOptions o;
    o.config_extra = "[locality]\nhistory_interval_s = 1\n";
    auto up = Up(3, o);
    EXPECT_TRUE(up);
    if (!up) return false;
    return Exec(1, {"test", "-d", "/mfs/3"}).ok();
  }

  std::string P(const std::string& name) const { return dir() + "/" + name; }

  // Starts `script` (sh) on node 1 in the background; it must write the
  // mfsrun'd program's pid to P("pid"). Returns that pid (0: never came).
  pid_t StartOnNode1(const std::string& script) {
    ExecResult r = Exec(1, {"sh", "-c", "(" + script + ") > /dev/null 2>&1 < /dev/null &"});
    EXPECT_TRUE(r.ok()) << r.Describe();
    pid_t pid = 0;
    WaitFor(
        [&] {
          pid = static_cast<pid_t>(std::atoi(Slurp(P("pid")).c_str()));
          return pid > 0;
        },
        10s, 20ms);
    return pid;
  }

  // Waits until the program printed "gate N" on stderr (it waits there).
  bool AtGate(int n) {
    return WaitFor(
        [&] {
          return Slurp(P("got.err")).find("gate " + std::to_string(n) + "\n") != std::string::npos;
        },
        60s, 10ms);
  }
  void Open(int n) { std::ofstream(P("gates/" + std::to_string(n))); }

  Result<json> Move(pid_t pid, const json& node) {
    return Control(1, {{"op", "migrate.move"}, {"pid", pid}, {"node", node}});
  }

  // The process table entry of `pid` on `node` (home: by pid; a guest: by
  // home_pid), or null.
  json Info(int node, pid_t pid) {
    auto ps = Control(node, {{"op", "migrate.ps"}});
    if (!ps.ok()) return nullptr;
    for (const auto& p : (*ps)["processes"]) {
      if (node == 1 && p.value("pid", 0) == pid) return p;
      if (node != 1 && p.value("home_pid", 0) == pid) return p;
    }
    return nullptr;
  }

  // The fd of process `pid` (as seen on `node`) open on `path`, or -1. The
  // numbers depend on what the test runner leaves open, so they are looked up.
  int FdOf(int node, pid_t pid, const std::string& path) {
    ExecResult r = Exec(node, {"sh", "-c",
                               "cd /proc/" + std::to_string(pid) +
                                   "/fd && for f in *; do echo \"$f $(readlink $f)\"; done"});
    std::istringstream in(r.out);
    int fd;
    std::string target;
    while (in >> fd && std::getline(in >> std::ws, target))
      if (target == path) return fd;
    return -1;
  }

  // Waits for the status file the script writes when the program ends.
  int ExitStatus() {
    int status = -1;
    WaitFor(
        [&] {
          std::string s = Slurp(P("status"));
          if (s.empty()) return false;
          status = std::atoi(s.c_str());
          return true;
        },
        60s, 20ms);
    return status;
  }
};

uint64_t Forwarded(const json& info, const char* call) {
  if (!info.contains("forwarded_by_call")) return 0;
  return info["forwarded_by_call"].value(call, uint64_t{0});
}

bool Has(const json& list, int fd) {
  for (const auto& x : list)
    if (x.get<int>() == fd) return true;
  return false;
}

// A program reads a node-3 file and writes a node-1 file in steps; it moves
// to node 2, hops to node 3 (where it opens /mfs/here/late.bin: node 3's),
// comes home and
// goes away again, where a dup of its input brings it home. Offsets are
// kept across every move, no read/lseek/pread ever reaches the deputy, the
// output matches an unmigrated run and node 2 attributes the bytes to the
// home pid.
TEST_F(Dfsa, FilesMoveWithTheProcessAndTheirIoRunsWhereItIs) {
  if (!UpWithMfs()) GTEST_SKIP() << "/mfs is not mounted in the cluster nodes";
  WriteData(NodeDir(3) + "/export/in.bin", 5u << 20, 42);
  // Opened on node 3 as /mfs/here/late.bin: "here" is where it runs.
  WriteData(NodeDir(3) + "/export/late.bin", 300000, 7);
  const std::string prog = BinDir() + "/mfs-test-fileio";
  ExecResult ref = RunCommand({"sh", "-c",
                               "MFS_TEST_DUP=1 " + prog + " " + NodeDir(3) + "/export/in.bin " +
                                   P("want.out") + " 60 5 " + NodeDir(3) + "/export/late.bin > " +
                                   P("want.txt")});
  ASSERT_TRUE(ref.ok()) << ref.Describe();
  mkdir(P("gates").c_str(), 0755);
  pid_t pid = StartOnNode1(
      "MFS_TEST_DUP=1 MFS_TEST_GATE=" + P("gates") + " MFS_TEST_GATE_STEPS=3,15,31,45 mfsrun -- " + prog +
      " /mfs/3/in.bin /mfs/1/got.out 60 5 /mfs/here/late.bin > " + P("got.txt") + " 2> " +
      P("got.err") + " & echo $! > " + P("pid") + "; wait $!; echo $? > " + P("status"));
  ASSERT_GT(pid, 0);

  ASSERT_TRUE(AtGate(3));
  const int in_fd = FdOf(1, pid, "/mfs/3/in.bin"), out_fd = FdOf(1, pid, "/mfs/1/got.out");
  ASSERT_GE(in_fd, 0);
  ASSERT_GE(out_fd, 0);
  auto r = Move(pid, 2);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  json home = Info(1, pid);
  ASSERT_FALSE(home.is_null());
  EXPECT_EQ(home["state"], "remote");
  EXPECT_TRUE(Has(home["dfsa_fds"], in_fd) && Has(home["dfsa_fds"], out_fd)) << home.dump();
  Open(3);

  ASSERT_TRUE(AtGate(15));
  json guest = Info(2, pid);
  ASSERT_FALSE(guest.is_null());
  EXPECT_TRUE(Has(guest["dfsa_fds"], in_fd) && Has(guest["dfsa_fds"], out_fd)) << guest.dump();
  // The same numbers, on the same files, in the remote on node 2.
  EXPECT_EQ(FdOf(2, guest.value("pid", 0), "/mfs/3/in.bin"), in_fd);
  EXPECT_EQ(FdOf(2, guest.value("pid", 0), "/mfs/1/got.out"), out_fd);
  // 12 steps of read + write + 2 lseek each ran on node 2.
  EXPECT_GE(guest.value("dfsa_calls", 0), 48) << guest.dump();
  home = Info(1, pid);
  EXPECT_EQ(Forwarded(home, "read"), 0u) << home.dump();
  EXPECT_EQ(Forwarded(home, "lseek"), 0u) << home.dump();
  EXPECT_GT(Forwarded(home, "write"), 0u)
      << "its stdout (a file outside /mfs) is the deputy's: " << home.dump();
  r = Move(pid, 3);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  Open(15);

  ASSERT_TRUE(AtGate(31));  // the late open (step 30) was made on node 3
  guest = Info(3, pid);
  ASSERT_FALSE(guest.is_null());
  EXPECT_EQ(guest.value("dfsa_opens", 0), 1) << guest.dump();
  const int late_fd = FdOf(3, guest.value("pid", 0), "/mfs/3/late.bin");
  EXPECT_TRUE(late_fd > out_fd && Has(guest["dfsa_fds"], late_fd)) << late_fd << " " << guest.dump();
  EXPECT_EQ(FdOf(1, pid, "/mfs/3/late.bin"), late_fd) << "the home holds the same number";
  home = Info(1, pid);
  EXPECT_EQ(Forwarded(home, "openat"), 1u) << home.dump();
  EXPECT_EQ(Forwarded(home, "read"), 0u) << "the late file's reads ran on node 3: " << home.dump();
  r = Move(pid, "home");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  Open(31);

  ASSERT_TRUE(AtGate(45));
  r = Move(pid, 2);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  Open(45);

  // Its dup of a DFSA fd (step 45) brings it home, where the dup runs.
  EXPECT_EQ(ExitStatus(), 0);
  EXPECT_NE(ReadLog(1).find("needs its home (dup "), std::string::npos) << "the dup did not bring it home";
  EXPECT_EQ(Slurp(P("got.txt")), Slurp(P("want.txt")));
  EXPECT_TRUE(Slurp(NodeDir(1) + "/export/got.out") == Slurp(P("want.out")))
      << "the file it wrote differs";
  home = Info(1, pid);  // gone with the process: nothing to check then
  if (!home.is_null()) {
    EXPECT_EQ(Forwarded(home, "pread64"), 0u) << home.dump();
  }

  // Node 2 saw its reads of node 3's file, under its home identity.
  json seen;
  bool found = WaitFor(
      [&] {
        ExecResult s = Exec(2, {"mfsstat", "--json", "-p", std::to_string(pid)});
        json j = json::parse(s.out, nullptr, false);
        if (j.is_discarded() || !j.contains("nodes")) return false;
        for (const auto& n : j["nodes"])
          for (const auto& p : n["processes"])
            if (p.value("home_pid", 0) == pid && p["totals"].contains("3") &&
                p["totals"]["3"].value("read_bytes", uint64_t{0}) > 0) {
              seen = p;
              return true;
            }
        return false;
      },
      15s, 200ms);
  ASSERT_TRUE(found) << "node 2's mfsstat never showed the remote's reads of node 3 under home pid "
                     << pid;
  EXPECT_EQ(seen["home"], 1);
  EXPECT_EQ(seen["where"], 2);
  EXPECT_NE(seen["pid"], pid) << "the remote's local pid is another";
  EXPECT_EQ(seen["comm"], "mfs-test-fileio");
}

// The program's stdout is a /mfs file it shares with its shell; it ends
// while away; the shell then appends to the same open file. The remote's
// offset came home with its exit status, so the shell's line lands after
// the program's output, not over it. Its mmap of its input runs where it
// is (it never comes home).
TEST_F(Dfsa, SharedOpenFileTakesTheOffsetTheRemoteLeftAtItsExit) {
  if (!UpWithMfs()) GTEST_SKIP() << "/mfs is not mounted in the cluster nodes";
  WriteData(NodeDir(3) + "/export/in.bin", 2u << 20, 5);
  const std::string prog = BinDir() + "/mfs-test-fileio";
  ExecResult ref = RunCommand({"sh", "-c",
                               "{ " + prog + " " + NodeDir(3) + "/export/in.bin " + P("want.out") +
                                   " 20 5; echo END; } > " + P("want.log")});
  ASSERT_TRUE(ref.ok()) << ref.Describe();
  mkdir(P("gates").c_str(), 0755);
  pid_t pid = StartOnNode1("{ MFS_TEST_GATE=" + P("gates") + " MFS_TEST_GATE_STEPS=3 mfsrun -- " +
                           prog + " /mfs/3/in.bin /mfs/1/got.out 20 5 2> " + P("got.err") +
                           " & echo $! > " + P("pid") + "; wait $!; echo $? > " + P("status") +
                           "; echo END; } > /mfs/1/got.log");
  ASSERT_GT(pid, 0);
  ASSERT_TRUE(AtGate(3));
  EXPECT_EQ(FdOf(1, pid, "/mfs/1/got.log"), 1);
  auto r = Move(pid, 2);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  json home = Info(1, pid);
  ASSERT_FALSE(home.is_null());
  EXPECT_TRUE(Has(home["dfsa_fds"], 1)) << "stdout on /mfs moves too: " << home.dump();
  Open(3);
  EXPECT_EQ(ExitStatus(), 0);
  std::string want = Slurp(P("want.log"));
  bool same = WaitFor([&] { return Slurp(NodeDir(1) + "/export/got.log") == want; }, 10s, 50ms);
  EXPECT_TRUE(same) << "got:\n" << Slurp(NodeDir(1) + "/export/got.log") << "want:\n" << want;
  // Its mmap of its input (a DFSA fd) ran where it was.
  EXPECT_EQ(ReadLog(1).find("needs its home"), std::string::npos) << ReadLog(1);
  EXPECT_NE(ReadLog(1).find("remote of " + std::to_string(pid) + " ended"), std::string::npos)
      << "it was to end away: " << ReadLog(1);
}

// sha256sum of a node-3 file, moved while it reads (node 2, home, node 3):
// the right digest, as with an unmigrated run.
TEST_F(Dfsa, Sha256sumOfAnMfsFileMovedMidRun) {
  if (!UpWithMfs()) GTEST_SKIP() << "/mfs is not mounted in the cluster nodes";
  WriteData(NodeDir(3) + "/export/big.bin", 96u << 20, 99);
  ExecResult ref = RunCommand({"sha256sum", NodeDir(3) + "/export/big.bin"});
  ASSERT_TRUE(ref.ok()) << ref.Describe();
  const std::string want = ref.out.substr(0, 64);
  // Three passes over the file, so that it runs long enough to be moved.
  pid_t pid = StartOnNode1("mfsrun -- sha256sum /mfs/3/big.bin /mfs/3/big.bin /mfs/3/big.bin > " +
                           P("got.txt") + " 2> " + P("got.err") + " & echo $! > " + P("pid") +
                           "; wait $!; echo $? > " + P("status"));
  ASSERT_GT(pid, 0);
  // Reading already (its file is open).
  ASSERT_TRUE(WaitFor(
      [&] {
        return Slurp("/proc/" + std::to_string(pid) + "/cmdline").find("sha256sum") == 0 &&
               access(("/proc/" + std::to_string(pid) + "/fd/3").c_str(), F_OK) == 0;
      },
      10s, 5ms));
  int moved = 0;
  for (const json& to : {json(2), json("home"), json(3)}) {
    auto r = Move(pid, to);
    if (!r.ok()) break;  // it may have finished
    ++moved;
    if (moved == 1) {
      json home = Info(1, pid);
      if (!home.is_null()) {  // else it has finished already
        EXPECT_FALSE(home["dfsa_fds"].empty()) << home.dump();
        EXPECT_EQ(Forwarded(home, "read"), 0u) << home.dump();
      }
    }
    std::this_thread::sleep_for(150ms);
  }
  EXPECT_GE(moved, 1) << "finished before it could be moved";
  EXPECT_EQ(ExitStatus(), 0) << Slurp(P("got.err"));
  std::string got = Slurp(P("got.txt"));
  EXPECT_EQ(
      got, want + "  /mfs/3/big.bin\n" + want + "  /mfs/3/big.bin\n" + want + "  /mfs/3/big.bin\n");
}

// A DFSA file that the destination cannot open (removed behind /mfs's back:
// the home still has it open) refuses the move with the reason; the process
// goes on at home, untouched, and ends as an unmigrated run does.
TEST_F(Dfsa, FileThatCannotBeReopenedThereRefusesTheMove) {
  if (!UpWithMfs()) GTEST_SKIP() << "/mfs is not mounted in the cluster nodes";
  const std::string data = NodeDir(3) + "/export/gone.bin";
  WriteData(data, 1u << 20, 11);
  const std::string prog = BinDir() + "/mfs-test-fileio";
  ExecResult ref = RunCommand(
      {"sh", "-c", prog + " " + data + " " + P("want.out") + " 10 5 > " + P("want.txt")});
  ASSERT_TRUE(ref.ok()) << ref.Describe();
  mkdir(P("gates").c_str(), 0755);
  pid_t pid = StartOnNode1("MFS_TEST_GATE=" + P("gates") + " MFS_TEST_GATE_STEPS=3 mfsrun -- " +
                           prog + " /mfs/3/gone.bin /mfs/1/got.out 10 5 > " + P("got.txt") +
                           " 2> " + P("got.err") + " & echo $! > " + P("pid") +
                           "; wait $!; echo $? > " + P("status"));
  ASSERT_GT(pid, 0);
  ASSERT_TRUE(AtGate(3));
  ASSERT_EQ(unlink(data.c_str()), 0);
  auto r = Move(pid, 2);
  ASSERT_FALSE(r.ok()) << "moved although its file cannot be opened on node 2: " << r->dump();
  EXPECT_NE(r.status().ToString().find("/mfs/3/gone.bin"), std::string::npos)
      << r.status().ToString();
  json home = Info(1, pid);
  ASSERT_FALSE(home.is_null());
  EXPECT_EQ(home["state"], "home");
  EXPECT_EQ(home["where"], 1);
  Open(3);
  EXPECT_EQ(ExitStatus(), 0);
  EXPECT_EQ(Slurp(P("got.txt")), Slurp(P("want.txt")));
}

}  // namespace
}  // namespace mfs::testing

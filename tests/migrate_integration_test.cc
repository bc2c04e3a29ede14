// Real migrations between real mfsd daemons on one machine. Each test starts
// its own cluster (node i on 127.6.<k>.i, k unique to the test process) and
// stops it. Every program is compared byte for byte, and exit status for exit
// status, with an unmigrated run of the same program.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "mfs/control/client.h"
#include "migrate/proc_maps.h"
#include "migrate/supervisor.h"

namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

const std::string kBin = MFS_TEST_BIN_DIR;

std::string Slurp(const std::string& p) {
  auto s = mfs::migrate::ReadFileToString(p);
  return s.ok() ? *s : std::string();
}

size_t CountLines(const std::string& p) {
  std::string s = Slurp(p);
  return static_cast<size_t>(std::count(s.begin(), s.end(), '\n'));
}

int Reference(const std::string& args, const std::string& out);

bool CanListen(const std::string& address, uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  inet_pton(AF_INET, address.c_str(), &a.sin_addr);
  bool ok = bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  close(fd);
  return ok;
}

class Cluster : public ::testing::Test {
 protected:
  void SetUp() override {
    // 127.6.<octet>.{1,2,3}:7420, an octet whose three addresses are free
    // right now (another run, or a test's leftovers, may hold one).
    static int seq = 0;
    for (int tries = 0; tries < 240; ++tries) {
      octet_ = 10 + (getpid() * 7 + seq++) % 240;
      bool free = true;
      for (int id = 1; id <= 3 && free; ++id) free = CanListen(Address(id), 7420);
      if (free) break;
    }
    dir_ = "/tmp/mfs-mig-" + std::to_string(getpid()) + "-" + std::to_string(seq);
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    {
      std::ofstream s(dir_ + "/secret");
      s << "migration-test-secret-" << getpid() << "-0123456789\n";
    }
    chmod((dir_ + "/secret").c_str(), 0600);
  }
  void TearDown() override {
    while (!daemons_.empty()) StopNode(daemons_.begin()->first);
    for (int i = 1; i <= 3; ++i) KillNodeProcesses(i);
    if (HasFailure() || getenv("MFS_TEST_LOGS"))
      for (int i = 1; i <= 3; ++i) {
        std::string log = Slurp(dir_ + "/n" + std::to_string(i) + "/log");
        if (log.size() > 4000 && !getenv("MFS_TEST_LOGS")) log = log.substr(log.size() - 4000);
        if (!log.empty()) fprintf(stderr, "---- node %d log (tail)\n%s\n", i, log.c_str());
      }
    fs::remove_all(dir_);
  }

  std::string Address(int id) const { return "127.6." + std::to_string(octet_) + "." + std::to_string(id); }
  std::string Socket(int id) const { return dir_ + "/n" + std::to_string(id) + "/run/mfsd.sock"; }
  std::string Path(const std::string& name) const { return dir_ + "/" + name; }

  // `fault`: MFS_MIGRATE_FAULT for this node's mfsd (migrate/fault.h).
  void StartNode(int id, int nodes, const std::string& extra = "", const std::string& fault = "") {
    std::string n = dir_ + "/n" + std::to_string(id);
    fs::create_directories(n + "/run");
    fs::create_directories(n + "/state");
    fs::create_directories(n + "/export");
    std::ofstream c(n + "/mfsd.toml");
    c << "[node]\nid = " << id << "\naddress = \"" << Address(id) << "\"\nport = 7420\n"
      << "export = \"" << n << "/export\"\nstate_dir = \"" << n << "/state\"\n"
      << "secret_file = \"" << dir_ << "/secret\"\ncontrol_socket = \"" << Socket(id) << "\"\n"
      << "mount = \"\"\npeers = [";
    for (int i = 1; i <= nodes; ++i) c << (i > 1 ? ", " : "") << "\"" << Address(i) << ":7420\"";
    c << "]\n[membership]\nheartbeat_ms = 200\ndead_after_ms = 1500\n[log]\nlevel = \"info\"\nfile = \""
      << n << "/log\"\n" << extra;
    c.close();
    pid_t pid = fork();
    if (pid == 0) {
      setsid();
      if (!fault.empty()) setenv("MFS_MIGRATE_FAULT", fault.c_str(), 1);
      int null = open("/dev/null", O_RDWR);
      dup2(null, 0);
      dup2(null, 1);
      execl((kBin + "/mfsd").c_str(), "mfsd", "--config", (n + "/mfsd.toml").c_str(), nullptr);
      _exit(127);
    }
    daemons_[id] = pid;
  }

  void StopNode(int id, int sig = SIGTERM) {
    auto it = daemons_.find(id);
    if (it == daemons_.end()) return;
    kill(it->second, sig);
    int st;
    waitpid(it->second, &st, 0);
    daemons_.erase(it);
  }

  // SIGKILLs every supervisor this cluster started on node `id` (found by the
  // node's run directory on their command line), as a node crash would.
  void KillNodeProcesses(int id) {
    const std::string mark = dir_ + "/n" + std::to_string(id) + "/run";
    std::error_code ec;
    for (const auto& e : fs::directory_iterator("/proc", ec)) {
      pid_t p = atoi(e.path().filename().c_str());
      if (p <= 0) continue;
      std::string cmd = Slurp(e.path().string() + "/cmdline");
      for (char& c : cmd)
        if (c == '\0') c = ' ';
      if (cmd.find("mfs-supervisor") != std::string::npos && cmd.find(mark + " ") != std::string::npos)
        kill(p, SIGKILL);
    }
  }

  // Starts nodes 1..n and waits until every node sees every other alive.
  void StartCluster(int n, const std::string& extra = "") {
    for (int i = 1; i <= n; ++i) StartNode(i, n, extra);
    WaitAlive(n);
  }

  void WaitAlive(int n) {
    auto deadline = std::chrono::steady_clock::now() + 15s;
    for (;;) {
      bool all = true;
      for (int i = 1; i <= n; ++i) {
        if (!daemons_.count(i)) continue;
        auto st = mfs::control::Call(Socket(i), {{"op", "status"}}, 1000);
        int alive = 0;
        if (st.ok() && st->contains("peers"))
          for (const auto& p : (*st)["peers"]) alive += p.value("state", "") == "alive";
        all = all && st.ok() && alive >= static_cast<int>(daemons_.size()) - 1;
      }
      if (all) return;
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "cluster did not come up";
      std::this_thread::sleep_for(100ms);
    }
  }

  // Runs `cmd` under /bin/sh with MFS_SOCKET of node 1; returns its pid.
  pid_t Shell(const std::string& cmd, int node = 1) {
    pid_t pid = fork();
    if (pid == 0) {
      setenv("MFS_SOCKET", Socket(node).c_str(), 1);
      execl("/bin/sh", "sh", "-c", cmd.c_str(), nullptr);
      _exit(127);
    }
    return pid;
  }
  // Waits (bounded) for a child; returns its wait status or -1 on timeout (it is killed).
  int Wait(pid_t pid, std::chrono::seconds limit = 120s) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    for (;;) {
      int st = 0;
      pid_t r = waitpid(pid, &st, WNOHANG);
      if (r == pid) return st;
      if (std::chrono::steady_clock::now() > deadline) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        return -1;
      }
      std::this_thread::sleep_for(10ms);
    }
  }
  int RunShell(const std::string& cmd) { return Wait(Shell(cmd)); }

  // The pid of the mfsrun'd program: the only child of `shell` or the shell
  // itself when it exec'd (sh -c with one command execs it).
  mfs::Result<json> Move(pid_t pid, const json& node, int via = 1) {
    return mfs::control::Call(Socket(via), {{"op", "migrate.move"}, {"pid", pid}, {"node", node}}, 120000);
  }
  mfs::Result<json> Ps(int node = 1) { return mfs::control::Call(Socket(node), {{"op", "migrate.ps"}}, 5000); }

  // The home's mfsps entry of `pid` (null if not listed).
  json Info(pid_t pid) {
    auto ps = Ps();
    if (ps.ok())
      for (const auto& p : (*ps)["processes"])
        if (p.value("pid", 0) == pid) return p;
    return json();
  }

  // Waits (bounded) until the deputy of `pid` serves the direct path.
  bool WaitDirect(pid_t pid) {
    for (int i = 0; i < 500; ++i) {
      json j = Info(pid);
      if (j.is_object() && j.value("direct", false)) return true;
      std::this_thread::sleep_for(10ms);
    }
    return false;
  }

  // Waits until `pid` is supervised (mfsrun registered it).
  bool WaitSupervised(pid_t pid) {
    for (int i = 0; i < 2000; ++i) {
      if (access((dir_ + "/n1/run/sup/" + std::to_string(pid) + ".sock").c_str(), F_OK) == 0) return true;
      std::this_thread::sleep_for(10ms);
    }
    return false;
  }

  // Starts `cmd` with mfsrun (exec'd by sh, so the pid is the program's).
  pid_t Mfsrun(const std::string& args, const std::string& out) {
    return Shell("exec " + kBin + "/mfsrun -- " + args + " > " + out);
  }

  // Waits until `pid` runs `prog` (past mfsrun's execve).
  void WaitExec(pid_t pid, const std::string& prog) {
    for (int i = 0; i < 1000 && Slurp("/proc/" + std::to_string(pid) + "/cmdline").find(prog) == std::string::npos; ++i)
      std::this_thread::sleep_for(5ms);
  }

  // The prologue of the tests that compare a migrated run with an unmigrated
  // one: runs `args` once at home into Path("want") (its status in
  // *want_status), then starts it with mfsrun into Path("got") and waits until
  // it is supervised and, given `prog`, past mfsrun's execve. -1 if it never
  // got supervised.
  pid_t MfsrunBesideReference(const std::string& args, int* want_status,
                              const std::string& prog = "") {
    *want_status = Reference(args, Path("want"));
    pid_t pid = Mfsrun(args, Path("got"));
    if (!WaitSupervised(pid)) return -1;
    if (!prog.empty()) WaitExec(pid, prog);
    return pid;
  }

  // Waits (at most 2.5 s) until process `pid` has `n` threads.
  void WaitThreads(pid_t pid, int n) {
    const std::string want = "Threads:\t" + std::to_string(n) + "\n";
    for (int i = 0; i < 500 && Slurp("/proc/" + std::to_string(pid) + "/status").find(want) == std::string::npos; ++i)
      std::this_thread::sleep_for(5ms);
  }

  // The remote's pid on `node`, from its live guest supervisor's socket name (0: none).
  pid_t RemotePid(int node) {
    pid_t remote = 0;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir_ + "/n" + std::to_string(node) + "/run/sup", ec)) {
      std::string n = e.path().filename().string();
      if (n.rfind("guest-", 0) == 0 && kill(atoi(n.c_str() + 6), 0) == 0) remote = atoi(n.c_str() + 6);
    }
    return remote;
  }

  void MovedWhileRunning(const std::string& args) {
    int want_status;
    pid_t pid = MfsrunBesideReference(args, &want_status);
    ASSERT_GT(pid, 0) << "never supervised";
    // Past its execve (mfsrun itself is what the supervisor first sees).
    for (int i = 0; i < 500 && Slurp("/proc/" + std::to_string(pid) + "/cmdline").find("mfsrun") != std::string::npos; ++i)
      std::this_thread::sleep_for(5ms);
    int moved = 0;
    for (const json& t : {json(2), json("home"), json(2)}) {
      auto r = Move(pid, t);
      if (!r.ok()) break;  // the program may have finished
      ++moved;
      std::this_thread::sleep_for(100ms);
    }
    EXPECT_GE(moved, 1) << "finished before it could be moved";
    EXPECT_EQ(Wait(pid), want_status);
    EXPECT_TRUE(Slurp(Path("got")) == Slurp(Path("want"))) << "output differs";
  }

  int octet_ = 0;
  std::string dir_;
  std::map<int, pid_t> daemons_;
};

// The unmigrated reference run.
int Reference(const std::string& args, const std::string& out) {
  pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", ("exec " + args + " > " + out).c_str(), nullptr);
    _exit(127);
  }
  int st = 0;
  waitpid(pid, &st, 0);
  return st;
}

TEST_F(Cluster, CounterMovedTwentyTimesBackAndForth) {
  StartCluster(3);
  const std::string args = kBin + "/mfs-test-counter 400 60000 16";
  int want_status;
  pid_t pid = MfsrunBesideReference(args, &want_status);
  ASSERT_GT(pid, 0) << "never supervised";
  const json targets[] = {2, "home", 3, 2, "home"};
  int moves = 0;
  for (int i = 0; i < 20; ++i) {
    auto r = Move(pid, targets[i % 5]);
    ASSERT_TRUE(r.ok()) << "move " << i << ": " << r.status().ToString();
    ++moves;
    std::this_thread::sleep_for(30ms);
  }
  auto ps = Ps();
  ASSERT_TRUE(ps.ok());
  bool listed = false;
  for (const auto& p : (*ps)["processes"])
    if (p.value("pid", 0) == pid) {
      listed = true;
      EXPECT_EQ(p.value("moves", 0), moves);
      EXPECT_EQ(p.value("home", 0), 1);
    }
  EXPECT_TRUE(listed);
  int st = Wait(pid);
  ASSERT_NE(st, -1) << "timed out";
  EXPECT_EQ(st, want_status);
  EXPECT_EQ(Slurp(Path("got")), Slurp(Path("want")));
  EXPECT_EQ(CountLines(Path("got")), 400u);
}

// Supervisors are processes of their own: restarting mfsd (on the same
// address and port) neither kills nor strands the processes they hold.
TEST_F(Cluster, MfsdRestartKeepsMigratableProcessesMovable) {
  StartCluster(2);
  const std::string args = kBin + "/mfs-test-counter 300 60000 16";
  int want_status;
  pid_t pid = MfsrunBesideReference(args, &want_status);
  ASSERT_GT(pid, 0) << "never supervised";
  auto r = Move(pid, 2);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  auto guests = Ps(2);  // node 2 lists its guest with the program's command line
  ASSERT_TRUE(guests.ok()) << guests.status().ToString();
  bool listed = false;
  for (const auto& p : (*guests)["processes"])
    if (p.value("home_pid", 0) == pid) {
      listed = true;
      EXPECT_EQ(p.value("role", ""), "guest");
      EXPECT_NE(p.value("command", "").find("mfs-test-counter 300"), std::string::npos) << p;
    }
  EXPECT_TRUE(listed) << *guests;
  StopNode(1);
  StopNode(2);
  StartNode(1, 2);
  StartNode(2, 2);
  WaitAlive(2);
  auto st = mfs::control::Call(Socket(1), {{"op", "status"}}, 2000);
  ASSERT_TRUE(st.ok()) << "node 1 did not come back: " << st.status().ToString() << "\n"
                       << Slurp(dir_ + "/n1/log");
  r = Move(pid, "home");
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  r = Move(pid, 2);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  int status = Wait(pid);
  ASSERT_NE(status, -1) << "timed out";
  EXPECT_EQ(status, want_status);
  EXPECT_EQ(Slurp(Path("got")), Slurp(Path("want")));
}

// fork and execve cannot run away from home (man/mfs-migration.7, class
// "home"): a remote process that calls them is brought home first, and the
// call runs there natively — the child and the new program are the home's.
TEST_F(Cluster, ForkAndExecWhileRemoteBringTheProcessHome) {
  StartCluster(2);
  {
    std::ofstream p(Path("forker.py"));
    p << "import os, sys, time\n"
         "def wait_for(name):\n"
         "    while not os.path.exists(name):\n"
         "        time.sleep(0.01)\n"
         "print('start', flush=True)\n"
         "wait_for(sys.argv[1] + '/go')\n"
         "child = os.fork()\n"
         "if child == 0:\n"
         "    print('child', sys.argv[2] == 'ref' or os.getppid() == int(sys.argv[2]), flush=True)\n"
         "    os._exit(7)\n"
         "_, st = os.waitpid(child, 0)\n"
         "print('child exit', os.waitstatus_to_exitcode(st), flush=True)\n"
         "wait_for(sys.argv[1] + '/go2')\n"
         "os.execv('/bin/sh', ['sh', '-c', 'echo exec ok; exit 5'])\n";
  }
  fs::create_directories(Path("ref"));
  { std::ofstream(Path("ref/go")); std::ofstream(Path("ref/go2")); }
  int want_status = Reference("python3 " + Path("forker.py") + " " + Path("ref") + " ref", Path("want"));
  ASSERT_TRUE(WIFEXITED(want_status) && WEXITSTATUS(want_status) == 5) << want_status;
  fs::create_directories(Path("run"));
  // The child checks that its parent is the home pid: the pid is only known
  // once started, so the program reads it from the shell's exec (its own).
  pid_t pid = Shell("exec " + kBin + "/mfsrun -- python3 " + Path("forker.py") + " " + Path("run") +
                    " $$ > " + Path("got"));
  ASSERT_TRUE(WaitSupervised(pid));
  for (int i = 0; i < 1000 && CountLines(Path("got")) < 1; ++i) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(CountLines(Path("got")), 1u) << "never started";
  auto r = Move(pid, 2);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  auto where = [&]() -> json {
    auto ps = Ps();
    if (ps.ok())
      for (const auto& p : (*ps)["processes"])
        if (p.value("pid", 0) == pid) return p;
    return json::object();
  };
  EXPECT_EQ(where().value("where", 0), 2);
  std::ofstream(Path("run/go"));
  // After the fork the process is home again (one move out, one back).
  for (int i = 0; i < 1000 && CountLines(Path("got")) < 3; ++i) std::this_thread::sleep_for(10ms);
  json p = where();
  EXPECT_EQ(p.value("where", 0), 1) << p;
  EXPECT_EQ(p.value("moves", 0), 2) << p;
  std::ofstream(Path("run/go2"));
  int st = Wait(pid);
  ASSERT_NE(st, -1) << "timed out";
  EXPECT_EQ(st, want_status);
  std::string want = Slurp(Path("want"));
  EXPECT_EQ(Slurp(Path("got")), want);
  EXPECT_NE(want.find("child True\nchild exit 7\nexec ok\n"), std::string::npos) << want;
}

TEST_F(Cluster, PythonComputesWhileMoved) {
  StartCluster(2);
  {
    std::ofstream p(Path("prog.py"));
    // Long enough (seconds) to outlast the three moves below however
    // fast they are.
    p << "import sys\nh = 0\nfor i in range(1, 12000000):\n    h = (h * 31 + i * i) % 1000000007\n"
         "    if i % 400000 == 0:\n        print(i, h, flush=True)\nprint('done', h)\nsys.exit(h % 50)\n";
  }
  const std::string args = "python3 " + Path("prog.py");
  int want_status;
  pid_t pid = MfsrunBesideReference(args, &want_status);
  ASSERT_GT(pid, 0) << "never supervised";
  // Past the interpreter's start-up (its dlopen()s would bring it home).
  for (int i = 0; i < 1000 && CountLines(Path("got")) < 1; ++i) std::this_thread::sleep_for(10ms);
  for (const json& t : {json(2), json("home"), json(2)}) {
    auto r = Move(pid, t);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    std::this_thread::sleep_for(200ms);
  }
  EXPECT_EQ(Wait(pid), want_status);
  EXPECT_EQ(Slurp(Path("got")), Slurp(Path("want")));
}

TEST_F(Cluster, Sha256sumAndSortOverALargeFileWhileMoved) {
  StartCluster(2);
  // About 60 MiB of text lines, deterministic.
  ASSERT_EQ(RunShell("seq 1 4500000 | awk '{print ($1 * 7919) % 1000003, $1}' > " + Path("big.txt")), 0);
  for (const std::string& prog : {"sha256sum " + Path("big.txt") + " " + Path("big.txt") + " " + Path("big.txt"),
                                 "sort -S 64M " + Path("big.txt")}) {
    SCOPED_TRACE(prog);
    MovedWhileRunning(prog);
  }
}

TEST_F(Cluster, XzOverALargeFileWhileMoved) {
  StartCluster(2);
  ASSERT_EQ(RunShell("seq 1 4500000 | awk '{print ($1 * 7919) % 1000003, $1}' > " + Path("big.txt")), 0);
  MovedWhileRunning("xz -T1 -1 -c " + Path("big.txt"));
}

// KNOWN FAILURE (see the report of issue 6): about one run in three the
// program stops receiving SIGALRM after a move home and back, and hangs.
// It used to hang about one run in three: the capture read ITIMER_REAL while
// the timer had just expired with its SIGALRM queued (the kernel re-arms it
// only when that signal is dequeued), so the timer travelled disarmed.
TEST_F(Cluster, TimersSignalHandlersAndPidSurviveMoves) {
  StartCluster(2);
  const std::string args = kBin + "/mfs-test-sigtimer 150";
  int want_status;
  pid_t pid = MfsrunBesideReference(args, &want_status, "mfs-test-sigtimer");
  ASSERT_GT(pid, 0) << "never supervised";
  for (const json& t : {json(2), json("home"), json(2)}) {
    std::this_thread::sleep_for(200ms);
    auto r = Move(pid, t);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
  }
  EXPECT_EQ(Wait(pid), want_status);
  EXPECT_EQ(Slurp(Path("got")), Slurp(Path("want")));
}

TEST_F(Cluster, PipelineWithAMigratedMiddleStage) {
  StartCluster(2);
  {
    std::ofstream p(Path("filter.py"));
    // Output in blocks of 2000 lines: the environment may set
    // PYTHONUNBUFFERED, and one forwarded write per line is not the point.
    p << "import sys\nout = []\nfor line in sys.stdin:\n    n = int(line)\n"
         "    out.append('%d %d\\n' % (n * n % 1000003, n))\n"
         "    if len(out) == 2000:\n        sys.stdout.write(''.join(out)); out = []\n"
         "sys.stdout.write(''.join(out))\n";
  }
  const std::string pipeline_ref = "seq 1 3000000 | python3 " + Path("filter.py") + " | sha256sum > " + Path("want");
  ASSERT_EQ(RunShell(pipeline_ref), 0);
  // The middle stage's pid is written by the shell before it execs mfsrun.
  pid_t sh = Shell("seq 1 3000000 | (echo $$ > /dev/null; sh -c 'echo $$ > " + Path("mid.pid") + "; exec " + kBin +
                   "/mfsrun python3 " + Path("filter.py") + "') | sha256sum > " + Path("got"));
  pid_t mid = 0;
  for (int i = 0; i < 300 && mid == 0; ++i) {
    std::this_thread::sleep_for(10ms);
    mid = atoi(Slurp(Path("mid.pid")).c_str());
  }
  ASSERT_GT(mid, 0);
  ASSERT_TRUE(WaitSupervised(mid));
  for (int i = 0; i < 1000 && Slurp("/proc/" + std::to_string(mid) + "/cmdline").find("filter.py") == std::string::npos; ++i)
    std::this_thread::sleep_for(5ms);
  std::this_thread::sleep_for(300ms);  // past the interpreter's start-up
  auto r = Move(mid, 2);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  std::this_thread::sleep_for(300ms);
  // The interpreter may have come home by itself meanwhile (an mmap of a
  // file descriptor is a `home` call): EALREADY then.
  r = Move(mid, "home");
  EXPECT_TRUE(r.ok() || r.status().code() == EALREADY) << r.status().ToString();
  r = Move(mid, 2);
  EXPECT_TRUE(r.ok() || r.status().code() == ENOENT) << r.status().ToString();  // ENOENT: already finished
  EXPECT_EQ(Wait(sh), 0);
  EXPECT_EQ(Slurp(Path("got")), Slurp(Path("want")));
}

TEST_F(Cluster, SignalToHomePidReachesRemoteAndKillingDeputyKillsRemote) {
  StartCluster(2);
  pid_t pid = Mfsrun(kBin + "/mfs-test-counter 100000 100000 4", Path("got"));
  ASSERT_TRUE(WaitSupervised(pid));
  auto r = Move(pid, 2);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  // The remote's pid on node 2, from its guest supervisor's socket name.
  pid_t remote = 0;
  for (const auto& e : fs::directory_iterator(dir_ + "/n2/run/sup")) {
    std::string n = e.path().filename().string();
    if (n.rfind("guest-", 0) == 0) remote = atoi(n.c_str() + 6);
  }
  ASSERT_GT(remote, 0) << "no guest socket";
  ASSERT_EQ(kill(remote, 0), 0);
  // SIGTERM to the home pid: the remote dies of it, and so does the deputy.
  kill(pid, SIGTERM);
  int st = Wait(pid, 20s);
  ASSERT_TRUE(WIFSIGNALED(st)) << "status " << st;
  EXPECT_EQ(WTERMSIG(st), SIGTERM);
  for (int i = 0; i < 200 && kill(remote, 0) == 0; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_NE(kill(remote, 0), 0) << "remote still alive";

  // SIGKILL of the deputy kills the remote too.
  pid = Mfsrun(kBin + "/mfs-test-counter 100000 100000 4", Path("got2"));
  ASSERT_TRUE(WaitSupervised(pid));
  ASSERT_TRUE(Move(pid, 2).ok());
  remote = 0;
  for (const auto& e : fs::directory_iterator(dir_ + "/n2/run/sup")) {
    std::string n = e.path().filename().string();
    if (n.rfind("guest-", 0) == 0 && kill(atoi(n.c_str() + 6), 0) == 0) remote = atoi(n.c_str() + 6);
  }
  ASSERT_GT(remote, 0);
  kill(pid, SIGKILL);
  st = Wait(pid, 20s);
  EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
  for (int i = 0; i < 300 && kill(remote, 0) == 0; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_NE(kill(remote, 0), 0) << "remote survived its deputy";
}

// The pid tracing `pid` (its supervisor), from /proc; 0 if none.
pid_t TracerOf(pid_t pid) {
  std::string st = Slurp("/proc/" + std::to_string(pid) + "/status");
  auto at = st.find("TracerPid:");
  return at == std::string::npos ? 0 : atoi(st.c_str() + at + 10);
}

// Only the home supervisor can undo a freeze or serve a deputy. Killed while
// the process is away, it takes the process with it (the parent sees
// SIGKILL) and the remote ends with its home connection: never two copies,
// never a deputy waiting forever. Killed while the process is at home,
// untouched, the process runs on to the end it would have had.
TEST_F(Cluster, HomeSupervisorKilledEndsAProcessAwayAndLeavesOneAtHomeRunning) {
  StartCluster(2);
  pid_t pid = Mfsrun(kBin + "/mfs-test-counter 100000 100000 4", Path("away"));
  ASSERT_TRUE(WaitSupervised(pid));
  ASSERT_TRUE(Move(pid, 2).ok());
  pid_t remote = RemotePid(2);
  ASSERT_GT(remote, 0) << "no remote on node 2";
  pid_t sup = TracerOf(pid);
  ASSERT_GT(sup, 0) << "the deputy is not traced";
  ASSERT_EQ(kill(sup, SIGKILL), 0);
  int st = Wait(pid, 20s);
  EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) << "deputy's status " << st;
  for (int i = 0; i < 500 && kill(remote, 0) == 0; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_NE(kill(remote, 0), 0) << "the remote outlived its home supervisor";

  int want_status;
  pid = MfsrunBesideReference(kBin + "/mfs-test-counter 200 200000 1", &want_status, "mfs-test-counter");
  ASSERT_GT(pid, 0) << "never supervised";
  ASSERT_EQ(waitpid(pid, &st, WNOHANG), 0) << "finished before its supervisor could be killed";
  sup = TracerOf(pid);
  ASSERT_GT(sup, 0);
  ASSERT_EQ(kill(sup, SIGKILL), 0);
  EXPECT_EQ(Wait(pid), want_status);
  EXPECT_TRUE(Slurp(Path("got")) == Slurp(Path("want"))) << "output differs";
}

// Job control of a migrated process looks as it does at home: a stop signal
// for the home pid stops the remote, and the parent's wait(WUNTRACED) sees
// the process stopped (the deputy stops with it); SIGCONT continues both
// (WCONTINUED), and the output is that of a run that never moved.
TEST_F(Cluster, StopAndContinueOfAMigratedProcessAreSeenByItsParent) {
  StartCluster(2);
  int want_status;
  pid_t pid = MfsrunBesideReference(kBin + "/mfs-test-counter 400 100000 4", &want_status, "mfs-test-counter");
  ASSERT_GT(pid, 0) << "never supervised";
  auto r = Move(pid, 2);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  // mfsps names the program, not the mfsrun that exec'd it, though the
  // process was never listed at home.
  EXPECT_EQ(Info(pid).value("command", ""), kBin + "/mfs-test-counter 400 100000 4") << Info(pid);
  // Waits (bounded) for a stop or continue report of `pid`.
  auto wait_for = [pid](int flags) {
    for (int i = 0; i < 1000; ++i) {
      int st = 0;
      if (waitpid(pid, &st, flags | WNOHANG) == pid) return st;
      std::this_thread::sleep_for(10ms);
    }
    return -1;
  };
  // The program shares this test's process group: where that group is
  // orphaned (as under some CI runners) a SIGTSTP is dropped at home, and
  // so it must be here; the setsid part below checks that case always.
  const bool orphaned = mfs::migrate::ProcessGroupOrphaned(getpid());
  for (int sig : {SIGTSTP, SIGSTOP}) {
    if (sig == SIGTSTP && orphaned) {
      printf("this test's process group is orphaned: SIGTSTP would be dropped, only SIGSTOP is checked\n");
      continue;
    }
    ASSERT_EQ(kill(pid, sig), 0);
    int st = wait_for(WUNTRACED);
    ASSERT_TRUE(st != -1 && WIFSTOPPED(st)) << strsignal(sig) << ": the parent never saw it stop (" << st << ")";
    std::this_thread::sleep_for(200ms);  // lines in flight land
    size_t stopped_at = CountLines(Path("got"));
    std::this_thread::sleep_for(400ms);
    EXPECT_EQ(CountLines(Path("got")), stopped_at) << strsignal(sig) << ": the remote went on while stopped";
    ASSERT_EQ(kill(pid, SIGCONT), 0);
    st = wait_for(WCONTINUED);
    ASSERT_TRUE(st != -1 && WIFCONTINUED(st)) << "the parent never saw it continue (" << st << ")";
    for (int i = 0; i < 500 && CountLines(Path("got")) <= stopped_at; ++i) std::this_thread::sleep_for(10ms);
    EXPECT_GT(CountLines(Path("got")), stopped_at) << strsignal(sig) << ": no output after SIGCONT";
  }
  EXPECT_EQ(Info(pid).value("where", 0), 2) << Info(pid);
  EXPECT_EQ(Wait(pid), want_status);
  EXPECT_TRUE(Slurp(Path("got")) == Slurp(Path("want"))) << "output differs";

  // In an orphaned process group (setsid: its parent is in another session)
  // the kernel at home discards a SIGTSTP; so does the remote's.
  pid = Shell("exec setsid " + kBin + "/mfsrun -- " + kBin + "/mfs-test-counter 100000 100000 4 > " + Path("orphan"));
  ASSERT_TRUE(WaitSupervised(pid));
  WaitExec(pid, "mfs-test-counter");
  ASSERT_TRUE(Move(pid, 2).ok());
  ASSERT_EQ(kill(pid, SIGTSTP), 0);
  std::this_thread::sleep_for(300ms);
  size_t lines = CountLines(Path("orphan"));
  std::this_thread::sleep_for(500ms);
  int st = 0;
  EXPECT_EQ(waitpid(pid, &st, WUNTRACED | WNOHANG), 0) << "stopped in an orphaned group: " << st;
  EXPECT_GT(CountLines(Path("orphan")), lines) << "the remote stopped in an orphaned group";
  kill(pid, SIGKILL);
  Wait(pid);
}

// Forwarded calls that block in the deputy (open of a FIFO, then read) are
// cut by signals sent to the home pid: each signal reaches the remote's
// handler and the call (SA_RESTART) goes on; a move home while the read
// blocks re-issues it natively, so no data and no signal is lost or doubled.
TEST_F(Cluster, SignalsCutBlockingForwardedCallsWhichGoOn) {
  StartCluster(2);
  const std::string fifo = Path("fifo");
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  pid_t pid = Mfsrun(kBin + "/mfs-test-sigread " + fifo, Path("got"));
  ASSERT_TRUE(WaitSupervised(pid));
  for (int i = 0; i < 1000 && CountLines(Path("got")) < 1; ++i) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(CountLines(Path("got")), 1u);
  auto r = Move(pid, 2);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  auto send_usr1 = [&](int n) {
    for (int i = 0; i < n; ++i) {
      std::this_thread::sleep_for(150ms);
      ASSERT_EQ(kill(pid, SIGUSR1), 0);
    }
    std::this_thread::sleep_for(150ms);
  };
  send_usr1(3);  // the remote blocks in open(), executed by the deputy
  int w = -1;
  for (int i = 0; i < 500 && w < 0; ++i) {
    w = open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);  // ENXIO until the reader has it open
    if (w < 0) std::this_thread::sleep_for(10ms);
  }
  ASSERT_GE(w, 0) << "the remote never opened the FIFO";
  ASSERT_EQ(write(w, "hello\n", 6), 6);
  for (int i = 0; i < 500 && CountLines(Path("got")) < 2; ++i) std::this_thread::sleep_for(10ms);
  send_usr1(2);  // now it blocks in read()
  ASSERT_GT(RemotePid(2), 0) << "the program did not stay remote while its calls blocked";
  r = Move(pid, "home");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(write(w, "world\n", 6), 6);
  close(w);
  int st = Wait(pid);
  ASSERT_NE(st, -1) << "timed out";
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "status " << st;
  EXPECT_EQ(Slurp(Path("got")), "ready\ngot hello usr1=3\ngot world usr1=5\nend usr1=5\n");
}

TEST_F(Cluster, NodeKilledMidMigrationLeavesTheProcessRunningAtHome) {
  StartCluster(2);
  // 1 GiB of dirty memory: the transfer takes long enough to cut it.
  const std::string args = kBin + "/mfs-test-counter 60 200000 1024";
  int want_status;
  pid_t pid = MfsrunBesideReference(args, &want_status);
  ASSERT_GT(pid, 0) << "never supervised";
  for (int i = 0; i < 500 && CountLines(Path("got")) < 1; ++i) std::this_thread::sleep_for(20ms);
  std::thread mover([&] {
    auto r = Move(pid, 2);
    EXPECT_FALSE(r.ok()) << "the move should have failed";
  });
  std::this_thread::sleep_for(150ms);
  // Node 2 dies: its mfsd and its guest supervisors.
  StopNode(2, SIGKILL);
  KillNodeProcesses(2);
  mover.join();
  auto ps = Ps();
  ASSERT_TRUE(ps.ok());
  for (const auto& p : (*ps)["processes"]) {
    if (p.value("pid", 0) == pid) {
      EXPECT_EQ(p.value("where", 0), 1);
    }
  }
  EXPECT_EQ(Wait(pid), want_status);
  EXPECT_EQ(Slurp(Path("got")), Slurp(Path("want")));
}

// A migration cut at each of its steps by a crash of the destination
// (its mfsd, or the guest supervisor with the half-built remote: SIGKILL at a
// fault point, migrate/fault.h) fails with an error and leaves the process
// running at home, its output unchanged. Cut after the commit, the remote is
// lost with its node: the home reports it and the deputy exits with 112.
class MigrationCut : public Cluster, public ::testing::WithParamInterface<const char*> {};

TEST_P(MigrationCut, ProcessKeepsRunningAtHome) {
  const std::string point = GetParam();
  StartNode(1, 2);
  StartNode(2, 2, "", point);
  WaitAlive(2);
  // 64 MiB of dirty memory: several page batches, so "guest-pages" cuts the
  // transfer in its middle.
  const std::string args = kBin + "/mfs-test-counter 120 60000 64";
  int want_status;
  pid_t pid = MfsrunBesideReference(args, &want_status, "mfs-test-counter");
  ASSERT_GT(pid, 0) << "never supervised";
  for (int i = 0; i < 500 && CountLines(Path("got")) < 1; ++i) std::this_thread::sleep_for(20ms);
  auto r = Move(pid, 2);
  if (point == "guest-running") {
    // Committed: the move succeeded, then node 2's supervisor died with the remote.
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    int st = Wait(pid);
    ASSERT_TRUE(WIFEXITED(st)) << "wait status " << st;
    EXPECT_EQ(WEXITSTATUS(st), mfs::migrate::kLostRemoteExitStatus);
    EXPECT_NE(Slurp(dir_ + "/n1/log").find("lost the remote of " + std::to_string(pid)), std::string::npos);
    return;
  }
  ASSERT_FALSE(r.ok()) << "the move should have failed: " << *r;
  EXPECT_FALSE(r.status().message().empty());
  auto ps = Ps();
  ASSERT_TRUE(ps.ok()) << ps.status().ToString();
  bool listed = false;
  for (const auto& p : (*ps)["processes"])
    if (p.value("pid", 0) == pid) {
      listed = true;
      EXPECT_EQ(p.value("where", 0), 1) << p;
      EXPECT_FALSE(p.value("last_error", "").empty()) << p;
    }
  EXPECT_TRUE(listed) << *ps;
  EXPECT_EQ(Wait(pid), want_status);
  EXPECT_EQ(Slurp(Path("got")), Slurp(Path("want")));
}

INSTANTIATE_TEST_SUITE_P(EachStep, MigrationCut,
                         ::testing::Values("spawn", "guest-accept", "guest-prepare", "guest-header",
                                           "guest-pages", "guest-restore", "guest-running"),
                         [](const auto& info) {
                           std::string n = info.param;
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

// A failed move of a program whose threads wait in system calls (futex,
// nanosleep) resumes it at home with those calls going on as before.
TEST_F(Cluster, FailedMoveOfAProgramBlockedInCallsResumesItsCalls) {
  StartNode(1, 2);
  StartNode(2, 2, "", "guest-header");
  WaitAlive(2);
  const std::string args = kBin + "/mfs-test-threads 800 4";
  int want_status;
  pid_t pid = MfsrunBesideReference(args, &want_status, "mfs-test-threads");
  ASSERT_GT(pid, 0) << "never supervised";
  std::this_thread::sleep_for(300ms);
  auto r = Move(pid, 2);
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(Wait(pid), want_status);
  EXPECT_TRUE(Slurp(Path("got")) == Slurp(Path("want"))) << "output differs";
}

// The home's mfsd crashing while its supervisor moves a process loses
// nothing: the supervisor is not mfsd's child in any way that matters, the
// move ends (either way), the program's output is unchanged, and a restarted
// mfsd finds the process again.
TEST_F(Cluster, HomeMfsdKilledDuringAMoveLosesNothing) {
  StartNode(1, 2, "", "move");
  StartNode(2, 2);
  WaitAlive(2);
  const std::string args = kBin + "/mfs-test-counter 150 60000 256";
  int want_status;
  pid_t pid = MfsrunBesideReference(args, &want_status, "mfs-test-counter");
  ASSERT_GT(pid, 0) << "never supervised";
  for (int i = 0; i < 500 && CountLines(Path("got")) < 1; ++i) std::this_thread::sleep_for(20ms);
  auto r = Move(pid, 2);
  EXPECT_FALSE(r.ok()) << "mfsd died before it could answer";
  int st = 0;
  ASSERT_EQ(waitpid(daemons_[1], &st, 0), daemons_[1]);
  EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) << "wait status " << st;
  daemons_.erase(1);
  StartNode(1, 2);
  WaitAlive(2);
  // The restarted mfsd lists the process, and the cut move ends (either way).
  bool listed = false;
  std::string state;
  for (int i = 0; i < 600 && (!listed || state == "moving"); ++i) {
    auto ps = Ps();
    if (ps.ok())
      for (const auto& p : (*ps)["processes"])
        if (p.value("pid", 0) == pid) {
          listed = true;
          state = p.value("state", "");
        }
    if (!listed || state == "moving") std::this_thread::sleep_for(100ms);
  }
  ASSERT_TRUE(listed) << "the restarted mfsd does not list " << pid;
  ASSERT_NE(state, "moving") << "the cut move never ended";
  // Movable still, wherever the cut move left it.
  r = Move(pid, 2);
  if (!r.ok()) {
    EXPECT_EQ(r.status().code(), EALREADY) << r.status().ToString();
  }
  r = Move(pid, "home");
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(Wait(pid), want_status);
  EXPECT_EQ(Slurp(Path("got")), Slurp(Path("want")));
}

TEST_F(Cluster, BadInputGivesClearErrorsAndTheProcessStaysHome) {
  StartCluster(2);
  const std::string args = kBin + "/mfs-test-counter 150 60000 4";
  int want_status;
  pid_t pid = MfsrunBesideReference(args, &want_status);
  ASSERT_GT(pid, 0) << "never supervised";
  auto r = Move(999999, 2);
  EXPECT_EQ(r.status().code(), ENOENT) << r.status().ToString();
  r = Move(getpid(), 2);  // not started with mfsrun
  EXPECT_EQ(r.status().code(), ENOENT);
  r = Move(pid, 77);  // unknown node
  EXPECT_EQ(r.status().code(), EHOSTDOWN) << r.status().ToString();
  r = Move(pid, "nowhere");
  EXPECT_EQ(r.status().code(), EINVAL);
  r = Move(pid, 1);  // already there
  EXPECT_EQ(r.status().code(), EALREADY);
  // mfsrun's own arguments: a bad node id is refused (status 2), the
  // command is not run.
  for (const char* bad : {"--node=abc", "--node=0", "--node 256", "-n 3x", "--node="}) {
    int st = RunShell(kBin + "/mfsrun " + bad + " touch " + Path("ran") + " 2> " + Path("err"));
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 2) << bad << ": status " << st;
    EXPECT_NE(Slurp(Path("err")).find("wants a node id"), std::string::npos) << bad << ": " << Slurp(Path("err"));
    EXPECT_FALSE(fs::exists(Path("ran"))) << bad << " ran the command";
  }
  StopNode(2);  // a dead node
  for (int i = 0; i < 50; ++i) {
    r = Move(pid, 2);
    if (r.status().code() == EHOSTDOWN) break;
    if (r.ok()) Move(pid, "home").status().IgnoreError();
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(r.status().code(), EHOSTDOWN) << r.status().ToString();
  EXPECT_EQ(Wait(pid), want_status);
  EXPECT_EQ(Slurp(Path("got")), Slurp(Path("want")));
}

TEST_F(Cluster, NodeRefusingGuestsAndUnmovableProcessAreRefusedClearly) {
  StartCluster(2, "[migrate]\naccept_guests = false\n");
  const std::string args = kBin + "/mfs-test-counter 100 60000 4";
  int want_status;
  pid_t pid = MfsrunBesideReference(args, &want_status);
  ASSERT_GT(pid, 0) << "never supervised";
  auto r = Move(pid, 2);
  EXPECT_EQ(r.status().code(), EACCES) << r.status().ToString();
  EXPECT_EQ(Wait(pid), want_status);
  EXPECT_EQ(Slurp(Path("got")), Slurp(Path("want")));

  // What still cannot move (a writable shared mapping) is refused with the
  // reason, in the error and in mfsps, and the program is unharmed.
  {
    std::ofstream p(Path("shared.py"));
    p << "import mmap, sys, time\nm = mmap.mmap(-1, 4096)\nm[0:5] = b'hello'\nopen(sys.argv[1], 'w').close()\n"
         "time.sleep(1.5)\nprint(m[0:5].decode())\n";
  }
  int sstatus = Reference("python3 " + Path("shared.py") + " " + Path("ready0"), Path("swant"));
  pid = Mfsrun("python3 " + Path("shared.py") + " " + Path("ready"), Path("sgot"));
  ASSERT_TRUE(WaitSupervised(pid));
  for (int i = 0; i < 1000 && access(Path("ready").c_str(), F_OK) != 0; ++i) std::this_thread::sleep_for(10ms);
  r = Move(pid, 2);
  EXPECT_EQ(r.status().code(), EBUSY);
  EXPECT_NE(r.status().message().find("writable shared mapping"), std::string::npos) << r.status().ToString();
  auto ps = Ps();
  ASSERT_TRUE(ps.ok());
  for (const auto& p : (*ps)["processes"]) {
    if (p.value("pid", 0) == pid) {
      EXPECT_NE(p.value("why_not", "").find("writable shared mapping"), std::string::npos);
    }
  }
  EXPECT_EQ(Wait(pid), sstatus);
  EXPECT_EQ(Slurp(Path("sgot")), Slurp(Path("swant")));
}

// A pthreads program (workers taking turns on a mutex and a condition
// variable, sleeping, printing, with thread-local storage) moved
// home -> 2 -> home -> 2 while its threads run: every thread moves, the
// output and exit status are those of an unmigrated run.
TEST_F(Cluster, MultiThreadedProgramMovesWithAllItsThreads) {
  StartCluster(2);
  const std::string args = kBin + "/mfs-test-threads 1500 4";
  int want_status;
  pid_t pid = MfsrunBesideReference(args, &want_status, "mfs-test-threads");
  ASSERT_GT(pid, 0) << "never supervised";
  WaitThreads(pid, 5);  // all five threads exist before the first move
  int step = 0;
  for (const json& t : {json(2), json("home"), json(2)}) {
    std::this_thread::sleep_for(300ms);
    auto r = Move(pid, t);
    ASSERT_TRUE(r.ok()) << "move " << step << ": " << r.status().ToString();
    if (t == json(2)) {
      pid_t remote = RemotePid(2);
      ASSERT_GT(remote, 0);
      EXPECT_NE(Slurp("/proc/" + std::to_string(remote) + "/status").find("Threads:\t5"), std::string::npos)
          << "the remote does not have all five threads";
      // The deputy at home is the main thread alone.
      EXPECT_NE(Slurp("/proc/" + std::to_string(pid) + "/status").find("Threads:\t1"), std::string::npos);
    } else {
      EXPECT_NE(Slurp("/proc/" + std::to_string(pid) + "/status").find("Threads:\t5"), std::string::npos)
          << "not all threads came home";
    }
    ++step;
  }
  EXPECT_EQ(Wait(pid), want_status);
  EXPECT_EQ(CountLines(Path("got")), CountLines(Path("want")));
  EXPECT_TRUE(Slurp(Path("got")) == Slurp(Path("want"))) << "output differs";
}

// The direct path (migrate/deputy.h): forwarded calls with in-buffers (a
// 300 kB write, vectored writes), out-buffers cut to the return value (reads,
// reads past the end, getcwd, readv), fixed out-buffers (fstat, pipe2), a
// failing call and a directory listing give, migrated, the bytes they give
// at home; and they ran on the direct path, not through the supervisor.
TEST_F(Cluster, DirectPathCallsGiveTheBytesOfAHomeRun) {
  StartCluster(2);
  ASSERT_EQ(mkdir(Path("ref").c_str(), 0700), 0);
  ASSERT_EQ(mkdir(Path("mig").c_str(), 0700), 0);
  int want_status = Reference(kBin + "/mfs-test-direct " + Path("ref") + " 0", Path("want"));
  ASSERT_TRUE(WIFEXITED(want_status) && WEXITSTATUS(want_status) == 0) << want_status;
  pid_t pid = Mfsrun(kBin + "/mfs-test-direct " + Path("mig") + " 1500 3000", Path("got"));
  ASSERT_TRUE(WaitSupervised(pid));
  WaitExec(pid, "mfs-test-direct");
  auto r = Move(pid, 2);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_TRUE(WaitDirect(pid)) << Info(pid).dump();
  // The program has done its calls once its output is complete (it then sleeps).
  for (int i = 0; i < 500 && CountLines(Path("got")) < CountLines(Path("want")); ++i)
    std::this_thread::sleep_for(10ms);
  json info = Info(pid);
  EXPECT_EQ(info.value("where", 0), 2) << info.dump();
  EXPECT_GE(info.value("direct_calls", uint64_t{0}), 15u) << info.dump();
  EXPECT_EQ(Wait(pid), want_status);
  EXPECT_EQ(Slurp(Path("got")), Slurp(Path("want")));
  EXPECT_TRUE(Slurp(Path("mig") + "/direct.dat") == Slurp(Path("ref") + "/direct.dat"))
      << "file differs";
}

// A direct call blocked at home (a read of a FIFO) that signals cut (SA_RESTART:
// it goes on) and moves cut: to another node, a move that fails, home. It is
// executed once, and the bytes and signal counts are those of a run at home.
TEST_F(Cluster, DirectCallInFlightSurvivesSignalsAndMoves) {
  StartCluster(3);
  const std::string fifo = Path("fifo");
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  pid_t pid = Mfsrun(kBin + "/mfs-test-sigread " + fifo, Path("got"));
  ASSERT_TRUE(WaitSupervised(pid));
  for (int i = 0; i < 1000 && CountLines(Path("got")) < 1; ++i) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(CountLines(Path("got")), 1u);
  auto r = Move(pid, 2);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  int w = -1;
  for (int i = 0; i < 500 && w < 0; ++i) {
    w = open(fifo.c_str(),
             O_WRONLY | O_NONBLOCK | O_CLOEXEC);  // ENXIO until the reader has it open
    if (w < 0) std::this_thread::sleep_for(10ms);
  }
  ASSERT_GE(w, 0) << "the remote never opened the FIFO";
  ASSERT_TRUE(WaitDirect(pid)) << Info(pid).dump();
  const uint64_t before = Info(pid).value("direct_calls", uint64_t{0});
  ASSERT_EQ(write(w, "one\n", 4), 4);
  for (int i = 0; i < 500 && CountLines(Path("got")) < 2; ++i) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(CountLines(Path("got")), 2u);
  // Now blocked in a direct read: the signals cut it, it goes on.
  for (int i = 0; i < 2; ++i) {
    std::this_thread::sleep_for(150ms);
    ASSERT_EQ(kill(pid, SIGUSR1), 0);
  }
  std::this_thread::sleep_for(150ms);
  EXPECT_GT(Info(pid).value("direct_calls", uint64_t{0}), before)
      << "the read did not take the direct path";
  r = Move(pid, 3);  // the read in flight: re-issued on node 3
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_GT(RemotePid(3), 0);
  ASSERT_TRUE(WaitDirect(pid)) << Info(pid).dump();
  ASSERT_EQ(write(w, "two\n", 4), 4);
  for (int i = 0; i < 500 && CountLines(Path("got")) < 3; ++i) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(CountLines(Path("got")), 3u);
  r = Move(pid, 9);  // no such node: it stays on node 3, the read in flight goes on
  EXPECT_FALSE(r.ok());
  ASSERT_GT(RemotePid(3), 0);
  ASSERT_EQ(kill(pid, SIGUSR1), 0);
  std::this_thread::sleep_for(150ms);
  ASSERT_EQ(write(w, "three\n", 6), 6);
  for (int i = 0; i < 500 && CountLines(Path("got")) < 4; ++i) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(CountLines(Path("got")), 4u);
  r = Move(pid, "home");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  // At home the deputy's own fds (high numbers) are gone.
  for (const auto& e : fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd"))
    EXPECT_LT(std::stoi(e.path().filename().string()), 900) << "left behind: fd " << e.path();
  ASSERT_EQ(write(w, "four\n", 5), 5);
  close(w);
  int st = Wait(pid);
  ASSERT_NE(st, -1) << "timed out";
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "status " << st;
  EXPECT_EQ(
      Slurp(Path("got")),
      "ready\ngot one usr1=0\ngot two usr1=2\ngot three usr1=3\ngot four usr1=3\nend usr1=3\n");
}

// A program that closes every fd above 2 while away (close_range, run by
// the deputy) also closes the deputy's own (its direct socket, its eventfd):
// the deputy goes on serving its calls (with ptrace steps), nothing is lost.
TEST_F(Cluster, ProgramClosingAllItsFdsWhileAwayKeepsItsCalls) {
  StartCluster(2);
  ASSERT_EQ(mkdir(Path("ref").c_str(), 0700), 0);
  ASSERT_EQ(mkdir(Path("mig").c_str(), 0700), 0);
  int want_status =
      Reference(kBin + "/mfs-test-direct " + Path("ref") + " 0 0 closeall", Path("want"));
  ASSERT_TRUE(WIFEXITED(want_status) && WEXITSTATUS(want_status) == 0) << want_status;
  pid_t pid = Mfsrun(kBin + "/mfs-test-direct " + Path("mig") + " 1500 1000 closeall", Path("got"));
  ASSERT_TRUE(WaitSupervised(pid));
  WaitExec(pid, "mfs-test-direct");
  auto r = Move(pid, 2);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_TRUE(WaitDirect(pid)) << Info(pid).dump();
  for (int i = 0; i < 500 && CountLines(Path("got")) < CountLines(Path("want")); ++i)
    std::this_thread::sleep_for(10ms);
  json info = Info(pid);
  EXPECT_EQ(info.value("where", 0), 2) << info.dump();
  EXPECT_FALSE(info.value("direct", true)) << info.dump();
  EXPECT_EQ(Wait(pid), want_status);
  EXPECT_EQ(Slurp(Path("got")), Slurp(Path("want")));
}

// Four threads making forwarded writes at the same time (several direct calls
// in flight on the deputy's socket), moved away, home and away again while
// they write: every line arrives exactly once (none lost, none executed twice).
TEST_F(Cluster, ConcurrentDirectCallsFromThreadsSurviveMoves) {
  StartCluster(2);
  const std::string args = kBin + "/mfs-test-writers 4 500 2000";
  int want_status;
  pid_t pid = MfsrunBesideReference(args, &want_status, "mfs-test-writers");
  ASSERT_GT(pid, 0) << "never supervised";
  ASSERT_TRUE(WIFEXITED(want_status) && WEXITSTATUS(want_status) == 0) << want_status;
  WaitThreads(pid, 5);
  int step = 0;
  for (const json& t : {json(2), json("home"), json(2)}) {
    std::this_thread::sleep_for(150ms);
    auto r = Move(pid, t);
    ASSERT_TRUE(r.ok()) << "move " << step << ": " << r.status().ToString();
    ++step;
  }
  EXPECT_TRUE(WaitDirect(pid));
  std::this_thread::sleep_for(100ms);
  json info = Info(pid);
  EXPECT_EQ(Wait(pid), want_status);
  auto sorted = [](std::string s) {
    std::vector<std::string> v;
    std::istringstream in(s);
    for (std::string l; std::getline(in, l);) v.push_back(l);
    std::sort(v.begin(), v.end());
    return v;
  };
  auto got = sorted(Slurp(Path("got"))), want = sorted(Slurp(Path("want")));
  EXPECT_EQ(got.size(), want.size());
  EXPECT_TRUE(got == want) << "lines lost or repeated";
  EXPECT_GT(info.value("direct_calls", uint64_t{0}), 0u) << info.dump();
}

// A thread blocked in a forwarded call does not hold back the forwarded calls
// of the process's other threads: a reader blocked in read() on a pipe the
// process made, moved while it waits, gets what its writer thread writes
// there from the remote, round after round, and the output and exit status
// are those of an unmigrated run. If the home ran the forwarded calls of all
// threads one at a time, the write would wait behind the read forever (the
// bounded Wait then kills it). One deputy still serves every remote thread
// (man/mfs-migration.7, "Threads and the deputy"): the guest sees the calls
// of two threads wait together and brings the process home, where both go on.
TEST_F(Cluster, ThreadBlockedInForwardedReadDoesNotHoldBackItsWriter) {
  StartCluster(2);
  const std::string args = kBin + "/mfs-test-pipewait 1 12 250";
  int want_status;
  pid_t pid = MfsrunBesideReference(args, &want_status, "mfs-test-pipewait");
  ASSERT_GT(pid, 0) << "never supervised";
  ASSERT_TRUE(WIFEXITED(want_status) && WEXITSTATUS(want_status) == 0) << want_status;
  WaitThreads(pid, 3);
  std::this_thread::sleep_for(100ms);  // the reader waits in read(), the writer sleeps
  auto r = Move(pid, 2);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(Wait(pid, 30s), want_status) << "the remote threads' forwarded calls waited on one another";
  EXPECT_TRUE(Slurp(Path("got")) == Slurp(Path("want"))) << "output differs";
}

// The same with eight threads in four reader/writer pairs, all making
// forwarded calls at once, moved away while readers wait: the guest sees
// the calls of several threads wait together on the one deputy and brings
// the process home (man/mfs-migration.7, "Threads and the deputy"), where
// they all go on.
TEST_F(Cluster, ManyThreadsWaitingInForwardedCallsAllGoOn) {
  StartCluster(2);
  const std::string args = kBin + "/mfs-test-pipewait 4 10 300";
  int want_status;
  pid_t pid = MfsrunBesideReference(args, &want_status, "mfs-test-pipewait");
  ASSERT_GT(pid, 0) << "never supervised";
  ASSERT_TRUE(WIFEXITED(want_status) && WEXITSTATUS(want_status) == 0) << want_status;
  WaitThreads(pid, 9);
  std::this_thread::sleep_for(100ms);
  auto m = Move(pid, 2);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  json info;
  for (int i = 0; i < 300; ++i) {  // home again by itself, within 3 s
    info = Info(pid);
    if (info.value("where", 0) == 1 && info.value("moves", 0) >= 2) break;
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(info.value("where", 0), 1) << info.dump();
  EXPECT_EQ(Wait(pid, 30s), want_status) << "the remote threads' forwarded calls waited on one another";
  EXPECT_TRUE(Slurp(Path("got")) == Slurp(Path("want"))) << "output differs";
}

// A direct read cut by a signal whose handler has no SA_RESTART fails with
// EINTR at the remote, as it would at home, and the program reads on.
TEST_F(Cluster, DirectCallCutBySignalWithoutRestartFailsWithEintr) {
  StartCluster(2);
  const std::string fifo = Path("fifo");
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  pid_t pid = Mfsrun(kBin + "/mfs-test-sigread " + fifo + " norestart", Path("got"));
  ASSERT_TRUE(WaitSupervised(pid));
  for (int i = 0; i < 1000 && CountLines(Path("got")) < 1; ++i) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(CountLines(Path("got")), 1u);
  auto r = Move(pid, 2);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  int w = -1;
  for (int i = 0; i < 500 && w < 0; ++i) {
    w = open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (w < 0) std::this_thread::sleep_for(10ms);
  }
  ASSERT_GE(w, 0) << "the remote never opened the FIFO";
  ASSERT_TRUE(WaitDirect(pid)) << Info(pid).dump();
  ASSERT_EQ(write(w, "one\n", 4), 4);
  for (int i = 0; i < 500 && CountLines(Path("got")) < 2; ++i) std::this_thread::sleep_for(10ms);
  std::this_thread::sleep_for(150ms);  // blocked in its next (direct) read
  ASSERT_EQ(kill(pid, SIGUSR1), 0);
  for (int i = 0; i < 500 && CountLines(Path("got")) < 3; ++i) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(write(w, "two\n", 4), 4);
  close(w);
  int st = Wait(pid);
  ASSERT_NE(st, -1) << "timed out";
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "status " << st;
  EXPECT_EQ(Slurp(Path("got")), "ready\ngot one usr1=0\neintr usr1=1\ngot two usr1=1\nend usr1=1\n");
}

// Memory prepared before the freeze (kPrepare, migrate/prepare.h): the
// destination maps and faults in the hinted mappings while the program still
// runs at home, and the restore moves them into place. The program's
// regions (a full one, one with a hole of missing pages, one with an unmapped
// gap, a read-only one, the heap, one rewritten all the time, one freed and
// refilled in turn) read back byte for byte, the remote's map of them is the
// home's (addresses and permissions), and the move reply says the prepared
// pages were used and the pre-copied ones that had not changed were not sent
// again. `fault` for node 2: "prepare-refused" makes
// the guest refuse the hint, and the move must work the old way.
class PreparedMove : public Cluster {
 protected:
  // (start, end, perms) of the mappings of `pid` inside [lo, hi).
  static std::vector<std::string> MapsIn(pid_t pid, uint64_t lo, uint64_t hi) {
    std::vector<std::string> out;
    auto maps = mfs::migrate::ReadMaps(pid);
    if (!maps.ok()) return {"error: " + maps.status().ToString()};
    for (const auto& e : *maps) {
      if (e.end <= lo || e.start >= hi) continue;
      char line[96];
      snprintf(line, sizeof line, "%llx-%llx %c%c%c%c", (unsigned long long)e.start, (unsigned long long)e.end,
               e.prot & 1 ? 'r' : '-', e.prot & 2 ? 'w' : '-', e.prot & 4 ? 'x' : '-', e.shared ? 's' : 'p');
      out.push_back(line);
    }
    return out;
  }

  json MoveRegions(const std::string& fault) {
    StartNode(1, 2);
    StartNode(2, 2, "", fault);
    WaitAlive(2);
    const std::string args = kBin + "/mfs-test-regions 2.5";
    int want_status = Reference(args + " 2>/dev/null", Path("want"));
    EXPECT_EQ(want_status, 0);
    pid_t pid = Mfsrun(args + " 2>" + Path("addrs"), Path("got"));
    EXPECT_TRUE(WaitSupervised(pid));
    WaitExec(pid, "mfs-test-regions");
    for (int i = 0; i < 500 && Slurp(Path("got")).find("ready") == std::string::npos; ++i)
      std::this_thread::sleep_for(10ms);
    uint64_t lo = UINT64_MAX, hi = 0;
    {
      std::istringstream in(Slurp(Path("addrs")));
      std::string name, s, e;
      while (in >> name >> s >> e) {
        lo = std::min<uint64_t>(lo, std::stoull(s, nullptr, 16));
        hi = std::max<uint64_t>(hi, std::stoull(e, nullptr, 16));
      }
    }
    EXPECT_LT(lo, hi) << "no region addresses: " << Slurp(Path("addrs"));
    auto home_maps = MapsIn(pid, lo, hi);
    EXPECT_GE(home_maps.size(), 3u);
    auto r = Move(pid, 2);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    json reply = r.ok() ? *r : json::object();
    if (r.ok()) {
      pid_t remote = RemotePid(2);
      EXPECT_GT(remote, 0);
      EXPECT_EQ(MapsIn(remote, lo, hi), home_maps) << "the remote's map of the regions differs";
    }
    EXPECT_EQ(Wait(pid), want_status);
    EXPECT_TRUE(Slurp(Path("got")) == Slurp(Path("want")))
        << "output differs:\n" << Slurp(Path("got")) << "\nwanted:\n" << Slurp(Path("want"));
    return reply;
  }

  // MoveRegions with `var`=`value` in the environment of the mfsd it starts
  // (passed on to their supervisors); the reply's "prepared" part, or
  // an empty object (after a failure) if it has none.
  json MovedRegionsPrepared(const char* var, const char* value) {
    setenv(var, value, 1);
    json r = MoveRegions("");
    unsetenv(var);
    EXPECT_TRUE(r.contains("prepared")) << r;
    return r.value("prepared", json::object());
  }
};

TEST_F(PreparedMove, PreparedPagesAreMovedIntoPlaceAndReadBackExactly) {
  json r = MoveRegions("");
  ASSERT_TRUE(r.contains("prepared")) << r;
  const json& p = r["prepared"];
  EXPECT_FALSE(p.contains("error")) << p;
  // A (6 MiB), B (2 MiB written), C (2 MiB), D (2 MiB), the heap: at least
  // 12 MiB prepared and moved in, in at least three pieces.
  EXPECT_GE(p.value("pages", 0), 3072) << p;
  EXPECT_GE(p.value("moved_pages", 0), 3072) << p;
  EXPECT_GE(p.value("moved_pieces", 0), 3) << p;
  // Pre-copied before the freeze; E changes all the time, so not every
  // page can be skipped, but the others are.
  EXPECT_GE(p.value("precopied_pages", 0), 3072) << p;
  EXPECT_GE(p.value("unchanged_pages_not_sent", 0), 2048) << p;
  // With write tracking (Linux 6.7: userfaultfd WP_ASYNC + PAGEMAP_SCAN),
  // most of those are not even read at the freeze.
  if (p.value("write_tracking", false)) {
    EXPECT_GE(p.value("unchanged_pages_not_read", 0), 2048) << p;
  }
}

// With write tracking, the pages written during a pre-copy round go again
// in another (E is rewritten all the time); what the program reads back
// after the move is still exactly what it wrote (MoveRegions compares).
// Any written page makes another round here (the default waits for 64).
TEST_F(PreparedMove, PagesRewrittenDuringThePrecopyGoAgainInAnotherRound) {
  const json p = MovedRegionsPrepared("MFS_MIGRATE_PRECOPY_ROUND_PAGES", "1");
  if (!p.value("write_tracking", false)) GTEST_SKIP() << "no write tracking on this kernel: " << p;
  EXPECT_GE(p.value("precopy_rounds", 0), 2) << p;
  ASSERT_TRUE(p.contains("precopy_round_pages")) << p;
  EXPECT_EQ(p["precopy_round_pages"].size(), p.value("precopy_rounds", 0u)) << p;
}

TEST_F(PreparedMove, PrecopyWithoutWriteTrackingComparesHashes) {
  const json p = MovedRegionsPrepared("MFS_MIGRATE_WRITE_TRACKING", "0");
  EXPECT_FALSE(p.value("write_tracking", true)) << p;
  EXPECT_EQ(p.value("unchanged_pages_not_read", -1), 0) << p;
  EXPECT_GE(p.value("unchanged_pages_not_sent", 0), 2048) << p;
}

TEST_F(PreparedMove, WithoutPrecopyThePreparedMemoryIsStillUsed) {
  const json p = MovedRegionsPrepared("MFS_MIGRATE_PRECOPY", "0");
  EXPECT_FALSE(p.contains("precopied_pages")) << p;
  EXPECT_EQ(p.value("unchanged_pages_not_sent", -1), 0) << p;
  EXPECT_GE(p.value("moved_pages", 0), 3072) << p;
}

TEST_F(PreparedMove, RefusedPreparationFallsBackToFreshMemory) {
  json r = MoveRegions("prepare-refused");
  ASSERT_TRUE(r.contains("prepared")) << r;
  const json& p = r["prepared"];
  EXPECT_NE(p.value("error", "").find("refused"), std::string::npos) << p;
  EXPECT_EQ(p.value("moved_pages", -1), 0) << p;
  EXPECT_EQ(p.value("moved_pieces", -1), 0) << p;
  EXPECT_EQ(p.value("unchanged_pages_not_sent", -1), 0) << p;
}

}  // namespace

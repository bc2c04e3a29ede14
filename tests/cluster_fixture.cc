#include "tests/cluster_fixture.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "mfs/base/unique_fd.h"
#include "mfs/control/client.h"

#ifndef MFS_BIN_DIR
#error "MFS_BIN_DIR must name the build's bin directory (see tests/cluster.cmake)"
#endif

namespace mfs::testing {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

bool IsExecutable(const std::string& path) { return ::access(path.c_str(), X_OK) == 0; }

// argv[0] as execvp would find it, or "" if it is nowhere in PATH.
std::string FindInPath(const std::string& name) {
  if (name.find('/') != std::string::npos) return IsExecutable(name) ? name : "";
  const char* path = ::getenv("PATH");
  std::stringstream dirs(path ? path : "/usr/sbin:/usr/bin:/sbin:/bin");
  for (std::string d; std::getline(dirs, d, ':');) {
    std::string p = (d.empty() ? "." : d) + "/" + name;
    if (IsExecutable(p)) return p;
  }
  return "";
}

std::string Tail(const std::string& text, size_t lines) {
  size_t pos = text.size();
  if (pos && text[pos - 1] == '\n') --pos;
  while (lines-- && pos != std::string::npos && pos > 0) {
    pos = text.rfind('\n', pos - 1);
  }
  return pos == std::string::npos || pos == 0 ? text : text.substr(pos + 1);
}

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace

std::string ExecResult::Describe() const {
  std::string what = timed_out          ? "timed out"
                     : exit_code < 0    ? "did not run"
                     : exit_code > 128  ? "killed by signal " + std::to_string(exit_code - 128)
                                        : "exit " + std::to_string(exit_code);
  std::string e = Trim(err);
  return e.empty() ? what : what + ": " + e;
}

ExecResult RunCommand(const std::vector<std::string>& argv, std::chrono::milliseconds timeout) {
  ExecResult r;
  if (argv.empty()) {
    r.err = "empty command";
    return r;
  }
  int out_pipe[2], err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) {
    r.err = std::string("pipe: ") + strerror(errno);
    return r;
  }
  UniqueFd out_r(out_pipe[0]), out_w(out_pipe[1]);
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    r.err = std::string("pipe: ") + strerror(errno);
    return r;
  }
  UniqueFd err_r(err_pipe[0]), err_w(err_pipe[1]);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);

  pid_t pid = ::fork();
  if (pid < 0) {
    r.err = std::string("fork: ") + strerror(errno);
    return r;
  }
  if (pid == 0) {
    // Only async-signal-safe calls from here on.
    ::setpgid(0, 0);  // its own group, so a timeout kills all it started
    int null_fd = ::open("/dev/null", O_RDONLY);
    if (null_fd >= 0) ::dup2(null_fd, 0);
    ::dup2(out_w.get(), 1);
    ::dup2(err_w.get(), 2);
    ::execvp(args[0], args.data());
    const char msg[] = "exec failed: command not found or not executable\n";
    ssize_t ignored = ::write(2, msg, sizeof msg - 1);
    (void)ignored;
    ::_exit(127);
  }
  ::setpgid(pid, pid);  // also from here, so the group exists before any kill
  out_w.Reset();
  err_w.Reset();

  const auto deadline = Clock::now() + timeout;
  // After a kill, stop reading pipes that a stray descendant holds open.
  auto read_deadline = Clock::time_point::max();
  bool out_open = true, err_open = true, exited = false;
  int wstatus = 0;
  char buf[65536];
  while (out_open || err_open || !exited) {
    if (!exited) {
      pid_t w = ::waitpid(pid, &wstatus, WNOHANG);
      if (w == pid) exited = true;
    }
    auto now = Clock::now();
    if (now >= deadline && !r.timed_out && !exited) {
      r.timed_out = true;
      ::kill(-pid, SIGKILL);
      ::kill(pid, SIGKILL);
      read_deadline = now + 2s;
    }
    if (exited && read_deadline == Clock::time_point::max()) read_deadline = now + 10s;
    if (now >= read_deadline && exited) break;
    if (!out_open && !err_open) {
      if (!exited) std::this_thread::sleep_for(20ms);
      continue;
    }
    pollfd fds[2] = {{out_open ? out_r.get() : -1, POLLIN, 0},
                     {err_open ? err_r.get() : -1, POLLIN, 0}};
    int n = ::poll(fds, 2, 50);
    if (n < 0 && errno != EINTR) break;
    for (int k = 0; k < 2 && n > 0; ++k) {
      if (!(fds[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t got = ::read(fds[k].fd, buf, sizeof buf);
      if (got > 0) {
        (k == 0 ? r.out : r.err).append(buf, got);
      } else if (got == 0 || (errno != EINTR && errno != EAGAIN)) {
        (k == 0 ? out_open : err_open) = false;
      }
    }
  }
  if (!exited) {  // only reachable on a poll failure: make sure it is gone
    ::kill(-pid, SIGKILL);
    ::waitpid(pid, &wstatus, 0);
  }
  if (WIFEXITED(wstatus)) {
    r.exit_code = WEXITSTATUS(wstatus);
  } else if (WIFSIGNALED(wstatus)) {
    r.exit_code = 128 + WTERMSIG(wstatus);
  }
  return r;
}

bool WaitFor(const std::function<bool()>& pred, std::chrono::milliseconds timeout,
             std::chrono::milliseconds every) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    if (pred()) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(every);
  }
}

std::string BinDir() { return MFS_BIN_DIR; }

namespace {

// Can a listener bind ip:port (with SO_REUSEADDR, as mfsd does)?
bool CanListen(uint32_t ip, int port) {
  UniqueFd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!s.valid()) return false;
  int one = 1;
  ::setsockopt(s.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(ip);
  return ::bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
         ::listen(s.get(), 1) == 0;
}

}  // namespace

int PickFreePort(int n) {
  static std::mt19937 rng(static_cast<unsigned>(::getpid()) ^
                          static_cast<unsigned>(Clock::now().time_since_epoch().count()));
  for (int attempt = 0; attempt < 100; ++attempt) {
    int port = 20000 + static_cast<int>(rng() % 12000);  // below the ephemeral range
    bool free = true;
    for (int i = 1; i <= n && free; ++i) free = CanListen(0x7f000000u + i, port);
    if (free) return port;
  }
  return 0;
}

std::optional<std::string> IptablesMissing() {
  if (::geteuid() != 0) return "partition tests need root (iptables)";
  if (FindInPath("iptables").empty()) return "iptables is not installed";
  ExecResult r = RunCommand({"iptables", "-w", "10", "-L", "OUTPUT", "-n"}, 30s);
  if (!r.ok()) return "iptables does not work here: " + r.Describe();
  return std::nullopt;
}

void ClusterTest::SetUp() {
  if (::geteuid() != 0) {
    GTEST_SKIP() << "cluster tests need root (mount namespaces, bind mounts, cgroups)";
  }
  for (const char* tool : {"unshare", "nsenter", "setsid", "flock", "perl"}) {
    if (FindInPath(tool).empty()) GTEST_SKIP() << tool << " is not installed (util-linux / perl)";
  }
  ExecResult ns = RunCommand({"unshare", "--mount", "--propagation", "private", "true"}, 30s);
  if (!ns.ok()) GTEST_SKIP() << "cannot create mount namespaces here: " << ns.Describe();
  for (const char* bin : {"mfs-cluster", "mfsd", "mfsctl"}) {
    ASSERT_TRUE(IsExecutable(BinDir() + "/" + bin)) << BinDir() << "/" << bin << " is not built";
  }
  char tmpl[] = "/tmp/mfs-cluster-test.XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr) << "mkdtemp: " << strerror(errno);
  dir_ = tmpl;
}

void ClusterTest::TearDown() {
  if (dir_.empty()) return;
  if (HasFailure() && nodes_ > 0) {
    for (int i = 1; i <= nodes_; ++i) {
      std::cerr << "---- tail of node " << i << "'s mfsd.log\n"
                << Tail(ReadLog(i), 15) << "\n";
    }
  }
  // Always, even if Up failed half-way or the test bailed out.
  ExecResult down = Cluster({"down"}, 120s);
  EXPECT_TRUE(down.ok()) << "mfs-cluster down: " << down.Describe();
  if (::getenv("MFS_TEST_KEEP") != nullptr) {
    std::cerr << "MFS_TEST_KEEP: kept " << dir_ << "\n";
  } else {
    std::error_code ec;
    fs::remove_all(dir_, ec);
    EXPECT_FALSE(ec) << "removing " << dir_ << ": " << ec.message();
  }
}

ExecResult ClusterTest::Cluster(std::vector<std::string> args,
                                std::chrono::milliseconds timeout) {
  // --dir goes first: after exec's "--" everything belongs to the command.
  args.insert(args.begin(), {BinDir() + "/mfs-cluster", "--dir", dir_});
  return RunCommand(args, timeout);
}

::testing::AssertionResult ClusterTest::ClusterOk(std::vector<std::string> args) {
  std::string what = args.empty() ? "" : args[0] + (args.size() > 1 ? " " + args[1] : "");
  ExecResult r = Cluster(std::move(args));
  if (r.ok()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "mfs-cluster " << what << ": " << r.Describe();
}

::testing::AssertionResult ClusterTest::Up(int n, const ClusterOptions& options) {
  std::vector<std::string> args = {"up",
                                   std::to_string(n),
                                   "--port",
                                   "",  // filled in below
                                   "--heartbeat-ms",
                                   std::to_string(options.heartbeat_ms),
                                   "--dead-after-ms",
                                   std::to_string(options.dead_after_ms),
                                   "--timeout",
                                   std::to_string(options.timeout.count())};
  if (!options.config_extra.empty()) {
    std::string path = dir_ + "/config-extra.toml";
    std::ofstream(path) << options.config_extra;
    args.insert(args.end(), {"--config-extra", path});
  }
  for (const auto& [node, secret] : options.node_secrets) {
    std::string path = dir_ + "/secret-node" + std::to_string(node);
    {
      std::ofstream f(path);
      f << secret;
    }
    ::chmod(path.c_str(), 0600);
    args.insert(args.end(), {"--node-secret", std::to_string(node) + "=" + path});
  }
  args.insert(args.end(), options.extra_args.begin(), options.extra_args.end());
  nodes_ = n;  // so that a failure prints the logs of what did start
  ExecResult r;
  // A picked port can be taken by someone else before mfsd binds it: then
  // `up` fails cleanly and another port is tried.
  for (int attempt = 0; attempt < 3; ++attempt) {
    port_ = options.port ? options.port : PickFreePort(n);
    if (port_ == 0) return ::testing::AssertionFailure() << "no free port for " << n << " nodes";
    args[3] = std::to_string(port_);
    r = Cluster(args, options.timeout + 60s);
    if (r.ok()) return ::testing::AssertionSuccess();
    if (options.port || r.err.find("already in use") == std::string::npos) break;
  }
  return ::testing::AssertionFailure() << "mfs-cluster up " << n << ": " << r.Describe();
}

ExecResult ClusterTest::Exec(int node, const std::vector<std::string>& argv,
                             std::chrono::milliseconds timeout) {
  std::vector<std::string> args = {"exec", std::to_string(node), "--"};
  args.insert(args.end(), argv.begin(), argv.end());
  return Cluster(args, timeout);
}

::testing::AssertionResult ClusterTest::Kill(int node) {
  return ClusterOk({"kill", std::to_string(node)});
}
::testing::AssertionResult ClusterTest::Stop(int node) {
  return ClusterOk({"stop", std::to_string(node)});
}
::testing::AssertionResult ClusterTest::Start(int node) {
  return ClusterOk({"start", std::to_string(node)});
}
::testing::AssertionResult ClusterTest::Restart(int node) {
  return ClusterOk({"restart", std::to_string(node)});
}
::testing::AssertionResult ClusterTest::Partition(int node) {
  return ClusterOk({"partition", std::to_string(node)});
}
::testing::AssertionResult ClusterTest::Heal(int node) {
  return ClusterOk({"heal", std::to_string(node)});
}

Result<nlohmann::json> ClusterTest::Control(int node, const nlohmann::json& request) {
  return control::Call(NodeDir(node) + "/run/mfsd.sock", request, 10000);
}

Result<nlohmann::json> ClusterTest::MfsctlStatus(int node) {
  ExecResult r = Exec(node, {"mfsctl", "status", "--json"}, 30s);
  if (!r.ok()) {
    return Status::Error(EIO, "mfsctl status on node " + std::to_string(node) + ": " +
                                  r.Describe());
  }
  auto j = nlohmann::json::parse(r.out, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return Status::Error(EBADMSG, "mfsctl status --json printed no JSON: " + r.out);
  }
  return j;
}

std::string ClusterTest::PeerState(int node, int peer) {
  auto status = MfsctlStatus(node);
  if (!status.ok() || !status->contains("peers")) return "";
  for (const auto& p : (*status)["peers"]) {
    if (p.value("id", 0) == peer) return p.value("state", "");
  }
  return "";
}

std::string ClusterTest::Address(int node) const {
  return "127.0.0." + std::to_string(node) + ":" + std::to_string(port_);
}

std::string ClusterTest::NodeDir(int node) const {
  return dir_ + "/node" + std::to_string(node);
}

std::string ClusterTest::ReadLog(int node) const {
  std::ifstream f(NodeDir(node) + "/mfsd.log");
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

}  // namespace mfs::testing

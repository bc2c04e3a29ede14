#include "tests/locality_harness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "mfs/base/unique_fd.h"
#include "mfs/control/client.h"

#ifndef MFS_BIN_DIR
#error "MFS_BIN_DIR must name the build's bin directory"
#endif

namespace mfs::testing {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::string BinDir() { return MFS_BIN_DIR; }

std::string CmdResult::Describe() const {
  std::string what = timed_out ? "timed out" : "exit " + std::to_string(exit_code);
  return what + (err.empty() ? "" : ": " + err);
}

namespace {

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

CmdResult RunCmd(const std::vector<std::string>& argv, std::chrono::milliseconds timeout,
                 const std::vector<std::string>& env) {
  CmdResult r;
  char tmpl[] = "/tmp/mfs-run.XXXXXX";
  if (!::mkdtemp(tmpl)) {
    r.err = "mkdtemp failed";
    return r;
  }
  std::string d = tmpl, out = d + "/out", err = d + "/err";
  pid_t pid = ::fork();
  if (pid == 0) {
    ::setpgid(0, 0);
    int in = ::open("/dev/null", O_RDONLY);
    int o = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int e = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ::dup2(in, 0);
    ::dup2(o, 1);
    ::dup2(e, 2);
    for (const auto& kv : env) ::putenv(const_cast<char*>(kv.c_str()));
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  if (pid < 0) {
    r.err = "fork failed";
    fs::remove_all(d);
    return r;
  }
  ::setpgid(pid, pid);
  auto deadline = Clock::now() + timeout;
  int status = 0;
  for (;;) {
    pid_t w = ::waitpid(pid, &status, WNOHANG);
    if (w == pid) break;
    if (Clock::now() >= deadline) {
      r.timed_out = true;
      ::kill(-pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      break;
    }
    std::this_thread::sleep_for(10ms);
  }
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = Slurp(out);
  r.err = Slurp(err);
  std::error_code ec;
  fs::remove_all(d, ec);
  return r;
}

bool WaitFor(const std::function<bool()>& pred, std::chrono::milliseconds timeout,
             std::chrono::milliseconds every) {
  auto deadline = Clock::now() + timeout;
  for (;;) {
    if (pred()) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(every);
  }
}

TempDir::TempDir() {
  char tmpl[] = "/tmp/mfs-locality-test.XXXXXX";
  if (::mkdtemp(tmpl)) path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  if (!path_.empty()) fs::remove_all(path_, ec);
}

uint16_t FreePort() {
  std::mt19937 rng(static_cast<unsigned>(::getpid() ^ Clock::now().time_since_epoch().count()));
  for (int attempt = 0; attempt < 50; ++attempt) {
    uint16_t port = static_cast<uint16_t>(20000 + rng() % 20000);
    bool free = true;
    for (int i = 1; i <= 3 && free; ++i) {
      UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_port = htons(port);
      a.sin_addr.s_addr = htonl(0x7f000000u | static_cast<uint32_t>(i));
      free = ::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    }
    if (free) return port;
  }
  return 0;
}

Mfsd::Mfsd(std::string dir, uint32_t id, uint16_t port, std::vector<uint32_t> peers,
           std::string locality_toml)
    : dir_(dir + "/node" + std::to_string(id)), id_(id) {
  fs::create_directories(dir_ + "/export");
  fs::create_directories(dir_ + "/state");
  socket_ = dir_ + "/mfsd.sock";
  state_ = dir_ + "/state";
  config_ = dir_ + "/mfsd.toml";
  log_ = dir_ + "/mfsd.log";
  std::string secret = dir + "/secret";
  if (!fs::exists(secret)) {
    std::ofstream(secret) << "locality-test-secret-0123456789abcdef\n";
    ::chmod(secret.c_str(), 0600);
  }
  std::string peer_list;
  for (uint32_t p : peers) {
    peer_list += (peer_list.empty() ? "\"" : ", \"") + std::string("127.0.0.") + std::to_string(p) +
                 ":" + std::to_string(port) + "\"";
  }
  std::ofstream c(config_);
  c << "[node]\nid = " << id << "\naddress = \"127.0.0." << id << "\"\nport = " << port
    << "\nexport = \"" << dir_ << "/export\"\nstate_dir = \"" << state_ << "\"\nsecret_file = \""
    << secret << "\"\ncontrol_socket = \"" << socket_ << "\"\nmount = \"\"\npeers = [" << peer_list
    << "]\n"
    << "[membership]\nheartbeat_ms = 100\ndead_after_ms = 1000\n"
    << "[log]\nlevel = \"info\"\nfile = \"" << log_ << "\"\n"
    << "[locality]\n"
    << locality_toml << "\n";
}

Mfsd::~Mfsd() {
  if (pid_ > 0) Kill();
}

Status Mfsd::Start() {
  if (pid_ > 0) return Status::Error(EALREADY, "mfsd already running");
  std::string bin = BinDir() + "/mfsd";
  pid_t pid = ::fork();
  if (pid == 0) {
    int in = ::open("/dev/null", O_RDONLY);
    int o = ::open((dir_ + "/mfsd.out").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    ::dup2(in, 0);
    ::dup2(o, 1);
    ::dup2(o, 2);
    ::execl(bin.c_str(), bin.c_str(), "--config", config_.c_str(), nullptr);
    ::_exit(127);
  }
  if (pid < 0) return Status::FromErrno("fork");
  pid_ = pid;
  bool up = WaitFor(
      [&] {
        int st;
        if (::waitpid(pid_, &st, WNOHANG) == pid_) {
          pid_ = 0;
          return true;
        }
        return control::Call(socket_, nlohmann::json{{"op", "ping"}}, 1000).ok();
      },
      15s);
  if (pid_ == 0) {
    return Status::Error(ECHILD, "mfsd exited at start: " + Slurp(dir_ + "/mfsd.out"));
  }
  if (!up) {
    Kill();
    return Status::TimedOut("mfsd control socket did not answer within 15 s");
  }
  return Status::OK();
}

int Mfsd::Stop() {
  if (pid_ <= 0) return -1;
  ::kill(pid_, SIGTERM);
  int st = 0;
  bool done = WaitFor([&] { return ::waitpid(pid_, &st, WNOHANG) == pid_; }, 15s);
  if (!done) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &st, 0);
    pid_ = 0;
    return -2;
  }
  pid_ = 0;
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

void Mfsd::Kill() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int st;
  ::waitpid(pid_, &st, 0);
  pid_ = 0;
}

Result<nlohmann::json> Mfsd::Control(const nlohmann::json& request) const {
  return control::Call(socket_, request, 10000);
}

std::string Mfsd::Log() const { return Slurp(log_) + Slurp(dir_ + "/mfsd.out"); }

}  // namespace mfs::testing

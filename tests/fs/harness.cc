#include "tests/fs/harness.h"

#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

namespace mfs::testing {

namespace {

// Enters a private mount namespace before main (single-threaded there).
struct PrivateNamespace {
  PrivateNamespace() {
    if (geteuid() != 0) {
      reason = "needs root (FUSE mounts, credentials switching)";
      return;
    }
    if (access("/dev/fuse", R_OK | W_OK) != 0) {
      reason = "/dev/fuse is not available";
      return;
    }
    if (unshare(CLONE_NEWNS) != 0) {
      reason = std::string("unshare(CLONE_NEWNS): ") + strerror(errno);
      return;
    }
    if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
      reason = std::string("make / private: ") + strerror(errno);
      return;
    }
  }
  std::string reason;
};
PrivateNamespace g_ns;

}  // namespace

std::string MountSkipReason() { return g_ns.reason; }

std::string BinDir() {
  char buf[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  std::string p(buf, n > 0 ? static_cast<size_t>(n) : 0);
  return p.substr(0, p.rfind('/'));
}

pid_t Spawn(const std::vector<std::string>& argv, const std::string& log) {
  pid_t pid = fork();
  if (pid != 0) return pid;
  int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (fd >= 0) {
    dup2(fd, 1);
    dup2(fd, 2);
  }
  syscall(SYS_close_range, 3u, ~0u, 0u);
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  execv(args[0], args.data());
  _exit(127);
}

void Stop(pid_t pid, std::chrono::milliseconds grace) {
  if (pid <= 0) return;
  kill(pid, SIGTERM);
  auto end = std::chrono::steady_clock::now() + grace;
  while (std::chrono::steady_clock::now() < end) {
    if (waitpid(pid, nullptr, WNOHANG) == pid) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
}

bool WaitFor(const std::function<bool()>& cond, std::chrono::milliseconds limit) {
  auto end = std::chrono::steady_clock::now() + limit;
  for (;;) {
    if (cond()) return true;
    if (std::chrono::steady_clock::now() >= end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

bool IsMfsMounted(const std::string& path) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string id, parent, majmin, root, mp, opts, tok, fstype;
    ls >> id >> parent >> majmin >> root >> mp >> opts;
    while (ls >> tok && tok != "-") {
    }
    ls >> fstype;
    if (mp == path && fstype == "fuse.mfs") return true;
  }
  return false;
}

void Unmount(const std::string& path) {
  for (int i = 0; i < 10 && IsMfsMounted(path); ++i) umount2(path.c_str(), MNT_DETACH);
}

std::string MakeTempDir(const std::string& prefix) {
  std::string t = "/tmp/" + prefix + "-XXXXXX";
  std::vector<char> buf(t.begin(), t.end());
  buf.push_back('\0');
  if (!mkdtemp(buf.data())) return "";
  return buf.data();
}

int AsUser(uid_t id, const std::function<int()>& fn) {
  pid_t pid = fork();
  if (pid == 0) {
    gid_t g = id;
    if (setgroups(1, &g) != 0 || setgid(id) != 0 || setuid(id) != 0) _exit(254);
    _exit(fn());
  }
  int st = 0;
  waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 255;
}

std::string ReadFile(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "<open failed: " + std::string(strerror(errno)) + ">";
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      out = "<read failed at " + std::to_string(out.size()) + ": " + strerror(errno) + ">";
      break;
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return out;
}

bool WriteFile(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
  out.close();
  return out.good();
}

pid_t ForkLockWaiter(const std::string& path, LockKind kind, bool catch_alarm) {
  pid_t p = fork();
  if (p != 0) return p;
  if (catch_alarm) {
    struct sigaction sa {};
    sa.sa_handler = [](int) {};
    sigaction(SIGALRM, &sa, nullptr);  // no SA_RESTART
    alarm(1);
  }
  int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) _exit(2);
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  int r = kind == LockKind::kFcntl ? fcntl(fd, F_SETLKW, &fl) : flock(fd, LOCK_EX);
  _exit(r == 0 ? 0 : errno == EINTR ? 10 : 3);
}

int ConflictingLock(int fd, off_t len) {
  struct flock probe {};
  probe.l_type = F_WRLCK;
  probe.l_whence = SEEK_SET;
  probe.l_len = len;
  if (fcntl(fd, F_GETLK, &probe) != 0) return -1;
  return probe.l_type;
}

}  // namespace mfs::testing

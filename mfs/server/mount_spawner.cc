#include "mfs/server/mount_spawner.h"

#include <limits.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "mfs/base/log.h"

namespace mfs::server {

bool MountSpawner::IsMfsMounted(const std::string& mountpoint) {
  char real[PATH_MAX];
  if (!realpath(mountpoint.c_str(), real)) return false;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string id, parent, majmin, root, mp, opts, tok;
    ls >> id >> parent >> majmin >> root >> mp >> opts;
    while (ls >> tok && tok != "-") {
    }
    std::string fstype;
    ls >> fstype;
    if (mp == real && fstype == "fuse.mfs") return true;
  }
  return false;
}

static std::string MountBinary() {
  // Beside mfsd first (build tree, /usr/sbin), then $PATH.
  char self[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n > 0) {
    std::string dir(self, static_cast<size_t>(n));
    dir = dir.substr(0, dir.rfind('/'));
    std::string p = dir + "/mount.mfs";
    if (access(p.c_str(), X_OK) == 0) return p;
  }
  return "mount.mfs";
}

Status MountSpawner::Start(const std::string& mountpoint, const std::string& config_path) {
  if (IsMfsMounted(mountpoint)) {
    spdlog::info("{} is already mounted: keeping that mount", mountpoint);
    return Status::OK();
  }
  mkdir(mountpoint.c_str(), 0755);
  std::string bin = MountBinary();
  std::string opt = "config=" + config_path;
  pid_t pid = fork();
  if (pid < 0) return Status::FromErrno("fork mount.mfs");
  if (pid == 0) {
    // mfsd's sockets (listener, peers, control) must not outlive it in the
    // mount process: Asio does not open them close-on-exec.
    syscall(SYS_close_range, 3u, ~0u, 0u);
    setsid();
    execlp(bin.c_str(), "mount.mfs", "cluster", mountpoint.c_str(), "-o", opt.c_str(), "-f",
           static_cast<char*>(nullptr));
    _exit(127);
  }
  pid_ = pid;
  spdlog::info("started {} on {} (pid {})", bin, mountpoint, pid);
  return Status::OK();
}

void MountSpawner::Stop() {
  if (pid_ <= 0) return;
  kill(pid_, SIGTERM);
  for (int i = 0; i < 50; ++i) {
    if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
      pid_ = -1;
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

}  // namespace mfs::server

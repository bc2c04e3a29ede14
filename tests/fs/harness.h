// Test harness for /mfs: real mount.mfs and mfsd processes in the test's own
// mount namespace (entered before main, so every mount the tests make
// disappears with the process), bounded waits, and cleanup of everything
// started. Not thread-safe; one fixture per test.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

namespace mfs::testing {

// Why the machine cannot run mount tests ("" = it can).
std::string MountSkipReason();
// build/bin, where the test binary lives.
std::string BinDir();
// Starts argv[0] (a path) with stdout/stderr appended to `log`.
pid_t Spawn(const std::vector<std::string>& argv, const std::string& log);
// SIGTERM, then SIGKILL after `grace`; reaps.
void Stop(pid_t pid, std::chrono::milliseconds grace = std::chrono::milliseconds(5000));
bool WaitFor(const std::function<bool()>& cond, std::chrono::milliseconds limit);
bool IsMfsMounted(const std::string& path);
void Unmount(const std::string& path);
std::string MakeTempDir(const std::string& prefix);
// Runs `fn` in a child process with uid/gid `id` (and groups {id}); returns
// the child's result: 0 or an errno.
int AsUser(uid_t id, const std::function<int()>& fn);
std::string ReadFile(const std::string& path);
bool WriteFile(const std::string& path, const std::string& data);

}  // namespace mfs::testing

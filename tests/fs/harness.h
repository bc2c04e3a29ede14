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
// The whole file; a failed open or read gives "<open failed: ...>" or
// "<read failed at N: ...>" instead, so that a comparison shows the error.
std::string ReadFile(const std::string& path);
bool WriteFile(const std::string& path, const std::string& data);

// How a lock waiter made by ForkLockWaiter asks for its lock.
enum class LockKind { kFcntl, kFlock };
inline const char* LockKindName(LockKind k) { return k == LockKind::kFcntl ? "F_SETLKW" : "flock"; }

// Forks a process that opens `path` read-write and waits for an exclusive
// lock on all of it (F_SETLKW or flock(LOCK_EX)). With `catch_alarm` it
// catches a SIGALRM due in 1 s, without SA_RESTART. Its exit status: 0 it
// got the lock, 10 the wait failed with EINTR, 2 open failed, 3 another
// error. The caller reaps it.
pid_t ForkLockWaiter(const std::string& path, LockKind kind, bool catch_alarm);

// The l_type F_GETLK reports for a write lock on the first `len` bytes of
// `fd` (0: the whole file): F_WRLCK or F_RDLCK when another process holds a
// conflicting lock, F_UNLCK when nothing conflicts, -1 if F_GETLK failed.
int ConflictingLock(int fd, off_t len = 0);

}  // namespace mfs::testing

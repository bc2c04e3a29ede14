// /proc/PID/maps parsing. No I/O besides reading the one file.
#pragma once

#include <sys/types.h>

#include <csignal>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "mfs/base/status.h"

namespace mfs::migrate {

struct MapEntry {
  uint64_t start = 0;
  uint64_t end = 0;
  int prot = 0;         // PROT_READ | PROT_WRITE | PROT_EXEC
  bool shared = false;  // 's' (MAP_SHARED) vs 'p'
  uint64_t offset = 0;
  uint64_t dev_major = 0, dev_minor = 0;
  uint64_t inode = 0;
  std::string path;  // "", "[heap]", "[stack]", "[vdso]", "/usr/lib/...", "... (deleted)"

  uint64_t size() const { return end - start; }
  bool anonymous() const { return inode == 0 && (path.empty() || path[0] == '['); }
  bool special() const;  // [vdso], [vvar], [vvar_vclock], [vsyscall], [uprobes]
};

// Parses the text of a maps file. Lines that do not parse are an error.
Result<std::vector<MapEntry>> ParseMaps(const std::string& text);
Result<std::vector<MapEntry>> ReadMaps(pid_t pid);
Result<std::string> ReadFileToString(const std::string& path);
// The threads of process `pid` (entries of /proc/PID/task), or -1.
int CountThreads(pid_t pid);

// Parent, process group and session of `pid` (/proc/PID/stat).
struct ProcIds {
  pid_t ppid = 0, pgrp = 0, session = 0;
};
std::optional<ProcIds> ReadProcIds(pid_t pid);

// POSIX: the process group of `pid` is orphaned when no member has a parent
// in another process group of the same session. False when it cannot be told.
bool ProcessGroupOrphaned(pid_t pid);

// Whether signal `sig` has its default action in process `pid` (neither
// ignored nor caught, /proc/PID/status). False when it cannot be told.
bool DefaultAction(pid_t pid, int sig);

// SIGTSTP, SIGTTIN, SIGTTOU: the stop signals whose default action the
// kernel discards in an orphaned process group (SIGSTOP is never discarded).
inline bool IsJobStopSignal(int sig) { return sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU; }

}  // namespace mfs::migrate

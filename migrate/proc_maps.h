// /proc/PID/maps parsing. No I/O besides reading the one file.
#pragma once

#include <sys/types.h>

#include <cstdint>
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

}  // namespace mfs::migrate

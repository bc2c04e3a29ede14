#include "migrate/proc_maps.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <sstream>

#include "mfs/base/unique_fd.h"

namespace mfs::migrate {

bool MapEntry::special() const {
  return path == "[vdso]" || path == "[vvar]" || path == "[vvar_vclock]" ||
         path == "[vsyscall]" || path == "[uprobes]";
}

Result<std::vector<MapEntry>> ParseMaps(const std::string& text) {
  std::vector<MapEntry> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    MapEntry e;
    char perms[5] = {};
    int name_pos = 0;
    unsigned long long start, end, off, maj, min, ino;
    int n = std::sscanf(line.c_str(), "%llx-%llx %4s %llx %llx:%llx %llu %n", &start, &end, perms,
                        &off, &maj, &min, &ino, &name_pos);
    if (n < 7 || start >= end) return Status::Corruption("maps: cannot parse line: " + line);
    e.start = start;
    e.end = end;
    e.offset = off;
    e.dev_major = maj;
    e.dev_minor = min;
    e.inode = ino;
    e.prot = (perms[0] == 'r' ? PROT_READ : 0) | (perms[1] == 'w' ? PROT_WRITE : 0) |
             (perms[2] == 'x' ? PROT_EXEC : 0);
    e.shared = perms[3] == 's';
    if (name_pos > 0 && static_cast<size_t>(name_pos) < line.size()) e.path = line.substr(name_pos);
    out.push_back(std::move(e));
  }
  return out;
}

Result<std::string> ReadFileToString(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return Status::FromErrno("open " + path);
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno("read " + path);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

Result<std::vector<MapEntry>> ReadMaps(pid_t pid) {
  MFS_ASSIGN_OR_RETURN(std::string text, ReadFileToString("/proc/" + std::to_string(pid) + "/maps"));
  return ParseMaps(text);
}

int CountThreads(pid_t pid) {
  std::unique_ptr<DIR, int (*)(DIR*)> d(opendir(("/proc/" + std::to_string(pid) + "/task").c_str()), closedir);
  if (!d) return -1;
  int n = 0;
  while (dirent* e = readdir(d.get()))
    if (e->d_name[0] != '.') ++n;
  return n;
}

std::optional<ProcIds> ReadProcIds(pid_t pid) {
  auto stat = ReadFileToString("/proc/" + std::to_string(pid) + "/stat");
  if (!stat.ok()) return std::nullopt;
  auto close = stat->rfind(')');  // the command may hold spaces and parentheses
  if (close == std::string::npos) return std::nullopt;
  ProcIds ids;
  char state = 0;
  if (sscanf(stat->c_str() + close + 1, " %c %d %d %d", &state, &ids.ppid, &ids.pgrp, &ids.session) != 4)
    return std::nullopt;
  return ids;
}

bool ProcessGroupOrphaned(pid_t pid) {
  auto self = ReadProcIds(pid);
  if (!self) return false;
  std::unique_ptr<DIR, int (*)(DIR*)> d(opendir("/proc"), closedir);
  if (!d) return false;
  while (dirent* e = readdir(d.get())) {
    pid_t p = static_cast<pid_t>(atoi(e->d_name));
    if (p <= 0) continue;
    auto member = ReadProcIds(p);
    if (!member || member->pgrp != self->pgrp) continue;
    auto parent = ReadProcIds(member->ppid);
    if (parent && parent->pgrp != self->pgrp && parent->session == self->session) return false;
  }
  return true;
}

bool DefaultAction(pid_t pid, int sig) {
  auto status = ReadFileToString("/proc/" + std::to_string(pid) + "/status");
  if (!status.ok() || sig < 1 || sig > 64) return false;
  const uint64_t bit = uint64_t{1} << (sig - 1);
  for (const char* key : {"\nSigIgn:", "\nSigCgt:"}) {
    auto at = status->find(key);
    if (at == std::string::npos) return false;
    if (strtoull(status->c_str() + at + strlen(key), nullptr, 16) & bit) return false;
  }
  return true;
}

}  // namespace mfs::migrate

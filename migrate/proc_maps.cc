#include "migrate/proc_maps.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
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
  DIR* d = opendir(("/proc/" + std::to_string(pid) + "/task").c_str());
  if (!d) return -1;
  int n = 0;
  while (dirent* e = readdir(d))
    if (e->d_name[0] != '.') ++n;
  closedir(d);
  return n;
}

}  // namespace mfs::migrate

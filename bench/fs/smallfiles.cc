// smallfiles DIR [COUNT] [SIZE] — create COUNT files of SIZE bytes in DIR,
// stat each, unlink each; prints "files_per_s=<n> create_s=<t> stat_s=<t>
// unlink_s=<t>" where files/s counts a whole create+stat+unlink cycle.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

double Seconds(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s DIR [COUNT] [SIZE]\n", argv[0]);
    return 2;
  }
  std::string dir = argv[1];
  long count = argc > 2 ? strtol(argv[2], nullptr, 10) : 10000;
  long size = argc > 3 ? strtol(argv[3], nullptr, 10) : 4096;
  if (count <= 0 || count > 10'000'000 || size < 0 || size > (64 << 20)) {
    fprintf(stderr, "%s: COUNT must be 1..10000000 and SIZE 0..64 MiB\n", argv[0]);
    return 2;
  }
  std::vector<char> buf(static_cast<size_t>(size), 'x');
  std::vector<std::string> names;
  names.reserve(static_cast<size_t>(count));
  for (long i = 0; i < count; ++i) names.push_back(dir + "/f" + std::to_string(i));

  auto t0 = std::chrono::steady_clock::now();
  for (const auto& n : names) {
    int fd = open(n.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, buf.data(), buf.size()) != static_cast<ssize_t>(buf.size())) {
      fprintf(stderr, "create %s: %s\n", n.c_str(), strerror(errno));
      return 1;
    }
    close(fd);
  }
  auto t1 = std::chrono::steady_clock::now();
  struct stat st;
  for (const auto& n : names) {
    if (stat(n.c_str(), &st) != 0 || st.st_size != size) {
      fprintf(stderr, "stat %s: %s\n", n.c_str(), strerror(errno));
      return 1;
    }
  }
  auto t2 = std::chrono::steady_clock::now();
  for (const auto& n : names) {
    if (unlink(n.c_str()) != 0) {
      fprintf(stderr, "unlink %s: %s\n", n.c_str(), strerror(errno));
      return 1;
    }
  }
  auto t3 = std::chrono::steady_clock::now();
  printf("files_per_s=%.0f create_s=%.3f stat_s=%.3f unlink_s=%.3f\n",
         static_cast<double>(count) / Seconds(t0, t3), Seconds(t0, t1), Seconds(t1, t2),
         Seconds(t2, t3));
  return 0;
}

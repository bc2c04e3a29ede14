// mfs-bench-readbw FILE CHUNK PASSES [GATE]: opens FILE, waits until GATE
// exists (if given: the benchmark moves the process meanwhile), reads FILE
// once untimed (the page cache where it runs now is warm, as it was at
// home), then PASSES times from the start in CHUNK-byte read()s, and prints
// "<MB/s> <bytes> <seconds> <reads>" on stdout.
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static double Now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char** argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s FILE CHUNK PASSES [GATE]\n", argv[0]);
    return 2;
  }
  int fd = open(argv[1], O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    perror(argv[1]);
    return 1;
  }
  size_t chunk = strtoul(argv[2], NULL, 0);
  int passes = atoi(argv[3]);
  char* buf = malloc(chunk);
  if (!buf) return 1;
  if (argc > 4) {
    struct timespec tick = {0, 10000000L};
    for (int i = 0; i < 6000 && access(argv[4], F_OK) != 0; ++i) nanosleep(&tick, NULL);
  }
  for (ssize_t n; (n = read(fd, buf, chunk)) > 0;) {
  }
  double t0 = Now();
  long long total = 0, reads = 0;
  for (int p = 0; p < passes; ++p) {
    if (lseek(fd, 0, SEEK_SET) != 0) return 1;
    ssize_t n;
    while ((n = read(fd, buf, chunk)) > 0) {
      total += n;
      ++reads;
    }
    if (n < 0) {
      perror("read");
      return 1;
    }
  }
  double dt = Now() - t0;
  printf("%.1f %lld %.3f %lld\n", total / dt / 1e6, total, dt, reads);
  return 0;
}

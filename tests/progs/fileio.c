// A program doing file I/O in small steps, for the DFSA migration tests:
//   mfs-test-fileio IN OUT STEPS DELAY_MS [LATE]
// opens IN and OUT (created, truncated), then STEPS times: reads a 64 KiB
// chunk of IN (read), writes it to OUT (write), prints both offsets
// (lseek) and the chunk's FNV-1a hash, and sleeps DELAY_MS. Half way it
// opens LATE, reads it (read) and prints its hash; at the end it reads LATE
// again with pread and fstat's OUT. With MFS_TEST_DUP set, at three
// quarters it reads 1000 bytes through a dup of IN (the offset is shared); at the end it maps IN's
// first MiB (mmap, MAP_PRIVATE) and prints its hash. Its output depends only on the files,
// so a migrated run must print exactly what an unmigrated one prints.
// With MFS_TEST_GATE=DIR, before each step listed in MFS_TEST_GATE_STEPS
// (comma-separated) it prints "gate N" on stderr and waits (at most 60 s)
// until DIR/N exists: a test moves it at exactly those points.
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static uint64_t Fnv(const unsigned char* p, size_t n, uint64_t h) {
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

static unsigned char buf[65536];

static void Gate(int step) {
  const char* dir = getenv("MFS_TEST_GATE");
  const char* steps = getenv("MFS_TEST_GATE_STEPS");
  if (!dir || !steps) return;
  char want[32];
  snprintf(want, sizeof want, ",%d,", step);
  char list[256];
  snprintf(list, sizeof list, ",%s,", steps);
  if (!strstr(list, want)) return;
  fprintf(stderr, "gate %d\n", step);
  char path[4096];
  snprintf(path, sizeof path, "%s/%d", dir, step);
  struct timespec tick = {0, 10000000L};
  for (int i = 0; i < 6000 && access(path, F_OK) != 0; ++i) nanosleep(&tick, NULL);
}

int main(int argc, char** argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: %s IN OUT STEPS DELAY_MS [LATE]\n", argv[0]);
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  int in = open(argv[1], O_RDONLY | O_CLOEXEC);
  int out = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (in < 0 || out < 0) {
    perror("open");
    return 1;
  }
  int steps = atoi(argv[3]);
  struct timespec delay = {atoi(argv[4]) / 1000, (atoi(argv[4]) % 1000) * 1000000L};
  const char* late_path = argc > 5 ? argv[5] : NULL;
  int late = -1;
  uint64_t late_hash = 0;
  for (int i = 0; i < steps; ++i) {
    Gate(i);
    ssize_t n = read(in, buf, sizeof buf);
    if (n < 0) {
      perror("read");
      return 1;
    }
    if (n > 0 && write(out, buf, (size_t)n) != n) {
      perror("write");
      return 1;
    }
    printf("%d in@%lld out@%lld %016llx\n", i, (long long)lseek(in, 0, SEEK_CUR),
           (long long)lseek(out, 0, SEEK_CUR),
           (unsigned long long)Fnv(buf, (size_t)n, 14695981039346656037ull));
    if (late_path && i == steps / 2) {
      late = open(late_path, O_RDONLY | O_CLOEXEC);
      if (late < 0) {
        perror("open late");
        return 1;
      }
      late_hash = 14695981039346656037ull;
      while ((n = read(late, buf, sizeof buf)) > 0) late_hash = Fnv(buf, (size_t)n, late_hash);
      printf("late fd %d read %016llx at %lld\n", late, (unsigned long long)late_hash,
             (long long)lseek(late, 0, SEEK_CUR));
    }
    if (i == steps * 3 / 4 && getenv("MFS_TEST_DUP")) {
      // A dup of the input: shares its offset (one open file description).
      int d = dup(in);
      ssize_t m = read(d, buf, 1000);
      printf("dup read %zd, in@%lld\n", m, (long long)lseek(in, 0, SEEK_CUR));
      close(d);
    }
    nanosleep(&delay, NULL);
  }
  if (late >= 0) {
    printf("late fd %d still at %lld\n", late, (long long)lseek(late, 0, SEEK_CUR));
    uint64_t h = 14695981039346656037ull;
    off_t at = 0;
    ssize_t n;
    while ((n = pread(late, buf, sizeof buf, at)) > 0) {
      h = Fnv(buf, (size_t)n, h);
      at += n;
    }
    printf("late pread %016llx same %d\n", (unsigned long long)h, h == late_hash);
    close(late);
  }
  {
    // A private read-only mapping of the input: its first MiB.
    struct stat in_st;
    if (fstat(in, &in_st) != 0) {
      perror("fstat in");
      return 1;
    }
    size_t len = in_st.st_size < (1 << 20) ? (size_t)in_st.st_size : (1 << 20);
    if (len > 0) {
      unsigned char* m = mmap(NULL, len, PROT_READ, MAP_PRIVATE, in, 0);
      if (m == MAP_FAILED) {
        perror("mmap");
        return 1;
      }
      printf("mmap %016llx\n", (unsigned long long)Fnv(m, len, 14695981039346656037ull));
      munmap(m, len);
    }
  }
  struct stat st;
  if (fstat(out, &st) != 0) {
    perror("fstat");
    return 1;
  }
  printf("out size %lld\n", (long long)st.st_size);
  if (close(out) != 0 || close(in) != 0) {
    perror("close");
    return 1;
  }
  return 0;
}

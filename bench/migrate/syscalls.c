// bench/migrate: mean cost of getpid() (raw system call), native at home and
// forwarded to the deputy when the process runs remote; with `write`, of a
// 64-byte write() to /dev/null (opened at home: a forwarded call with an
// in-buffer) instead.
//   mfs-bench-syscalls CALLS [SLEEP_MS [write]]
#include <stdio.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char** argv) {
  long calls = argc > 1 ? atol(argv[1]) : 100000;
  const int write_mode = argc > 3 && strcmp(argv[3], "write") == 0;
  int null_fd = write_mode ? open("/dev/null", O_WRONLY | O_CLOEXEC) : -1;
  if (write_mode && null_fd < 0) return 1;
  // Wait to be moved (the runner moves us while we sleep).
  if (argc > 2) {
    struct timespec d = {atol(argv[2]) / 1000, (atol(argv[2]) % 1000) * 1000000L};
    while (nanosleep(&d, &d) != 0) {
    }
  }
  struct timespec a, b;
  if (write_mode) {
    char buf[64];
    memset(buf, 'x', sizeof buf);
    long bad = 0;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < calls; ++i) bad += write(null_fd, buf, sizeof buf) != (ssize_t)sizeof buf;
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ns = ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / calls;
    printf("write_ns %.1f failed %ld\n", ns, bad);
    return bad != 0;
  }
  clock_gettime(CLOCK_MONOTONIC, &a);
  long s = 0;
  for (long i = 0; i < calls; ++i) s += syscall(SYS_getpid);
  clock_gettime(CLOCK_MONOTONIC, &b);
  double ns = ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / calls;
  printf("getpid_ns %.1f pid %ld\n", ns, s / calls);
  return 0;
}

// bench/migrate: mean cost of getpid() (raw system call), native at home and
// forwarded to the deputy when the process runs remote.
//   mfs-bench-syscalls CALLS
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char** argv) {
  long calls = argc > 1 ? atol(argv[1]) : 100000;
  // Wait to be moved (the runner moves us while we sleep).
  if (argc > 2) {
    struct timespec d = {atol(argv[2]) / 1000, (atol(argv[2]) % 1000) * 1000000L};
    while (nanosleep(&d, &d) != 0) {
    }
  }
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  long s = 0;
  for (long i = 0; i < calls; ++i) s += syscall(SYS_getpid);
  clock_gettime(CLOCK_MONOTONIC, &b);
  double ns = ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / calls;
  printf("getpid_ns %.1f pid %ld\n", ns, s / calls);
  return 0;
}

// bench/migrate: a process with MIB mebibytes of dirty private memory that
// measures, on its own wall clock, the longest pause it sees (a migration's
// downtime as the program experiences it).
//   mfs-bench-dirty MIB SECONDS [REWRITE_MIB_PER_S]
// With REWRITE_MIB_PER_S, it also rewrites its pages, one after another, at
// that rate (a program whose memory changes while it is being moved).
// It stops after SECONDS, or at SIGUSR1 (which the benchmark sends once the
// move is done, so that a long preparation before the freeze never outlasts
// the program).
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static volatile sig_atomic_t stop;
static void OnUsr1(int sig) {
  (void)sig;
  stop = 1;
}

int main(int argc, char** argv) {
  signal(SIGUSR1, OnUsr1);
  size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 16;
  double seconds = argc > 2 ? atof(argv[2]) : 3;
  double rewrite_pages_per_s = argc > 3 ? atof(argv[3]) * 256 : 0;
  size_t n = mib << 20;
  uint8_t* p = malloc(n);
  if (!p) return 2;
  for (size_t i = 0; i < n; i += 4096) p[i] = (uint8_t)(i >> 12);  // every page dirty
  printf("ready\n");
  fflush(stdout);
  double start = now(), last = start, max_gap = 0;
  uint64_t sum = 0;
  size_t i = 0;
  uint64_t rewritten = 0;
  while (!stop && last - start < seconds) {
    sum += p[i];  // keep using the memory
    i = (i + 4096 * 7) % n;
    double t = now();
    for (uint64_t due = (uint64_t)((t - start) * rewrite_pages_per_s); rewritten < due; ++rewritten)
      p[(rewritten * 4096) % n] += 1;
    if (t - last > max_gap) max_gap = t - last;
    last = t;
  }
  printf("max_gap_ms %.3f sum %llu rewritten_mib %.1f\n", max_gap * 1e3, (unsigned long long)sum,
         rewritten / 256.0);
  return 0;
}

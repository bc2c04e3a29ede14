// A CPU-bound test program for migration: prints a running counter and a
// checksum of its heap and stack state, one line per step, flushed. Its whole
// output is a pure function of its arguments, so a migrated run must print
// byte for byte what an unmigrated run prints.
//   mfs-test-counter STEPS [WORK] [HEAP_MIB]
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char** argv) {
  long steps = argc > 1 ? atol(argv[1]) : 100;
  long work = argc > 2 ? atol(argv[2]) : 200000;
  long heap_mib = argc > 3 ? atol(argv[3]) : 1;
  size_t n = (size_t)heap_mib << 20;
  uint8_t* heap = malloc(n);
  if (!heap) return 2;
  for (size_t i = 0; i < n; ++i) heap[i] = (uint8_t)(i * 7);
  uint64_t h = 1469598103934665603ull;
  double x = 1.0;
  for (long s = 0; s < steps; ++s) {
    for (long i = 0; i < work; ++i) {
      size_t k = (size_t)((h >> 7) % n);
      heap[k] ^= (uint8_t)h;
      h = (h ^ heap[k]) * 1099511628211ull;
      x = x * 1.0000001 + 1e-9;  // keeps SSE state live across a freeze
    }
    printf("%ld %016llx %.9f\n", s, (unsigned long long)h, x);
    fflush(stdout);
  }
  free(heap);
  return (int)(h & 0x3f);
}

// A test program for migration's prepared memory: several private anonymous
// regions of different shapes, checked against their pattern for SECONDS
// while the test moves the program, then reported. Its stdout is a pure
// function of its arguments (an unmigrated run prints the same bytes); the
// regions' addresses go to stderr ("A 0x... 0x..." per region) for the test
// to find them in /proc/PID/maps.
//   mfs-test-regions SECONDS
//   A  6 MiB read-write, every page written
//   B  4 MiB read-write, first and last MiB written, the 2 MiB between never
//      touched (a hole of missing pages: must read back as zeros)
//   C  3 MiB written, its middle MiB unmapped (two mappings with a gap)
//   D  2 MiB written, then PROT_READ (a write must still fault)
//   H  small malloc blocks (the brk heap)
//   E  2 MiB rewritten all the time (8 pages a round, new contents), so that
//      pages change between a pre-copy and the freeze
//   F  1 MiB filled and freed (MADV_DONTNEED) in turn every 10 rounds, so
//      that pre-copied pages vanish before the freeze
// Each round first checks E and F against what the program last did to them
// (a stale page shows as a mismatch), every 20th round A-D and H too.
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define MIB (1024 * 1024)
#define PAGE 4096

static sigjmp_buf segv_jump;
static void OnSegv(int sig) {
  (void)sig;
  siglongjmp(segv_jump, 1);
}

static double Now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static uint8_t Byte(char region, size_t off) { return (uint8_t)(region * 31 + off * 7 + (off >> 12)); }

static void Fill(uint8_t* p, char region, size_t from, size_t to) {
  for (size_t i = from; i < to; ++i) p[i] = Byte(region, i);
}

// Mismatching bytes of [from, to) against the pattern (or zeros).
static size_t Check(const uint8_t* p, char region, size_t from, size_t to, int zero) {
  size_t bad = 0;
  for (size_t i = from; i < to; ++i) bad += p[i] != (zero ? 0 : Byte(region, i));
  return bad;
}

static uint8_t* Map(size_t n) {
  void* p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) exit(2);
  return p;
}

int main(int argc, char** argv) {
  double seconds = argc > 1 ? atof(argv[1]) : 3;
  uint8_t* a = Map(6 * MIB);
  uint8_t* b = Map(4 * MIB);
  uint8_t* c = Map(3 * MIB);
  uint8_t* d = Map(2 * MIB);
  uint8_t* e = Map(2 * MIB);  // before the gap in C is made: nothing must land in it
  uint8_t* f = Map(MIB);
  Fill(a, 'A', 0, 6 * MIB);
  Fill(b, 'B', 0, MIB);
  Fill(b, 'B', 3 * MIB, 4 * MIB);
  Fill(c, 'C', 0, 3 * MIB);
  if (munmap(c + MIB, MIB) != 0) return 2;
  Fill(d, 'D', 0, 2 * MIB);
  if (mprotect(d, 2 * MIB, PROT_READ) != 0) return 2;
  uint8_t* h[64];
  for (int i = 0; i < 64; ++i) {
    h[i] = malloc(3000);
    if (!h[i]) return 2;
    Fill(h[i], 'H' + i, 0, 3000);
  }
  fprintf(stderr, "A %p %p\nB %p %p\nC %p %p\nC %p %p\nD %p %p\n", (void*)a, (void*)(a + 6 * MIB), (void*)b,
          (void*)(b + 4 * MIB), (void*)c, (void*)(c + MIB), (void*)(c + 2 * MIB), (void*)(c + 3 * MIB),
          (void*)d, (void*)(d + 2 * MIB));
  fflush(stderr);
  printf("ready\n");
  fflush(stdout);

  enum { kEPages = 2 * MIB / PAGE };
  static uint32_t e_round[kEPages];  // the round that last wrote each page of E (0: none)
  int f_full = 0;

  size_t bad = 0;
  uint32_t rounds = 0;
  double start = Now();
  while (Now() - start < seconds) {
    ++rounds;
    for (size_t p = 0; p < kEPages; ++p) {
      const uint8_t* q = e + p * PAGE;
      const uint8_t want = (uint8_t)(e_round[p] * 17 + p);
      for (size_t i = 0; i < PAGE; ++i) bad += q[i] != (e_round[p] ? (uint8_t)(want + i) : 0);
    }
    bad += Check(f, 'F', 0, MIB, !f_full);
    if (rounds % 20 == 0) {
      bad += Check(a, 'A', 0, 6 * MIB, 0);
      bad += Check(b, 'B', 0, MIB, 0) + Check(b, 'B', MIB, 3 * MIB, 1) + Check(b, 'B', 3 * MIB, 4 * MIB, 0);
      bad += Check(c, 'C', 0, MIB, 0) + Check(c, 'C', 2 * MIB, 3 * MIB, 0);
      bad += Check(d, 'D', 0, 2 * MIB, 0);
      for (int i = 0; i < 64; ++i) bad += Check(h[i], 'H' + i, 0, 3000, 0);
      // Writes keep working: one page of A rewritten.
      size_t page = (rounds * 13) % (6 * MIB / PAGE);
      Fill(a, 'A', page * PAGE, (page + 1) * PAGE);
    }
    for (int k = 0; k < 8; ++k) {
      size_t p = (rounds * 8 + k) * 37 % kEPages;
      e_round[p] = rounds;
      const uint8_t want = (uint8_t)(rounds * 17 + p);
      for (size_t i = 0; i < PAGE; ++i) e[p * PAGE + i] = (uint8_t)(want + i);
    }
    if (rounds % 10 == 0) {
      if (f_full) madvise(f, MIB, MADV_DONTNEED);
      else Fill(f, 'F', 0, MIB);
      f_full = !f_full;
    }
    struct timespec pause = {0, 1000 * 1000};
    nanosleep(&pause, NULL);
  }
  printf("pattern mismatches %zu\n", bad);

  // D is still read-only; the hole in C is still unmapped.
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = OnSegv;
  sa.sa_flags = SA_NODEFER;
  sigaction(SIGSEGV, &sa, NULL);
  int faulted = 0;
  if (sigsetjmp(segv_jump, 1) == 0) {
    ((volatile uint8_t*)d)[100] = 1;
  } else {
    faulted = 1;
  }
  printf("write to the read-only region faults: %s\n", faulted ? "yes" : "no");
  faulted = 0;
  if (sigsetjmp(segv_jump, 1) == 0) {
    (void)((volatile uint8_t*)c)[MIB + 5];
  } else {
    faulted = 1;
  }
  printf("read of the unmapped gap faults: %s\n", faulted ? "yes" : "no");
  // The hole in B can be written now, and reads back.
  memset(b + 2 * MIB, 0x5a, PAGE);
  printf("hole written: %s\n", b[2 * MIB + 17] == 0x5a ? "yes" : "no");
  return bad == 0 ? 0 : 1;
}

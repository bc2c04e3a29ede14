// A multi-threaded program: four threads sum ranges, the main thread prints.
//   mfs-test-threads ROUNDS
// Each round also sleeps 5 ms, so the program lives at least ROUNDS * 5 ms
// however fast or loaded the machine is (tests need it alive to act on it).
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static long rounds;
static uint64_t sums[4];
static void* work(void* arg) {
  long id = (long)arg;
  uint64_t s = 0;
  const struct timespec pause = {0, 5 * 1000 * 1000};
  for (long r = 0; r < rounds; ++r) {
    for (long i = 0; i < 20000; ++i) s += (uint64_t)(i ^ (r * 31 + id));
    nanosleep(&pause, NULL);
  }
  sums[id] = s;
  return NULL;
}

int main(int argc, char** argv) {
  rounds = argc > 1 ? atol(argv[1]) : 100;
  pthread_t t[4];
  for (long i = 0; i < 4; ++i) pthread_create(&t[i], NULL, work, (void*)i);
  for (int i = 0; i < 4; ++i) pthread_join(t[i], NULL);
  for (int i = 0; i < 4; ++i) printf("%d %llu\n", i, (unsigned long long)sums[i]);
  return 0;
}

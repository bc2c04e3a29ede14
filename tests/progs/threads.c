// A multi-threaded program: THREADS workers take turns (a mutex and a
// condition variable: futex waits), each printing its line on its turn (so
// every thread makes forwarded writes when remote), computing between turns
// and sleeping (nanosleep) every round, with a thread-local counter (fs base);
// the main thread waits in pthread_join. Output depends only on the
// arguments.
//   mfs-test-threads ROUNDS [THREADS]
// Each round sleeps 2 ms in every worker, so the program lives at least
// ROUNDS * 2 ms however fast the machine is (tests need it alive to act on it).
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define MAX_THREADS 16

static long rounds;
static int nthreads;
static uint64_t sums[MAX_THREADS];
static long turn;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static __thread long tls_rounds;

static void* work(void* arg) {
  long id = (long)arg;
  uint64_t s = 0;
  const struct timespec pause = {0, 2 * 1000 * 1000};
  for (long r = 0; r < rounds; ++r) {
    for (long i = 0; i < 20000; ++i) s += (uint64_t)(i ^ (r * 31 + id));
    nanosleep(&pause, NULL);
    pthread_mutex_lock(&mu);
    while (turn != r * nthreads + id) pthread_cond_wait(&cv, &mu);
    printf("round %ld thread %ld sum %016llx\n", r, id, (unsigned long long)s);
    fflush(stdout);
    ++turn;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    ++tls_rounds;
  }
  sums[id] = s + (uint64_t)tls_rounds;
  return NULL;
}

int main(int argc, char** argv) {
  rounds = argc > 1 ? atol(argv[1]) : 100;
  nthreads = argc > 2 ? atoi(argv[2]) : 4;
  if (nthreads < 1 || nthreads > MAX_THREADS) return 2;
  pthread_t t[MAX_THREADS];
  for (long i = 0; i < nthreads; ++i) pthread_create(&t[i], NULL, work, (void*)i);
  for (int i = 0; i < nthreads; ++i) pthread_join(t[i], NULL);
  uint64_t all = 0;
  for (int i = 0; i < nthreads; ++i) {
    printf("%d %llu\n", i, (unsigned long long)sums[i]);
    all ^= sums[i];
  }
  return (int)(all % 100) + 3;
}

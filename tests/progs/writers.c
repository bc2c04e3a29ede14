// Threads that make forwarded calls at the same time: THREADS threads each
// write LINES lines ("thread T line L") to stdout with write(), sleeping
// SLEEP_US after each, all at once; then the main thread prints "done".
// Sorted, the output depends only on the arguments; every line exactly once.
//   mfs-test-writers THREADS LINES SLEEP_US
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long lines, sleep_us;

static void* work(void* arg) {
  long id = (long)arg;
  const struct timespec pause = {sleep_us / 1000000, (sleep_us % 1000000) * 1000};
  for (long l = 0; l < lines; ++l) {
    char buf[64];
    int n = snprintf(buf, sizeof buf, "thread %ld line %ld\n", id, l);
    if (write(1, buf, (size_t)n) != n) exit(3);
    nanosleep(&pause, NULL);
  }
  return NULL;
}

int main(int argc, char** argv) {
  if (argc != 4) return 2;
  int threads = atoi(argv[1]);
  lines = atol(argv[2]);
  sleep_us = atol(argv[3]);
  if (threads < 1 || threads > 16) return 2;
  pthread_t t[16];
  for (long i = 0; i < threads; ++i)
    if (pthread_create(&t[i], NULL, work, (void*)i) != 0) return 4;
  for (int i = 0; i < threads; ++i) pthread_join(t[i], NULL);
  if (write(1, "done\n", 5) != 5) return 3;
  return 0;
}

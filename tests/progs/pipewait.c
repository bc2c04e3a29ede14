// Threads that wait on one another through pipes the process created: PAIRS
// pairs of threads, each with its own pipe; in each of ROUNDS rounds the
// reader blocks in read() on the empty pipe while its writer sleeps DELAY_MS
// and then writes "pair P round R\n" to it. The readers keep what they read;
// once every thread is joined, the main thread prints it, pair by pair, and
// "done". The output depends only on the arguments.
//
// Migrated, a reader's read and its writer's write are forwarded calls of two
// threads: if the home ran them one after the other, the read would wait for
// a write queued behind it, forever.
//   mfs-test-pipewait PAIRS ROUNDS DELAY_MS
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { kMaxPairs = 8, kBuf = 4096 };

struct pair {
  long id;
  int fds[2];
  char got[kBuf];
  size_t len;
};

static long rounds, delay_ms;
static struct pair pairs[kMaxPairs];

static void* reader(void* arg) {
  struct pair* p = arg;
  for (long r = 0; r < rounds; ++r) {
    char line[64];
    int want = snprintf(line, sizeof line, "pair %ld round %ld\n", p->id, r);
    size_t have = 0;
    while (have < (size_t)want) {  // a pipe may hand a line over in pieces
      ssize_t n = read(p->fds[0], line + have, (size_t)want - have);
      if (n <= 0) exit(3);
      have += (size_t)n;
    }
    if (p->len + have > kBuf) exit(4);
    memcpy(p->got + p->len, line, have);
    p->len += have;
  }
  return NULL;
}

static void* writer(void* arg) {
  struct pair* p = arg;
  const struct timespec pause = {delay_ms / 1000, (delay_ms % 1000) * 1000000};
  for (long r = 0; r < rounds; ++r) {
    nanosleep(&pause, NULL);
    char line[64];
    int n = snprintf(line, sizeof line, "pair %ld round %ld\n", p->id, r);
    if (write(p->fds[1], line, (size_t)n) != n) exit(5);
  }
  return NULL;
}

int main(int argc, char** argv) {
  if (argc != 4) return 2;
  int n = atoi(argv[1]);
  rounds = atol(argv[2]);
  delay_ms = atol(argv[3]);
  if (n < 1 || n > kMaxPairs || rounds < 1 || rounds > 100 || delay_ms < 0) return 2;
  pthread_t t[2 * kMaxPairs];
  for (int i = 0; i < n; ++i) {
    pairs[i].id = i;
    if (pipe(pairs[i].fds) != 0) return 6;
  }
  for (int i = 0; i < n; ++i) {
    if (pthread_create(&t[2 * i], NULL, reader, &pairs[i]) != 0) return 7;
    if (pthread_create(&t[2 * i + 1], NULL, writer, &pairs[i]) != 0) return 7;
  }
  for (int i = 0; i < 2 * n; ++i) pthread_join(t[i], NULL);
  for (int i = 0; i < n; ++i)
    if (write(1, pairs[i].got, pairs[i].len) != (ssize_t)pairs[i].len) return 3;
  if (write(1, "done\n", 5) != 5) return 3;
  return 0;
}

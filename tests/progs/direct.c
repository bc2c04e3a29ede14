// Forwarded calls with in- and out-buffers of every shape the direct path
// carries (migrate/deputy.h): a large write, reads cut to their return value,
// reads past the end, a failing call, fixed-size results, vectored I/O, a
// pipe, a directory listing. Prints what each returned, so that a migrated
// run can be compared byte for byte with one at home.
//   mfs-test-direct DIR WAIT_MS [END_MS [closeall]]   (sleeps WAIT_MS first:
//   the test moves it then; and END_MS at the end, so that the test can look
//   at it; with closeall, first closes every fd from 3 up: close_range)
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static unsigned long sum(const unsigned char* p, size_t n) {
  unsigned long h = 5381;
  for (size_t i = 0; i < n; ++i) h = h * 33 + p[i];
  return h;
}

static int by_name(const void* a, const void* b) { return strcmp(*(char* const*)a, *(char* const*)b); }

int main(int argc, char** argv) {
  if (argc < 3 || argc > 5) return 2;
  long ms = atol(argv[2]);
  struct timespec d = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&d, &d) != 0) {
  }
  if (argc == 5 && strcmp(argv[4], "closeall") == 0)
    printf("close_range %ld\n", (long)syscall(SYS_close_range, 3, ~0u, 0));
  char path[4096];
  snprintf(path, sizeof path, "%s/direct.dat", argv[1]);
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return 3;
  printf("open fd %d\n", fd);  // the numbers the program gets do not change
  static unsigned char big[300000], back[300000];
  for (size_t i = 0; i < sizeof big; ++i) big[i] = (unsigned char)(i * 7 + i / 251);
  ssize_t n = write(fd, big, sizeof big);
  printf("write %zd\n", n);
  n = pread(fd, back, 4096, 1234);
  printf("pread %zd sum %lu\n", n, sum(back, 4096));
  memset(back, 0, sizeof back);
  n = pread(fd, back, sizeof back, 0);
  printf("pread all %zd same %d\n", n, n == (ssize_t)sizeof big && memcmp(back, big, sizeof big) == 0);
  printf("pread past end %zd\n", pread(fd, back, 100, 1 << 20));
  errno = 0;
  n = read(987, back, 10);
  printf("read bad fd %zd errno %d\n", n, errno);
  struct stat st;
  int r = fstat(fd, &st);
  printf("fstat %d size %lld reg %d\n", r, (long long)st.st_size, S_ISREG(st.st_mode));
  printf("lseek %lld\n", (long long)lseek(fd, 100, SEEK_SET));
  unsigned char a[10], b[20], c[30];
  struct iovec iov[3] = {{a, sizeof a}, {b, sizeof b}, {c, sizeof c}};
  n = readv(fd, iov, 3);
  printf("readv %zd sums %lu %lu %lu\n", n, sum(a, sizeof a), sum(b, sizeof b), sum(c, sizeof c));
  struct iovec wv[2] = {{"hello, ", 7}, {"vectored world\n", 15}};
  printf("lseek %lld\n", (long long)lseek(fd, 5, SEEK_SET));
  printf("writev %zd\n", writev(fd, wv, 2));
  unsigned char pa[7], pb2[9];
  struct iovec piov[2] = {{pa, sizeof pa}, {pb2, sizeof pb2}};
  n = preadv(fd, piov, 2, 3);
  printf("preadv %zd sums %lu %lu\n", n, sum(pa, sizeof pa), sum(pb2, sizeof pb2));
  struct iovec pw[2] = {{"posit", 5}, {"ioned", 5}};
  printf("pwritev %zd\n", pwritev(fd, pw, 2, 40));
  printf("offset kept %lld\n", (long long)lseek(fd, 0, SEEK_CUR));  // p-variants leave it
  char small[64] = {0};
  n = pread(fd, small, 22, 5);
  printf("pread small %zd '%.21s'\n", n, small);
  char cwd[4096];
  printf("getcwd %s\n", getcwd(cwd, sizeof cwd) ? cwd : "(failed)");
  int p[2];
  int pr = pipe2(p, O_CLOEXEC);
  printf("pipe %d fds %d %d\n", pr, p[0], p[1]);
  printf("pipe write %zd\n", write(p[1], "through the pipe", 16));
  char pb[64] = {0};
  n = read(p[0], pb, sizeof pb);
  printf("pipe read %zd '%s'\n", n, pb);
  printf("getpid same %d\n", (long)syscall(SYS_getpid) == (long)getpid());
  DIR* dir = opendir(argv[1]);
  char* names[64];
  int k = 0;
  for (struct dirent* e; dir && k < 64 && (e = readdir(dir));) names[k++] = strdup(e->d_name);
  if (dir) closedir(dir);
  qsort(names, k, sizeof names[0], by_name);
  printf("dir");
  for (int i = 0; i < k; ++i) printf(" %s", names[i]);
  printf("\n");
  close(p[0]);
  close(p[1]);
  close(fd);
  fflush(stdout);
  ms = argc >= 4 ? atol(argv[3]) : 0;
  d = (struct timespec){ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&d, &d) != 0) {
  }
  return 0;
}

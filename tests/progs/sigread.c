// Blocking forwarded calls cut by signals: a SIGUSR1 handler (SA_RESTART)
// counts; the program opens FIFO (blocks until a writer comes), reads from
// it until end of file and prints each chunk with the count so far.
// Output depends only on what is written and when the signals come.
// With `norestart` the handler has no SA_RESTART: a cut read fails with
// EINTR, which the program prints and reads again.
//   mfs-test-sigread FIFO [norestart]
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t usr1;
static void on_usr1(int s) { (void)s; usr1++; }

int main(int argc, char** argv) {
  if (argc != 2 && argc != 3) return 2;
  const int restart = !(argc == 3 && strcmp(argv[2], "norestart") == 0);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_usr1;
  sa.sa_flags = restart ? SA_RESTART : 0;
  sigaction(SIGUSR1, &sa, NULL);
  printf("ready\n");
  fflush(stdout);
  int fd = open(argv[1], O_RDONLY);
  if (fd < 0) return 3;
  char buf[256];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf - 1);
    if (n < 0 && errno == EINTR && !restart) {
      printf("eintr usr1=%d\n", (int)usr1);
      fflush(stdout);
      continue;
    }
    if (n < 0) return 4;
    if (n == 0) break;
    buf[n] = 0;
    if (n > 0 && buf[n - 1] == '\n') buf[n - 1] = 0;
    printf("got %s usr1=%d\n", buf, (int)usr1);
    fflush(stdout);
  }
  printf("end usr1=%d\n", (int)usr1);
  return 0;
}

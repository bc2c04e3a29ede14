// Timers and signal handlers across migration: an ITIMER_REAL tick counted by
// a SIGALRM handler, SIGUSR1 raised by the program itself (through kill of its
// own pid), an alternate signal stack, and getpid() printed at every step
// (it must stay the home pid). Output depends only on the arguments and pid.
//   mfs-test-sigtimer STEPS
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

static volatile sig_atomic_t ticks, usr1;
static void on_alarm(int s) { (void)s; ticks++; }
static void on_usr1(int s) { (void)s; usr1++; }

int main(int argc, char** argv) {
  long steps = argc > 1 ? atol(argv[1]) : 50;
  static char altstack[65536];
  stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack};
  sigaltstack(&ss, NULL);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_alarm;
  sa.sa_flags = SA_RESTART | SA_ONSTACK;
  sigaction(SIGALRM, &sa, NULL);
  sa.sa_handler = on_usr1;
  sigaction(SIGUSR1, &sa, NULL);
  struct itimerval it = {{0, 2000}, {0, 2000}};
  setitimer(ITIMER_REAL, &it, NULL);
  pid_t me = getpid();
  uint64_t h = 7;
  for (long s = 0; s < steps; ++s) {
    long seen = ticks;
    while (ticks < seen + 5) {  // wait for five ticks, computing
      for (int i = 0; i < 1000; ++i) h = h * 6364136223846793005ull + 1442695040888963407ull;
    }
    kill(me, SIGUSR1);
    printf("%ld pid-ok=%d usr1=%d h=%016llx\n", s, getpid() == me, (int)usr1 == (int)(s + 1),
           (unsigned long long)(s * 0x9e3779b97f4a7c15ull));
    fflush(stdout);
  }
  (void)h;
  return (int)(usr1 & 0x7f);
}

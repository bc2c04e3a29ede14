// bench/migrate: the floor of a forwarded call on this machine, measured in
// the same run: one SECCOMP_RET_USER_NOTIF round trip (a trapped getppid
// answered by a supervisor process), one SECCOMP_RET_TRACE round trip (a
// ptrace stop), and one loopback TCP round trip (1 byte each way).
//   mfs-bench-floor ROUNDS
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static int install(unsigned action, unsigned flags) {
  struct sock_filter f[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getppid, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, action),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = {4, f};
  prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
  return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
}

static void send_fd(int sock, int fd) {
  char c = 0;
  struct iovec iov = {&c, 1};
  char ctl[CMSG_SPACE(sizeof(int))];
  struct msghdr m = {0};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = ctl;
  m.msg_controllen = sizeof ctl;
  struct cmsghdr* h = CMSG_FIRSTHDR(&m);
  h->cmsg_level = SOL_SOCKET;
  h->cmsg_type = SCM_RIGHTS;
  h->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(h), &fd, sizeof fd);
  sendmsg(sock, &m, 0);
}
static int recv_fd(int sock) {
  char c;
  struct iovec iov = {&c, 1};
  char ctl[CMSG_SPACE(sizeof(int))];
  struct msghdr m = {0};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = ctl;
  m.msg_controllen = sizeof ctl;
  if (recvmsg(sock, &m, 0) <= 0) return -1;
  int fd;
  memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&m)), sizeof fd);
  return fd;
}

static double user_notif(long rounds) {
  int sv[2], res[2];
  socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
  pipe(res);
  pid_t pid = fork();
  if (pid == 0) {
    int fd = install(SECCOMP_RET_USER_NOTIF, SECCOMP_FILTER_FLAG_NEW_LISTENER);
    send_fd(sv[1], fd);
    close(fd);
    double t = now();
    for (long i = 0; i < rounds; ++i) syscall(SYS_getppid);
    double us = (now() - t) / rounds * 1e6;
    write(res[1], &us, sizeof us);
    _exit(0);
  }
  int fd = recv_fd(sv[0]);
  struct seccomp_notif req;
  struct seccomp_notif_resp resp;
  for (long i = 0; i < rounds; ++i) {
    memset(&req, 0, sizeof req);
    if (ioctl(fd, SECCOMP_IOCTL_NOTIF_RECV, &req) != 0) break;
    memset(&resp, 0, sizeof resp);
    resp.id = req.id;
    resp.val = 1;
    ioctl(fd, SECCOMP_IOCTL_NOTIF_SEND, &resp);
  }
  double us = -1;
  read(res[0], &us, sizeof us);
  waitpid(pid, NULL, 0);
  return us;
}

static double ret_trace(long rounds) {
  int res[2];
  pipe(res);
  pid_t pid = fork();
  if (pid == 0) {
    ptrace(PTRACE_TRACEME, 0, 0, 0);
    raise(SIGSTOP);
    install(SECCOMP_RET_TRACE, 0);
    double t = now();
    for (long i = 0; i < rounds; ++i) syscall(SYS_getppid);
    double us = (now() - t) / rounds * 1e6;
    write(res[1], &us, sizeof us);
    _exit(0);
  }
  int st;
  waitpid(pid, &st, 0);
  ptrace(PTRACE_SETOPTIONS, pid, 0, PTRACE_O_TRACESECCOMP | PTRACE_O_EXITKILL);
  ptrace(PTRACE_CONT, pid, 0, 0);
  for (;;) {
    if (waitpid(pid, &st, 0) < 0 || WIFEXITED(st) || WIFSIGNALED(st)) break;
    int sig = WSTOPSIG(st);
    ptrace(PTRACE_CONT, pid, 0, (st >> 16) ? 0 : (sig == SIGTRAP ? 0 : sig));
  }
  double us = -1;
  read(res[0], &us, sizeof us);
  return us;
}

static double tcp_rtt(long rounds) {
  int l = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  bind(l, (struct sockaddr*)&a, sizeof a);
  socklen_t len = sizeof a;
  getsockname(l, (struct sockaddr*)&a, &len);
  listen(l, 1);
  pid_t pid = fork();
  if (pid == 0) {
    int c = socket(AF_INET, SOCK_STREAM, 0);
    connect(c, (struct sockaddr*)&a, sizeof a);
    int one = 1;
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char b;
    while (read(c, &b, 1) == 1) write(c, &b, 1);
    _exit(0);
  }
  int s = accept(l, NULL, NULL);
  int one = 1;
  setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  char b = 'x';
  double t = now();
  for (long i = 0; i < rounds; ++i) {
    write(s, &b, 1);
    read(s, &b, 1);
  }
  double us = (now() - t) / rounds * 1e6;
  close(s);
  close(l);
  waitpid(pid, NULL, 0);
  return us;
}

int main(int argc, char** argv) {
  long rounds = argc > 1 ? atol(argv[1]) : 20000;
  printf("user_notif_us %.2f\n", user_notif(rounds));
  printf("ret_trace_us %.2f\n", ret_trace(rounds));
  printf("tcp_rtt_us %.2f\n", tcp_rtt(rounds));
  return 0;
}

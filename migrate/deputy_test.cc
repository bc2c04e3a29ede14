// The deputy's loop (DeputyChannel) in a real traced process: calls the
// home supervisor submits, and direct calls read from and answered on its
// own TCP socket, as the guest supervisor sends them.
#include "migrate/deputy.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "mfs/base/unique_fd.h"
#include "migrate/arch.h"
#include "migrate/checkpoint.h"
#include "migrate/kernel_probe.h"
#include "migrate/tracee.h"

namespace mfs::migrate {
namespace {

// A direct call as the guest lays it out (see guest_supervisor.cc SendDirect):
// msghdr at the area's start, iovecs at 64, in-buffers, then out-buffers.
struct Call {
  long nr = 0;
  uint64_t args[6] = {};
  std::string in;  // one in-buffer (argument in_arg), or none
  int in_arg = -1;
  uint32_t out_size = 0;  // one out-buffer (argument out_arg), cut to ret
  int out_arg = -1;
};

std::string Request(const DirectHello& h, uint32_t seq, Call c) {
  const uint64_t iov_at = 64, nout = c.out_arg >= 0 ? 1 : 0;
  uint64_t at = (iov_at + 16 * (1 + nout) + 15) & ~15ull;
  const uint64_t in_at = at;
  at += (c.in.size() + 15) & ~15ull;
  const uint64_t out_at = at;
  std::string in(out_at, '\0');
  if (c.in_arg >= 0) {
    std::memcpy(in.data() + in_at, c.in.data(), c.in.size());
    c.args[c.in_arg] = h.area + in_at;
  }
  std::vector<uint64_t> iov = {h.block + kDirectReplyHeaderOffset, sizeof(DirectReplyHeader)};
  if (c.out_arg >= 0) {
    c.args[c.out_arg] = h.area + out_at;
    iov.push_back(h.area + out_at);
    iov.push_back(c.out_size);
  }
  uint64_t msg[7] = {0, 0, h.area + iov_at, iov.size() / 2, 0, 0, 0};
  std::memcpy(in.data(), msg, sizeof msg);
  std::memcpy(in.data() + iov_at, iov.data(), iov.size() * 8);
  DirectRequest r{};
  r.seq = seq;
  r.in_len = static_cast<uint32_t>(in.size());
  r.nr = static_cast<uint64_t>(c.nr);
  std::memcpy(r.args, c.args, sizeof r.args);
  r.msg = h.area;
  r.ret_iov = c.out_arg >= 0 ? 1 : 0;
  return std::string(reinterpret_cast<const char*>(&r), sizeof r) + in;
}

bool ReadFull(int fd, void* buf, size_t n, int timeout_ms = 5000) {
  char* p = static_cast<char*>(buf);
  while (n > 0) {
    pollfd pf{fd, POLLIN, 0};
    if (poll(&pf, 1, timeout_ms) != 1) return false;
    ssize_t r = read(fd, p, n);
    if (r <= 0) return false;
    p += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

class DeputyLoop : public ::testing::Test {
 protected:
  void SetUp() override {
    KernelFeatures k = ProbeKernel();
    if (k.vdso_syscall_offset < 0) GTEST_SKIP() << "no syscall instruction found in [vdso]";
    ASSERT_EQ(pipe2(pipe_, O_CLOEXEC), 0);
    child_ = fork();
    if (child_ == 0) {
      // The process the deputy runs in; its pipe fds are inherited.
      fcntl(pipe_[0], F_SETFD, 0);
      fcntl(pipe_[1], F_SETFD, 0);
      for (;;) pause();
    }
    auto t = Tracee::Seize(child_, PTRACE_O_EXITKILL);
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    tracee_ = std::move(*t);
    ASSERT_TRUE(tracee_->Interrupt().ok());
    auto base = GetGpRegs(child_);
    ASSERT_TRUE(base.ok());
    base_ = *base;
    auto sc = MapScratch(*tracee_, k, 0, 8u << 20);
    ASSERT_TRUE(sc.ok()) << sc.status().ToString();
    scratch_ = *sc;
    tracee_->set_gadget(scratch_.gadget());
    auto ch = DeputyChannel::Create(
        *tracee_, scratch_, [](uint32_t) {}, 100);
    ASSERT_TRUE(ch.ok()) << ch.status().ToString();
    ch_ = std::move(*ch);
    EXPECT_GE(ch_->event_fd(), 100);

    // The guest's end: a listener on loopback; the deputy connects to it.
    listener_.Reset(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(bind(listener_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    ASSERT_EQ(listen(listener_.get(), 1), 0);
    socklen_t len = sizeof a;
    getsockname(listener_.get(), reinterpret_cast<sockaddr*>(&a), &len);
    uint8_t token[16] = {1, 2, 3};
    Status s = ch_->AttachDirect(*tracee_, htonl(INADDR_LOOPBACK), htonl(INADDR_LOOPBACK),
                                 ntohs(a.sin_port), 100, token);
    ASSERT_TRUE(s.ok()) << s.ToString();
    guest_.Reset(accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    ASSERT_TRUE(guest_);
    ASSERT_TRUE(ReadFull(guest_.get(), &hello_, sizeof hello_));
    EXPECT_EQ(std::memcmp(hello_.token, token, 16), 0);
    EXPECT_EQ(hello_.sock_fd, ch_->direct_fd());
    EXPECT_EQ(hello_.event_fd, ch_->event_fd());
    EXPECT_EQ(hello_.area, ch_->remote_direct_buffer());
    ch_->EnableDirect();
    ASSERT_TRUE(SetGpRegs(child_, ch_->LoopRegs(base_)).ok());
    ASSERT_TRUE(tracee_->Cont().ok());
  }

  void TearDown() override {
    if (child_ > 0) {
      kill(child_, SIGKILL);
      tracee_.reset();
      waitpid(child_, nullptr, __WALL);
    }
    if (pipe_[0] >= 0) close(pipe_[0]), close(pipe_[1]);
  }

  // Sends `c` as call `seq`; reads the reply (header, then the out bytes).
  int64_t Direct(uint32_t seq, const Call& c, std::string* out = nullptr) {
    std::string req = Request(hello_, seq, c);
    EXPECT_EQ(write(guest_.get(), req.data(), req.size()), static_cast<ssize_t>(req.size()));
    DirectReplyHeader h{};
    if (!ReadFull(guest_.get(), &h, sizeof h)) {
      ADD_FAILURE() << "no reply to call " << seq;
      return -9999;
    }
    EXPECT_EQ(h.seq, seq);
    if (h.ret >= 0 && c.out_arg >= 0) {
      std::string o(std::min<uint64_t>(static_cast<uint64_t>(h.ret), c.out_size), '\0');
      EXPECT_TRUE(ReadFull(guest_.get(), o.data(), o.size()));
      if (out) *out = o;
    }
    return h.ret;
  }

  // Stops the loop (PTRACE_INTERRUPT) and returns its registers.
  user_regs_struct Stop() {
    EXPECT_EQ(ptrace(PTRACE_INTERRUPT, child_, nullptr, nullptr), 0);
    auto st = tracee_->WaitForStop(false);
    EXPECT_TRUE(st.ok());
    auto r = GetGpRegs(child_);
    EXPECT_TRUE(r.ok());
    return *r;
  }

  int pipe_[2] = {-1, -1};
  pid_t child_ = -1;
  std::unique_ptr<Tracee> tracee_;
  user_regs_struct base_{};
  Scratch scratch_;
  std::unique_ptr<DeputyChannel> ch_;
  UniqueFd listener_, guest_;
  DirectHello hello_{};
};

TEST_F(DeputyLoop, DirectCallsCarryInAndOutBuffers) {
  EXPECT_EQ(Direct(1, Call{SYS_getpid}), child_);
  Call w{SYS_write, {static_cast<uint64_t>(pipe_[1]), 0, 11}, "hello pipe!", 1};
  EXPECT_EQ(Direct(2, w), 11);
  Call r{SYS_read, {static_cast<uint64_t>(pipe_[0]), 0, 4096}};
  r.out_arg = 1;
  r.out_size = 4096;
  std::string got;
  EXPECT_EQ(Direct(3, r, &got), 11);
  EXPECT_EQ(got, "hello pipe!");  // cut to the return value
  Call bad{SYS_read, {987, 0, 16}};
  bad.out_arg = 1;
  bad.out_size = 16;
  EXPECT_EQ(Direct(4, bad), -EBADF);  // the header alone
  // A large in-buffer, received in pieces: 60 kB fits the pipe.
  std::string big(60000, 'x');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + i % 26);
  Call wb{SYS_write, {static_cast<uint64_t>(pipe_[1]), 0, big.size()}, big, 1};
  EXPECT_EQ(Direct(5, wb), static_cast<int64_t>(big.size()));
  Call rb{SYS_read, {static_cast<uint64_t>(pipe_[0]), 0, 65536}};
  rb.out_arg = 1;
  rb.out_size = 65536;
  EXPECT_EQ(Direct(6, rb, &got), static_cast<int64_t>(big.size()));
  EXPECT_TRUE(got == big);
  EXPECT_EQ(ch_->DirectCounts()[SYS_write], 2u);
  EXPECT_EQ(ch_->DirectCounts()[SYS_read], 3u);
  // The supervisor's own calls still run in the same loop.
  const uint64_t none[6] = {};
  uint32_t seq = ch_->Submit(SYS_getppid, none);
  int64_t ret = 0;
  ASSERT_TRUE(ch_->WaitDone(seq, &ret, 5000000));
  EXPECT_EQ(ret, getpid());
}

TEST_F(DeputyLoop, InterruptedBlockingDirectCallDidNotRunAndOneThatRanIsReported) {
  // A read of the empty pipe blocks in the deputy.
  Call r{SYS_read, {static_cast<uint64_t>(pipe_[0]), 0, 64}};
  r.out_arg = 1;
  r.out_size = 64;
  std::string req = Request(hello_, 7, r);
  ASSERT_EQ(write(guest_.get(), req.data(), req.size()), static_cast<ssize_t>(req.size()));
  usleep(100000);
  user_regs_struct regs = Stop();
  uint32_t seq = 0;
  int64_t ret = 0;
  std::string out;
  EXPECT_FALSE(ch_->ClassifyDirect(regs, &seq, &ret, &out)) << "a cut read did not run";
  // Back to the loop's top: the request was consumed; the guest sends it
  // home instead (here: again, direct).
  ASSERT_TRUE(SetGpRegs(child_, ch_->TopRegs(regs)).ok());
  ASSERT_TRUE(tracee_->Cont().ok());
  ASSERT_EQ(write(pipe_[1], "late", 4), 4);
  std::string got;
  EXPECT_EQ(Direct(8, r, &got), 4);
  EXPECT_EQ(got, "late");
  // Stopped after a call ran: it is reported, with its out-buffer.
  regs = Stop();
  EXPECT_TRUE(ch_->ClassifyDirect(regs, &seq, &ret, &out));
  EXPECT_EQ(seq, 8u);
  EXPECT_EQ(ret, 4);
  EXPECT_EQ(out, "late");
  // Ending the direct path: the guest's end reads EOF; the deputy's socket is gone.
  ch_->EndDirect(*tracee_);
  char c;
  EXPECT_EQ(read(guest_.get(), &c, 1), 0);
  EXPECT_FALSE(ch_->direct());
  EXPECT_TRUE(ch_->EventFdIntact());
}

TEST_F(DeputyLoop, ClosedSocketStopsTheLoopAtItsTrap) {
  guest_.Reset();  // the guest went away: the deputy's recv sees EOF
  auto st = tracee_->WaitForStop(false);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(WSTOPSIG(*st), SIGTRAP);
  auto regs = GetGpRegs(child_);
  ASSERT_TRUE(regs.ok());
  EXPECT_TRUE(ch_->AtTrap(*regs));
}

}  // namespace
}  // namespace mfs::migrate

#include "migrate/deputy.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <linux/kcmp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstring>
#include <tuple>

#include "mfs/base/unique_fd.h"

namespace mfs::migrate {
namespace {

// The control block at the start of the shared memory. Submitted calls:
constexpr uint64_t kReq = 0, kDone = 4, kNr = 8, kArgs = 16, kRet = 64, kWaiting = 76;
// The poll set {socket, eventfd} (struct pollfd each; fd -1: not polled),
// the eventfd's read buffer, the direct reply's length, the seq of the last
// direct call that ran, the direct request (DirectRequest) and the direct
// reply header (DirectReplyHeader), and per-syscall counts of direct calls.
constexpr uint64_t kPoll = 80, kEventBuf = 96, kTotal = 104, kRan = 112, kHdr = 128,
                   kReplyHdr = kDirectReplyHeaderOffset, kCounts = 2048, kMaxCounted = 512;
static_assert(kTotal + 8 <= kRan && kRan + 4 <= kHdr && kHdr + sizeof(DirectRequest) <= kReplyHdr);
static_assert(kReplyHdr + sizeof(DirectReplyHeader) <= kCounts);
static_assert(kCounts + 4 * kMaxCounted <= kPageSize);
static_assert(offsetof(DirectRequest, msg) == 64 && offsetof(DirectRequest, ret_iov) == 72);
// µs the supervisor polls for an answer before it sleeps. Polling saves a
// wake-up per call, but on 2 shared vCPUs it measured 1.5-2x slower (the
// pollers take the CPU the others need), so it is off.
constexpr long kSupervisorSpinUsec = 0;
// The loop (see deputy.h) lives in the scratch, which is executable; the
// shared memory need not be (memfd_noexec may forbid it).
constexpr uint64_t kCodeOffset = 256;
// Assembled (GNU as, intel syntax) from; offsets in hex, block fields in decimal:
//   00 top:   mov eax,[rbx]; cmp eax,r12d; jne slow        ; a submitted call waits
//   0b        lea rdi,[rbx+80]; mov esi,2; mov edx,-1; mov eax,7
//   1e        syscall                                       ; poll(&pollfds, 2, -1)
//   20        test rax,rax; jle top
//   25        movzx eax,word [rbx+94]; test eax,eax; je 4a  ; eventfd's revents
//   2d        test eax,0x20; jne dead                       ; POLLNVAL: closed
//   38        mov edi,[rbx+88]; lea rsi,[rbx+96]; mov edx,8; xor eax,eax
//   46        syscall                                       ; read(eventfd, buf, 8)
//   48        jmp top
//   4a        movzx eax,word [rbx+86]; test eax,eax; je top ; socket's revents
//   52        lea rsi,[rbx+128]; mov edx,80                 ; the DirectRequest
//   5e rh:    mov edi,[rbx+80]; mov r10d,0x100; xor r8d,r8d; xor r9d,r9d; mov eax,45
//   72        syscall                                       ; recvfrom(sock, rsi, edx, MSG_WAITALL)
//   74        test rax,rax; jle rh_err; add rsi,rax; sub edx,eax; jne rh
//   84        mov rsi,[rbx+192]; mov edx,[rbx+132]; test edx,edx; je run  ; in_len bytes at msg
//   95 ri:    (as rh)                                       ; recvfrom, resumed on a short count
//   bb run:   mov rax,[rbx+136]; cmp rax,511; ja d1; inc dword [rbx+rax*4+2048]  ; count it
//   d1        mov rdi,[rbx+144] ... mov r9,[rbx+184]        ; the request's args
//   fb        syscall                                       ; the direct call
//   fd after: mov [rbx+264],rax                             ; reply.ret
//  104        mov ecx,[rbx+128]; mov [rbx+256],ecx; mov [rbx+112],ecx  ; reply.seq, ran = seq
//  113        mov rsi,[rbx+192]; test rax,rax; jns 129
//  11f        mov qword [rsi+24],1; jmp 145                 ; ret < 0: the header alone
//  129        mov ecx,[rbx+200]; test ecx,ecx; je 145       ; ret_iov
//  133        shl rcx,4; add rcx,[rsi+16]; cmp rax,[rcx+8]; jae 145; mov [rcx+8],rax  ; cut to ret
//  145        mov rcx,[rsi+24]; mov rdx,[rsi+16]; xor r8d,r8d; test rcx,rcx; je dead
//  159        add r8,[rdx+8]; add rdx,16; dec rcx; jne 159; mov [rbx+104],r8  ; total length
//  16a snd:   mov edi,[rbx+80]; mov edx,0x4000; mov eax,46
//  177        syscall                                       ; sendmsg(sock, msg, MSG_NOSIGNAL)
//  179        cmp rax,[rbx+104]; je top; cmp rax,-4; je snd; jmp dead  ; short: dead
//  18b rh_err: cmp rax,-4; je rh; jmp dead                  ; EINTR: again; EOF, errors: dead
//  197 ri_err: cmp rax,-4; je ri; jmp dead
//  1a3 slow:  mov r12d,eax; mov rax,[rbx+8]; mov rdi,[rbx+16] ... mov r9,[rbx+56]
//  1c2        syscall                                       ; the submitted call
//  1c4        mov [rbx+64],rax                              ; block.ret
//  1c8        mov [rbx+4],r12d; mfence                      ; block.done
//  1cf        cmp dword [rbx+76],0; je top                  ; nobody sleeps on done
//  1d9        mov eax,202; lea rdi,[rbx+4]; mov esi,1; mov edx,1
//  1ec        syscall                                       ; futex(&done, FUTEX_WAKE, 1)
//  1ee        jmp top
//  1f3 dead:  int3; jmp dead                                ; the supervisor takes over
constexpr uint8_t kLoop[] = {
    0x8b, 0x03, 0x44, 0x39, 0xe0, 0x0f, 0x85, 0x98, 0x01, 0x00, 0x00, 0x48, 0x8d, 0x7b, 0x50, 0xbe,
    0x02, 0x00, 0x00, 0x00, 0xba, 0xff, 0xff, 0xff, 0xff, 0xb8, 0x07, 0x00, 0x00, 0x00, 0x0f, 0x05,
    0x48, 0x85, 0xc0, 0x7e, 0xdb, 0x0f, 0xb7, 0x43, 0x5e, 0x85, 0xc0, 0x74, 0x1d, 0xa9, 0x20, 0x00,
    0x00, 0x00, 0x0f, 0x85, 0xbb, 0x01, 0x00, 0x00, 0x8b, 0x7b, 0x58, 0x48, 0x8d, 0x73, 0x60, 0xba,
    0x08, 0x00, 0x00, 0x00, 0x31, 0xc0, 0x0f, 0x05, 0xeb, 0xb6, 0x0f, 0xb7, 0x43, 0x56, 0x85, 0xc0,
    0x74, 0xae, 0x48, 0x8d, 0xb3, 0x80, 0x00, 0x00, 0x00, 0xba, 0x50, 0x00, 0x00, 0x00, 0x8b, 0x7b,
    0x50, 0x41, 0xba, 0x00, 0x01, 0x00, 0x00, 0x45, 0x31, 0xc0, 0x45, 0x31, 0xc9, 0xb8, 0x2d, 0x00,
    0x00, 0x00, 0x0f, 0x05, 0x48, 0x85, 0xc0, 0x0f, 0x8e, 0x0e, 0x01, 0x00, 0x00, 0x48, 0x01, 0xc6,
    0x29, 0xc2, 0x75, 0xda, 0x48, 0x8b, 0xb3, 0xc0, 0x00, 0x00, 0x00, 0x8b, 0x93, 0x84, 0x00, 0x00,
    0x00, 0x85, 0xd2, 0x74, 0x26, 0x8b, 0x7b, 0x50, 0x41, 0xba, 0x00, 0x01, 0x00, 0x00, 0x45, 0x31,
    0xc0, 0x45, 0x31, 0xc9, 0xb8, 0x2d, 0x00, 0x00, 0x00, 0x0f, 0x05, 0x48, 0x85, 0xc0, 0x0f, 0x8e,
    0xe3, 0x00, 0x00, 0x00, 0x48, 0x01, 0xc6, 0x29, 0xc2, 0x75, 0xda, 0x48, 0x8b, 0x83, 0x88, 0x00,
    0x00, 0x00, 0x48, 0x3d, 0xff, 0x01, 0x00, 0x00, 0x77, 0x07, 0xff, 0x84, 0x83, 0x00, 0x08, 0x00,
    0x00, 0x48, 0x8b, 0xbb, 0x90, 0x00, 0x00, 0x00, 0x48, 0x8b, 0xb3, 0x98, 0x00, 0x00, 0x00, 0x48,
    0x8b, 0x93, 0xa0, 0x00, 0x00, 0x00, 0x4c, 0x8b, 0x93, 0xa8, 0x00, 0x00, 0x00, 0x4c, 0x8b, 0x83,
    0xb0, 0x00, 0x00, 0x00, 0x4c, 0x8b, 0x8b, 0xb8, 0x00, 0x00, 0x00, 0x0f, 0x05, 0x48, 0x89, 0x83,
    0x08, 0x01, 0x00, 0x00, 0x8b, 0x8b, 0x80, 0x00, 0x00, 0x00, 0x89, 0x8b, 0x00, 0x01, 0x00, 0x00,
    0x89, 0x4b, 0x70, 0x48, 0x8b, 0xb3, 0xc0, 0x00, 0x00, 0x00, 0x48, 0x85, 0xc0, 0x79, 0x0a, 0x48,
    0xc7, 0x46, 0x18, 0x01, 0x00, 0x00, 0x00, 0xeb, 0x1c, 0x8b, 0x8b, 0xc8, 0x00, 0x00, 0x00, 0x85,
    0xc9, 0x74, 0x12, 0x48, 0xc1, 0xe1, 0x04, 0x48, 0x03, 0x4e, 0x10, 0x48, 0x3b, 0x41, 0x08, 0x73,
    0x04, 0x48, 0x89, 0x41, 0x08, 0x48, 0x8b, 0x4e, 0x18, 0x48, 0x8b, 0x56, 0x10, 0x45, 0x31, 0xc0,
    0x48, 0x85, 0xc9, 0x0f, 0x84, 0x9a, 0x00, 0x00, 0x00, 0x4c, 0x03, 0x42, 0x08, 0x48, 0x83, 0xc2,
    0x10, 0x48, 0xff, 0xc9, 0x75, 0xf3, 0x4c, 0x89, 0x43, 0x68, 0x8b, 0x7b, 0x50, 0xba, 0x00, 0x40,
    0x00, 0x00, 0xb8, 0x2e, 0x00, 0x00, 0x00, 0x0f, 0x05, 0x48, 0x3b, 0x43, 0x68, 0x0f, 0x84, 0x7d,
    0xfe, 0xff, 0xff, 0x48, 0x83, 0xf8, 0xfc, 0x74, 0xe1, 0xeb, 0x68, 0x48, 0x83, 0xf8, 0xfc, 0x0f,
    0x84, 0xc9, 0xfe, 0xff, 0xff, 0xeb, 0x5c, 0x48, 0x83, 0xf8, 0xfc, 0x0f, 0x84, 0xf4, 0xfe, 0xff,
    0xff, 0xeb, 0x50, 0x41, 0x89, 0xc4, 0x48, 0x8b, 0x43, 0x08, 0x48, 0x8b, 0x7b, 0x10, 0x48, 0x8b,
    0x73, 0x18, 0x48, 0x8b, 0x53, 0x20, 0x4c, 0x8b, 0x53, 0x28, 0x4c, 0x8b, 0x43, 0x30, 0x4c, 0x8b,
    0x4b, 0x38, 0x0f, 0x05, 0x48, 0x89, 0x43, 0x40, 0x44, 0x89, 0x63, 0x04, 0x0f, 0xae, 0xf0, 0x83,
    0x7b, 0x4c, 0x00, 0x0f, 0x84, 0x27, 0xfe, 0xff, 0xff, 0xb8, 0xca, 0x00, 0x00, 0x00, 0x48, 0x8d,
    0x7b, 0x04, 0xbe, 0x01, 0x00, 0x00, 0x00, 0xba, 0x01, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xe9, 0x0d,
    0xfe, 0xff, 0xff, 0xcc, 0xeb, 0xfd};
constexpr uint64_t kAfterCall = 0x1c4, kStored = 0x1c8, kDirectAfter = 0xfd, kDirectSend = 0x16a,
                   kDead = 0x1f3;
static_assert(kLoop[kAfterCall - 2] == 0x0f && kLoop[kAfterCall - 1] == 0x05);
static_assert(kLoop[kDirectAfter - 2] == 0x0f && kLoop[kDirectAfter - 1] == 0x05);
static_assert(kLoop[kDirectSend + 13] == 0x0f && kLoop[kDirectSend + 14] == 0x05);
static_assert(kLoop[kDead] == 0xcc && sizeof kLoop == kDead + 3);
// Block offsets the code uses, spot-checked: poll set, request, reply.ret.
static_assert(kLoop[0x0e] == kPoll && kLoop[0x55] == kHdr && kLoop[kDirectAfter + 3] == 0x08 &&
              kLoop[kDirectAfter + 4] == 0x01 && kLoop[0x112] == kRan && kLoop[0x169] == kTotal);
static_assert(kCodeOffset + sizeof kLoop <= kPageSize);

bool IsRestartCode(int64_t r) { return r == -512 || r == -513 || r == -514 || r == -516; }

uint32_t* Word(char* base, uint64_t off) { return reinterpret_cast<uint32_t*>(base + off); }

long Futex(uint32_t* addr, int op, uint32_t val, const timespec* ts) {
  // Shared (not FUTEX_PRIVATE_FLAG): the deputy is another process.
  return syscall(SYS_futex, addr, op, val, ts, nullptr, 0);
}

timespec FromUsec(long usec) { return timespec{usec / 1000000, (usec % 1000000) * 1000}; }

// Moves the deputy's `fd` to the first free number >= min_fd (close-on-exec)
// and closes `fd`; returns the new number.
Result<int> MoveHigh(Tracee& t, uint64_t fd, int min_fd) {
  auto hi = t.CheckedSyscall("fcntl(F_DUPFD_CLOEXEC)", SYS_fcntl, fd, F_DUPFD_CLOEXEC,
                             static_cast<uint64_t>(min_fd));
  t.Syscall(SYS_close, fd).status().IgnoreError();
  if (!hi.ok()) return hi.status();
  return static_cast<int>(*hi);
}

// A copy here of the deputy's `fd`.
Result<int> TakeFd(pid_t pid, int fd) {
  UniqueFd pidfd(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
  if (!pidfd) return Status::FromErrno("pidfd_open");
  int local = static_cast<int>(syscall(SYS_pidfd_getfd, pidfd.get(), fd, 0));
  if (local < 0) return Status::FromErrno("pidfd_getfd");
  fcntl(local, F_SETFD, FD_CLOEXEC);
  return local;
}

struct PollFd {
  int32_t fd;
  int16_t events, revents;
};

}  // namespace

Result<std::unique_ptr<DeputyChannel>> DeputyChannel::Create(Tracee& t, const Scratch& scratch,
                                                             std::function<void(uint32_t)> post,
                                                             int min_fd) {
  static_assert(kCodeOffset >= 4);  // after the scratch's own `syscall; int3`
  std::unique_ptr<DeputyChannel> ch(new DeputyChannel());
  ch->pid_ = t.tid();
  ch->post_ = std::move(post);
  static const char kName[] = "mfs-deputy";
  MFS_RETURN_IF_ERROR(t.WriteMem(scratch.buffer(), kName, sizeof kName));
  MFS_ASSIGN_OR_RETURN(uint64_t rfd, t.CheckedSyscall("memfd_create", SYS_memfd_create,
                                                      scratch.buffer(), MFD_CLOEXEC));
  struct CloseInTracee {
    Tracee& t;
    uint64_t fd;
    ~CloseInTracee() { t.Syscall(SYS_close, fd).status().IgnoreError(); }
  } close_rfd{t, rfd};
  UniqueFd pidfd(static_cast<int>(syscall(SYS_pidfd_open, t.tid(), 0)));
  if (!pidfd) return Status::FromErrno("pidfd_open");
  UniqueFd fd(static_cast<int>(syscall(SYS_pidfd_getfd, pidfd.get(), static_cast<int>(rfd), 0)));
  if (!fd) return Status::FromErrno("pidfd_getfd");
  if (ftruncate(fd.get(), static_cast<off_t>(kSize)) != 0)
    return Status::FromErrno("ftruncate deputy memfd");
  void* local = mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (local == MAP_FAILED) return Status::FromErrno("mmap deputy memfd");
  ch->local_ = static_cast<char*>(local);
  MFS_ASSIGN_OR_RETURN(ch->remote_, t.CheckedSyscall("mmap deputy memfd", SYS_mmap, 0, kSize,
                                                     PROT_READ | PROT_WRITE, MAP_SHARED, rfd, 0));
  MFS_RETURN_IF_ERROR(t.WriteMem(scratch.addr + kCodeOffset, kLoop, sizeof kLoop));
  ch->code_ = scratch.addr + kCodeOffset;
  // The eventfd Submit writes to wake the loop, at a high number.
  MFS_ASSIGN_OR_RETURN(uint64_t efd,
                       t.CheckedSyscall("eventfd2", SYS_eventfd2, 0, EFD_CLOEXEC | EFD_NONBLOCK));
  MFS_ASSIGN_OR_RETURN(ch->efd_remote_, MoveHigh(t, efd, min_fd));
  auto local_efd = TakeFd(t.tid(), ch->efd_remote_);
  if (!local_efd.ok()) {
    t.Syscall(SYS_close, ch->efd_remote_).status().IgnoreError();
    return local_efd.status();
  }
  ch->efd_local_ = *local_efd;
  auto* pfd = reinterpret_cast<PollFd*>(ch->local_ + kPoll);
  pfd[0] = PollFd{-1, POLLIN, 0};  // the direct socket, once attached
  pfd[1] = PollFd{ch->efd_remote_, POLLIN, 0};
  ch->waiter_ = std::thread([c = ch.get()] { c->WaiterLoop(); });
  return ch;
}

DeputyChannel::~DeputyChannel() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (waiter_.joinable()) {
    Futex(Word(local_, kDone), FUTEX_WAKE, INT_MAX, nullptr);
    waiter_.join();
  }
  if (local_) munmap(local_, kSize);
  if (efd_local_ >= 0) close(efd_local_);
  if (sock_local_ >= 0) close(sock_local_);
}

user_regs_struct DeputyChannel::LoopRegs(const user_regs_struct& base) const {
  user_regs_struct r = base;
  r.rip = code_;
  r.rbx = remote_;
  r.r12 = __atomic_load_n(Word(local_, kReq), __ATOMIC_ACQUIRE);
  r.orig_rax = static_cast<uint64_t>(-1);  // no kernel restart of the old state
  r.rax = 0;
  return r;
}

uint32_t DeputyChannel::Submit(long nr, const uint64_t args[6]) {
  std::memcpy(local_ + kNr, &nr, 8);
  std::memcpy(local_ + kArgs, args, 48);
  __atomic_store_n(Word(local_, kWaiting), 0, __ATOMIC_RELAXED);
  seq_ = __atomic_load_n(Word(local_, kReq), __ATOMIC_RELAXED) + 1;
  if (seq_ == 0) seq_ = 1;  // 0 means "nothing" to the waiter
  __atomic_store_n(Word(local_, kReq), seq_, __ATOMIC_RELEASE);
  const uint64_t one = 1;
  if (write(efd_local_, &one, sizeof one) < 0) {
    // EAGAIN: the counter is full, so the loop is woken anyway.
  }
  return seq_;
}

bool DeputyChannel::Done(uint32_t seq, int64_t* ret) const {
  if (__atomic_load_n(Word(local_, kDone), __ATOMIC_ACQUIRE) != seq) return false;
  std::memcpy(ret, local_ + kRet, 8);
  return true;
}

bool DeputyChannel::WaitDone(uint32_t seq, int64_t* ret, long usec) const {
  const auto start = std::chrono::steady_clock::now();
  const auto spin_until = start + std::chrono::microseconds(std::min(usec, kSupervisorSpinUsec));
  const auto until = start + std::chrono::microseconds(usec);
  for (int i = 0;; ++i) {
    if (Done(seq, ret)) return true;
    __builtin_ia32_pause();
    if ((i & 63) == 63 && std::chrono::steady_clock::now() >= spin_until) break;
  }
  // From now on the deputy wakes us (and the waiter thread) when done; the
  // exchange orders this store before the load of `done` below, as the
  // deputy's mfence orders its store of `done` before its load of this.
  __atomic_exchange_n(Word(local_, kWaiting), 1, __ATOMIC_SEQ_CST);
  for (;;) {
    uint32_t d = __atomic_load_n(Word(local_, kDone), __ATOMIC_SEQ_CST);
    if (d == seq) return Done(seq, ret);
    auto left = std::chrono::duration_cast<std::chrono::microseconds>(
        until - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    timespec ts = FromUsec(left.count());
    Futex(Word(local_, kDone), FUTEX_WAIT, d, &ts);
  }
}

void DeputyChannel::Watch(uint32_t seq) {
  {
    std::lock_guard<std::mutex> l(mu_);
    watch_ = seq;
    ++watch_gen_;
  }
  cv_.notify_all();
}

void DeputyChannel::Cancel() {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (watch_ == 0) return;
    watch_ = 0;
    ++watch_gen_;
  }
  cv_.notify_all();
  Futex(Word(local_, kDone), FUTEX_WAKE, INT_MAX, nullptr);
}

void DeputyChannel::WaiterLoop() {
  std::unique_lock<std::mutex> l(mu_);
  for (;;) {
    cv_.wait(l, [this] { return stop_ || watch_ != 0; });
    if (stop_) return;
    const uint32_t seq = watch_;
    const uint64_t gen = watch_gen_;
    l.unlock();
    bool done = false;
    for (;;) {
      uint32_t d = __atomic_load_n(Word(local_, kDone), __ATOMIC_ACQUIRE);
      if (d == seq) {
        done = true;
        break;
      }
      {
        std::lock_guard<std::mutex> g(mu_);
        if (stop_ || gen != watch_gen_) break;
      }
      // Bounded, so a lost wake costs at most this much.
      timespec ts = FromUsec(100000);
      Futex(Word(local_, kDone), FUTEX_WAIT, d, &ts);
    }
    l.lock();
    if (done && gen == watch_gen_ && !stop_) {
      watch_ = 0;
      l.unlock();
      post_(seq);
      l.lock();
    }
  }
}

DeputyChannel::Fate DeputyChannel::Classify(uint32_t seq, const user_regs_struct& regs,
                                            int64_t* ret) const {
  if (Done(seq, ret)) return Fate::kRan;
  // The loop picks a request up only after r12 changed to it.
  if (static_cast<uint32_t>(regs.r12) != seq) return Fate::kNotRun;
  if (regs.rip == code_ + kAfterCall) {
    int64_t rax = static_cast<int64_t>(regs.rax);
    if (IsRestartCode(rax)) return Fate::kNotRun;
    *ret = rax;
    return Fate::kRan;
  }
  if (regs.rip == code_ + kStored) {
    std::memcpy(ret, local_ + kRet, 8);
    return Fate::kRan;
  }
  return Fate::kNotRun;  // before the call's `syscall`
}

bool DeputyChannel::AtCallRestart(const user_regs_struct& regs) const {
  // Only the submitted call's: the loop's own poll and recv are restarted by
  // the kernel (the supervisor suppresses the signal).
  return regs.rip == code_ + kAfterCall && regs.orig_rax != static_cast<uint64_t>(-1) &&
         IsRestartCode(static_cast<int64_t>(regs.rax));
}

Status DeputyChannel::AttachDirect(Tracee& t, uint32_t local_ip, uint32_t peer_ip, uint16_t port,
                                   int min_fd, const uint8_t token[16]) {
  if (sock_local_ >= 0) return Status::Error(EALREADY, "direct path already attached");
  // The supervisor's injected calls use the scratch's buffer (page after the gadget).
  const uint64_t buf = code_ - kCodeOffset + kPageSize;
  MFS_ASSIGN_OR_RETURN(
      uint64_t s0, t.CheckedSyscall("socket", SYS_socket, AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  auto fd = MoveHigh(t, s0, min_fd);
  if (!fd.ok()) return fd.status();
  auto fail = [&](const Status& s) {
    t.Syscall(SYS_close, *fd).status().IgnoreError();
    return s;
  };
  sockaddr_in a[2] = {};
  a[0].sin_family = a[1].sin_family = AF_INET;
  a[0].sin_addr.s_addr = local_ip;
  a[1].sin_addr.s_addr = peer_ip;
  a[1].sin_port = htons(port);
  const int one = 1;
  Status w = t.WriteMem(buf, a, sizeof a);
  if (w.ok()) w = t.WriteMem(buf + sizeof a, &one, sizeof one);
  if (!w.ok()) return fail(w);
  for (auto [what, nr, x, y, z] : {std::tuple<const char*, long, uint64_t, uint64_t, uint64_t>{
                                       "bind", SYS_bind, buf, sizeof a[0], 0},
                                   {"connect", SYS_connect, buf + sizeof a[0], sizeof a[1], 0}}) {
    auto r = t.CheckedSyscall(what, nr, static_cast<uint64_t>(*fd), x, y, z);
    if (!r.ok()) return fail(r.status());
  }
  auto r = t.CheckedSyscall("setsockopt(TCP_NODELAY)", SYS_setsockopt, static_cast<uint64_t>(*fd),
                            IPPROTO_TCP, TCP_NODELAY, buf + sizeof a, sizeof one);
  if (!r.ok()) return fail(r.status());
  auto local = TakeFd(t.tid(), *fd);
  if (!local.ok()) return fail(local.status());
  DirectHello hello{};
  std::memcpy(hello.token, token, sizeof hello.token);
  hello.block = remote_;
  hello.area = remote_ + kDirectOffset;
  hello.area_size = kAreaSize;
  hello.sock_fd = *fd;
  hello.event_fd = efd_remote_;
  if (::write(*local, &hello, sizeof hello) != static_cast<ssize_t>(sizeof hello)) {
    Status s = Status::FromErrno("direct socket: hello");
    close(*local);
    return fail(s);
  }
  sock_local_ = *local;
  sock_remote_ = *fd;
  __atomic_store_n(Word(local_, kRan), 0, __ATOMIC_RELAXED);
  return Status::OK();
}

void DeputyChannel::EnableDirect() {
  if (sock_local_ < 0) return;
  auto* pfd = reinterpret_cast<PollFd*>(local_ + kPoll);
  pfd[0] = PollFd{sock_remote_, POLLIN, 0};
}

bool DeputyChannel::SameFile(int local, int remote) const {
  return syscall(SYS_kcmp, getpid(), pid_, KCMP_FILE, local, remote) == 0;
}

bool DeputyChannel::ClassifyDirect(const user_regs_struct& regs, uint32_t* seq, int64_t* ret,
                                   std::string* out) const {
  DirectRequest h;
  std::memcpy(&h, local_ + kHdr, sizeof h);
  uint32_t ran = __atomic_load_n(Word(local_, kRan), __ATOMIC_ACQUIRE);
  if (h.seq != 0 && ran == h.seq) {
    std::memcpy(ret, local_ + kReplyHdr + 8, 8);
  } else if (regs.rip == code_ + kDirectAfter && !IsRestartCode(static_cast<int64_t>(regs.rax)) &&
             h.seq != 0) {
    *ret = static_cast<int64_t>(regs.rax);  // returned, not stored yet
  } else {
    return false;
  }
  *seq = h.seq;
  out->clear();
  if (*ret < 0) return true;
  // The out-buffers as the reply carries them: iovecs 1.., `ret_iov` cut to
  // ret bytes; all inside the direct area (else nothing: the guest then
  // answers the call with what it has, EFAULT).
  const uint64_t base = remote_ + kDirectOffset;
  auto inside = [&](uint64_t a, uint64_t n) {
    return a >= base && n <= kAreaSize && a - base <= kAreaSize - n;
  };
  if (!inside(h.msg, 56)) return true;
  uint64_t iov, iovlen;
  std::memcpy(&iov, local_ + kDirectOffset + (h.msg - base) + 16, 8);
  std::memcpy(&iovlen, local_ + kDirectOffset + (h.msg - base) + 24, 8);
  if (iovlen > 1024 || !inside(iov, iovlen * 16)) return true;
  for (uint64_t i = 1; i < iovlen; ++i) {
    uint64_t v[2];
    std::memcpy(v, local_ + kDirectOffset + (iov - base) + 16 * i, 16);
    uint64_t n = v[1];
    if (i == h.ret_iov) n = std::min<uint64_t>(n, static_cast<uint64_t>(*ret));
    if (!inside(v[0], n)) return true;
    out->append(local_ + kDirectOffset + (v[0] - base), n);
  }
  return true;
}

bool DeputyChannel::AtDirectRestart(const user_regs_struct& regs, uint32_t* seq) const {
  if (regs.rip != code_ + kDirectAfter || regs.orig_rax == static_cast<uint64_t>(-1) ||
      !IsRestartCode(static_cast<int64_t>(regs.rax)))
    return false;
  std::memcpy(seq, local_ + kHdr, 4);
  return true;
}

bool DeputyChannel::AtTrap(const user_regs_struct& regs) const {
  return regs.rip == code_ + kDead + 1;
}

user_regs_struct DeputyChannel::TopRegs(const user_regs_struct& regs) const {
  user_regs_struct r = regs;
  r.rip = code_;
  r.rbx = remote_;
  r.orig_rax = static_cast<uint64_t>(-1);
  return r;
}

void DeputyChannel::EndDirect(Tracee& t) {
  auto* pfd = reinterpret_cast<PollFd*>(local_ + kPoll);
  pfd[0].fd = -1;
  if (sock_local_ < 0) return;
  shutdown(sock_local_, SHUT_WR);
  // Read what the guest sent and nobody will: a close with unread data
  // would reset the connection instead of ending it.
  char sink[4096];
  while (recv(sock_local_, sink, sizeof sink, MSG_DONTWAIT) > 0) {
  }
  if (SameFile(sock_local_, sock_remote_))
    t.Syscall(SYS_close, static_cast<uint64_t>(sock_remote_)).status().IgnoreError();
  close(sock_local_);
  sock_local_ = sock_remote_ = -1;
  __atomic_store_n(Word(local_, kRan), 0, __ATOMIC_RELAXED);
  std::memset(local_ + kHdr, 0, sizeof(DirectRequest));
}

bool DeputyChannel::EventFdIntact() const { return SameFile(efd_local_, efd_remote_); }

void DeputyChannel::CloseInDeputy(Tracee& t) {
  EndDirect(t);
  if (efd_local_ >= 0 && SameFile(efd_local_, efd_remote_))
    t.Syscall(SYS_close, static_cast<uint64_t>(efd_remote_)).status().IgnoreError();
}

std::map<int, uint64_t> DeputyChannel::DirectCounts() const {
  std::map<int, uint64_t> m;
  for (uint64_t nr = 0; nr < kMaxCounted; ++nr)
    if (uint32_t n = __atomic_load_n(Word(local_, kCounts + 4 * nr), __ATOMIC_RELAXED))
      m[static_cast<int>(nr)] = n;
  return m;
}

}  // namespace mfs::migrate

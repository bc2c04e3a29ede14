#include "migrate/deputy.h"

#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstring>

#include "mfs/base/unique_fd.h"

namespace mfs::migrate {
namespace {

// The control block at the start of the shared memory.
constexpr uint64_t kReq = 0, kDone = 4, kNr = 8, kArgs = 16, kRet = 64, kSpin = 72, kWaiting = 76;
// Rounds of `pause` the idle loop polls for the next call before it sleeps,
// and µs the supervisor polls for an answer before it sleeps. Polling saves
// a wake-up per call, but on 2 shared vCPUs it measured 1.5-2× slower (the
// pollers take the CPU the others need), so both are (almost) off.
constexpr uint32_t kDeputySpin = 1;
constexpr long kSupervisorSpinUsec = 0;
// The loop (see deputy.h) lives in the scratch, which is executable; the
// shared memory need not be (memfd_noexec may forbid it).
constexpr uint64_t kCodeOffset = 256;
// Assembled from (intel syntax):
//   loop:  mov ecx,[rbx+72]                   ; block.spin
//   spin:  mov eax,[rbx]; cmp eax,r12d; jne run
//          pause; dec ecx; jg spin
//          mov eax,202; mov rdi,rbx; xor esi,esi; mov edx,r12d; xor r10d,r10d
//          syscall                            ; futex(&req, FUTEX_WAIT, r12)
//          jmp loop
//   run:   mov r12d,eax; mov rax,[rbx+8]; mov rdi,[rbx+16]; mov rsi,[rbx+24]
//          mov rdx,[rbx+32]; mov r10,[rbx+40]; mov r8,[rbx+48]; mov r9,[rbx+56]
//          syscall                            ; the forwarded call
//   0x45:  mov [rbx+64],rax                   ; block.ret
//   0x49:  mov [rbx+4],r12d; mfence           ; block.done
//          cmp dword [rbx+76],0; je loop      ; nobody sleeps on done
//          mov eax,202; lea rdi,[rbx+4]; mov esi,1; mov edx,1
//          syscall                            ; futex(&done, FUTEX_WAKE, 1)
//          jmp loop
constexpr uint8_t kLoop[] = {
    0x8b, 0x4b, 0x48, 0x8b, 0x03, 0x44, 0x39, 0xe0, 0x75, 0x1a, 0xf3, 0x90, 0xff, 0xc9, 0x7f, 0xf3,
    0xb8, 0xca, 0x00, 0x00, 0x00, 0x48, 0x89, 0xdf, 0x31, 0xf6, 0x44, 0x89, 0xe2, 0x45, 0x31, 0xd2,
    0x0f, 0x05, 0xeb, 0xdc, 0x41, 0x89, 0xc4, 0x48, 0x8b, 0x43, 0x08, 0x48, 0x8b, 0x7b, 0x10, 0x48,
    0x8b, 0x73, 0x18, 0x48, 0x8b, 0x53, 0x20, 0x4c, 0x8b, 0x53, 0x28, 0x4c, 0x8b, 0x43, 0x30, 0x4c,
    0x8b, 0x4b, 0x38, 0x0f, 0x05, 0x48, 0x89, 0x43, 0x40, 0x44, 0x89, 0x63, 0x04, 0x0f, 0xae, 0xf0,
    0x83, 0x7b, 0x4c, 0x00, 0x74, 0xaa, 0xb8, 0xca, 0x00, 0x00, 0x00, 0x48, 0x8d, 0x7b, 0x04, 0xbe,
    0x01, 0x00, 0x00, 0x00, 0xba, 0x01, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xeb, 0x93};
constexpr uint64_t kAfterCall = 0x45, kStored = 0x49;
static_assert(kLoop[kAfterCall - 2] == 0x0f && kLoop[kAfterCall - 1] == 0x05);
static_assert(kCodeOffset + sizeof kLoop <= kPageSize);

bool IsRestartCode(int64_t r) { return r == -512 || r == -513 || r == -514 || r == -516; }

uint32_t* Word(char* base, uint64_t off) { return reinterpret_cast<uint32_t*>(base + off); }

long Futex(uint32_t* addr, int op, uint32_t val, const timespec* ts) {
  // Shared (not FUTEX_PRIVATE_FLAG): the deputy is another process.
  return syscall(SYS_futex, addr, op, val, ts, nullptr, 0);
}

timespec FromUsec(long usec) { return timespec{usec / 1000000, (usec % 1000000) * 1000}; }

}  // namespace

Result<std::unique_ptr<DeputyChannel>> DeputyChannel::Create(Tracee& t, const Scratch& scratch,
                                                             std::function<void(uint32_t)> post) {
  static_assert(kCodeOffset >= 4);  // after the scratch's own `syscall; int3`
  std::unique_ptr<DeputyChannel> ch(new DeputyChannel());
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
  *Word(ch->local_, kSpin) = kDeputySpin;
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
  Futex(Word(local_, kReq), FUTEX_WAKE, 1, nullptr);
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
  return regs.orig_rax != static_cast<uint64_t>(-1) &&
         IsRestartCode(static_cast<int64_t>(regs.rax));
}

}  // namespace mfs::migrate

#include "migrate/tracee.h"

#include <fcntl.h>
#include <sys/ptrace.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

namespace mfs::migrate {
namespace {
constexpr int kSyscallStop = SIGTRAP | 0x80;
bool IsRestartCode(int64_t r) { return r == -512 || r == -513 || r == -514 || r == -516; }
}  // namespace

Result<std::unique_ptr<Tracee>> Tracee::Seize(pid_t tid, long options) {
  if (ptrace(PTRACE_SEIZE, tid, nullptr, options | PTRACE_O_TRACESYSGOOD) != 0)
    return Status::FromErrno("PTRACE_SEIZE " + std::to_string(tid));
  return std::unique_ptr<Tracee>(new Tracee(tid, options));
}

std::unique_ptr<Tracee> Tracee::Adopt(pid_t tid, long options) {
  auto t = std::unique_ptr<Tracee>(new Tracee(tid, options));
  t->stopped_ = true;
  return t;
}

Status Tracee::SetOptions(long options) {
  if (ptrace(PTRACE_SETOPTIONS, tid_, nullptr, options | PTRACE_O_TRACESYSGOOD) != 0)
    return Status::FromErrno("PTRACE_SETOPTIONS");
  options_ = options;
  return Status::OK();
}

Tracee::~Tracee() {
  if (attached_ && !dead_) Detach().IgnoreError();
}

Status Tracee::Interrupt() {
  if (dead_) return Status::Error(ESRCH, "tracee is gone");
  if (stopped_) return Status::OK();
  if (ptrace(PTRACE_INTERRUPT, tid_, nullptr, nullptr) != 0)
    return Status::FromErrno("PTRACE_INTERRUPT");
  auto st = WaitForStop(/*resume_on_signal=*/false);
  if (!st.ok()) return st.status();
  return Status::OK();
}

void Tracee::MarkStopped(int status) {
  if (WIFEXITED(status) || WIFSIGNALED(status)) {
    dead_ = true;
    exit_status_ = status;
    stopped_ = false;
  } else {
    stopped_ = true;
  }
}

Result<int> Tracee::WaitForStop(bool resume_on_signal) {
  for (;;) {
    int status = 0;
    pid_t r = waitpid(tid_, &status, __WALL);
    if (r < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno("waitpid " + std::to_string(tid_));
    }
    MarkStopped(status);
    if (dead_) return Status::Error(ESRCH, "tracee " + std::to_string(tid_) + " died");
    int sig = WSTOPSIG(status);
    int event = status >> 16;
    if (event == 0 && sig != kSyscallStop) {
      // Signal-delivery stop: hold the signal back.
      stashed_.push_back(sig);
      if (resume_on_signal) {
        if (ptrace(PTRACE_SYSCALL, tid_, nullptr, nullptr) != 0)
          return Status::FromErrno("PTRACE_SYSCALL");
        stopped_ = false;
        continue;
      }
    }
    return status;
  }
}

Result<int64_t> Tracee::Syscall(long nr, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3,
                                uint64_t a4, uint64_t a5) {
  if (!stopped_) return Status::Error(EINVAL, "Syscall: tracee not stopped");
  if (gadget_ == 0) return Status::Error(EINVAL, "Syscall: no gadget");
  MFS_ASSIGN_OR_RETURN(user_regs_struct base, GetGpRegs(tid_));
  for (int attempt = 0; attempt < 16; ++attempt) {
    CpuState s;
    s.gp = base;
    s.SetUpSyscall(gadget_, nr, {a0, a1, a2, a3, a4, a5});
    if (stack_) s.gp.rsp = stack_;
    MFS_RETURN_IF_ERROR(SetGpRegs(tid_, s.gp));
    bool entered = false;
    for (;;) {
      if (ptrace(PTRACE_SYSCALL, tid_, nullptr, nullptr) != 0)
        return Status::FromErrno("PTRACE_SYSCALL");
      stopped_ = false;
      MFS_ASSIGN_OR_RETURN(int status, WaitForStop(/*resume_on_signal=*/false));
      int sig = WSTOPSIG(status);
      if ((status >> 16) == 0 && sig != kSyscallStop) continue;  // stashed signal
      if (sig != kSyscallStop) continue;  // event stop (interrupt/group stop): go on
      if (!entered) {
        entered = true;
        continue;
      }
      break;
    }
    MFS_ASSIGN_OR_RETURN(user_regs_struct after, GetGpRegs(tid_));
    int64_t ret = static_cast<int64_t>(after.rax);
    if (IsRestartCode(ret)) continue;  // interrupted by a (stashed) signal: run it again
    return ret;
  }
  return Status::Error(EINTR, "Syscall: interrupted too often");
}

namespace {
// for (e = rbx; e < r12; e += 72) { e->ret = syscall(e->nr, e->args...);
//   if (!(e->may_fail & 1) && e->ret is -errno) break; }  int3
// (rbx is left at the entry that failed, or at the end.)
constexpr uint8_t kBatchLoop[] = {
    0x4c, 0x39, 0xe3, 0x73, 0x35, 0x48, 0x8b, 0x03, 0x48, 0x8b, 0x7b, 0x08, 0x48, 0x8b, 0x73, 0x10,
    0x48, 0x8b, 0x53, 0x18, 0x4c, 0x8b, 0x53, 0x20, 0x4c, 0x8b, 0x43, 0x28, 0x4c, 0x8b, 0x4b, 0x30,
    0x0f, 0x05, 0x48, 0x89, 0x43, 0x38, 0xf6, 0x43, 0x40, 0x01, 0x75, 0x08, 0x48, 0x3d, 0x01, 0xf0,
    0xff, 0xff, 0x73, 0x06, 0x48, 0x83, 0xc3, 0x48, 0xeb, 0xc6, 0xcc};
constexpr uint64_t kBatchTrap = 0x3a;
static_assert(sizeof kBatchLoop <= Tracee::kBatchCodeSize);
static_assert(sizeof(Tracee::BatchCall) == 72);
}  // namespace

Result<size_t> Tracee::RunBatch(uint64_t code, uint64_t table, std::vector<BatchCall>& calls) {
  if (!stopped_) return Status::Error(EINVAL, "RunBatch: tracee not stopped");
  if (calls.empty()) return size_t{0};
  MFS_RETURN_IF_ERROR(WriteMem(code, kBatchLoop, sizeof kBatchLoop));
  MFS_RETURN_IF_ERROR(WriteMem(table, calls.data(), calls.size() * sizeof(BatchCall)));
  MFS_ASSIGN_OR_RETURN(user_regs_struct regs, GetGpRegs(tid_));
  regs.rip = code;
  regs.rbx = table;
  regs.r12 = table + calls.size() * sizeof(BatchCall);
  regs.orig_rax = static_cast<uint64_t>(-1);
  if (stack_) regs.rsp = stack_;
  MFS_RETURN_IF_ERROR(SetGpRegs(tid_, regs));
  for (;;) {
    if (ptrace(PTRACE_CONT, tid_, nullptr, nullptr) != 0) return Status::FromErrno("PTRACE_CONT");
    stopped_ = false;
    MFS_ASSIGN_OR_RETURN(int status, WaitForStop(/*resume_on_signal=*/false));
    if ((status >> 16) != 0) continue;  // an event stop (interrupt): go on
    if (WSTOPSIG(status) != SIGTRAP) continue;  // stashed; its call restarts
    MFS_ASSIGN_OR_RETURN(regs, GetGpRegs(tid_));
    if (regs.rip != code + kBatchTrap + 1) continue;  // a SIGTRAP from elsewhere: stashed
    // Ours, not a signal to re-deliver.
    if (!stashed_.empty() && stashed_.back() == SIGTRAP) stashed_.pop_back();
    break;
  }
  if (regs.rbx < table || regs.rbx > regs.r12 || (regs.rbx - table) % sizeof(BatchCall))
    return Status::Error(EFAULT, "RunBatch: the loop ended out of its table");
  size_t ran = (regs.rbx - table) / sizeof(BatchCall);
  const bool failed = ran < calls.size();
  if (failed) ++ran;  // the failing one ran too
  MFS_RETURN_IF_ERROR(ReadMem(table, calls.data(), ran * sizeof(BatchCall)));
  return ran;
}

Result<uint64_t> Tracee::CheckedSyscall(const char* what, long nr, uint64_t a0, uint64_t a1,
                                        uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5) {
  MFS_ASSIGN_OR_RETURN(int64_t r, Syscall(nr, a0, a1, a2, a3, a4, a5));
  if (r < 0 && r > -4096) return Status::PosixError(std::string("in tracee: ") + what, static_cast<int>(-r));
  return static_cast<uint64_t>(r);
}

Status Tracee::OpenMem() {
  if (mem_) return Status::OK();
  mem_.Reset(open(("/proc/" + std::to_string(tid_) + "/mem").c_str(), O_RDWR | O_CLOEXEC));
  if (!mem_) return Status::FromErrno("open /proc/" + std::to_string(tid_) + "/mem");
  return Status::OK();
}

Status Tracee::ReadMem(uint64_t addr, void* buf, size_t len) {
  iovec local{buf, len};
  iovec remote{reinterpret_cast<void*>(addr), len};
  ssize_t n = process_vm_readv(tid_, &local, 1, &remote, 1, 0);
  if (n == static_cast<ssize_t>(len)) return Status::OK();
  MFS_RETURN_IF_ERROR(OpenMem());
  size_t done = 0;
  while (done < len) {
    ssize_t r = pread(mem_.get(), static_cast<char*>(buf) + done, len - done,
                      static_cast<off_t>(addr + done));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return Status::PosixError("read tracee memory", r < 0 ? errno : EIO);
    done += static_cast<size_t>(r);
  }
  return Status::OK();
}

Status Tracee::WriteMem(uint64_t addr, const void* buf, size_t len) {
  iovec local{const_cast<void*>(buf), len};
  iovec remote{reinterpret_cast<void*>(addr), len};
  ssize_t n = process_vm_writev(tid_, &local, 1, &remote, 1, 0);
  if (n == static_cast<ssize_t>(len)) return Status::OK();
  MFS_RETURN_IF_ERROR(OpenMem());
  size_t done = 0;
  while (done < len) {
    ssize_t r = pwrite(mem_.get(), static_cast<const char*>(buf) + done, len - done,
                       static_cast<off_t>(addr + done));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return Status::PosixError("write tracee memory", r < 0 ? errno : EIO);
    done += static_cast<size_t>(r);
  }
  return Status::OK();
}

Status Tracee::Cont(int sig) {
  if (ptrace(PTRACE_CONT, tid_, nullptr, reinterpret_cast<void*>(static_cast<long>(sig))) != 0)
    return Status::FromErrno("PTRACE_CONT");
  stopped_ = false;
  return Status::OK();
}

Status Tracee::Detach() {
  if (!attached_ || dead_) return Status::OK();
  if (!stopped_) {
    // PTRACE_DETACH needs a stopped tracee.
    if (ptrace(PTRACE_INTERRUPT, tid_, nullptr, nullptr) == 0) WaitForStop(false).status().IgnoreError();
  }
  if (dead_) return Status::OK();
  int sig = 0;
  if (!stashed_.empty()) {
    sig = stashed_.front();
    for (size_t i = 1; i < stashed_.size(); ++i) kill(tid_, stashed_[i]);
    stashed_.clear();
  }
  if (ptrace(PTRACE_DETACH, tid_, nullptr, reinterpret_cast<void*>(static_cast<long>(sig))) != 0)
    return Status::FromErrno("PTRACE_DETACH");
  attached_ = false;
  stopped_ = false;
  return Status::OK();
}

void Tracee::Kill() {
  if (dead_) return;
  kill(tid_, SIGKILL);
  while (!dead_) {
    int status = 0;
    pid_t r = waitpid(tid_, &status, __WALL);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) break;
    MarkStopped(status);
    // A tracee with PTRACE_O_TRACEEXIT may stop at its exit event even
    // when killed: let it go on to its death.
    if (!dead_) ptrace(PTRACE_CONT, tid_, nullptr, nullptr);
  }
  dead_ = true;
  attached_ = false;
}

}  // namespace mfs::migrate

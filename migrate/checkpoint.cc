#include "migrate/checkpoint.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/kcmp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <sstream>

#include "mfs/base/unique_fd.h"
#include "migrate/proc_maps.h"

namespace mfs::migrate {
namespace {

constexpr uint64_t kPmPresent = 1ull << 63;
constexpr uint64_t kPmSwapped = 1ull << 62;
constexpr uint64_t kPmFileOrSharedAnon = 1ull << 61;

Result<std::vector<std::string>> StatFields(pid_t pid) {
  MFS_ASSIGN_OR_RETURN(std::string text, ReadFileToString("/proc/" + std::to_string(pid) + "/stat"));
  // comm may hold spaces and parentheses: fields resume after the last ')'.
  size_t close = text.rfind(')');
  if (close == std::string::npos) return Status::Corruption("stat: no comm");
  std::vector<std::string> f = {"pid", "comm"};
  std::istringstream in(text.substr(close + 2));
  std::string tok;
  while (in >> tok) f.push_back(tok);
  return f;
}

Status ReadIds(pid_t pid, ProcessImage* img) {
  MFS_ASSIGN_OR_RETURN(std::string text, ReadFileToString("/proc/" + std::to_string(pid) + "/status"));
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream l(line);
    std::string key;
    l >> key;
    if (key == "Uid:") {
      uint32_t fs;
      l >> img->uid[0] >> img->uid[1] >> img->uid[2] >> fs;
    } else if (key == "Gid:") {
      uint32_t fs;
      l >> img->gid[0] >> img->gid[1] >> img->gid[2] >> fs;
    } else if (key == "Groups:") {
      uint32_t g;
      while (l >> g) img->groups.push_back(g);
    }
  }
  return Status::OK();
}

std::string VmaRefusal(const MapEntry& e) {
  if (e.shared && (e.prot & PROT_WRITE)) return "writable shared mapping " + (e.path.empty() ? std::string("(anonymous)") : e.path);
  if (!e.anonymous() && !e.special() && e.path.find(" (deleted)") != std::string::npos)
    return "mapping of a deleted file " + e.path;
  if (e.path == "[uprobes]") return "uprobes mapping";
  return "";
}

}  // namespace

std::string WhyNotMigratable(pid_t pid) {
  int threads = CountThreads(pid);
  if (threads < 0) return "no such process";
  if (threads > 1) {
    auto f = StatFields(pid);
    if (f.ok() && f->size() > 2 && (*f)[2] == "Z") return "its main thread has exited (pthread_exit)";
  }
  auto maps = ReadMaps(pid);
  if (!maps.ok()) return maps.status().ToString();
  for (const auto& e : *maps) {
    std::string why = VmaRefusal(e);
    if (!why.empty()) return why;
  }
  auto timers = ReadFileToString("/proc/" + std::to_string(pid) + "/timers");
  if (timers.ok() && !timers->empty()) return "POSIX timers (timer_create) in use";
  return "";
}

Result<Scratch> MapScratch(Tracee& t, const KernelFeatures& k, uint64_t hint, uint64_t size) {
  if (k.vdso_syscall_offset < 0) return Status::Error(ENOTSUP, "no syscall gadget found in [vdso]");
  MFS_ASSIGN_OR_RETURN(auto maps, ReadMaps(t.tid()));
  uint64_t vdso = 0;
  for (const auto& e : maps)
    if (e.path == "[vdso]") vdso = e.start;
  if (vdso == 0) return Status::Error(ENOTSUP, "tracee has no [vdso]");
  uint64_t gadget = vdso + static_cast<uint64_t>(k.vdso_syscall_offset);
  uint8_t insn[2];
  MFS_RETURN_IF_ERROR(t.ReadMem(gadget, insn, 2));
  if (insn[0] != kSyscallInsn[0] || insn[1] != kSyscallInsn[1])
    return Status::Error(ENOTSUP, "tracee's [vdso] differs from ours (no syscall at the probed offset)");
  t.set_gadget(gadget);
  int flags = MAP_PRIVATE | MAP_ANONYMOUS | (hint ? MAP_FIXED_NOREPLACE : 0);
  MFS_ASSIGN_OR_RETURN(uint64_t addr, t.CheckedSyscall("mmap scratch", SYS_mmap, hint, size,
                                                       PROT_READ | PROT_WRITE | PROT_EXEC, flags,
                                                       static_cast<uint64_t>(-1), 0));
  if (hint && addr != hint) return Status::Error(EEXIST, "scratch not placed at its hint");
  const uint8_t code[4] = {kSyscallInsn[0], kSyscallInsn[1], 0xcc, 0xcc};  // syscall; int3
  MFS_RETURN_IF_ERROR(t.WriteMem(addr, code, sizeof code));
  t.set_gadget(addr);
  return Scratch{addr, size};
}

namespace {

// Where a batch of the capture lives in the scratch's buffer.
constexpr uint64_t kBatchCode = 64 << 10, kBatchTable = kBatchCode + 4096, kBatchOut = kBatchTable + 8192,
                   kBatchAreaEnd = kBatchOut + 64 * sizeof(KernelSigaction);

// Whether `pid` runs under a seccomp filter (/proc/PID/status "Seccomp: 2").
bool UnderSeccompFilter(pid_t pid) {
  auto st = ReadFileToString("/proc/" + std::to_string(pid) + "/status");
  if (!st.ok()) return true;  // unknown: the safe way
  size_t at = st->find("\nSeccomp:");
  if (at == std::string::npos) return true;
  size_t v = st->find_first_not_of(" \t", at + 9);
  return v == std::string::npos || (*st)[v] != '0';
}

}  // namespace

Status RearmTimers(Tracee& t, const Scratch& scratch, const std::array<itimerval, 3>& timers) {
  for (int which = 0; which < 3; ++which) {
    MFS_RETURN_IF_ERROR(t.WriteMem(scratch.buffer(), &timers[which], sizeof(itimerval)));
    MFS_RETURN_IF_ERROR(t.CheckedSyscall("setitimer", SYS_setitimer, which, scratch.buffer(), 0).status());
  }
  return Status::OK();
}

namespace {

// Takes the signals pending for `t` out of its queues into `out`: an
// injected rt_sigtimedwait with a zero timeout per signal (or the
// signal-delivery stop that the injection itself provokes, stashed).
// `shared`: the process-wide queue too (the main thread drains it).
Status DrainSignals(Tracee& t, const Scratch& scratch, bool shared, std::vector<uint32_t>* out) {
  const uint64_t buf = scratch.buffer();
  for (int k = 0; k < 128; ++k) {
    bool any = false;
    for (int sh = 0; sh < (shared ? 2 : 1) && !any; ++sh) {
      __ptrace_peeksiginfo_args a{0, sh ? static_cast<uint32_t>(PTRACE_PEEKSIGINFO_SHARED) : 0u, 1};
      siginfo_t si;
      any = ptrace(PTRACE_PEEKSIGINFO, t.tid(), &a, &si) > 0;
    }
    if (!any) break;
    const uint64_t all = ~0ull;
    const timespec zero{0, 0};
    MFS_RETURN_IF_ERROR(t.WriteMem(buf, &all, sizeof all));
    MFS_RETURN_IF_ERROR(t.WriteMem(buf + 16, &zero, sizeof zero));
    MFS_ASSIGN_OR_RETURN(int64_t sig, t.Syscall(SYS_rt_sigtimedwait, buf, buf + 64, buf + 16, 8));
    if (sig > 0) out->push_back(static_cast<uint32_t>(sig));
  }
  for (int sig : t.TakeStashedSignals()) out->push_back(static_cast<uint32_t>(sig));
  return Status::OK();
}

// The per-thread state that ptrace and a few injected calls give.
Status CaptureThread(Tracee& t, const Scratch& scratch, const CpuState& saved, ThreadImage* th) {
  const pid_t tid = t.tid();
  const uint64_t buf = scratch.buffer();
  th->cpu = saved;
  th->cpu.NormalizeRestart();
  if (ptrace(PTRACE_GETSIGMASK, tid, sizeof(uint64_t), &th->sigmask) != 0)
    return Status::FromErrno("PTRACE_GETSIGMASK");
  {
    RseqConfig rc{};
    long n = ptrace(kPtraceGetRseqConfiguration, tid, sizeof rc, &rc);
    if (n > 0 && rc.rseq_abi_pointer) {
      th->rseq_ptr = rc.rseq_abi_pointer;
      th->rseq_len = rc.rseq_abi_size;
      th->rseq_sig = rc.signature;
    }
  }
  {
    uint64_t head = 0;
    size_t len = 0;
    if (syscall(SYS_get_robust_list, tid, &head, &len) != 0) return Status::FromErrno("get_robust_list");
    th->robust_head = head;
    th->robust_len = len;
  }
  MFS_RETURN_IF_ERROR(t.CheckedSyscall("prctl(PR_GET_TID_ADDRESS)", SYS_prctl, PR_GET_TID_ADDRESS, buf).status());
  MFS_RETURN_IF_ERROR(t.ReadMem(buf, &th->tid_address, 8));
  MFS_RETURN_IF_ERROR(t.CheckedSyscall("sigaltstack", SYS_sigaltstack, 0, buf).status());
  stack_t ss{};
  MFS_RETURN_IF_ERROR(t.ReadMem(buf, &ss, sizeof ss));
  th->altstack_sp = reinterpret_cast<uint64_t>(ss.ss_sp);
  th->altstack_size = ss.ss_size;
  th->altstack_flags = ss.ss_flags & ~SS_ONSTACK;  // a frozen handler is restored by registers
  return Status::OK();
}

}  // namespace

Result<ProcessImage> Capture(Tracee& t, const Scratch& scratch, const CpuState& saved,
                             const std::vector<FrozenThread>& others, bool read_pages) {
  const pid_t pid = t.tid();
  ProcessImage img;
  img.home_pid = pid;
  int threads = CountThreads(pid);
  if (threads != 1 + static_cast<int>(others.size()))
    return Status::Error(EAGAIN, "threads changed during the freeze (" + std::to_string(threads) + " threads)");
  {
    // A process whose main thread has exited (pthread_exit) has no thread
    // to be the deputy.
    auto f = StatFields(pid);
    if (f.ok() && f->size() > 2 && (*f)[2] == "Z")
      return Status::Error(EBUSY, "its main thread has exited (pthread_exit)");
  }
  for (const auto& o : others) o.tracee->set_gadget(scratch.gadget());
  // Registers of the other threads come back whatever happens below.
  struct RestoreOthers {
    const std::vector<FrozenThread>& others;
    ~RestoreOthers() {
      for (const auto& o : others)
        if (!o.tracee->dead()) SetCpuState(o.tracee->tid(), o.saved).IgnoreError();
    }
  } restore_others{others};

  const uint64_t buf = scratch.buffer();
  // The interval timers stop first: from here on no tick can be lost between
  // reading a timer and draining the signals. An ITIMER_REAL that expired
  // with its SIGALRM still queued reads as 0 (the kernel re-arms it when the
  // signal is dequeued): it goes on with a full interval, and the queued
  // SIGALRM travels below.
  {
    const itimerval off{};
    MFS_RETURN_IF_ERROR(t.WriteMem(buf, &off, sizeof off));
    for (int which = 0; which < 3; ++which) {
      MFS_RETURN_IF_ERROR(
          t.CheckedSyscall("setitimer", SYS_setitimer, which, buf, buf + 64).status());
      MFS_RETURN_IF_ERROR(t.ReadMem(buf + 64, &img.itimers[which], sizeof(itimerval)));
    }
    itimerval& real = img.itimers[ITIMER_REAL];
    if (real.it_value.tv_sec == 0 && real.it_value.tv_usec == 0) real.it_value = real.it_interval;
  }
  struct Rearm {
    Tracee& t;
    const Scratch& scratch;
    const std::array<itimerval, 3>& timers;
    bool armed = true;
    ~Rearm() {
      if (armed) RearmTimers(t, scratch, timers).IgnoreError();
    }
  } rearm{t, scratch, img.itimers};

  // Pending signals travel: process-wide ones (and the main thread's) with
  // the process, the other threads' own with each thread.
  MFS_RETURN_IF_ERROR(DrainSignals(t, scratch, true, &img.pending_signals));
  img.threads.resize(1 + others.size());
  img.threads[0].tid = pid;
  MFS_RETURN_IF_ERROR(CaptureThread(t, scratch, saved, &img.threads[0]));
  for (size_t i = 0; i < others.size(); ++i) {
    Tracee& o = *others[i].tracee;
    ThreadImage& th = img.threads[i + 1];
    th.tid = others[i].vtid ? others[i].vtid : o.tid();
    MFS_RETURN_IF_ERROR(DrainSignals(o, scratch, false, &th.pending_signals));
    MFS_RETURN_IF_ERROR(CaptureThread(o, scratch, others[i].saved, &th));
  }

  // The signal handlers: in one batch (Tracee::RunBatch) where no seccomp
  // filter restricts where calls come from (at home), else one by one
  // through the gadget (a remote's filter lets only the gadget's through).
  if (!UnderSeccompFilter(pid) && scratch.buffer_size() >= kBatchAreaEnd) {
    std::vector<Tracee::BatchCall> calls;
    std::vector<int> sigs;
    for (int sig = 1; sig <= 64; ++sig) {
      if (sig == SIGKILL || sig == SIGSTOP) continue;
      Tracee::BatchCall c;
      c.nr = SYS_rt_sigaction;
      c.args[0] = static_cast<uint64_t>(sig);
      c.args[2] = buf + kBatchOut + (sig - 1) * sizeof(KernelSigaction);
      c.args[3] = 8;
      c.may_fail = 1;  // signals the kernel refuses to report
      calls.push_back(c);
      sigs.push_back(sig);
    }
    std::array<KernelSigaction, 64> out{};
    MFS_RETURN_IF_ERROR(t.WriteMem(buf + kBatchOut, out.data(), sizeof out));
    MFS_ASSIGN_OR_RETURN(size_t ran, t.RunBatch(buf + kBatchCode, buf + kBatchTable, calls));
    if (ran != calls.size()) return Status::Error(EIO, "capture: sigaction batch stopped early");
    MFS_RETURN_IF_ERROR(t.ReadMem(buf + kBatchOut, out.data(), sizeof out));
    for (size_t i = 0; i < calls.size(); ++i)
      if (calls[i].ret >= 0) img.actions[sigs[i] - 1] = out[sigs[i] - 1];
  } else {
    for (int sig = 1; sig <= 64; ++sig) {
      if (sig == SIGKILL || sig == SIGSTOP) continue;
      MFS_ASSIGN_OR_RETURN(int64_t r, t.Syscall(SYS_rt_sigaction, sig, 0, buf, 8));
      if (r < 0) continue;  // signals the kernel refuses to report
      MFS_RETURN_IF_ERROR(t.ReadMem(buf, &img.actions[sig - 1], sizeof(KernelSigaction)));
    }
  }
  MFS_ASSIGN_OR_RETURN(uint64_t brk, t.CheckedSyscall("brk", SYS_brk, 0));
  MFS_ASSIGN_OR_RETURN(int64_t pers, t.Syscall(SYS_personality, 0xffffffff));
  img.personality = static_cast<uint32_t>(pers);

  img.rlimits.resize(RLIM_NLIMITS);
  for (int i = 0; i < RLIM_NLIMITS; ++i)
    if (prlimit(pid, static_cast<__rlimit_resource>(i), nullptr, &img.rlimits[i]) != 0)
      return Status::FromErrno("prlimit");

  MFS_ASSIGN_OR_RETURN(auto f, StatFields(pid));
  if (f.size() < 52) return Status::Corruption("stat: too few fields");
  auto u = [&](int i) { return std::stoull(f[i - 1]); };
  img.mm = MmFields{u(26), u(27), u(45), u(46), u(47), brk, u(28), u(48), u(49), u(50), u(51)};
  MFS_ASSIGN_OR_RETURN(img.auxv, ReadFileToString("/proc/" + std::to_string(pid) + "/auxv"));
  MFS_ASSIGN_OR_RETURN(std::string comm, ReadFileToString("/proc/" + std::to_string(pid) + "/comm"));
  while (!comm.empty() && comm.back() == '\n') comm.pop_back();
  img.comm = comm;
  {
    char exe[4096];
    ssize_t n = readlink(("/proc/" + std::to_string(pid) + "/exe").c_str(), exe, sizeof exe - 1);
    if (n > 0) img.exe.assign(exe, static_cast<size_t>(n));
  }
  MFS_RETURN_IF_ERROR(ReadIds(pid, &img));

  // The memory map: what to re-create and which pages travel.
  MFS_ASSIGN_OR_RETURN(auto maps, ReadMaps(pid));
  UniqueFd pagemap(open(("/proc/" + std::to_string(pid) + "/pagemap").c_str(), O_RDONLY | O_CLOEXEC));
  if (!pagemap) return Status::FromErrno("open pagemap");
  std::vector<uint64_t> pm;
  for (const auto& e : maps) {
    if (e.start >= scratch.addr && e.end <= scratch.addr + scratch.size) continue;
    if (e.special()) {
      if (e.path != "[vsyscall]") img.specials.push_back({e.path, e.start, e.end});
      continue;
    }
    std::string why = VmaRefusal(e);
    if (!why.empty()) return Status::Error(EBUSY, why);
    Vma v;
    v.start = e.start;
    v.end = e.end;
    v.prot = e.prot;
    v.offset = e.offset;
    v.path = e.path;
    if (e.shared) v.flags |= kVmaShared;
    if (!e.anonymous()) v.flags |= kVmaFile;
    if (e.path == "[stack]") v.flags |= kVmaStack;
    if (e.path == "[heap]") v.flags |= kVmaHeap;
    img.vmas.push_back(v);
    if (e.shared) continue;  // read-only shared: its pages are the file's

    const size_t npages = e.size() / kPageSize;
    pm.resize(npages);
    ssize_t n = pread(pagemap.get(), pm.data(), npages * 8, static_cast<off_t>(e.start / kPageSize * 8));
    if (n != static_cast<ssize_t>(npages * 8)) return Status::FromErrno("read pagemap");
    const bool file = v.flags & kVmaFile;
    size_t i = 0;
    while (i < npages) {
      auto travels = [&](size_t k) {
        uint64_t x = pm[k];
        if (!(x & (kPmPresent | kPmSwapped))) return false;
        return !(file && (x & kPmFileOrSharedAnon));
      };
      if (!travels(i)) {
        ++i;
        continue;
      }
      size_t j = i;
      while (j < npages && travels(j)) ++j;
      PageRun run;
      run.addr = e.start + i * kPageSize;
      if (!read_pages) {
        run.hashes.assign(j - i, 0);
        img.pages.push_back(std::move(run));
        i = j;
        continue;
      }
      run.data.resize((j - i) * kPageSize);
      if (!(e.prot & PROT_READ) || !t.ReadMem(run.addr, run.data.data(), run.data.size()).ok()) {
        // process_vm_readv refuses PROT_NONE pages; ReadMem already fell back
        // to /proc/PID/mem. A second failure is real.
        MFS_RETURN_IF_ERROR(t.ReadMem(run.addr, run.data.data(), run.data.size()));
      }
      run.hashes.resize(j - i);
      for (size_t k = 0; k < j - i; ++k) run.hashes[k] = HashPage(run.data.data() + k * kPageSize);
      img.pages.push_back(std::move(run));
      i = j;
    }
  }
  rearm.armed = false;
  return img;
}

bool IsMfsNodePath(const std::string& path) {
  if (path.rfind("/mfs/", 0) != 0) return false;
  size_t i = 5;
  while (i < path.size() && path[i] >= '0' && path[i] <= '9') ++i;
  return i > 5 && i < path.size() && path[i] == '/';
}

namespace {

// Fills `f` (all but the group) from /proc/PID/fd/FD and its fdinfo.
// *is_reg: a regular file; ENOENT-like errors mean the fd is gone.
Status DescribeFd(pid_t pid, int fd, FileImage* f, bool* is_reg) {
  const std::string base = "/proc/" + std::to_string(pid);
  const std::string link = base + "/fd/" + std::to_string(fd);
  struct stat st;
  if (stat(link.c_str(), &st) != 0) return Status::FromErrno("fd " + std::to_string(fd));
  *is_reg = S_ISREG(st.st_mode);
  char buf[4096];
  ssize_t n = readlink(link.c_str(), buf, sizeof buf - 1);
  if (n <= 0) return Status::FromErrno("readlink " + link);
  f->fd = fd;
  f->group = fd;
  f->path.assign(buf, static_cast<size_t>(n));
  MFS_ASSIGN_OR_RETURN(std::string info, ReadFileToString(base + "/fdinfo/" + std::to_string(fd)));
  bool have_pos = false, have_flags = false;
  std::istringstream in(info);
  std::string key;
  while (in >> key) {
    if (key == "pos:") {
      in >> f->offset;
      have_pos = true;
    } else if (key == "flags:") {
      std::string v;
      in >> v;
      f->flags = static_cast<uint32_t>(std::strtoul(v.c_str(), nullptr, 8));
      have_flags = true;
    } else {
      std::string rest;
      std::getline(in, rest);
    }
  }
  if (!have_pos || !have_flags) return Status::Corruption("fdinfo of fd " + std::to_string(fd));
  f->cloexec = f->flags & O_CLOEXEC;
  f->flags &= ~static_cast<uint32_t>(O_CLOEXEC);
  return Status::OK();
}

bool Eligible(const FileImage& f, bool is_reg) {
  const bool deleted =
      f.path.size() > 10 && f.path.compare(f.path.size() - 10, 10, " (deleted)") == 0;
  return is_reg && !(f.flags & O_PATH) && IsMfsNodePath(f.path) && !deleted && f.fd < 1000;
}

}  // namespace

Result<std::optional<FileImage>> CaptureMfsFile(pid_t pid, int fd) {
  FileImage f;
  bool is_reg = false;
  MFS_RETURN_IF_ERROR(DescribeFd(pid, fd, &f, &is_reg));
  if (!Eligible(f, is_reg)) return std::optional<FileImage>();
  return std::optional<FileImage>(std::move(f));
}

Result<std::vector<FileImage>> CaptureFiles(pid_t pid, FileScope scope) {
  const std::string base = "/proc/" + std::to_string(pid);
  std::vector<int> fds;
  {
    DIR* d = opendir((base + "/fd").c_str());
    if (!d) return Status::FromErrno("opendir " + base + "/fd");
    while (dirent* e = readdir(d))
      if (e->d_name[0] != '.') fds.push_back(atoi(e->d_name));
    closedir(d);
  }
  std::sort(fds.begin(), fds.end());
  std::vector<FileImage> out;
  for (int fd : fds) {
    FileImage f;
    bool is_reg = false;
    Status s = DescribeFd(pid, fd, &f, &is_reg);
    if (!s.ok()) {
      if (scope == FileScope::kMfs) continue;  // it stays at home either way
      return Status::Error(EBUSY, s.ToString());
    }
    if (scope == FileScope::kMfs && !Eligible(f, is_reg)) continue;
    if (scope == FileScope::kAll && (!is_reg || fd >= 1000))
      return Status::Error(
          EBUSY, "fd " + std::to_string(fd) + " (" + f.path + ") is not a file that can move");
    for (const auto& g : out)
      if (g.group == g.fd && syscall(SYS_kcmp, pid, pid, KCMP_FILE, g.fd, fd) == 0) {
        f.group = g.fd;
        break;
      }
    out.push_back(std::move(f));
  }
  return out;
}

}  // namespace mfs::migrate

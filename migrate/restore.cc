#include "migrate/restore.h"

#include <fcntl.h>
#include <sched.h>
#include <linux/prctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <map>

#include "migrate/proc_maps.h"

namespace mfs::migrate {
namespace {

constexpr unsigned kRseqUnregister = 1;

struct Range {
  uint64_t start, end;
};

// Highest address range of `size` bytes (16 MiB aligned) overlapping nothing
// in `used`, below the usual mmap base.
Result<uint64_t> FindGap(std::vector<Range> used, uint64_t size) {
  std::sort(used.begin(), used.end(), [](const Range& a, const Range& b) { return a.start < b.start; });
  const uint64_t step = 16ull << 20;
  for (uint64_t a = 0x7e0000000000ull; a > 0x10000000ull; a -= step) {
    bool clash = false;
    for (const auto& r : used)
      if (a < r.end && a + size > r.start) {
        clash = true;
        break;
      }
    if (!clash) return a;
  }
  return Status::Error(ENOMEM, "no free address range for the restore stub");
}

// Writes `len` bytes to the stub's buffer at `off`; returns their address.
Result<uint64_t> Put(Tracee& t, const Scratch& s, uint64_t off, const void* data, size_t len) {
  if (off + len > s.buffer_size()) return Status::Error(E2BIG, "stub buffer too small");
  MFS_RETURN_IF_ERROR(t.WriteMem(s.buffer() + off, data, len));
  return s.buffer() + off;
}

// System calls run in the tracee many per ptrace round trip
// (Tracee::RunBatch), their pointer arguments in a data area of the stub:
// code, table and data lie between the stub's argument buffer (its first
// 64 KiB) and the threads' stacks (its top half).
class Batch {
 public:
  Batch(Tracee& t, const Scratch& stub) : t_(t), stub_(stub) {}

  // Copies `n` bytes to the data area; their address in the tracee.
  Result<uint64_t> Data(const void* p, size_t n) {
    if (data_.size() + n > kDataSize) return Status::Error(E2BIG, "restore: batch data too large");
    uint64_t at = stub_.buffer() + kDataOffset + data_.size();
    data_.append(static_cast<const char*>(p), n);
    data_.resize((data_.size() + 15) & ~size_t{15});
    return at;
  }
  void Add(std::string what, long nr, std::array<uint64_t, 6> a, bool may_fail = false) {
    Tracee::BatchCall c;
    c.nr = static_cast<uint64_t>(nr);
    for (int i = 0; i < 6; ++i) c.args[i] = a[i];
    c.may_fail = may_fail;
    calls_.push_back(c);
    what_.push_back(std::move(what));
  }
  size_t size() const { return calls_.size(); }
  // Runs what was added, in order, up to the first failure (an error naming
  // its call). The raw return value of each call that ran goes to `rets`
  // (the failing one last). Empties the batch.
  Status Run(std::vector<int64_t>* rets_out = nullptr) {
    std::vector<int64_t> ignored;
    std::vector<int64_t>& rets = rets_out ? *rets_out : ignored;
    rets.clear();
    std::vector<Tracee::BatchCall> calls = std::move(calls_);
    std::vector<std::string> what = std::move(what_);
    std::string data = std::move(data_);
    calls_.clear();
    what_.clear();
    data_.clear();
    static_assert(kDataOffset + kDataSize <= kScratchSize / 2 - kPageSize);
    if (!data.empty()) MFS_RETURN_IF_ERROR(t_.WriteMem(stub_.buffer() + kDataOffset, data.data(), data.size()));
    for (size_t first = 0; first < calls.size(); first += kMaxCalls) {
      std::vector<Tracee::BatchCall> chunk(calls.begin() + first,
                                           calls.begin() + std::min(calls.size(), first + kMaxCalls));
      MFS_ASSIGN_OR_RETURN(size_t ran, t_.RunBatch(stub_.buffer() + kCodeOffset, stub_.buffer() + kTableOffset, chunk));
      for (size_t i = 0; i < ran; ++i) rets.push_back(chunk[i].ret);
      if (ran < chunk.size() || (ran > 0 && !chunk[ran - 1].may_fail && chunk[ran - 1].ret < 0 &&
                                 chunk[ran - 1].ret > -4096)) {
        if (ran == 0) return Status::Error(EIO, "restore: batch did not run");
        int64_t r = chunk[ran - 1].ret;
        if (r < 0 && r > -4096 && !chunk[ran - 1].may_fail)
          return Status::PosixError("in tracee: " + what[first + ran - 1], static_cast<int>(-r));
        return Status::Error(EIO, "restore: batch stopped early");
      }
    }
    return Status::OK();
  }

 private:
  static constexpr uint64_t kCodeOffset = 64 << 10;
  static constexpr uint64_t kTableOffset = kCodeOffset + kPageSize;
  static constexpr size_t kMaxCalls = (128 << 10) / sizeof(Tracee::BatchCall);
  static constexpr uint64_t kDataOffset = kTableOffset + (128 << 10);
  static constexpr size_t kDataSize = 256 << 10;
  Tracee& t_;
  const Scratch& stub_;
  std::vector<Tracee::BatchCall> calls_;
  std::vector<std::string> what_;
  std::string data_;
};

Status MoveSpecials(Tracee& t, const ProcessImage& img, const std::vector<MapEntry>& cur,
                    std::vector<Range> used) {
  if (img.specials.empty()) return Status::OK();
  std::map<std::string, MapEntry> here;
  for (const auto& e : cur)
    if (e.special() && e.path != "[vsyscall]") here[e.path] = e;
  if (here.size() != img.specials.size())
    return Status::Error(ENOTSUP, "vDSO layout differs between the two kernels");
  for (const auto& s : img.specials) {
    auto it = here.find(s.name);
    if (it == here.end() || it->second.size() != s.end - s.start)
      return Status::Error(ENOTSUP, "vDSO layout differs: " + s.name);
  }
  bool same = true;
  for (const auto& s : img.specials) same = same && here[s.name].start == s.start;
  if (same) return Status::OK();
  // Two steps (to a free range, then home) so that no part lands on another
  // that has not moved yet.
  uint64_t lo = UINT64_MAX, hi = 0;
  for (const auto& [name, e] : here) {
    lo = std::min(lo, e.start);
    hi = std::max(hi, e.end);
  }
  MFS_ASSIGN_OR_RETURN(uint64_t tmp, FindGap(used, hi - lo));
  for (auto& [name, e] : here) {
    uint64_t to = tmp + (e.start - lo);
    MFS_RETURN_IF_ERROR(t.CheckedSyscall(("mremap " + name).c_str(), SYS_mremap, e.start, e.size(), e.size(),
                                         MREMAP_MAYMOVE | MREMAP_FIXED, to)
                            .status());
    e.end = to + e.size();
    e.start = to;
  }
  for (const auto& s : img.specials) {
    const auto& e = here[s.name];
    MFS_RETURN_IF_ERROR(t.CheckedSyscall(("mremap " + s.name).c_str(), SYS_mremap, e.start, e.size(),
                                         e.size(), MREMAP_MAYMOVE | MREMAP_FIXED, s.start)
                            .status());
  }
  return Status::OK();
}

// Adds the per-thread state of `th` to `b` (run in that thread).
Status AddThreadState(Batch& b, const ThreadImage& th) {
  b.Add("set_robust_list", SYS_set_robust_list, {th.robust_head, th.robust_len ? th.robust_len : 24});
  stack_t ss{};
  ss.ss_sp = reinterpret_cast<void*>(th.altstack_sp);
  ss.ss_size = th.altstack_size;
  ss.ss_flags = th.altstack_flags;
  MFS_ASSIGN_OR_RETURN(uint64_t p, b.Data(&ss, sizeof ss));
  b.Add("sigaltstack", SYS_sigaltstack, {p, 0});
  b.Add("set_tid_address", SYS_set_tid_address, {th.tid_address});
  if (th.rseq_ptr) b.Add("rseq", SYS_rseq, {th.rseq_ptr, th.rseq_len, 0, th.rseq_sig});
  return Status::OK();
}

// The per-thread state of `th` in the thread `c` (stopped, stack and gadget
// set), one call at a time through the gadget: the thread is cloned after
// the hook, whose seccomp filter may let only the gadget's calls through.
Status SetThreadState(Tracee& c, const Scratch& stub, uint64_t scratch_off, const ThreadImage& th) {
  MFS_RETURN_IF_ERROR(c.CheckedSyscall("set_robust_list", SYS_set_robust_list, th.robust_head,
                                       th.robust_len ? th.robust_len : 24)
                          .status());
  {
    stack_t ss{};
    ss.ss_sp = reinterpret_cast<void*>(th.altstack_sp);
    ss.ss_size = th.altstack_size;
    ss.ss_flags = th.altstack_flags;
    MFS_ASSIGN_OR_RETURN(uint64_t p, Put(c, stub, scratch_off, &ss, sizeof ss));
    MFS_RETURN_IF_ERROR(c.CheckedSyscall("sigaltstack", SYS_sigaltstack, p, 0).status());
  }
  MFS_RETURN_IF_ERROR(c.CheckedSyscall("set_tid_address", SYS_set_tid_address, th.tid_address).status());
  if (th.rseq_ptr)
    MFS_RETURN_IF_ERROR(c.CheckedSyscall("rseq", SYS_rseq, th.rseq_ptr, th.rseq_len, 0, th.rseq_sig).status());
  return Status::OK();
}

// Re-creates img.threads[1..] as threads of `t`'s process.
Status CloneThreads(Tracee& t, const ProcessImage& img, const Scratch& stub,
                    std::vector<std::unique_ptr<Tracee>>* out) {
  if (img.threads.size() == 1) return Status::OK();
  const long options = t.options();
  MFS_RETURN_IF_ERROR(t.SetOptions(options | PTRACE_O_TRACECLONE));
  struct ResetOptions {
    Tracee& t;
    long options;
    ~ResetOptions() { t.SetOptions(options).IgnoreError(); }
  } reset{t, options};
  constexpr uint64_t kFlags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM;
  constexpr uint64_t kStackEach = 4096;
  if ((img.threads.size() + 2) * kStackEach > stub.buffer_size() / 2)
    return Status::Error(E2BIG, "restore: too many threads for the stub");
  for (size_t i = 1; i < img.threads.size(); ++i) {
    const ThreadImage& th = img.threads[i];
    // Its own small stack at the top of the stub, below the main thread's.
    const uint64_t sp = stub.addr + stub.size - (i + 1) * kStackEach - 256;
    MFS_ASSIGN_OR_RETURN(uint64_t ctid, t.CheckedSyscall("clone", SYS_clone, kFlags, sp, 0, 0, 0));
    // The new thread starts with a PTRACE_EVENT_STOP, before any instruction.
    int status = 0;
    pid_t r;
    do {
      r = waitpid(static_cast<pid_t>(ctid), &status, __WALL);
    } while (r < 0 && errno == EINTR);
    if (r != static_cast<pid_t>(ctid) || !WIFSTOPPED(status))
      return Status::Error(ECHILD, "restore: the cloned thread did not stop");
    out->push_back(Tracee::Adopt(static_cast<pid_t>(ctid), options));
    Tracee& c = *out->back();
    MFS_RETURN_IF_ERROR(c.SetOptions(options));  // it inherited TRACECLONE
    c.set_gadget(stub.gadget());
    c.set_stack(sp);
    MFS_RETURN_IF_ERROR(SetThreadState(c, stub, 2048, th));
    c.set_stack(0);
    uint64_t mask = th.sigmask;
    if (ptrace(PTRACE_SETSIGMASK, c.tid(), sizeof mask, &mask) != 0) return Status::FromErrno("PTRACE_SETSIGMASK");
    MFS_RETURN_IF_ERROR(SetCpuState(c.tid(), th.cpu));
    for (uint32_t sig : th.pending_signals) syscall(SYS_tgkill, t.tid(), c.tid(), static_cast<int>(sig));
    for (int sig : c.TakeStashedSignals()) syscall(SYS_tgkill, t.tid(), c.tid(), sig);
  }
  return Status::OK();
}

}  // namespace

Result<std::unique_ptr<Tracee>> SpawnRestoreTarget(const std::vector<std::pair<int, int>>& fds,
                                                   long ptrace_options) {
  pid_t parent = getpid();
  int ready[2];
  if (pipe2(ready, O_CLOEXEC) != 0) return Status::FromErrno("pipe2");
  pid_t pid = fork();
  if (pid < 0) {
    close(ready[0]);
    close(ready[1]);
    return Status::FromErrno("fork");
  }
  if (pid == 0) {
    // Async-signal-safe calls only: the parent may have threads.
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, nullptr);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    setsid();
    constexpr int kHigh = 1000;
    constexpr int kReady = kHigh - 1;
    if (dup2(ready[1], kReady) < 0) _exit(126);
    for (size_t i = 0; i < fds.size(); ++i)
      if (dup2(fds[i].first, kHigh + static_cast<int>(i)) < 0) _exit(126);
    for (size_t i = 0; i < fds.size(); ++i)
      if (dup2(kHigh + static_cast<int>(i), fds[i].second) < 0) _exit(126);
    for (int fd = 0; fd < kHigh + static_cast<int>(fds.size()) + 1; ++fd) {
      bool keep = fd == kReady;
      for (const auto& p : fds) keep = keep || p.second == fd;
      if (!keep) close(fd);
    }
    syscall(SYS_close_range, kHigh, ~0u, 0);
    char c = 1;
    if (write(kReady, &c, 1) != 1) _exit(126);
    close(kReady);
    for (;;) pause();
  }
  close(ready[1]);
  char c = 0;
  ssize_t n;
  do {
    n = read(ready[0], &c, 1);
  } while (n < 0 && errno == EINTR);
  // Then EOF: the child has closed its end too, so the target holds no
  // descriptor but `fds` when it is seized.
  for (ssize_t m = n; m > 0 || (m < 0 && errno == EINTR);) {
    char more;
    m = read(ready[0], &more, 1);
  }
  close(ready[0]);
  if (n != 1) {
    int status = 0;
    waitpid(pid, &status, 0);
    return Status::Error(ECHILD, "restore target failed to start (status " + std::to_string(status) + ")");
  }
  auto t = Tracee::Seize(pid, ptrace_options);
  if (!t.ok()) {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    return t.status();
  }
  Status s = (*t)->Interrupt();
  if (!s.ok()) {
    (*t)->Kill();
    return s;
  }
  return std::move(*t);
}

Result<RestoreResult> Restore(Tracee& t, const ProcessImage& img, const KernelFeatures& k,
                              const RestoreOptions& opts) {
  Restorer r(t, img, k, opts);
  MFS_RETURN_IF_ERROR(r.Begin());
  for (const auto& run : img.pages) MFS_RETURN_IF_ERROR(r.WritePages(run.addr, run.data));
  return r.Finish();
}

Restorer::Restorer(Tracee& t, const ProcessImage& img, const KernelFeatures& k, RestoreOptions opts)
    : t_(t), img_(img), k_(k), opts_(std::move(opts)) {}

Restorer::~Restorer() { t_.set_stack(0); }

Status Restorer::Begin() {
  Tracee& t = t_;
  const ProcessImage& img = img_;
  const KernelFeatures& k = k_;
  const RestoreOptions& opts = opts_;
  if (img.threads.empty()) return Status::Error(EINVAL, "restore: image without threads");
  const pid_t tid = t.tid();
  if (CountThreads(tid) != 1) return Status::Error(ENOTSUP, "restore: the target has more than one thread");

  MFS_ASSIGN_OR_RETURN(auto cur, ReadMaps(tid));
  std::vector<Range> used;
  for (const auto& e : cur) used.push_back({e.start, e.end});
  for (const auto& v : img.vmas) used.push_back({v.start, v.end});
  for (const auto& s : img.specials) used.push_back({s.start, s.end});
  // Leave room below [stack] for it to grow.
  for (const auto& v : img.vmas)
    if (v.flags & kVmaStack) used.push_back({v.start > (1ull << 30) ? v.start - (1ull << 30) : 0, v.start});
  // Memory prepared before the freeze: kept unless the image needs its place
  // (then it goes with the rest of the target's mappings).
  PreparedMemory* prepared = opts.prepared && opts.prepared->size ? opts.prepared : nullptr;
  if (prepared) {
    const uint64_t lo = prepared->base, hi = prepared->base + prepared->size;
    auto clashes = [&](uint64_t s, uint64_t e) { return s < hi && e > lo; };
    for (const auto& v : img.vmas)
      if (clashes(v.start, v.end) ||
          ((v.flags & kVmaStack) && clashes(v.start > (1ull << 30) ? v.start - (1ull << 30) : 0, v.start)))
        prepared = nullptr;
    for (const auto& sp : img.specials)
      if (clashes(sp.start, sp.end)) prepared = nullptr;
    if (prepared) used.push_back({lo, hi});
  }

  // 1. The stub.
  MFS_ASSIGN_OR_RETURN(uint64_t stub_addr, FindGap(used, kScratchSize));
  MFS_ASSIGN_OR_RETURN(stub_, MapScratch(t, k, stub_addr));
  const Scratch& stub = stub_;
  used.push_back({stub.addr, stub.addr + stub.size});
  t.set_stack(stub.addr + stub.size - 256);

  // 2. rseq off.
  {
    RseqConfig rc{};
    long n = ptrace(kPtraceGetRseqConfiguration, tid, sizeof rc, &rc);
    if (n > 0 && rc.rseq_abi_pointer)
      MFS_RETURN_IF_ERROR(t.CheckedSyscall("rseq unregister", SYS_rseq, rc.rseq_abi_pointer,
                                           rc.rseq_abi_size, kRseqUnregister, rc.signature)
                              .status());
  }

  // 3. Empty the address space.
  {
    Batch b(t, stub);
    for (const auto& e : cur) {
      if (e.special()) continue;
      if (e.start >= stub.addr && e.end <= stub.addr + stub.size) continue;
      if (!prepared) {
        b.Add("munmap", SYS_munmap, {e.start, e.size()});
        continue;
      }
      // Around the prepared memory.
      const uint64_t lo = prepared->base, hi = prepared->base + prepared->size;
      if (e.start < lo) b.Add("munmap", SYS_munmap, {e.start, std::min(e.end, lo) - e.start});
      if (e.end > hi) b.Add("munmap", SYS_munmap, {std::max(e.start, hi), e.end - std::max(e.start, hi)});
    }
    MFS_RETURN_IF_ERROR(b.Run());
  }

  // 4. The vDSO where the program expects it.
  MFS_RETURN_IF_ERROR(MoveSpecials(t, img, cur, used));

  // 5. The image's mappings: the files opened in one batch, mapped in
  // another, closed in a third.
  std::map<std::string, int> files;  // path -> fd in the tracee
  auto close_files = [&] {
    Batch b(t, stub);
    for (const auto& [p, fd] : files) b.Add("close", SYS_close, {static_cast<uint64_t>(fd)}, true);
    b.Run().IgnoreError();
    files.clear();
  };
  {
    Batch b(t, stub);
    std::vector<std::string> paths;
    for (const auto& v : img.vmas) {
      if (!(v.flags & kVmaFile) || std::find(paths.begin(), paths.end(), v.path) != paths.end()) continue;
      paths.push_back(v.path);
      std::string path = opts.map_path ? opts.map_path(v.path) : v.path;
      MFS_ASSIGN_OR_RETURN(uint64_t addr, b.Data(path.c_str(), path.size() + 1));
      b.Add("open " + path, SYS_openat, {static_cast<uint64_t>(AT_FDCWD), addr, O_RDONLY | O_CLOEXEC});
    }
    std::vector<int64_t> fds;
    Status st = b.Run(&fds);
    for (size_t i = 0; i < fds.size(); ++i)
      if (fds[i] >= 0) files.emplace(paths[i], static_cast<int>(fds[i]));
    if (!st.ok()) {
      close_files();  // those opened before the failing one
      return st;
    }
  }
  {
    // A prepared piece for each private anonymous mapping (not the stack:
    // MAP_GROWSDOWN cannot be given to a moved mapping) that starts where
    // the piece's did; the mapping keeps the piece's flags (private,
    // anonymous, read-write, accounted: as the mmap below would map it).
    std::map<uint64_t, const PreparedPiece*> pieces;
    if (prepared)
      for (const auto& p : prepared->pieces) pieces[p.start] = &p;
    struct Moved {
      size_t call, vma;
      const PreparedPiece* piece;
    };
    std::vector<Moved> moved;
    auto map_fresh = [&](Batch& b, const Vma& v) {
      int prot = v.prot;
      if (!(v.flags & kVmaShared)) prot |= PROT_WRITE;
      uint64_t flags = MAP_FIXED | ((v.flags & kVmaShared) ? MAP_SHARED : MAP_PRIVATE);
      uint64_t fd = static_cast<uint64_t>(-1);
      if (v.flags & kVmaFile) {
        fd = static_cast<uint64_t>(files.at(v.path));
      } else {
        flags |= MAP_ANONYMOUS;
        if (v.flags & kVmaStack) flags |= MAP_GROWSDOWN;
      }
      b.Add("mmap " + v.path, SYS_mmap,
            {v.start, v.end - v.start, static_cast<uint64_t>(prot), flags, fd, (v.flags & kVmaFile) ? v.offset : 0});
    };
    Batch b(t, stub);
    for (size_t i = 0; i < img.vmas.size(); ++i) {
      const Vma& v = img.vmas[i];
      auto it = pieces.find(v.start);
      if (it != pieces.end() && !(v.flags & (kVmaShared | kVmaFile | kVmaStack))) {
        const PreparedPiece& p = *it->second;
        // Resized to the mapping as it is now (it may have grown or shrunk
        // since the hint): one VMA either way.
        moved.push_back({b.size(), i, &p});
        b.Add("mremap prepared", SYS_mremap,
              {p.scratch, std::min(p.end, v.end) - p.start, v.end - v.start, MREMAP_MAYMOVE | MREMAP_FIXED, v.start},
              /*may_fail=*/true);
        continue;
      }
      map_fresh(b, v);
    }
    std::vector<int64_t> rets;
    Status st = b.Run(&rets);
    if (st.ok() && prepared) {
      // A piece the kernel would not move: that mapping the old way. Then
      // what is left of the prepared memory goes.
      Batch again(t, stub);
      for (const auto& m : moved) {
        if (rets[m.call] == static_cast<int64_t>(img.vmas[m.vma].start)) {
          ++prepared->pieces_moved;
          prepared->pages_moved += m.piece->pages;
          prepared->moved.push_back({img.vmas[m.vma].start, img.vmas[m.vma].end});
        } else {
          map_fresh(again, img.vmas[m.vma]);
        }
      }
      again.Add("munmap prepared", SYS_munmap, {prepared->base, prepared->size});
      st = again.Run();
      std::sort(prepared->moved.begin(), prepared->moved.end());
    }
    if (!st.ok()) {
      close_files();
      return st;
    }
  }
  close_files();
  begun_ = true;
  return Status::OK();
}

Status Restorer::WritePages(uint64_t addr, std::string_view data) {
  if (!begun_) return Status::Error(EINVAL, "restore: pages before the mappings");
  bool inside = false;
  for (const auto& v : img_.vmas)
    inside = inside || (!(v.flags & kVmaShared) && addr >= v.start && addr + data.size() <= v.end);
  if (!inside || data.size() % kPageSize) return Status::Corruption("restore: pages outside the image's mappings");
  return t_.WriteMem(addr, data.data(), data.size());
}

Result<RestoreResult> Restorer::Finish() {
  Tracee& t = t_;
  const ProcessImage& img = img_;
  const RestoreOptions& opts = opts_;
  const Scratch& stub = stub_;
  if (!begun_) return Status::Error(EINVAL, "restore: Finish before Begin");
  const ThreadImage& th = img.threads[0];
  const pid_t tid = t.tid();
  RestoreResult result;
  // On failure the threads already made exit (their memory is not theirs).
  struct EndThreads {
    RestoreResult& r;
    bool done = false;
    ~EndThreads() {
      if (done) return;
      for (auto& c : r.threads) {
        if (c->dead()) continue;
        c->set_stack(0);
        c->Syscall(SYS_exit, 0).status().IgnoreError();
      }
      r.threads.clear();
    }
  } end_threads{result};
  {
    Batch b(t, stub);
    for (const auto& v : img.vmas) {
      if ((v.flags & kVmaShared) || (v.prot & PROT_WRITE)) continue;
      b.Add("mprotect", SYS_mprotect, {v.start, v.end - v.start, static_cast<uint64_t>(v.prot)});
    }
    MFS_RETURN_IF_ERROR(b.Run());
  }

  // 6. Process state.
  {
    uint64_t exe_fd = static_cast<uint64_t>(-1);
    char cur_exe[4096];
    ssize_t n = readlink(("/proc/" + std::to_string(tid) + "/exe").c_str(), cur_exe, sizeof cur_exe - 1);
    // The same exe (coming home): the kernel refuses to replace an exe that
    // is still mapped (EBUSY), and there is nothing to replace.
    bool same_exe = n > 0 && std::string(cur_exe, static_cast<size_t>(n)) == img.exe;
    if (!img.exe.empty() && !same_exe) {
      std::string path = opts.map_path ? opts.map_path(img.exe) : img.exe;
      MFS_ASSIGN_OR_RETURN(uint64_t p, Put(t, stub, 0, path.c_str(), path.size() + 1));
      auto r = t.CheckedSyscall("open exe", SYS_openat, AT_FDCWD, p, O_RDONLY | O_CLOEXEC);
      if (r.ok()) exe_fd = *r;
      else result.warnings.push_back(r.status().ToString());
    }
    MFS_ASSIGN_OR_RETURN(uint64_t auxv, Put(t, stub, 4096, img.auxv.data(), img.auxv.size()));
    prctl_mm_map m{};
    m.start_code = img.mm.start_code;
    m.end_code = img.mm.end_code;
    m.start_data = img.mm.start_data;
    m.end_data = img.mm.end_data;
    m.start_brk = img.mm.start_brk;
    m.brk = img.mm.brk;
    m.start_stack = img.mm.start_stack;
    m.arg_start = img.mm.arg_start;
    m.arg_end = img.mm.arg_end;
    m.env_start = img.mm.env_start;
    m.env_end = img.mm.env_end;
    m.auxv = reinterpret_cast<__u64*>(auxv);
    m.auxv_size = static_cast<__u32>(img.auxv.size());
    m.exe_fd = static_cast<__u32>(exe_fd);
    MFS_ASSIGN_OR_RETURN(uint64_t mp, Put(t, stub, 0, &m, sizeof m));
    auto r = t.CheckedSyscall("prctl(PR_SET_MM_MAP)", SYS_prctl, PR_SET_MM, PR_SET_MM_MAP, mp, sizeof m);
    if (exe_fd != static_cast<uint64_t>(-1)) t.Syscall(SYS_close, exe_fd).status().IgnoreError();
    MFS_RETURN_IF_ERROR(r.status());
  }
  for (size_t i = 0; i < img.rlimits.size() && i < RLIM_NLIMITS; ++i) {
    if (prlimit(tid, static_cast<__rlimit_resource>(i), &img.rlimits[i], nullptr) == 0) continue;
    // Raising a hard limit needs CAP_SYS_RESOURCE, which this kernel withholds:
    // keep the soft limit, within the hard limit we have.
    rlimit have{};
    prlimit(tid, static_cast<__rlimit_resource>(i), nullptr, &have);
    rlimit want{std::min(img.rlimits[i].rlim_cur, have.rlim_max), have.rlim_max};
    prlimit(tid, static_cast<__rlimit_resource>(i), &want, nullptr);
    result.warnings.push_back("rlimit " + std::to_string(i) + " hard limit not raised");
  }
  {
    // Signal handlers, timers, name, personality, the main thread's state
    // and the groups: one batch.
    Batch b(t, stub);
    for (int sig = 1; sig <= 64; ++sig) {
      if (sig == SIGKILL || sig == SIGSTOP) continue;
      MFS_ASSIGN_OR_RETURN(uint64_t p, b.Data(&img.actions[sig - 1], sizeof(KernelSigaction)));
      // Only a handler the program set must be restored (glibc's own
      // signals may be refused).
      b.Add("rt_sigaction " + std::to_string(sig), SYS_rt_sigaction, {static_cast<uint64_t>(sig), p, 0, 8},
            img.actions[sig - 1].handler == 0);
    }
    for (int which = 0; which < 3; ++which) {
      MFS_ASSIGN_OR_RETURN(uint64_t p, b.Data(&img.itimers[which], sizeof(itimerval)));
      b.Add("setitimer", SYS_setitimer, {static_cast<uint64_t>(which), p, 0});
    }
    char name[16] = {};
    std::memcpy(name, img.comm.data(), std::min<size_t>(15, img.comm.size()));
    MFS_ASSIGN_OR_RETURN(uint64_t np, b.Data(name, sizeof name));
    b.Add("prctl(PR_SET_NAME)", SYS_prctl, {PR_SET_NAME, np});
    b.Add("personality", SYS_personality, {img.personality});
    MFS_RETURN_IF_ERROR(AddThreadState(b, th));
    if (!img.groups.empty()) {
      MFS_ASSIGN_OR_RETURN(uint64_t gp, b.Data(img.groups.data(), img.groups.size() * 4));
      b.Add("setgroups", SYS_setgroups, {img.groups.size(), gp});
    }
    MFS_RETURN_IF_ERROR(b.Run());
  }
  if (opts.before_registers) MFS_RETURN_IF_ERROR(opts.before_registers(t, stub));
  // From here on, calls go through the stub's gadget one by one: the hook
  // may have installed a seccomp filter that lets only the gadget's calls
  // through (the batch loop's `syscall` is elsewhere).
  MFS_RETURN_IF_ERROR(t.CheckedSyscall("setresgid", SYS_setresgid, img.gid[0], img.gid[1], img.gid[2]).status());
  MFS_RETURN_IF_ERROR(t.CheckedSyscall("setresuid", SYS_setresuid, img.uid[0], img.uid[1], img.uid[2]).status());
  {
    // Threads made after the filter and the credentials inherit both. On
    // failure the ones already made exit (their memory is not theirs yet).
    Status s = CloneThreads(t, img, stub, &result.threads);
    if (!s.ok()) return s;
  }
  {
    uint64_t mask = th.sigmask;
    if (ptrace(PTRACE_SETSIGMASK, tid, sizeof mask, &mask) != 0) return Status::FromErrno("PTRACE_SETSIGMASK");
  }

  // 8. The stub goes (unless kept) and the registers come back.
  if (opts.keep_stub) {
    result.stub = stub;
  } else {
    MFS_RETURN_IF_ERROR(t.CheckedSyscall("munmap stub", SYS_munmap, stub.addr, stub.size).status());
  }
  MFS_RETURN_IF_ERROR(SetCpuState(tid, th.cpu));
  // Signals pending at the freeze: queued now, taken when the process runs.
  for (uint32_t sig : img.pending_signals) syscall(SYS_tgkill, tid, tid, static_cast<int>(sig));
  // Signals that arrived while we rebuilt it (sent to the pid we restored
  // into) are the program's too.
  for (int sig : t.TakeStashedSignals()) syscall(SYS_tgkill, tid, tid, sig);
  end_threads.done = true;
  return result;
}

}  // namespace mfs::migrate

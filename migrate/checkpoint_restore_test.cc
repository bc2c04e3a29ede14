// The first proof: a real program is frozen, captured, killed and rebuilt in
// a new process, and its output continues byte for byte.
#include <fcntl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <dirent.h>

#include <chrono>
#include <thread>

#include <gtest/gtest.h>

#include "migrate/checkpoint.h"
#include "migrate/proc_maps.h"
#include "migrate/restore.h"

namespace mfs::migrate {
namespace {

const std::string kCounter = std::string(MFS_TEST_BIN_DIR) + "/mfs-test-counter";
const std::string kThreads = std::string(MFS_TEST_BIN_DIR) + "/mfs-test-threads";

std::string TempPath(const char* name) {
  return "/tmp/mfs-migrate-test-" + std::to_string(getpid()) + "-" + name;
}

pid_t Spawn(const std::vector<std::string>& argv, const std::string& out) {
  pid_t pid = fork();
  if (pid == 0) {
    int fd = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
    dup2(fd, 1);
    std::vector<char*> a;
    for (const auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
    a.push_back(nullptr);
    execv(a[0], a.data());
    _exit(127);
  }
  return pid;
}

int WaitExit(pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, __WALL) < 0 && errno == EINTR) {
  }
  return status;
}

size_t Lines(const std::string& path) {
  auto s = ReadFileToString(path);
  if (!s.ok()) return 0;
  return static_cast<size_t>(std::count(s->begin(), s->end(), '\n'));
}

TEST(KernelProbe, FindsVdsoAndGadget) {
  KernelFeatures k = ProbeKernel();
  ASSERT_FALSE(k.vdso_layout.empty());
  EXPECT_GE(k.vdso_syscall_offset, 0);
  EXPECT_TRUE(k.prctl_mm_map);
}

TEST(CheckpointRestore, CounterContinuesInANewProcess) {
  KernelFeatures k = ProbeKernel();
  if (k.vdso_syscall_offset < 0) GTEST_SKIP() << "no syscall instruction found in [vdso]";
  const std::string want_path = TempPath("want"), got_path = TempPath("got");
  const std::vector<std::string> argv = {kCounter, "60", "150000", "8"};

  // The unmigrated run.
  pid_t ref = Spawn(argv, want_path);
  int ref_status = WaitExit(ref);
  ASSERT_TRUE(WIFEXITED(ref_status));

  pid_t pid = Spawn(argv, got_path);
  // Let it get some way in.
  for (int i = 0; i < 500 && Lines(got_path) < 10; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_GE(Lines(got_path), 10u);
  ASSERT_LT(Lines(got_path), 60u) << "program too fast for the test";

  auto t = Tracee::Seize(pid, 0);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  ASSERT_TRUE((*t)->Interrupt().ok());
  auto saved = GetCpuState(pid);
  ASSERT_TRUE(saved.ok());
  auto scratch = MapScratch(**t, k);
  ASSERT_TRUE(scratch.ok()) << scratch.status().ToString();
  auto img = Capture(**t, *scratch, *saved);
  ASSERT_TRUE(img.ok()) << img.status().ToString();
  EXPECT_GT(img->page_count(), 8u * 256);  // the 8 MiB heap travels
  size_t lines_at_freeze = Lines(got_path);

  // The original is gone for good.
  (*t)->Kill();
  WaitExit(pid);

  int out = open(got_path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  ASSERT_GE(out, 0);
  auto target = SpawnRestoreTarget({{out, 1}}, PTRACE_O_EXITKILL);
  close(out);
  ASSERT_TRUE(target.ok()) << target.status().ToString();
  auto r = Restore(**target, *img, k, RestoreOptions{});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  pid_t restored = (*target)->tid();
  EXPECT_NE(restored, pid);
  ASSERT_TRUE((*target)->Detach().ok());
  int status = WaitExit(restored);
  ASSERT_TRUE(WIFEXITED(status)) << "restored process died: status " << status;
  EXPECT_EQ(WEXITSTATUS(status), WEXITSTATUS(ref_status));
  EXPECT_EQ(Lines(got_path), 60u);
  EXPECT_GE(Lines(got_path), lines_at_freeze);
  auto want = ReadFileToString(want_path);
  auto got = ReadFileToString(got_path);
  ASSERT_TRUE(want.ok() && got.ok());
  EXPECT_EQ(*got, *want);
  unlink(want_path.c_str());
  unlink(got_path.c_str());
}

std::vector<pid_t> Tasks(pid_t pid) {
  std::vector<pid_t> out;
  DIR* d = opendir(("/proc/" + std::to_string(pid) + "/task").c_str());
  if (!d) return out;
  while (dirent* e = readdir(d))
    if (e->d_name[0] != '.') out.push_back(atoi(e->d_name));
  closedir(d);
  return out;
}

// A pthreads program (workers taking turns on a mutex and a condition
// variable, sleeping, printing) is frozen with all its threads, captured,
// killed and rebuilt with all its threads in a new process.
TEST(CheckpointRestore, EveryThreadContinuesInANewProcess) {
  KernelFeatures k = ProbeKernel();
  if (k.vdso_syscall_offset < 0) GTEST_SKIP() << "no syscall instruction found in [vdso]";
  const std::string want_path = TempPath("twant"), got_path = TempPath("tgot");
  const std::vector<std::string> argv = {kThreads, "400", "4"};
  pid_t ref = Spawn(argv, want_path);
  int ref_status = WaitExit(ref);
  ASSERT_TRUE(WIFEXITED(ref_status));

  pid_t pid = Spawn(argv, got_path);
  for (int i = 0; i < 1000 && Lines(got_path) < 40; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_GE(Lines(got_path), 40u);
  ASSERT_LT(Lines(got_path), 1600u) << "program too fast for the test";

  auto t = Tracee::Seize(pid, 0);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  ASSERT_TRUE((*t)->Interrupt().ok());
  auto saved = GetCpuState(pid);
  ASSERT_TRUE(saved.ok());
  std::vector<std::unique_ptr<Tracee>> others;
  std::vector<FrozenThread> frozen;
  for (pid_t tid : Tasks(pid)) {
    if (tid == pid) continue;
    auto o = Tracee::Seize(tid, 0);
    ASSERT_TRUE(o.ok()) << o.status().ToString();
    ASSERT_TRUE((*o)->Interrupt().ok());
    auto regs = GetCpuState(tid);
    ASSERT_TRUE(regs.ok());
    frozen.push_back(FrozenThread{o->get(), *regs, 0});
    others.push_back(std::move(*o));
  }
  ASSERT_EQ(others.size(), 4u);
  auto scratch = MapScratch(**t, k);
  ASSERT_TRUE(scratch.ok()) << scratch.status().ToString();
  auto img = Capture(**t, *scratch, *saved, frozen);
  ASSERT_TRUE(img.ok()) << img.status().ToString();
  ASSERT_EQ(img->threads.size(), 5u);
  for (size_t i = 1; i < 5; ++i) {
    EXPECT_EQ(img->threads[i].tid, others[i - 1]->tid());
    EXPECT_NE(img->threads[i].cpu.gp.fs_base, img->threads[0].cpu.gp.fs_base);  // its own TLS
    EXPECT_NE(img->threads[i].tid_address, 0u);  // pthread_join waits on it
    EXPECT_NE(img->threads[i].robust_head, 0u);
  }
  size_t lines_at_freeze = Lines(got_path);

  kill(pid, SIGKILL);
  for (auto& o : others) o->Kill();
  (*t)->Kill();

  int out = open(got_path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  ASSERT_GE(out, 0);
  auto target = SpawnRestoreTarget({{out, 1}}, PTRACE_O_EXITKILL);
  close(out);
  ASSERT_TRUE(target.ok()) << target.status().ToString();
  auto r = Restore(**target, *img, k, RestoreOptions{});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  pid_t restored = (*target)->tid();
  ASSERT_EQ(r->threads.size(), 4u);
  EXPECT_EQ(Tasks(restored).size(), 5u);
  r->threads.clear();  // detached: they run
  ASSERT_TRUE((*target)->Detach().ok());
  int status = WaitExit(restored);
  ASSERT_TRUE(WIFEXITED(status)) << "restored process died: status " << status;
  EXPECT_EQ(WEXITSTATUS(status), WEXITSTATUS(ref_status));
  EXPECT_GE(Lines(got_path), lines_at_freeze);
  auto want = ReadFileToString(want_path);
  auto got = ReadFileToString(got_path);
  ASSERT_TRUE(want.ok() && got.ok());
  EXPECT_TRUE(*got == *want) << "output differs";
  unlink(want_path.c_str());
  unlink(got_path.c_str());
}

}  // namespace
// Many calls in one ptrace round trip: they run in order in the tracee, each
// return value comes back, and the batch stops at the first failing call
// unless it may fail.
TEST(Tracee, RunBatchRunsCallsInOrderAndStopsAtTheFirstFailure) {
  KernelFeatures k = ProbeKernel();
  if (k.vdso_syscall_offset < 0) GTEST_SKIP() << "no syscall instruction found in [vdso]";
  auto t = SpawnRestoreTarget({}, 0);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  Tracee& tr = **t;
  auto sc = MapScratch(tr, k);
  ASSERT_TRUE(sc.ok()) << sc.status().ToString();
  const uint64_t code = sc->buffer() + 8192, table = sc->buffer() + 16384;
  std::vector<Tracee::BatchCall> calls(4);
  calls[0].nr = SYS_getpid;
  calls[1].nr = SYS_close;  // a bad fd, allowed to fail
  calls[1].args[0] = 999;  // the target has only the fds it was given (none)
  calls[1].may_fail = 1;
  calls[2].nr = SYS_getppid;
  calls[3].nr = SYS_getpid;
  auto ran = tr.RunBatch(code, table, calls);
  ASSERT_TRUE(ran.ok()) << ran.status().ToString();
  EXPECT_EQ(*ran, 4u);
  EXPECT_EQ(calls[0].ret, tr.tid());
  EXPECT_EQ(calls[1].ret, -EBADF);
  EXPECT_EQ(calls[2].ret, getpid());
  EXPECT_EQ(calls[3].ret, tr.tid());

  // A failure that is not allowed stops the batch: what follows never runs
  // (its umask would be seen below).
  ASSERT_TRUE(tr.Syscall(SYS_umask, 022).ok());
  std::vector<Tracee::BatchCall> stop(3);
  stop[0].nr = SYS_getpid;
  stop[1].nr = SYS_close;
  stop[1].args[0] = 999;
  stop[2].nr = SYS_umask;
  stop[2].args[0] = 077;
  ran = tr.RunBatch(code, table, stop);
  ASSERT_TRUE(ran.ok()) << ran.status().ToString();
  EXPECT_EQ(*ran, 2u);
  EXPECT_EQ(stop[1].ret, -EBADF);

  // The tracee is still drivable one call at a time, and its umask is the
  // one set before the batch.
  auto mask = tr.Syscall(SYS_umask, 022);
  ASSERT_TRUE(mask.ok());
  EXPECT_EQ(*mask, 022);
  tr.Kill();
}

}  // namespace mfs::migrate

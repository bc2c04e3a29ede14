#include "mfs/locality/recorder.h"

#include <gtest/gtest.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <map>
#include <thread>

namespace mfs::locality {
namespace {

pid_t Tid() { return static_cast<pid_t>(::syscall(SYS_gettid)); }

struct Collected {
  std::mutex mu;
  std::vector<Entry> entries;
  bool fail = false;
  Counters Sum(pid_t pid, uint32_t node) {
    std::lock_guard lock(mu);
    Counters c;
    for (const auto& e : entries) {
      if (e.pid == pid && e.node == node) c.Add(e.c);
    }
    return c;
  }
};

RecorderOptions SinkTo(Collected* c) {
  RecorderOptions o;
  o.flush_interval = std::chrono::milliseconds(50);
  o.sink = [c](const Batch& b) -> Status {
    std::lock_guard lock(c->mu);
    if (c->fail) return Status::Error(ECONNREFUSED, "mfsd down");
    c->entries.insert(c->entries.end(), b.begin(), b.end());
    return Status::OK();
  };
  return o;
}

TEST(RecorderTest, ThreadsAreAttributedToTheirProcess) {
  Collected got;
  IoRecorder rec(SinkTo(&got));
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&rec] {
      for (int i = 0; i < 1000; ++i) rec.Record(Tid(), 2, IoOp::kRead, 100);
      rec.Record(Tid(), 3, IoOp::kWrite, 7);
      rec.Record(Tid(), 3, IoOp::kOpen, 0);
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_TRUE(rec.Flush().ok());
  Counters r = got.Sum(::getpid(), 2), w = got.Sum(::getpid(), 3);
  EXPECT_EQ(r.reads, 4000u);
  EXPECT_EQ(r.read_bytes, 400000u);
  EXPECT_EQ(w.write_bytes, 28u);
  EXPECT_EQ(w.opens, 4u);
  std::lock_guard lock(got.mu);
  ASSERT_FALSE(got.entries.empty());
  EXPECT_EQ(got.entries[0].exe, std::string(::realpath("/proc/self/exe", nullptr)));
  EXPECT_NE(got.entries[0].start, 0u);
  EXPECT_FALSE(got.entries[0].comm.empty());
  // Four threads: at most one /proc resolution per thread id.
  EXPECT_LE(rec.stats().resolutions, 4u);
}

TEST(RecorderTest, ChildProcessIsSeparateAndCachedReadsCount) {
  Collected got;
  IoRecorder rec(SinkTo(&got));
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    char c;
    (void)!::read(fds[0], &c, 1);  // wait until the parent is done
    _exit(0);
  }
  rec.Record(child, 1, IoOp::kRead, 4096, /*from_cache=*/true);
  rec.Record(child, 1, IoOp::kCreate, 0);
  ASSERT_TRUE(rec.Flush().ok());
  (void)!::write(fds[1], "x", 1);
  ::waitpid(child, nullptr, 0);
  ::close(fds[0]);
  ::close(fds[1]);
  Counters c = got.Sum(child, 1);
  EXPECT_EQ(c.cached_reads, 1u);
  EXPECT_EQ(c.cached_bytes, 4096u);
  EXPECT_EQ(c.read_bytes, 4096u);
  EXPECT_EQ(c.creates, 1u);
  EXPECT_EQ(got.Sum(::getpid(), 1).ops(), 0u);
}

TEST(RecorderTest, WritebackIsAttributedToTheOpener) {
  Collected got;
  IoRecorder rec(SinkTo(&got));
  Opener o = rec.CaptureOpener(Tid());
  EXPECT_EQ(o.pid, ::getpid());
  // The kernel's writeback arrives on another thread, with no useful pid.
  std::thread([&] { rec.RecordFor(o, 4, IoOp::kWrite, 65536); }).join();
  ASSERT_TRUE(rec.Flush().ok());
  EXPECT_EQ(got.Sum(::getpid(), 4).write_bytes, 65536u);
}

TEST(RecorderTest, KeepsDeltasWhileMfsdIsDownAndSendsThemLater) {
  Collected got;
  got.fail = true;
  IoRecorder rec(SinkTo(&got));
  rec.Record(Tid(), 2, IoOp::kRead, 10);
  EXPECT_EQ(rec.Flush().code(), ECONNREFUSED);
  rec.Record(Tid(), 2, IoOp::kRead, 5);
  EXPECT_FALSE(rec.Flush().ok());
  {
    std::lock_guard lock(got.mu);
    got.fail = false;
  }
  ASSERT_TRUE(rec.Flush().ok());
  EXPECT_EQ(got.Sum(::getpid(), 2).read_bytes, 15u);
  EXPECT_EQ(got.Sum(::getpid(), 2).reads, 2u);
  EXPECT_EQ(rec.stats().send_failures, 2u);
}

TEST(RecorderTest, FlushThreadSendsWithoutBeingAsked) {
  Collected got;
  IoRecorder rec(SinkTo(&got));
  rec.Start();
  rec.Record(Tid(), 5, IoOp::kRead, 1);
  for (int i = 0; i < 100 && got.Sum(::getpid(), 5).reads == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(got.Sum(::getpid(), 5).reads, 1u);
}

TEST(RecorderTest, AutoStartSendsAfterTheFirstRecord) {
  Collected got;
  RecorderOptions o = SinkTo(&got);
  o.auto_start = true;
  IoRecorder rec(o);
  rec.Record(Tid(), 6, IoOp::kRead, 2);
  for (int i = 0; i < 100 && got.Sum(::getpid(), 6).reads == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(got.Sum(::getpid(), 6).read_bytes, 2u);
}

TEST(RecorderTest, BadArgumentsAreIgnored) {
  Collected got;
  IoRecorder rec(SinkTo(&got));
  rec.Record(0, 1, IoOp::kRead, 1);
  rec.Record(Tid(), 0, IoOp::kRead, 1);
  rec.Record(Tid(), 256, IoOp::kRead, 1);
  rec.RecordFor(Opener{}, 1, IoOp::kWrite, 1);
  ASSERT_TRUE(rec.Flush().ok());
  std::lock_guard lock(got.mu);
  EXPECT_TRUE(got.entries.empty());
}

TEST(RecorderTest, DisabledRecordsNothing) {
  Collected got;
  RecorderOptions o = SinkTo(&got);
  o.enabled = false;
  IoRecorder rec(o);
  rec.Record(Tid(), 1, IoOp::kRead, 1);
  EXPECT_EQ(rec.CaptureOpener(Tid()).pid, 0);
  ASSERT_TRUE(rec.Flush().ok());
  EXPECT_EQ(rec.stats().resolutions, 0u);
  std::lock_guard lock(got.mu);
  EXPECT_TRUE(got.entries.empty());
}

TEST(RecorderTest, OptionsFromEnvironment) {
  setenv("MFS_LOCALITY", "off", 1);
  setenv("MFS_LOCALITY_FLUSH_MS", "250", 1);
  RecorderOptions o = RecorderOptions::FromEnvironment("/s");
  EXPECT_FALSE(o.enabled);
  EXPECT_EQ(o.flush_interval.count(), 250);
  EXPECT_EQ(o.control_socket, "/s");
  unsetenv("MFS_LOCALITY");
  unsetenv("MFS_LOCALITY_FLUSH_MS");
  EXPECT_TRUE(RecorderOptions::FromEnvironment("/s").enabled);
}

TEST(RecorderTest, GoneThreadIsCountedUnderItsId) {
  Collected got;
  IoRecorder rec(SinkTo(&got));
  pid_t child = ::fork();
  if (child == 0) _exit(0);
  ::waitpid(child, nullptr, 0);
  rec.Record(child, 2, IoOp::kRead, 3);
  ASSERT_TRUE(rec.Flush().ok());
  EXPECT_EQ(got.Sum(child, 2).read_bytes, 3u);
}

}  // namespace
}  // namespace mfs::locality

#include "mfs/locality/client_observer.h"

#if __has_include("mfs/client/locality.h")
namespace mfs::locality {
namespace {

TEST(ClientObserverTest, ForwardsTheClientHookToTheRecorder) {
  Collected got;
  auto rec = std::make_shared<IoRecorder>(SinkTo(&got));
  ClientObserver obs(rec);
  client::IoObserver& hook = obs;
  hook.OnIo(Tid(), 2, client::IoOp::kRead, 100);
  hook.OnIo(Tid(), 2, client::IoOp::kWrite, 7);
  ASSERT_TRUE(rec->Flush().ok());
  EXPECT_EQ(got.Sum(::getpid(), 2).read_bytes, 100u);
  EXPECT_EQ(got.Sum(::getpid(), 2).write_bytes, 7u);
}

}  // namespace
}  // namespace mfs::locality
#endif

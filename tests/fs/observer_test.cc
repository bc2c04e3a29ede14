// The locality hook (issue 5): a FuseFs served in this process, with an
// IoObserver that records what the client attributes.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <mutex>
#include <set>
#include <thread>

#include "mfs/client/client.h"
#include "mfs/fuse/fuse_fs.h"
#include "tests/fs/harness.h"

namespace mfs::testing {
namespace {

using client::IoOp;

struct Recorder : client::IoObserver {
  void OnIo(pid_t tid, uint32_t node, IoOp op, uint64_t bytes) override {
    std::lock_guard<std::mutex> l(mu);
    if (tid != want_tid) return;  // the kernel's own readahead, other processes
    nodes.insert(node);
    count[static_cast<int>(op)]++;
    bytes_by[static_cast<int>(op)] += bytes;
  }
  std::mutex mu;
  pid_t want_tid = 0;
  std::set<uint32_t> nodes;
  int count[4] = {};
  uint64_t bytes_by[4] = {};
};

TEST(FsIoObserver, EveryOpenCreateReadAndWriteIsAttributed) {
  if (auto why = MountSkipReason(); !why.empty()) GTEST_SKIP() << why;
  std::string dir = MakeTempDir("mfs-observer-test");
  ASSERT_FALSE(dir.empty());
  std::filesystem::create_directories(dir + "/export");
  std::filesystem::create_directories(dir + "/mnt");
  client::ClientOptions co;
  co.self_id = 3;
  co.export_path = dir + "/export";
  auto c = client::Client::Create(co);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  auto rec = std::make_shared<Recorder>();
  rec->want_tid = static_cast<pid_t>(syscall(SYS_gettid));
  (*c)->SetIoObserver(rec);
  fuse::FuseOptions fo;
  fo.mountpoint = dir + "/mnt";
  fo.max_threads = 4;
  {
    fuse::FuseFs fs(c->get(), fo);
    ASSERT_TRUE(fs.Mount().ok());
    std::thread loop([&] { fs.Run().IgnoreError(); });
    std::string path = dir + "/mnt/3/data";
    std::string block(1 << 20, 'x');
    int fd = open(path.c_str(), O_CREAT | O_RDWR | O_TRUNC, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(pwrite(fd, block.data(), block.size(), 0), static_cast<ssize_t>(block.size()));
    close(fd);
    fd = open(path.c_str(), O_RDONLY | O_DIRECT);
    ASSERT_GE(fd, 0);
    void* buf = nullptr;
    ASSERT_EQ(posix_memalign(&buf, 4096, 1 << 20), 0);
    ASSERT_EQ(pread(fd, buf, 1 << 20, 0), 1 << 20);
    free(buf);
    close(fd);
    fs.Stop();
    loop.join();
    fs.Unmount();
  }
  std::lock_guard<std::mutex> l(rec->mu);
  EXPECT_EQ(rec->nodes, std::set<uint32_t>{3});
  EXPECT_EQ(rec->count[static_cast<int>(IoOp::kCreate)], 1);
  EXPECT_EQ(rec->count[static_cast<int>(IoOp::kOpen)], 1);
  EXPECT_EQ(rec->bytes_by[static_cast<int>(IoOp::kWrite)], 1u << 20);
  EXPECT_EQ(rec->bytes_by[static_cast<int>(IoOp::kRead)], 1u << 20);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace mfs::testing

#include "mfs/client/local_ops.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>

#include "mfs/client/kernel_handles.h"

namespace mfs::client::ops {
namespace {

class LocalOpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/mfs-local-ops-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    auto r = OpenRoot(dir_);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    root_ = std::move(*r);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
  UniqueFd root_;
};

TEST_F(LocalOpsTest, NamesThatLeaveTheDirectoryAreRejected) {
  for (const char* bad : {"", ".", "..", "a/b", "../x"}) {
    auto r = OpenPath(root_.get(), bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), EINVAL) << bad;
  }
  auto r = OpenPath(root_.get(), std::string(NAME_MAX + 1, 'a'));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), ENAMETOOLONG);
}

// The probe leaves nothing behind, says no where it cannot make a file,
// and when it says yes, every write after a stat gives a new change time.
TEST_F(LocalOpsTest, FineChangeTimesProbe) {
  bool fine = HasFineChangeTimes(root_.get());
  EXPECT_TRUE(std::filesystem::is_empty(dir_));
  UniqueFd proc(open("/proc", O_PATH | O_DIRECTORY | O_CLOEXEC));
  ASSERT_TRUE(proc.valid());
  EXPECT_FALSE(HasFineChangeTimes(proc.get()));
  if (!fine) {
    std::cout << "[ NOTE     ] " << dir_ << " has coarse change times\n";
    return;
  }
  UniqueFd f(open((dir_ + "/f").c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600));
  ASSERT_TRUE(f.valid());
  for (int i = 0; i < 100; ++i) {
    struct stat before, after;
    ASSERT_EQ(fstat(f.get(), &before), 0);
    ASSERT_EQ(pwrite(f.get(), "y", 1, 0), 1);
    ASSERT_EQ(fstat(f.get(), &after), 0);
    ASSERT_NE(CtimeNs(before), CtimeNs(after)) << "write " << i;
  }
}

TEST_F(LocalOpsTest, SymlinksAreNotFollowed) {
  ASSERT_TRUE(MakeNode(root_.get(), "up", S_IFLNK | 0777, 0, "/etc").ok());
  auto fd = OpenPath(root_.get(), "up");
  ASSERT_TRUE(fd.ok());
  auto st = Stat(fd->get());
  ASSERT_TRUE(st.ok());
  EXPECT_TRUE(S_ISLNK(st->st_mode));
  auto target = ReadLink(fd->get());
  ASSERT_TRUE(target.ok());
  EXPECT_EQ(*target, "/etc");
  // Creating through the link must not create outside.
  auto c = Create(root_.get(), "up", 0644, O_WRONLY);
  EXPECT_FALSE(c.ok());
}

TEST_F(LocalOpsTest, CreateWriteReadRenameRemove) {
  auto fd = Create(root_.get(), "f", 0640, O_RDWR | O_EXCL);
  ASSERT_TRUE(fd.ok()) << fd.status().ToString();
  auto w = PWrite(fd->get(), "hello", 0);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(*w, 5u);
  auto r = PRead(fd->get(), 100, 1);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, "ello");
  ASSERT_TRUE(MakeNode(root_.get(), "g", S_IFREG | 0600, 0, "").ok());
  // RENAME_NOREPLACE refuses to replace g.
  Status s = Rename(root_.get(), "f", root_.get(), "g", RENAME_NOREPLACE);
  EXPECT_EQ(s.code(), EEXIST);
  ASSERT_TRUE(Rename(root_.get(), "f", root_.get(), "g", RENAME_EXCHANGE).ok());
  auto gfd = OpenPath(root_.get(), "g");
  ASSERT_TRUE(gfd.ok());
  EXPECT_EQ(Stat(gfd->get())->st_size, 5);
  ASSERT_TRUE(Remove(root_.get(), "g", false).ok());
  EXPECT_EQ(Remove(root_.get(), "g", false).code(), ENOENT);
  auto all = ReadDirAll(root_.get());
  ASSERT_FALSE(all.ok());  // an O_PATH fd cannot be read
  auto dirfd = Reopen(root_.get(), O_RDONLY | O_DIRECTORY);
  ASSERT_TRUE(dirfd.ok());
  all = ReadDirAll(dirfd->get());
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 3u);  // ".", "..", "f"
}

TEST_F(LocalOpsTest, OfdLocksConflictBetweenOwners) {
  ASSERT_TRUE(MakeNode(root_.get(), "l", S_IFREG | 0600, 0, "").ok());
  auto fd = OpenPath(root_.get(), "l");
  ASSERT_TRUE(fd.ok());
  OfdLockTable locks;
  LockIn a{1, F_WRLCK, 0, 10, 0, false};
  ASSERT_TRUE(locks.SetLk(fd->get(), "k", a).ok());
  LockIn b{2, F_WRLCK, 5, 10, 0, false};
  EXPECT_EQ(locks.SetLk(fd->get(), "k", b).code(), EAGAIN);
  auto q = locks.GetLk(fd->get(), "k", b);
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->type, F_WRLCK);
  EXPECT_EQ(q->start, 0);
  locks.ReleaseOwner("k", 1);
  EXPECT_TRUE(locks.SetLk(fd->get(), "k", b).ok());
  EXPECT_EQ(locks.Flock(fd->get(), "k", 3, LOCK_EX | LOCK_NB).code(), 0);
  EXPECT_EQ(locks.Flock(fd->get(), "k", 4, LOCK_EX | LOCK_NB).code(), EWOULDBLOCK);
  EXPECT_TRUE(locks.Flock(fd->get(), "k", 3, LOCK_UN).ok());
  EXPECT_TRUE(locks.Flock(fd->get(), "k", 4, LOCK_EX | LOCK_NB).ok());
}

// A handle names its file through renames, and no other: once the file is
// gone (its inode number free for reuse) the handle is stale.
TEST_F(LocalOpsTest, KernelHandlesFollowTheFileNotTheName) {
  KernelHandles handles;
  if (!handles.Usable(root_.get()))
    GTEST_SKIP() << "file handles do not work here (no CAP_DAC_READ_SEARCH?)";
  ASSERT_EQ(close(open((dir_ + "/a").c_str(), O_CREAT | O_WRONLY, 0644)), 0);
  auto a = OpenPath(root_.get(), "a");
  ASSERT_TRUE(a.ok());
  auto h = handles.Make(a->get());
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  struct stat before, after;
  ASSERT_EQ(fstat(a->get(), &before), 0);
  ASSERT_EQ(rename((dir_ + "/a").c_str(), (dir_ + "/b").c_str()), 0);
  auto fd = handles.Open(*h);
  ASSERT_TRUE(fd.ok()) << fd.status().ToString();
  ASSERT_EQ(fstat(fd->get(), &after), 0);
  EXPECT_EQ(after.st_ino, before.st_ino);
  a->Reset();
  fd->Reset();
  ASSERT_EQ(unlink((dir_ + "/b").c_str()), 0);
  auto gone = handles.Open(*h);
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.status().code(), ESTALE);
  auto bad = handles.Open(h->substr(0, 5));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), EBADMSG);
}

TEST(MountInfo, OctalEscapesAreUndone) {
  EXPECT_EQ(UnescapeMountInfoPath("/plain/path"), "/plain/path");
  EXPECT_EQ(UnescapeMountInfoPath("/a\\040b\\011c\\012d\\134e"), "/a b\tc\nd\\e");
  EXPECT_EQ(UnescapeMountInfoPath("/trailing\\04"), "/trailing\\04");
  EXPECT_EQ(UnescapeMountInfoPath("/not\\x41"), "/not\\x41");
}

}  // namespace
}  // namespace mfs::client::ops

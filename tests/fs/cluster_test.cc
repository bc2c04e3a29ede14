// /mfs across nodes: two real mfsd processes (each serving its export and
// mounting its own /mfs), on 127.0.0.x loopback addresses. Attribute and
// entry timeouts are set to 30 s, so every cross-node case below passes only
// through pushed invalidations and close-to-open, never through expiry.
// Node 2 mounts with passthrough = "on" (the kernel does its local file I/O
// where it supports FUSE passthrough), node 1 with the default (auto, with
// accounting on: through mount.mfs), so both local paths meet remote ones.
// Node 2 also takes its requests off io_uring where the kernel has FUSE
// over io_uring (io_uring = "on"), node 1 reads them from /dev/fuse.
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include "mfs/client/control_query.h"
#include "tests/fs/harness.h"

namespace mfs::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

class FsClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = MountSkipReason(); !why.empty()) GTEST_SKIP() << why;
    dir_ = MakeTempDir("mfs-cluster-test");
    ASSERT_FALSE(dir_.empty());
    chmod(dir_.c_str(), 0755);
    port_ = static_cast<int>(20000 + getpid() % 20000);
    base_ = static_cast<int>(100 + getpid() % 100);  // 127.0.0.<base+i>
    ASSERT_TRUE(WriteFile(dir_ + "/secret", "a cluster secret for the fs tests"));
    chmod((dir_ + "/secret").c_str(), 0600);
    for (int i = 1; i <= 2; ++i) {
      std::string n = Node(i);
      for (const char* sub : {"/export", "/state", "/mfs", "/run"})
        std::filesystem::create_directories(n + sub);
      chmod((n + "/export").c_str(), 0777);
      std::ofstream(n + "/mfsd.toml")
          << "[node]\nid = " << i << "\naddress = \"" << Addr(i) << "\"\nport = " << port_
          << "\nexport = \"" << n << "/export\"\nstate_dir = \"" << n
          << "/state\"\nsecret_file = \"" << dir_ << "/secret\"\ncontrol_socket = \"" << n
          << "/run/mfsd.sock\"\nmount = \"" << n << "/mfs\"\npeers = [\"" << Addr(3 - i) << ":"
          << port_ << "\"]\n[membership]\nheartbeat_ms = 200\ndead_after_ms = 1500\n"
          << "[fs]\nattr_timeout = 30.0\nentry_timeout = " << entry_timeout_ << "\npassthrough = \""
          << (i == 2 ? "on" : "auto") << "\"\nio_uring = \"" << (i == 2 ? "on" : "off")
          << "\"\n[log]\nlevel = \"info\"\n";
    }
    for (int i = 1; i <= 2; ++i) StartNode(i);
    for (int i = 1; i <= 2; ++i) {
      ASSERT_TRUE(WaitFor(
          [&] {
            struct stat st;
            return IsMfsMounted(Node(i) + "/mfs") && stat(M(i, 3 - i, "").c_str(), &st) == 0;
          },
          seconds(15)))
          << "node " << i << " never saw the other: " << ReadFile(Node(i) + "/mfsd.log");
    }
  }
  void TearDown() override {
    for (int i = 1; i <= 2; ++i) Stop(pid_[i]);
    for (pid_t p : stuck_) WaitFor([&] { return waitpid(p, nullptr, WNOHANG) == p; }, seconds(10));
    for (int i = 1; i <= 2; ++i)
      if (!dir_.empty()) Unmount(Node(i) + "/mfs");
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  void StartNode(int i) {
    pid_[i] = Spawn({BinDir() + "/mfsd", "--config", Node(i) + "/mfsd.toml"},
                    Node(i) + "/mfsd.log");
  }
  // Forks a process that opens `path`, takes a whole-file write lock (and
  // an exclusive flock when `also_flock`), reports success and sleeps until
  // killed. Returns its pid, or -1 if it could not lock.
  pid_t LockedByChild(const std::string& path, bool also_flock) {
    int pipefd[2];
    if (pipe(pipefd) != 0) return -1;
    pid_t child = fork();
    if (child == 0) {
      int fd = open(path.c_str(), O_RDWR);
      struct flock fl {};
      fl.l_type = F_WRLCK;
      fl.l_whence = SEEK_SET;
      int ok = fd >= 0 && fcntl(fd, F_SETLK, &fl) == 0 &&
               (!also_flock || flock(fd, LOCK_EX | LOCK_NB) == 0);
      (void)!write(pipefd[1], &ok, sizeof(ok));
      pause();
      _exit(0);
    }
    int ok = 0;
    bool got = read(pipefd[0], &ok, sizeof(ok)) == static_cast<ssize_t>(sizeof(ok));
    close(pipefd[0]);
    close(pipefd[1]);
    if (!got || !ok) {
      kill(child, SIGKILL);
      waitpid(child, nullptr, 0);
      return -1;
    }
    return child;
  }
  std::string Node(int i) { return dir_ + "/node" + std::to_string(i); }
  std::string Addr(int i) { return "127.0.0." + std::to_string(base_ + i); }
  // Writes a one-byte file f<i> into `dir` and unlinks it, n times.
  void WriteAndUnlink(const std::string& dir, int n) {
    for (int i = 0; i < n; ++i) {
      std::string f = dir + "/f" + std::to_string(i);
      ASSERT_TRUE(WriteFile(f, "x"));
      ASSERT_EQ(unlink(f.c_str()), 0);
    }
  }
  // A counter of node `node`'s {"op":"fs.status"}; 0 (and a failure) if
  // it cannot be read.
  uint64_t FsStatusCount(int node, const std::string& field) {
    auto r = client::ControlQuery(Node(node) + "/run/mfsd.sock", {{"op", "fs.status"}},
                                  std::chrono::milliseconds(5000));
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    if (!r.ok()) return 0;
    EXPECT_TRUE(r->contains(field)) << r->dump();
    return r->value(field, uint64_t{0});
  }
  // user.mfs.requests of node `node`'s mount: {FUSE requests read,
  // network requests sent}.
  std::pair<uint64_t, uint64_t> Requests(int node) {
    auto c = RequestCounters(node);
    return {c[0], c[1]};
  }
  // Its fourth number: lookups answered from a directory listing.
  uint64_t ListingAnswers(int node) { return RequestCounters(node)[3]; }
  std::array<uint64_t, 4> RequestCounters(int node) {
    char buf[128] = {};
    ssize_t n = getxattr((Node(node) + "/mfs").c_str(), "user.mfs.requests", buf, sizeof(buf) - 1);
    std::array<uint64_t, 4> c{};
    EXPECT_GT(n, 0) << strerror(errno);
    EXPECT_EQ(sscanf(buf, "%lu %lu %lu %lu", &c[0], &c[1], &c[2], &c[3]), 4) << buf;
    return c;
  }

  // Path of `rel` in node `owner`'s export, as seen from node `via`'s /mfs.
  std::string M(int via, int owner, const std::string& rel) {
    return Node(via) + "/mfs/" + std::to_string(owner) + "/" + rel;
  }

  double entry_timeout_ = 30.0;  // [fs] entry_timeout of both nodes
  std::string dir_;
  std::vector<pid_t> stuck_;  // children a failed test left in a request
  int port_ = 0, base_ = 0;
  pid_t pid_[3] = {-1, -1, -1};
};

TEST_F(FsClusterTest, WriteOnOneNodeReadsBackOnTheOthers) {
  // Cache the file on both nodes first, so stale caches would show.
  ASSERT_TRUE(WriteFile(M(2, 2, "f"), "one"));
  EXPECT_EQ(ReadFile(M(1, 2, "f")), "one");
  EXPECT_EQ(ReadFile(M(2, 2, "f")), "one");
  // Remote writer (node 1 through the file service), owner reads.
  ASSERT_TRUE(WriteFile(M(1, 2, "f"), "written on node 1, longer"));
  EXPECT_EQ(ReadFile(M(2, 2, "f")), "written on node 1, longer");
  EXPECT_EQ(ReadFile(Node(2) + "/export/f"), "written on node 1, longer");
  // Owner writes (fast path), remote reads after close.
  ASSERT_TRUE(WriteFile(M(2, 2, "f"), "2"));
  EXPECT_EQ(ReadFile(M(1, 2, "f")), "2");
  struct stat st;
  ASSERT_EQ(stat(M(1, 2, "f").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 1);
  char buf[8] = {};
  ASSERT_EQ(getxattr(M(1, 2, "f").c_str(), "user.mfs.node", buf, sizeof(buf)), 1);
  EXPECT_STREQ(buf, "2");
}

// What the owner writes through passthrough (the kernel writes the backing
// file; mount.mfs sees only open, flush and release) is still reported at
// close, so another node that cached the file reads the new bytes — here
// the same size, so no size change could give it away.
TEST_F(FsClusterTest, PassthroughWritesOnTheOwnerReachOtherNodes) {
  auto pt = [&] {
    char buf[64] = {};
    long a = -1, b = -1, c = -1;
    if (getxattr((Node(2) + "/mfs").c_str(), "user.mfs.passthrough", buf, sizeof(buf) - 1) > 0)
      std::sscanf(buf, "%ld %ld %ld", &a, &b, &c);
    return std::vector<long>{a, b, c};
  };
  if (pt()[0] != 1) GTEST_SKIP() << "this kernel did not agree to FUSE passthrough";
  long opens0 = pt()[2];
  std::string one(1 << 20, 'a'), two(1 << 20, 'b');
  for (size_t i = 0; i < one.size(); i += 4096) one[i] = two[i] = static_cast<char>('0' + i % 10);
  ASSERT_TRUE(WriteFile(M(2, 2, "pt"), one));
  // Node 1 keeps the file open with its pages cached, and its attributes
  // cached (30 s): only the owner's pushed invalidation can refresh them.
  int r = open(M(1, 2, "pt").c_str(), O_RDONLY);
  ASSERT_GE(r, 0);
  std::string got(one.size(), '\0');
  ASSERT_EQ(pread(r, got.data(), got.size(), 0), static_cast<ssize_t>(got.size()));
  EXPECT_EQ(got, one);
  struct stat st;
  ASSERT_EQ(stat(M(1, 2, "pt").c_str(), &st), 0);
  // Overwrite in place through an fd opened without O_TRUNC, and extend.
  int fd = open(M(2, 2, "pt").c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(pwrite(fd, two.data(), two.size(), 0), static_cast<ssize_t>(two.size()));
  ASSERT_EQ(pwrite(fd, "+", 1, static_cast<off_t>(two.size())), 1);
  ASSERT_EQ(close(fd), 0);
  EXPECT_GE(pt()[2], opens0 + 2) << "node 2's writes did not go through passthrough";
  EXPECT_TRUE(
      WaitFor([&] { return stat(M(1, 2, "pt").c_str(), &st) == 0 && st.st_size == 1 + (1 << 20); },
              seconds(2)))
      << "node 1 kept the old size: no change report after a passthrough write";
  EXPECT_TRUE(WaitFor(
      [&] {
        return pread(r, got.data(), got.size(), 0) == static_cast<ssize_t>(got.size()) &&
               got == two;
      },
      seconds(2)))
      << "node 1 kept stale pages of an open file";
  close(r);
  EXPECT_EQ(ReadFile(M(1, 2, "pt")), two + "+");
  // A writer on node 1 (remote) while node 2 reads through passthrough.
  ASSERT_TRUE(WriteFile(M(1, 2, "pt"), "short now"));
  EXPECT_EQ(ReadFile(M(2, 2, "pt")), "short now");
  EXPECT_EQ(ReadFile(Node(2) + "/export/pt"), "short now");
}

// A process on node 1 waiting for a lock on node 2's file (the wait is in
// node 2's mfsd) is interrupted by a caught signal (EINTR) and killed by
// SIGKILL promptly: node 1's client sends the owner a cancel. The holder,
// on node 2, keeps its locks.
TEST_F(FsClusterTest, RemoteLockWaitsAreInterruptible) {
  ASSERT_TRUE(WriteFile(M(2, 2, "held"), "x"));
  pid_t holder = LockedByChild(M(2, 2, "held"), true);
  ASSERT_GT(holder, 0);
  std::vector<pid_t> left;  // killed and reaped at the end, whatever happens
  auto waiter = [&](LockKind kind, bool catch_alarm) {
    pid_t p = ForkLockWaiter(M(1, 2, "held"), kind, catch_alarm);
    left.push_back(p);
    return p;
  };
  auto exited_within = [&](pid_t p, milliseconds limit, int* status) {
    bool done = WaitFor([&] { return waitpid(p, status, WNOHANG) == p; }, limit);
    if (done) left.erase(std::find(left.begin(), left.end(), p));
    return done;
  };
  for (LockKind kind : {LockKind::kFcntl, LockKind::kFlock}) {
    SCOPED_TRACE(LockKindName(kind));
    pid_t w = waiter(kind, true);
    int status = 0;
    EXPECT_TRUE(exited_within(w, seconds(4), &status))
        << "a caught signal did not interrupt the remote lock wait";
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 10) << "status " << status;
    w = waiter(kind, false);
    std::this_thread::sleep_for(milliseconds(300));
    EXPECT_EQ(waitpid(w, &status, WNOHANG), 0) << "the waiter did not wait";
    kill(w, SIGKILL);
    EXPECT_TRUE(exited_within(w, seconds(3), &status))
        << "SIGKILL did not end a process waiting for a remote lock";
  }
  // The holder still holds both locks, as seen from node 1.
  int fd = open(M(1, 2, "held").c_str(), O_RDWR);
  EXPECT_GE(fd, 0);
  EXPECT_EQ(ConflictingLock(fd), F_WRLCK);
  EXPECT_EQ(flock(fd, LOCK_EX | LOCK_NB), -1);
  kill(holder, SIGKILL);
  waitpid(holder, nullptr, 0);
  // Once the holder is gone the lock is free: no cancelled waiter took it.
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  EXPECT_TRUE(WaitFor([&] { return fcntl(fd, F_SETLK, &fl) == 0; }, seconds(3)));
  EXPECT_TRUE(WaitFor([&] { return flock(fd, LOCK_EX | LOCK_NB) == 0; }, seconds(3)));
  close(fd);
  // Stuck waiters (a failed run) end when node 1's mount goes in TearDown.
  for (pid_t p : left) kill(p, SIGKILL);
  stuck_ = left;
}

TEST_F(FsClusterTest, DeleteAndRecreateIsSeenEverywhere) {
  ASSERT_TRUE(WriteFile(M(1, 2, "g"), "first"));
  EXPECT_EQ(ReadFile(M(2, 2, "g")), "first");
  ASSERT_EQ(unlink(M(2, 2, "g").c_str()), 0);
  struct stat st;
  EXPECT_TRUE(WaitFor([&] { return stat(M(1, 2, "g").c_str(), &st) != 0 && errno == ENOENT; },
                      seconds(2)));
  ASSERT_TRUE(WriteFile(M(2, 2, "g"), "second incarnation"));
  EXPECT_TRUE(WaitFor([&] { return ReadFile(M(1, 2, "g")) == "second incarnation"; }, seconds(2)));
  // And the other way round, on node 1's export.
  ASSERT_TRUE(WriteFile(M(2, 1, "h"), "a"));
  EXPECT_EQ(ReadFile(M(1, 1, "h")), "a");
  ASSERT_EQ(unlink(M(1, 1, "h").c_str()), 0);
  ASSERT_TRUE(WriteFile(M(1, 1, "h"), "b"));
  EXPECT_TRUE(WaitFor([&] { return ReadFile(M(2, 1, "h")) == "b"; }, seconds(2)));
}

TEST_F(FsClusterTest, AppendsFromTwoNodesInterleave) {
  int a = open(M(1, 2, "log").c_str(), O_CREAT | O_WRONLY | O_APPEND, 0644);
  ASSERT_GE(a, 0);
  int b = open(M(2, 2, "log").c_str(), O_WRONLY | O_APPEND);
  ASSERT_GE(b, 0);
  std::string expect;
  for (int i = 0; i < 20; ++i) {
    std::string la = "A" + std::to_string(i) + "\n", lb = "B" + std::to_string(i) + "\n";
    ASSERT_EQ(write(a, la.data(), la.size()), static_cast<ssize_t>(la.size()));
    ASSERT_EQ(write(b, lb.data(), lb.size()), static_cast<ssize_t>(lb.size()));
    expect += la + lb;
  }
  close(a);
  close(b);
  EXPECT_EQ(ReadFile(Node(2) + "/export/log"), expect);
  EXPECT_EQ(ReadFile(M(1, 2, "log")), expect);
  EXPECT_EQ(ReadFile(M(2, 2, "log")), expect);
}

// Close-to-open: once a writer on one node has closed, an open on another
// node sees everything it wrote, even when the reader holds the file's
// attributes in its kernel's cache from just before (a stat) and the
// owner's invalidation for the write may still be on its way.
TEST_F(FsClusterTest, OpenAfterAnotherNodesCloseSeesTheWholeFile) {
  for (int reader : {1, 2}) {
    const int writer = 3 - reader;
    const std::string name = "c2o" + std::to_string(reader);
    ASSERT_TRUE(WriteFile(M(writer, 2, name), ""));
    std::string expect;
    for (int i = 0; i < 150; ++i) {
      struct stat st;
      ASSERT_EQ(stat(M(reader, 2, name).c_str(), &st), 0) << strerror(errno);
      ASSERT_EQ(st.st_size, static_cast<off_t>(expect.size()));
      int w = open(M(writer, 2, name).c_str(), O_WRONLY | O_APPEND);
      ASSERT_GE(w, 0) << strerror(errno) << " round " << i << " writer " << writer;
      std::string line = "line " + std::to_string(i) + "\n";
      ASSERT_EQ(write(w, line.data(), line.size()), static_cast<ssize_t>(line.size()));
      ASSERT_EQ(close(w), 0);
      expect += line;
      ASSERT_EQ(ReadFile(M(reader, 2, name)), expect)
          << "node " << reader << " opened after node " << writer << "'s close, round " << i;
    }
  }
}

// user.mfs.requests on /mfs: FUSE requests read and network requests sent
// by this node's mount. A stat of another node's file that the kernel does
// not hold costs a FUSE request and a network request; one of a local file
// costs no network request.
TEST_F(FsClusterTest, RequestCountersCountWhatOperationsCost) {
  auto counts = [&](int node) { return Requests(node); };
  ASSERT_TRUE(WriteFile(Node(2) + "/export/counted", "x"));
  ASSERT_TRUE(WriteFile(Node(1) + "/export/counted", "x"));
  struct stat st;
  auto a = counts(1);
  ASSERT_EQ(stat(M(1, 2, "counted").c_str(), &st), 0);  // never looked up: LOOKUP to node 2
  auto b = counts(1);
  EXPECT_GE(b.first - a.first, 1u);
  EXPECT_GE(b.second - a.second, 1u);
  ASSERT_EQ(stat(M(1, 1, "counted").c_str(), &st), 0);  // local: no network request
  auto c = counts(1);
  EXPECT_GE(c.first - b.first, 1u);
  EXPECT_EQ(c.second, b.second);
}

// The kernel asks for security.capability before the first write to a
// file. The owner's Create reply says whether that call made the file, and
// a file just made has none: creating and writing a new remote file costs
// Lookup, Create and Write (Release is not waited for), with or without
// O_EXCL. A file that existed keeps being asked about, so a write through
// /mfs still removes a capability it had, as the kernel requires.
TEST_F(FsClusterTest, NewFilesSkipTheCapabilityCheckExistingOnesKeepIt) {
  for (int flags : {O_CREAT | O_EXCL, O_CREAT | O_TRUNC}) {
    const std::string path = M(1, 2, "newcap" + std::to_string(flags));
    auto before = Requests(1);
    int fd = open(path.c_str(), O_WRONLY | flags, 0644);
    ASSERT_GE(fd, 0) << strerror(errno);
    ASSERT_EQ(write(fd, "data", 4), 4);
    ASSERT_EQ(close(fd), 0);
    auto after = Requests(1);
    // Create and write, and the lookup before them unless the directory's
    // listing answered it (the second time round): no GETXATTR.
    EXPECT_EQ(after.second - before.second, flags & O_EXCL ? 3u : 2u)
        << "network requests, flags " << flags;
  }
  // A capability (VFS_CAP_REVISION_2, cap_net_bind_service permitted) set on
  // the owner, then the file opened with O_CREAT and written through node 1.
  const std::string host = Node(2) + "/export/hascap";
  ASSERT_TRUE(WriteFile(host, "old"));
  const uint32_t cap[5] = {0x02000000, 1u << 10, 0, 0, 0};
  if (setxattr(host.c_str(), "security.capability", cap, sizeof cap, 0) != 0)
    GTEST_SKIP() << "cannot set security.capability on the export: " << strerror(errno);
  int fd = open(M(1, 2, "hascap").c_str(), O_WRONLY | O_CREAT, 0644);
  ASSERT_GE(fd, 0) << strerror(errno);
  ASSERT_EQ(write(fd, "new", 3), 3);
  ASSERT_EQ(close(fd), 0);
  errno = 0;
  EXPECT_EQ(getxattr(host.c_str(), "security.capability", nullptr, 0), -1) << "capability kept";
  EXPECT_EQ(errno, ENODATA);
  EXPECT_EQ(ReadFile(host), "new");
}

// The kernel looks a name up before it creates it. In a remote directory
// the first miss brings the directory's names along (its owner pushes us
// every change of them since we hold it), so the misses after it, and the
// lookups before creates, cost no round trip; our own creates keep the
// names up to date, and a change made on the owner voids them.
TEST_F(FsClusterTest, MissesInARemoteDirectoryAreAnsweredFromItsListing) {
  ASSERT_EQ(mkdir(M(1, 2, "neg").c_str(), 0755), 0);
  struct stat st;
  ASSERT_EQ(stat(M(1, 2, "neg").c_str(), &st), 0);  // the parent's attributes, after the mkdir
  auto r0 = Requests(1);
  const uint64_t a0 = ListingAnswers(1);
  ASSERT_EQ(stat(M(1, 2, "neg/miss0").c_str(), &st), -1);
  ASSERT_EQ(errno, ENOENT);
  auto r1 = Requests(1);
  EXPECT_EQ(r1.second - r0.second, 1u) << "the first miss is one lookup";
  for (int i = 1; i <= 50; ++i) {
    ASSERT_EQ(stat(M(1, 2, "neg/miss" + std::to_string(i)).c_str(), &st), -1);
    ASSERT_EQ(errno, ENOENT);
  }
  auto r2 = Requests(1);
  EXPECT_EQ(r2.second - r1.second, 0u) << "misses answered from the listing";
  EXPECT_EQ(ListingAnswers(1) - a0, 50u);
  // A name too long for any directory is the owner's ENAMETOOLONG, not ENOENT.
  EXPECT_EQ(stat(M(1, 2, "neg/" + std::string(NAME_MAX + 1, 'n')).c_str(), &st), -1);
  EXPECT_EQ(errno, ENAMETOOLONG);
  EXPECT_EQ(rmdir(M(1, 2, "neg/" + std::string(NAME_MAX + 1, 'n')).c_str()), -1);
  EXPECT_EQ(errno, ENAMETOOLONG);

  // Exclusive creates: create and write, no lookup; the names stay known.
  for (int i = 0; i < 5; ++i) {
    auto before = Requests(1);
    int fd =
        open(M(1, 2, "neg/new" + std::to_string(i)).c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
    ASSERT_GE(fd, 0) << strerror(errno);
    ASSERT_EQ(write(fd, "data", 4), 4);
    ASSERT_EQ(close(fd), 0);
    EXPECT_EQ(Requests(1).second - before.second, 2u) << "create " << i;
  }
  // mkdir, unlink and a miss after them: the listing follows our changes.
  ASSERT_EQ(mkdir(M(1, 2, "neg/sub").c_str(), 0755), 0);
  ASSERT_EQ(unlink(M(1, 2, "neg/new0").c_str()), 0);
  auto r3 = Requests(1);
  errno = 0;
  ASSERT_EQ(stat(M(1, 2, "neg/miss-after").c_str(), &st), -1);
  EXPECT_EQ(errno, ENOENT);
  EXPECT_EQ(Requests(1).second - r3.second, 0u);
  EXPECT_EQ(ReadFile(Node(2) + "/export/neg/new1"), "data");

  // Names made on the owner are seen at once: a create there completes only
  // after node 1 dropped its listing (not when the push happens to arrive).
  const uint64_t breaks_before = FsStatusCount(2, "listing_breaks");
  EXPECT_GT(FsStatusCount(2, "listings_sent"), 0u);
  for (int i = 0; i < 20; ++i) {
    const std::string probe = "neg/probe" + std::to_string(i);
    ASSERT_EQ(stat(M(1, 2, probe).c_str(), &st), -1);  // a listing again
    const std::string made = "neg/owners" + std::to_string(i);
    ASSERT_TRUE(WriteFile(M(2, 2, made), "x"));
    ASSERT_EQ(stat(M(1, 2, made).c_str(), &st), 0) << made << ": " << strerror(errno);
    ASSERT_EQ(unlink(M(2, 2, made).c_str()), 0);
  }
  EXPECT_GE(FsStatusCount(2, "listing_breaks") - breaks_before, 20u);
  // A name the listing said was missing (so also in node 1's kernel as a
  // negative entry, dropped when the push is passed on), then made on the
  // owner: seen.
  ASSERT_EQ(stat(M(1, 2, "neg/theirs").c_str(), &st), -1);
  ASSERT_TRUE(WriteFile(M(2, 2, "neg/theirs"), "owner's"));
  EXPECT_TRUE(WaitFor([&] { return stat(M(1, 2, "neg/theirs").c_str(), &st) == 0; }, seconds(2)))
      << "a create on the owner stays unseen";
  EXPECT_EQ(ReadFile(M(1, 2, "neg/theirs")), "owner's");
  // Removed on the owner and made again through node 1: no stale EEXIST.
  ASSERT_EQ(unlink(M(2, 2, "neg/new1").c_str()), 0);
  EXPECT_TRUE(WaitFor([&] { return stat(M(1, 2, "neg/new1").c_str(), &st) != 0; }, seconds(2)));
  int fd = open(M(1, 2, "neg/new1").c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
  ASSERT_GE(fd, 0) << strerror(errno);
  ASSERT_EQ(close(fd), 0);
  // Renamed through node 1: the old name is gone, the new one there.
  ASSERT_EQ(rename(M(1, 2, "neg/new2").c_str(), M(1, 2, "neg/moved").c_str()), 0);
  EXPECT_EQ(stat(M(1, 2, "neg/new2").c_str(), &st), -1);
  EXPECT_EQ(ReadFile(M(1, 2, "neg/moved")), "data");
  // And a miss in a directory made on the owner and never listed.
  ASSERT_EQ(mkdir(M(2, 2, "neg/sub/deep").c_str(), 0755), 0);
  EXPECT_TRUE(WaitFor([&] { return stat(M(1, 2, "neg/sub/deep").c_str(), &st) == 0; }, seconds(2)));
  std::set<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(M(1, 2, "neg")))
    names.insert(e.path().filename());
  EXPECT_EQ(names, (std::set<std::string>{"new1", "new3", "new4", "moved", "sub", "theirs"}));
}

// entry_timeout 0 (nothing cached) turns listings off: every miss is asked.
class FsClusterNoCacheTest : public FsClusterTest {
 protected:
  FsClusterNoCacheTest() { entry_timeout_ = 0; }
};

TEST_F(FsClusterNoCacheTest, WithoutEntryCachingNoListingIsUsed) {
  ASSERT_EQ(mkdir(M(1, 2, "nc").c_str(), 0755), 0);
  struct stat st;
  for (int i = 0; i < 10; ++i) {
    ASSERT_EQ(stat(M(1, 2, "nc/miss" + std::to_string(i)).c_str(), &st), -1);
    ASSERT_EQ(errno, ENOENT);
  }
  EXPECT_EQ(ListingAnswers(1), 0u);
  EXPECT_EQ(FsStatusCount(2, "listings_sent"), 0u);
}

// The same under load: while node 1 keeps creating, removing and missing
// names in a directory of node 2 (so it holds a listing of it most of the
// time, taken again after every break), every name the owner makes is
// found through node 1 as soon as the create has returned.
TEST_F(FsClusterTest, NamesMadeOnTheOwnerAreFoundAtOnceWhileAnotherNodeListsTheDirectory) {
  ASSERT_EQ(mkdir(M(1, 2, "race").c_str(), 0755), 0);
  std::atomic<bool> stop{false};
  std::atomic<int> busy_errors{0};
  std::thread busy([&] {
    for (int i = 0; i < 100000 && !stop; ++i) {
      const std::string own = M(1, 2, "race/own" + std::to_string(i % 7));
      struct stat st;
      if (!WriteFile(own, "x")) ++busy_errors;
      stat(M(1, 2, "race/miss" + std::to_string(i)).c_str(), &st);
      if (unlink(own.c_str()) != 0) ++busy_errors;
    }
  });
  std::vector<int> unseen;
  const uint64_t breaks_before = FsStatusCount(2, "listing_breaks");
  // 300 names, and on until some listing of node 1 was broken (it may ask
  // for none for a second after a busy directory refused it one).
  const auto deadline = std::chrono::steady_clock::now() + seconds(30);
  for (int i = 0; (i < 300 || FsStatusCount(2, "listing_breaks") == breaks_before) &&
                  std::chrono::steady_clock::now() < deadline;
       ++i) {
    const std::string name = "race/o" + std::to_string(i);
    ASSERT_TRUE(WriteFile(M(2, 2, name), "x"));
    struct stat st;
    if (stat(M(1, 2, name).c_str(), &st) != 0) unseen.push_back(i);
  }
  stop = true;
  busy.join();
  EXPECT_TRUE(unseen.empty()) << unseen.size() << " names made on the owner were not found, first o"
                              << unseen.front();
  EXPECT_EQ(busy_errors.load(), 0);
  EXPECT_GT(FsStatusCount(2, "listing_breaks"), breaks_before) << "no listing was ever broken";
}

// A file replaced on one node — removed and created again, or renamed over
// (how editors and tools save) — opens as the new file on another node right
// after, even though that node's kernel still holds the old name's entry.
TEST_F(FsClusterTest, OpenAfterAnotherNodeReplacedTheFileSeesTheNewOne) {
  for (int reader : {1, 2}) {
    const int writer = 3 - reader;
    const std::string name = "rep" + std::to_string(reader);
    ASSERT_TRUE(WriteFile(M(writer, 2, name), "gen -1"));
    std::string last = "gen -1";
    for (int i = 0; i < 60; ++i) {
      ASSERT_EQ(ReadFile(M(reader, 2, name)), last);  // the reader holds the entry
      const std::string body = "gen " + std::to_string(i);
      if (i % 2 == 0) {
        ASSERT_EQ(unlink(M(writer, 2, name).c_str()), 0);
        ASSERT_TRUE(WriteFile(M(writer, 2, name), body));
      } else {
        ASSERT_TRUE(WriteFile(M(writer, 2, name + ".tmp"), body));
        ASSERT_EQ(rename(M(writer, 2, name + ".tmp").c_str(), M(writer, 2, name).c_str()), 0)
            << strerror(errno);
      }
      ASSERT_EQ(ReadFile(M(reader, 2, name)), body)
          << "node " << reader << " after node " << writer << " replaced it, round " << i;
      last = body;
    }
  }
}

// A directory replaced on one node (removed with what it held and made
// again, or a new one renamed over it) is walked as the new directory on
// another node right after, though that node's kernel still holds the old
// directory's entry: the files in the new one open, and those only in the
// old one are gone.
TEST_F(FsClusterTest, PathThroughADirectoryReplacedOnAnotherNodeReachesTheNewOne) {
  for (int reader : {1, 2}) {
    const int writer = 3 - reader;
    const std::string dir = "rd" + std::to_string(reader);
    ASSERT_EQ(mkdir(M(writer, 2, dir).c_str(), 0755), 0);
    ASSERT_TRUE(WriteFile(M(writer, 2, dir + "/f"), "gen -1"));
    std::string last = "gen -1";
    for (int i = 0; i < 30; ++i) {
      ASSERT_EQ(ReadFile(M(reader, 2, dir + "/f")), last);  // the reader holds the entries
      const std::string body = "gen " + std::to_string(i);
      const std::string old_only = dir + "/old" + std::to_string(i);
      ASSERT_TRUE(WriteFile(M(writer, 2, old_only), "x"));
      struct stat st;
      ASSERT_EQ(stat(M(reader, 2, old_only).c_str(), &st), 0);
      if (i % 2 == 0) {
        ASSERT_EQ(unlink(M(writer, 2, dir + "/f").c_str()), 0);
        ASSERT_EQ(unlink(M(writer, 2, old_only).c_str()), 0);
        ASSERT_EQ(rmdir(M(writer, 2, dir).c_str()), 0) << strerror(errno);
        ASSERT_EQ(mkdir(M(writer, 2, dir).c_str(), 0755), 0);
        ASSERT_TRUE(WriteFile(M(writer, 2, dir + "/f"), body));
      } else {
        const std::string tmp = dir + ".new";
        ASSERT_EQ(mkdir(M(writer, 2, tmp).c_str(), 0755), 0);
        ASSERT_TRUE(WriteFile(M(writer, 2, tmp + "/f"), body));
        // rename(2) replaces only an empty directory: empty the old one first.
        ASSERT_EQ(unlink(M(writer, 2, dir + "/f").c_str()), 0);
        ASSERT_EQ(unlink(M(writer, 2, old_only).c_str()), 0);
        ASSERT_EQ(rename(M(writer, 2, tmp).c_str(), M(writer, 2, dir).c_str()), 0) << strerror(errno);
      }
      EXPECT_EQ(ReadFile(M(reader, 2, dir + "/f")), body)
          << "node " << reader << " after node " << writer << " replaced " << dir << ", round " << i;
      EXPECT_EQ(stat(M(reader, 2, old_only).c_str(), &st), -1) << "round " << i;
      EXPECT_EQ(errno, ENOENT) << "round " << i;
      if (HasFailure()) return;
      last = body;
    }
  }
}

// The same when a program on the owner replaces the directory in the export
// itself, past /mfs: no invalidation is pushed at all, and the reader's
// kernel holds the old directory's entry (not the file's) until it expires.
// A name looked up, or created, under it lands in the new directory.
TEST_F(FsClusterTest, NameUnderADirectoryReplacedInTheExportLandsInTheNewOne) {
  for (int reader : {1, 2}) {
    for (bool create : {false, true}) {
      const std::string dir = "xd" + std::to_string(reader) + (create ? "c" : "r");
      const std::string host = Node(2) + "/export/" + dir;
      ASSERT_EQ(mkdir(host.c_str(), 0755), 0);
      struct stat st;
      ASSERT_EQ(stat(M(reader, 2, dir).c_str(), &st), 0);  // the reader's kernel holds the entry
      ASSERT_EQ(rmdir(host.c_str()), 0);
      ASSERT_EQ(mkdir(host.c_str(), 0755), 0);
      if (create) {
        ASSERT_TRUE(WriteFile(M(reader, 2, dir + "/g"), "made through /mfs"))
            << "reader " << reader << ": " << strerror(errno);
        EXPECT_EQ(ReadFile(host + "/g"), "made through /mfs") << "reader " << reader;
      } else {
        ASSERT_TRUE(WriteFile(host + "/f", "new"));
        EXPECT_EQ(ReadFile(M(reader, 2, dir + "/f")), "new") << "reader " << reader;
      }
    }
  }
}

// A directory removed while a process still holds it open (an fd here; a
// cwd is the same): names under it answer ENOENT, as on a native file
// system, whichever node removed it.
TEST_F(FsClusterTest, NamesUnderARemovedDirectoryHeldOpenAnswerEnoent) {
  for (int via : {1, 2}) {
    for (int remover : {1, 2}) {
      const std::string dir = "held" + std::to_string(via) + std::to_string(remover);
      ASSERT_EQ(mkdir(M(via, 2, dir).c_str(), 0755), 0);
      int dfd = open(M(via, 2, dir).c_str(), O_RDONLY | O_DIRECTORY);
      ASSERT_GE(dfd, 0) << strerror(errno);
      ASSERT_EQ(rmdir(M(remover, 2, dir).c_str()), 0) << strerror(errno);
      struct stat st;
      errno = 0;
      EXPECT_EQ(fstatat(dfd, "x", &st, 0), -1);
      EXPECT_EQ(errno, ENOENT) << "stat, via " << via << ", removed by " << remover;
      errno = 0;
      int fd = openat(dfd, "y", O_CREAT | O_WRONLY, 0644);
      EXPECT_EQ(fd, -1);
      EXPECT_EQ(errno, ENOENT) << "create, via " << via << ", removed by " << remover;
      if (fd >= 0) close(fd);
      errno = 0;
      EXPECT_EQ(mkdirat(dfd, "z", 0755), -1);
      EXPECT_EQ(errno, ENOENT) << "mkdir, via " << via << ", removed by " << remover;
      close(dfd);
    }
  }
}

// And the directory itself, on every node that holds it open: fstat shows
// st_nlink 0 once the removal is pushed, and listing it fails with ENOENT,
// as on a native file system. (Its kernel handle no longer opens once it is
// removed, so its owner keeps open the directories peers hold; before, the
// peer was told nothing, or ESTALE.)
TEST_F(FsClusterTest, ARemovedDirectoryHeldOpenShowsNoLinksAndNoEntries) {
  for (int via : {1, 2}) {
    for (int remover : {1, 2}) {
      const std::string dir = "dead" + std::to_string(via) + std::to_string(remover);
      const std::string where =
          "via " + std::to_string(via) + ", removed by " + std::to_string(remover);
      ASSERT_EQ(mkdir(M(via, 2, dir).c_str(), 0755), 0);
      int dfd = open(M(via, 2, dir).c_str(), O_RDONLY | O_DIRECTORY);
      ASSERT_GE(dfd, 0) << strerror(errno);
      struct stat st;
      ASSERT_EQ(fstat(dfd, &st), 0);
      ASSERT_EQ(st.st_nlink, 2u);
      ASSERT_EQ(rmdir(M(remover, 2, dir).c_str()), 0) << strerror(errno);
      int err = 0;
      EXPECT_TRUE(WaitFor(
          [&] {
            err = fstat(dfd, &st) == 0 ? 0 : errno;
            return err == 0 && st.st_nlink == 0;
          },
          seconds(5)))
          << where << ": " << (err ? strerror(err) : "st_nlink " + std::to_string(st.st_nlink));
      char buf[4096];
      errno = 0;
      EXPECT_EQ(syscall(SYS_getdents64, dfd, buf, sizeof buf), -1) << where;
      EXPECT_EQ(errno, ENOENT) << where;
      if (via == 1) {
        EXPECT_GE(FsStatusCount(2, "pinned_dirs"), 2u) << where;  // it and the root
      }
      close(dfd);
      // Closed, node 1's kernel forgets the removed directory, and node 2
      // lets it go (only node 2's root stays pinned for node 1).
      EXPECT_TRUE(WaitFor([&] { return FsStatusCount(2, "pinned_dirs") <= 1; }, seconds(5)))
          << where << ": " << FsStatusCount(2, "pinned_dirs") << " directories still pinned";
    }
  }
}

// A removed file that a process still has open can be opened again through
// /proc/self/fd (the refusal of stale entries above must not catch it).
TEST_F(FsClusterTest, RemovedOpenFileReopensThroughProcFd) {
  for (int via : {1, 2}) {
    const std::string path = M(via, 2, "gone" + std::to_string(via));
    ASSERT_TRUE(WriteFile(path, "still readable"));
    int fd = open(path.c_str(), O_RDONLY);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(unlink(path.c_str()), 0);
    EXPECT_EQ(ReadFile("/proc/self/fd/" + std::to_string(fd)), "still readable") << "via node " << via;
    struct stat st;
    EXPECT_EQ(stat(path.c_str(), &st), -1);
    EXPECT_EQ(errno, ENOENT);
    close(fd);
  }
}

TEST_F(FsClusterTest, ListingShowsChangesMadeOnAnotherNode) {
  ASSERT_EQ(mkdir(M(2, 2, "d").c_str(), 0755), 0);
  ASSERT_TRUE(WriteFile(M(2, 2, "d/one"), "1"));
  auto list = [&](const std::string& p) {
    std::vector<std::string> v;
    for (auto& e : std::filesystem::directory_iterator(p)) v.push_back(e.path().filename());
    std::sort(v.begin(), v.end());
    return v;
  };
  EXPECT_EQ(list(M(1, 2, "d")), std::vector<std::string>{"one"});
  struct stat st;
  ASSERT_EQ(stat(M(1, 2, "d/one").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0644u);
  // stat before any listing: readdirplus would refresh attributes by itself.
  ASSERT_EQ(chmod(M(2, 2, "d/one").c_str(), 0600), 0);
  EXPECT_TRUE(WaitFor(
      [&] { return stat(M(1, 2, "d/one").c_str(), &st) == 0 && (st.st_mode & 0777) == 0600; },
      seconds(2)))
      << "mode seen on node 1: " << std::oct << (st.st_mode & 0777);
  ASSERT_TRUE(WriteFile(M(2, 2, "d/two"), "2"));
  EXPECT_TRUE(WaitFor([&] { return list(M(1, 2, "d")).size() == 2; }, seconds(2)));
}

// The owner's mount tells its mfsd about a change on the fast path only
// when a peer may hold the file (mfsd's InterestMap): files nobody else has
// seen cost no report, and once a peer has listed the directory its changes
// reach that peer again.
TEST_F(FsClusterTest, OwnerReportsOnlyChangesAPeerMayCache) {
  auto reported = [&](int node) { return FsStatusCount(node, "changes_reported"); };
  auto list = [&](const std::string& p) {
    size_t n = 0;
    for (auto& e : std::filesystem::directory_iterator(p)) n += !e.path().empty();
    return n;
  };
  ASSERT_EQ(mkdir(M(2, 2, "quiet").c_str(), 0755), 0);  // reported: node 1 holds the root
  const uint64_t before = reported(2);
  constexpr int kFiles = 50;
  ASSERT_NO_FATAL_FAILURE(WriteAndUnlink(M(2, 2, "quiet"), kFiles));
  const uint64_t quiet = reported(2) - before;
  // Three changes per file (create, write, unlink) were reported before;
  // now only hash collisions with the few files node 1 holds are.
  EXPECT_LT(quiet, 10u) << "of " << 3 * kFiles << " changes";
  EXPECT_EQ(list(M(1, 2, "quiet")), 0u);  // node 1 now caches the directory
  ASSERT_TRUE(WriteFile(M(2, 2, "quiet/seen"), "y"));
  EXPECT_GT(reported(2), before + quiet);
  EXPECT_TRUE(WaitFor([&] { return list(M(1, 2, "quiet")) == 1; }, seconds(2)))
      << "node 1 never saw the file node 2 made in a directory it had listed";
}

// The other way round: mfsd pushes a peer's change to its own mount only
// when the mount's kernel may hold the file or directory (the mount's
// InterestMap), and the files it holds stay coherent.
TEST_F(FsClusterTest, PeersChangesReachTheOwnersMountOnlyForFilesItHolds) {
  auto pushes = [&](int node) { return FsStatusCount(node, "own_mount_pushes"); };
  ASSERT_EQ(mkdir(M(1, 2, "far").c_str(), 0755), 0);
  ASSERT_EQ(mkdir(M(1, 2, "far/quiet").c_str(), 0755), 0);
  ASSERT_TRUE(WriteFile(M(1, 2, "far/held"), "old"));
  struct stat st;
  ASSERT_EQ(stat(M(2, 2, "far/held").c_str(), &st), 0);  // node 2's kernel holds it now
  ASSERT_EQ(st.st_size, 3);
  const uint64_t before = pushes(2);
  constexpr int kFiles = 50;
  ASSERT_NO_FATAL_FAILURE(WriteAndUnlink(M(1, 2, "far/quiet"), kFiles));
  const uint64_t quiet = pushes(2) - before;
  // Each create, write and unlink was pushed before; now only hash
  // collisions with the few inodes node 2's kernel holds are.
  EXPECT_LT(quiet, 10u) << "of " << 3 * kFiles << " changes";
  ASSERT_TRUE(WriteFile(M(1, 2, "far/held"), "newer"));
  EXPECT_GT(pushes(2), before + quiet);
  // attr_timeout is 30 s here: only the push makes the new size visible.
  EXPECT_TRUE(WaitFor(
      [&] { return stat(M(2, 2, "far/held").c_str(), &st) == 0 && st.st_size == 5; }, seconds(2)))
      << "node 2 still sees " << st.st_size << " bytes";
  // A file node 2 looks up only now is seen as it is, and is pushed from now on.
  ASSERT_EQ(stat(M(2, 2, "far/quiet").c_str(), &st), 0);
  ASSERT_TRUE(WriteFile(M(1, 2, "far/quiet/late"), "1"));
  ASSERT_EQ(stat(M(2, 2, "far/quiet/late").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 1);
  ASSERT_TRUE(WriteFile(M(1, 2, "far/quiet/late"), "12"));
  EXPECT_TRUE(WaitFor(
      [&] { return stat(M(2, 2, "far/quiet/late").c_str(), &st) == 0 && st.st_size == 2; },
      seconds(2)))
      << "node 2 still sees " << st.st_size << " bytes";
}

// A file the owner removes through its own mount: a node that has it open
// sees its link count drop (fstat), and once the file is gone for good and
// nobody holds it open mfsd forgets who held it.
TEST_F(FsClusterTest, OwnersUnlinkIsSeenOnAPeerThatHasTheFileOpen) {
  ASSERT_TRUE(WriteFile(M(1, 2, "victim"), "v"));
  ASSERT_TRUE(WriteFile(M(1, 2, "cached"), "c"));
  int fd = open(M(1, 2, "victim").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  struct stat st;
  ASSERT_EQ(fstat(fd, &st), 0);
  ASSERT_EQ(st.st_nlink, 1u);
  ASSERT_EQ(stat(M(1, 2, "cached").c_str(), &st), 0);  // node 1 holds it, not open
  const uint64_t held = FsStatusCount(2, "interest");
  ASSERT_EQ(unlink(M(2, 2, "victim").c_str()), 0);  // the owner's fast path
  EXPECT_TRUE(WaitFor([&] { return fstat(fd, &st) == 0 && st.st_nlink == 0; }, seconds(2)))
      << "node 1 still sees " << st.st_nlink << " link(s)";
  ASSERT_EQ(unlink(M(2, 2, "cached").c_str()), 0);
  // "cached" is forgotten; "victim" is not while node 1 has it open.
  EXPECT_TRUE(WaitFor([&] { return FsStatusCount(2, "interest") == held - 1; }, seconds(2)))
      << FsStatusCount(2, "interest") << " keys, " << held << " before";
  EXPECT_EQ(ReadFile("/proc/self/fd/" + std::to_string(fd)), "v");  // still readable
  close(fd);
}

TEST_F(FsClusterTest, LargeRemoteDirectoryListsEveryEntryOnceEvenWhileItChanges) {
  const std::string host = Node(2) + "/export/big";
  ASSERT_EQ(mkdir(host.c_str(), 0755), 0);
  for (int i = 0; i < 3000; ++i) ASSERT_TRUE(WriteFile(host + "/f" + std::to_string(i), ""));
  DIR* d = opendir(M(1, 2, "big").c_str());
  ASSERT_NE(d, nullptr);
  std::set<std::string> seen, removed;
  int dups = 0;
  while (dirent* e = readdir(d)) {
    std::string n = e->d_name;
    if (n == "." || n == "..") continue;
    if (!seen.insert(n).second) ++dups;
    // After the first 500 names, remove 300 already-listed ones on the owner:
    // no name still there may be skipped because of it.
    if (seen.size() == 500) {
      int k = 0;
      for (const auto& s : seen) {
        if (k++ == 300) break;
        ASSERT_EQ(unlink((host + "/" + s).c_str()), 0);
        removed.insert(s);
      }
    }
  }
  closedir(d);
  EXPECT_EQ(dups, 0);
  int missing = 0;
  for (int i = 0; i < 3000; ++i)
    if (!seen.count("f" + std::to_string(i))) ++missing;
  EXPECT_EQ(missing, 0);
}

TEST_F(FsClusterTest, CredentialsTravelWithRequests) {
  ASSERT_TRUE(WriteFile(M(1, 2, "rootonly"), "r"));
  ASSERT_EQ(chmod(M(1, 2, "rootonly").c_str(), 0644), 0);
  EXPECT_EQ(AsUser(65534, [&] {
              int fd = open(M(1, 2, "rootonly").c_str(), O_WRONLY);
              return fd < 0 ? errno : 0;
            }),
            EACCES);
  EXPECT_EQ(AsUser(65534, [&] {
              int fd = open(M(1, 2, "nobody").c_str(), O_CREAT | O_WRONLY, 0640);
              return fd < 0 ? errno : 0;
            }),
            0);
  struct stat st;
  ASSERT_EQ(stat((Node(2) + "/export/nobody").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 65534u);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
}

// Writes through the file service clear the set-id bits when the writer is
// not root (FUSE_HANDLE_KILLPRIV_V2: the client's kernel leaves it to us).
TEST_F(FsClusterTest, RemoteWritesByOtherUsersClearSetIdBits) {
  ASSERT_TRUE(WriteFile(M(1, 2, "suid"), "x"));
  ASSERT_EQ(chmod(M(1, 2, "suid").c_str(), 06777), 0);
  ASSERT_TRUE(WriteFile(M(1, 2, "suid"), "root keeps them"));
  struct stat st;
  ASSERT_EQ(stat((Node(2) + "/export/suid").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 06777u);
  EXPECT_EQ(AsUser(65534, [&] {
              int fd = open(M(1, 2, "suid").c_str(), O_WRONLY);
              if (fd < 0) return errno;
              int e = write(fd, "y", 1) == 1 ? 0 : errno;
              close(fd);
              return e;
            }),
            0);
  ASSERT_EQ(stat((Node(2) + "/export/suid").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0777u);
}

// Node 1 answers the GETATTR that follows its own create or unlink in a
// remote directory from the attributes the owner sent back; they must be
// the owner's, and a change made elsewhere must void them.
TEST_F(FsClusterTest, RemoteDirectoryAttributesStayCurrent) {
  ASSERT_EQ(mkdir(M(1, 2, "d").c_str(), 0755), 0);
  auto same = [&](const char* what) {
    struct stat via, own;
    ASSERT_EQ(stat(M(1, 2, "d").c_str(), &via), 0) << what;
    ASSERT_EQ(stat((Node(2) + "/export/d").c_str(), &own), 0) << what;
    EXPECT_EQ(via.st_mtim.tv_sec, own.st_mtim.tv_sec) << what;
    EXPECT_EQ(via.st_mtim.tv_nsec, own.st_mtim.tv_nsec) << what;
    EXPECT_EQ(via.st_ctim.tv_nsec, own.st_ctim.tv_nsec) << what;
    EXPECT_EQ(via.st_nlink, own.st_nlink) << what;
    EXPECT_EQ(via.st_size, own.st_size) << what;
  };
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(WriteFile(M(1, 2, "d/f" + std::to_string(i)), "x"));
    same("after a create");
  }
  ASSERT_EQ(unlink(M(1, 2, "d/f0").c_str()), 0);
  same("after an unlink");
  ASSERT_EQ(mkdir(M(1, 2, "d/sub").c_str(), 0755), 0);
  same("after a mkdir");
  // Changed on the owner: the pushed invalidation voids what node 1 kept.
  ASSERT_EQ(mkdir(M(2, 2, "d/sub2").c_str(), 0755), 0);
  struct stat st;
  EXPECT_TRUE(WaitFor([&] { return stat(M(1, 2, "d").c_str(), &st) == 0 && st.st_nlink == 4; },
                      seconds(5)))
      << "nlink " << st.st_nlink;
  same("after a change on the owner");
  ASSERT_EQ(chmod(M(1, 2, "d").c_str(), 0700), 0);
  ASSERT_TRUE(WriteFile(M(1, 2, "d/f9"), "x"));
  ASSERT_EQ(stat(M(1, 2, "d").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  same("after a chmod and a create");
}

// Node 1 answers the GETATTR its kernel sends after each write to a
// remote file from the attributes the owner sent back with the write; they
// must be the owner's (size, times, blocks), and a change made elsewhere,
// or any other change of node 1's, must void them.
TEST_F(FsClusterTest, RemoteFileAttributesAfterAWriteAreTheOwners) {
  auto same = [&](const char* what) {
    struct stat via, own;
    ASSERT_EQ(stat(M(1, 2, "w").c_str(), &via), 0) << what;
    ASSERT_EQ(stat((Node(2) + "/export/w").c_str(), &own), 0) << what;
    EXPECT_EQ(via.st_size, own.st_size) << what;
    EXPECT_EQ(via.st_blocks, own.st_blocks) << what;
    EXPECT_EQ(via.st_mtim.tv_sec, own.st_mtim.tv_sec) << what;
    EXPECT_EQ(via.st_mtim.tv_nsec, own.st_mtim.tv_nsec) << what;
    EXPECT_EQ(via.st_ctim.tv_sec, own.st_ctim.tv_sec) << what;
    EXPECT_EQ(via.st_ctim.tv_nsec, own.st_ctim.tv_nsec) << what;
    EXPECT_EQ(via.st_mode, own.st_mode) << what;
  };
  int fd = open(M(1, 2, "w").c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644);
  ASSERT_GE(fd, 0) << strerror(errno);
  std::string block(4096, 'a');
  ASSERT_EQ(write(fd, block.data(), block.size()), 4096);
  struct stat st;
  ASSERT_EQ(fstat(fd, &st), 0);
  EXPECT_EQ(st.st_size, 4096);
  same("after a write, file still open");
  ASSERT_EQ(close(fd), 0);
  same("after close");
  fd = open(M(1, 2, "w").c_str(), O_WRONLY | O_APPEND);
  ASSERT_GE(fd, 0) << strerror(errno);
  ASSERT_EQ(write(fd, "tail", 4), 4);
  ASSERT_EQ(stat(M(1, 2, "w").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 4100);
  same("after an append");
  ASSERT_EQ(fchmod(fd, 0600), 0);  // another change of node 1's: a new ctime
  same("after a chmod");
  ASSERT_EQ(write(fd, "more", 4), 4);
  ASSERT_EQ(ftruncate(fd, 10), 0);
  ASSERT_EQ(stat(M(1, 2, "w").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 10);
  same("after a write and a truncate");
  ASSERT_EQ(write(fd, "x", 1), 1);
  // Changed on the owner: the pushed invalidation voids what node 1 kept.
  int own = open(M(2, 2, "w").c_str(), O_WRONLY | O_APPEND);
  ASSERT_GE(own, 0) << strerror(errno);
  std::string more(8192, 'b');
  ASSERT_EQ(write(own, more.data(), more.size()), 8192);
  ASSERT_EQ(close(own), 0);
  EXPECT_TRUE(WaitFor([&] { return stat(M(1, 2, "w").c_str(), &st) == 0 && st.st_size == 8203; },
                      seconds(5)))
      << "size " << st.st_size;
  same("after a write on the owner");
  ASSERT_EQ(close(fd), 0);
  EXPECT_EQ(ReadFile(M(1, 2, "w")).size(), 8203u);
}

// Writers in several threads of node 1 (one file each, and one file they
// all write through one descriptor): whatever order
// the owner runs the writes in, a stat on node 1 must show the owner's size
// and times, never those a reply carried from before another write ran.
TEST_F(FsClusterTest, ConcurrentRemoteWritesLeaveTheOwnersAttributes) {
  constexpr int kThreads = 4, kWrites = 100;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  int shared_fd = open(M(1, 2, "shared").c_str(), O_CREAT | O_WRONLY, 0644);
  ASSERT_GE(shared_fd, 0) << strerror(errno);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::string own = M(1, 2, "c" + std::to_string(t));
      int fd = open(own.c_str(), O_CREAT | O_WRONLY, 0644);
      if (fd < 0) return (void)++failures;
      std::string block(1000, static_cast<char>('a' + t));
      for (int i = 0; i < kWrites; ++i) {
        off_t off = static_cast<off_t>(i) * 1000;
        if (pwrite(fd, block.data(), block.size(), off) != 1000) ++failures;
        off_t shared_off = static_cast<off_t>(i * kThreads + t) * 1000;
        if (pwrite(shared_fd, block.data(), block.size(), shared_off) != 1000) ++failures;
        struct stat st;
        if (stat(own.c_str(), &st) != 0 || st.st_size != off + 1000) ++failures;
      }
      if (close(fd) != 0) ++failures;
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_EQ(failures.load(), 0);
  ASSERT_EQ(close(shared_fd), 0);
  for (std::string name : {"shared", "c0", "c1", "c2", "c3"}) {
    struct stat via, own;
    ASSERT_EQ(stat(M(1, 2, name).c_str(), &via), 0) << name;
    ASSERT_EQ(stat((Node(2) + "/export/" + name).c_str(), &own), 0) << name;
    EXPECT_EQ(via.st_size, own.st_size) << name;
    EXPECT_EQ(via.st_blocks, own.st_blocks) << name;
    EXPECT_EQ(via.st_mtim.tv_sec, own.st_mtim.tv_sec) << name;
    EXPECT_EQ(via.st_mtim.tv_nsec, own.st_mtim.tv_nsec) << name;
    EXPECT_EQ(via.st_ctim.tv_nsec, own.st_ctim.tv_nsec) << name;
  }
  struct stat st;
  ASSERT_EQ(stat(M(1, 2, "shared").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, kThreads * kWrites * 1000);
}

TEST_F(FsClusterTest, LocksAreHeldByTheOwningNode) {
  ASSERT_TRUE(WriteFile(M(2, 2, "lk"), "lock me"));
  pid_t child = LockedByChild(M(1, 2, "lk"), false);  // a process on node 1
  ASSERT_GT(child, 0);
  int fd = open(M(2, 2, "lk").c_str(), O_RDWR);  // a process on node 2
  ASSERT_GE(fd, 0);
  EXPECT_EQ(ConflictingLock(fd), F_WRLCK);
  struct flock fl {};
  fl.l_whence = SEEK_SET;
  fl.l_type = F_RDLCK;
  EXPECT_EQ(fcntl(fd, F_SETLK, &fl), -1);
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  fl.l_type = F_WRLCK;
  EXPECT_TRUE(WaitFor([&] { return fcntl(fd, F_SETLK, &fl) == 0; }, seconds(5)));
  close(fd);
}

TEST_F(FsClusterTest, DirectIoOnARemoteFile) {
  constexpr size_t kLen = 1 << 20;
  void* raw = nullptr;
  ASSERT_EQ(posix_memalign(&raw, 4096, kLen), 0);
  std::unique_ptr<char, decltype(&free)> buf(static_cast<char*>(raw), &free);
  for (size_t i = 0; i < kLen; ++i) buf.get()[i] = static_cast<char>('a' + i % 23);
  int fd = open(M(1, 2, "direct").c_str(), O_CREAT | O_RDWR | O_DIRECT, 0644);
  ASSERT_GE(fd, 0) << strerror(errno);
  EXPECT_EQ(pwrite(fd, buf.get(), kLen, 0), static_cast<ssize_t>(kLen)) << strerror(errno);
  std::string want(buf.get(), kLen);
  memset(buf.get(), 0, kLen);
  EXPECT_EQ(pread(fd, buf.get(), 4096, 8192), 4096) << strerror(errno);
  EXPECT_EQ(std::string(buf.get(), 4096), want.substr(8192, 4096));
  close(fd);
  EXPECT_EQ(ReadFile(M(2, 2, "direct")), want);  // the owner sees the same bytes
}

// The mount.mfs that node `i`'s mfsd started (its child), or -1.
pid_t MountProcessOf(pid_t mfsd) {
  for (const auto& e : std::filesystem::directory_iterator("/proc")) {
    std::string name = e.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat(e.path() / "stat");
    std::string line;
    std::getline(stat, line);
    auto close = line.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(line.substr(close + 2));
    char state;
    pid_t ppid = 0;
    rest >> state >> ppid;
    if (ppid == mfsd && line.find("(mount.mfs)") != std::string::npos) return std::stoi(name);
  }
  return -1;
}

TEST_F(FsClusterTest, LocksOfAClientNodeThatDiesAreReleased) {
  ASSERT_TRUE(WriteFile(M(2, 2, "lk3"), "lock me"));
  pid_t child = LockedByChild(M(1, 2, "lk3"), true);  // on node 1, kept
  ASSERT_GT(child, 0);
  int fd = open(M(2, 2, "lk3").c_str(), O_RDWR);  // a process on node 2
  ASSERT_GE(fd, 0);
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  EXPECT_EQ(fcntl(fd, F_SETLK, &fl), -1);
  EXPECT_EQ(flock(fd, LOCK_EX | LOCK_NB), -1);
  // Node 1's client dies while the locker still lives: its connection to
  // node 2 closes, and node 2 must not keep the file locked for a ghost.
  pid_t mount1 = MountProcessOf(pid_[1]);
  ASSERT_GT(mount1, 0);
  kill(mount1, SIGKILL);
  EXPECT_TRUE(WaitFor([&] { return fcntl(fd, F_SETLK, &fl) == 0; }, seconds(10)));
  EXPECT_TRUE(WaitFor([&] { return flock(fd, LOCK_EX | LOCK_NB) == 0; }, seconds(10)));
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  close(fd);
}

TEST_F(FsClusterTest, ClosingAnyDescriptorReleasesRemoteLocks) {
  ASSERT_TRUE(WriteFile(M(2, 2, "lk2"), "lock me"));
  int p2c[2], c2p[2];
  ASSERT_EQ(pipe(p2c), 0);
  ASSERT_EQ(pipe(c2p), 0);
  pid_t child = fork();
  if (child == 0) {  // on node 1: lock through one fd, close another (POSIX)
    int fd = open(M(1, 2, "lk2").c_str(), O_RDWR);
    struct flock fl {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    int ok = fd >= 0 && fcntl(fd, F_SETLK, &fl) == 0;
    (void)!write(c2p[1], &ok, sizeof(ok));
    char go;
    (void)!read(p2c[0], &go, 1);
    close(open(M(1, 2, "lk2").c_str(), O_RDONLY));
    (void)!write(c2p[1], &ok, sizeof(ok));
    pause();
    _exit(0);
  }
  int ok = 0;
  ASSERT_EQ(read(c2p[0], &ok, sizeof(ok)), static_cast<ssize_t>(sizeof(ok)));
  ASSERT_TRUE(ok);
  int fd = open(M(2, 2, "lk2").c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  EXPECT_EQ(fcntl(fd, F_SETLK, &fl), -1) << "the lock of node 1's process must hold";
  ASSERT_EQ(write(p2c[1], "g", 1), 1);
  ASSERT_EQ(read(c2p[0], &ok, sizeof(ok)), static_cast<ssize_t>(sizeof(ok)));
  fl.l_type = F_WRLCK;
  EXPECT_EQ(fcntl(fd, F_SETLK, &fl), 0) << "closing another descriptor releases it";
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  close(fd);
  for (int f : {p2c[0], p2c[1], c2p[0], c2p[1]}) close(f);
}

TEST_F(FsClusterTest, ManyRemoteWaitersAndAnExplicitUnlock) {
  ASSERT_TRUE(WriteFile(M(2, 2, "queue"), "q"));
  int go[2], ready[2];
  ASSERT_EQ(pipe(go), 0);
  ASSERT_EQ(pipe(ready), 0);
  auto locker = [&](bool holder) {
    int fd = open(M(1, 2, "queue").c_str(), O_RDWR);
    struct flock fl {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    if (fd < 0 || fcntl(fd, holder ? F_SETLK : F_SETLKW, &fl) != 0) _exit(1);
    if (holder) {
      char c = 1;
      (void)!write(ready[1], &c, 1);
      (void)!read(go[0], &c, 1);
    }
    fl.l_type = F_UNLCK;  // explicit unlock, not a close
    _exit(fcntl(fd, F_SETLK, &fl) == 0 ? 0 : 2);
  };
  pid_t holder = fork();
  if (holder == 0) locker(true);
  char c;
  ASSERT_EQ(read(ready[0], &c, 1), 1);
  std::vector<pid_t> waiters;
  for (int i = 0; i < 12; ++i) {  // more than the owner's worker threads
    pid_t p = fork();
    if (p == 0) locker(false);
    waiters.push_back(p);
  }
  std::this_thread::sleep_for(milliseconds(300));
  ASSERT_EQ(write(go[1], "g", 1), 1);
  waiters.push_back(holder);
  size_t done = 0;
  EXPECT_TRUE(WaitFor(
      [&] {
        for (pid_t& p : waiters) {
          int st = 0;
          if (p > 0 && waitpid(p, &st, WNOHANG) == p) {
            EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
            p = -1;
            ++done;
          }
        }
        return done == waiters.size();
      },
      seconds(20)));
  for (pid_t p : waiters)
    if (p > 0) kill(p, SIGKILL), waitpid(p, nullptr, 0);
  for (int f : {go[0], go[1], ready[0], ready[1]}) close(f);
}

// An owner's mfsd that restarts forgets which peers cache what. A peer that
// caches its files reconnects by itself, tells it again (kHold) and drops
// what it cached, so what changed while it was away is seen, and later
// changes are pushed as before (attr_timeout is 30 s here).
TEST_F(FsClusterTest, PushedInvalidationsResumeAfterTheOwnersMfsdRestarts) {
  ASSERT_TRUE(WriteFile(M(1, 2, "cached"), "one"));
  struct stat st;
  ASSERT_EQ(stat(M(1, 2, "cached").c_str(), &st), 0);  // node 1's kernel holds it
  ASSERT_EQ(st.st_size, 3);
  kill(pid_[2], SIGKILL);
  waitpid(pid_[2], nullptr, 0);
  pid_[2] = -1;
  ASSERT_TRUE(WriteFile(Node(2) + "/export/cached", "while away"));  // nobody can push this
  StartNode(2);
  EXPECT_TRUE(WaitFor(
      [&] { return stat(M(1, 2, "cached").c_str(), &st) == 0 && st.st_size == 10; }, seconds(15)))
      << "node 1 still sees " << st.st_size << " bytes";
  ASSERT_TRUE(WriteFile(M(2, 2, "cached"), "pushed again"));  // the owner's fast path
  EXPECT_TRUE(WaitFor(
      [&] { return stat(M(1, 2, "cached").c_str(), &st) == 0 && st.st_size == 12; }, seconds(2)))
      << "node 1 still sees " << st.st_size << " bytes";
  EXPECT_EQ(ReadFile(M(1, 2, "cached")), "pushed again");
}

TEST_F(FsClusterTest, DeadNodeFailsFastAndRecoversWithoutRemount) {
  ASSERT_TRUE(WriteFile(M(1, 2, "keep"), "still here"));
  int fd = open(M(1, 2, "keep").c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  kill(pid_[2], SIGKILL);  // a crash: node 2's own mount stays, its mfsd is gone
  waitpid(pid_[2], nullptr, 0);
  pid_[2] = -1;
  struct stat st;
  auto t0 = std::chrono::steady_clock::now();
  int rc = stat(M(1, 2, "other").c_str(), &st);
  int err = errno;
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(rc, -1);
  EXPECT_TRUE(err == EHOSTDOWN || err == ENOENT) << strerror(err);
  EXPECT_LT(took, seconds(3));
  EXPECT_TRUE(WaitFor([&] { return stat(M(1, 2, "keep").c_str(), &st) != 0 && errno == EHOSTDOWN; },
                      seconds(5)));
  // The rest of /mfs keeps working.
  ASSERT_TRUE(WriteFile(M(1, 1, "local"), "fine"));
  EXPECT_EQ(ReadFile(M(1, 1, "local")), "fine");
  // Back again: same mount, same open file.
  StartNode(2);
  EXPECT_TRUE(WaitFor([&] { return ReadFile(M(1, 2, "keep")) == "still here"; }, seconds(15)));
  char buf[32] = {};
  EXPECT_EQ(pread(fd, buf, sizeof(buf) - 1, 0), 10);
  EXPECT_STREQ(buf, "still here");
  // Writes are not cached: this one reaches the restarted owner through a
  // reopen of the file by its handle.
  EXPECT_EQ(pwrite(fd, "STILL", 5, 0), 5) << strerror(errno);
  EXPECT_EQ(ReadFile(Node(2) + "/export/keep"), "STILL here");
  close(fd);
}

}  // namespace
}  // namespace mfs::testing

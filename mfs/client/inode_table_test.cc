#include "mfs/client/inode_table.h"

#include <gtest/gtest.h>

namespace mfs::client {
namespace {

InodePtr Make(uint64_t id) { return std::make_shared<Inode>(id, InodeKind::kLocal, 1); }

TEST(InodeTable, RefCountsFollowForget) {
  InodeTable t;
  InodePtr a = t.Ref("k", Make);
  ASSERT_TRUE(a);
  EXPECT_GE(a->id, kFirstDynamicIno);
  InodePtr b = t.Ref("k", Make);
  EXPECT_EQ(a, b);
  EXPECT_EQ(a->nlookup, 2u);
  EXPECT_EQ(t.size(), 1u);
  t.Forget(a->id, 1);
  EXPECT_EQ(t.Get(a->id), a);
  t.Forget(a->id, 1);
  EXPECT_EQ(t.Get(a->id), nullptr);
  EXPECT_EQ(t.size(), 0u);
  // A new object under the same key gets a new node id.
  InodePtr c = t.Ref("k", Make);
  EXPECT_NE(c->id, a->id);
}

TEST(InodeTable, UnknownIdsAreIgnoredAndStale) {
  InodeTable t;
  t.Forget(12345, 3);
  EXPECT_EQ(t.Get(12345), nullptr);
  InodePtr a = t.Ref("x", Make);
  t.Forget(a->id, 100);  // over-forget clamps at zero and removes
  EXPECT_EQ(t.size(), 0u);
  EXPECT_EQ(t.total_lookups(), 0u);
}

TEST(InodeTable, FailedMakeLeavesNoEntry) {
  InodeTable t;
  InodePtr a = t.Ref("y", [](uint64_t) { return InodePtr(); });
  EXPECT_EQ(a, nullptr);
  EXPECT_EQ(t.size(), 0u);
}

// A key whose object was replaced (a deleted file's inode number reused
// while the kernel still holds the old inode) passes to a new inode; the
// old one keeps its id until forgotten, and forgetting it leaves the key
// with the new one.
TEST(InodeTable, ReplacedObjectGetsANewInode) {
  InodeTable t;
  InodePtr a = t.Ref("k", Make);
  InodePtr same = t.Ref("k", Make, [](const Inode&) { return true; });
  EXPECT_EQ(same, a);
  InodePtr b = t.Ref("k", Make, [](const Inode&) { return false; });
  ASSERT_TRUE(b);
  EXPECT_NE(b->id, a->id);
  EXPECT_EQ(b->nlookup, 1u);
  EXPECT_EQ(t.Find("k"), b);
  EXPECT_EQ(t.Get(a->id), a);
  t.Forget(a->id, 2);
  EXPECT_EQ(t.Get(a->id), nullptr);
  EXPECT_EQ(t.Find("k"), b);
  t.Forget(b->id, 1);
  EXPECT_EQ(t.Find("k"), nullptr);
  EXPECT_EQ(t.size(), 0u);
}

}  // namespace
}  // namespace mfs::client

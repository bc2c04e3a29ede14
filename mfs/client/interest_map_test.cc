#include "mfs/client/interest_map.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace mfs::client {
namespace {

class InterestMapTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/mfs-interest-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/m";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_, path_;
};

TEST_F(InterestMapTest, CountsWhatPeersHold) {
  auto w = InterestMap::Create(path_);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  ASSERT_NE(w->id(), 0u);
  auto r = InterestMap::Open(path_, w->id());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_FALSE(r->MayBeHeld("2049:12"));
  w->Add("2049:12");
  w->Add("2049:12");
  EXPECT_TRUE(r->MayBeHeld("2049:12"));
  w->Remove("2049:12");
  EXPECT_TRUE(r->MayBeHeld("2049:12"));
  w->Remove("2049:12");
  EXPECT_FALSE(r->MayBeHeld("2049:12"));
  w->Remove("2049:12");  // never below zero
  w->Add("2049:12");
  EXPECT_TRUE(r->MayBeHeld("2049:12"));
  w->Remove("2049:12");
  // A peer that watches everything makes every change reported.
  w->AddAll();
  EXPECT_TRUE(r->MayBeHeld("2049:99"));
  w->RemoveAll();
  EXPECT_FALSE(r->MayBeHeld("2049:99"));
  // The reader cannot count.
  r->Add("2049:7");
  EXPECT_FALSE(r->MayBeHeld("2049:7"));
}

TEST_F(InterestMapTest, ARestartedMfsdClearsTheMapInPlaceUnderANewId) {
  auto first = InterestMap::Create(path_);
  ASSERT_TRUE(first.ok());
  first->Add("1:1");
  const uint64_t first_id = first->id();  // the header is shared: read it now
  auto reader = InterestMap::Open(path_, first_id);
  ASSERT_TRUE(reader.ok());
  EXPECT_TRUE(reader->MayBeHeld("1:1"));
  auto second = InterestMap::Create(path_);
  ASSERT_TRUE(second.ok());
  EXPECT_NE(second->id(), first_id);
  EXPECT_FALSE(reader->MayBeHeld("1:1"));  // the same file, cleared
  second->Add("1:1");
  EXPECT_TRUE(reader->MayBeHeld("1:1"));
  auto stale = InterestMap::Open(path_, first_id);
  ASSERT_FALSE(stale.ok());
  EXPECT_EQ(stale.status().code(), ESTALE);
}

// The mount's map sits next to mfsd's, named by the mount's pid, and goes
// with the mount (the last owner of the map).
TEST_F(InterestMapTest, TheMountsMapIsRemovedWithIt) {
  const std::string p = InterestMap::MountPathFor(path_, 4242);
  EXPECT_EQ(p, path_ + ".4242");
  uint64_t id = 0;
  {
    auto w = InterestMap::Create(p, true);
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    id = w->id();
    InterestMap moved = std::move(*w);  // the move carries the removal
    auto r = InterestMap::Open(p, id);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    moved.Add("5:5");
    EXPECT_TRUE(r->MayBeHeld("5:5"));
    EXPECT_TRUE(std::filesystem::exists(p));
  }
  EXPECT_FALSE(std::filesystem::exists(p));
  EXPECT_FALSE(InterestMap::Open(p, id).ok());
  // mfsd's own map stays: nobody else would make it again for the mount.
  { ASSERT_TRUE(InterestMap::Create(path_).ok()); }
  EXPECT_TRUE(std::filesystem::exists(path_));
}

// A mount that died left its map behind: the next one removes it, and only
// maps of pids no process has.
TEST_F(InterestMapTest, MapsOfDeadMountsAreRemoved) {
  ASSERT_TRUE(InterestMap::Create(path_).ok());
  const std::string dead = InterestMap::MountPathFor(path_, 4194305);  // above any pid_max
  const std::string live = InterestMap::MountPathFor(path_, static_cast<uint32_t>(getpid()));
  std::ofstream(dead) << "x";
  std::ofstream(live) << "x";
  std::ofstream(path_ + ".notapid") << "x";
  std::ofstream(dir_ + "/other.4194305") << "x";
  EXPECT_EQ(InterestMap::RemoveDeadMountMaps(path_), 1);
  EXPECT_FALSE(std::filesystem::exists(dead));
  EXPECT_TRUE(std::filesystem::exists(live));
  EXPECT_TRUE(std::filesystem::exists(path_));
  EXPECT_TRUE(std::filesystem::exists(path_ + ".notapid"));
  EXPECT_TRUE(std::filesystem::exists(dir_ + "/other.4194305"));
}

TEST_F(InterestMapTest, RefusesWhatIsNotAMapOfOurs) {
  InterestMap none;
  EXPECT_FALSE(none.valid());
  EXPECT_TRUE(none.MayBeHeld("anything"));  // no map: report everything
  EXPECT_FALSE(InterestMap::Open(path_, 1).ok());  // missing
  std::ofstream(path_) << "short";
  auto bad = InterestMap::Open(path_, 1);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), EBADMSG);
  // mfsd clears what it opens: never through a symlink.
  std::string victim = dir_ + "/victim", link = dir_ + "/link";
  std::ofstream(victim) << "precious";
  ASSERT_EQ(symlink(victim.c_str(), link.c_str()), 0);
  EXPECT_FALSE(InterestMap::Create(link).ok());
  std::ifstream in(victim);
  std::string content;
  in >> content;
  EXPECT_EQ(content, "precious");
}

}  // namespace
}  // namespace mfs::client

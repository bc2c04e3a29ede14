#include "mfs/node/state_store.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>

namespace mfs::node {
namespace {

TEST(StateStoreTest, PersistsAcrossReopen) {
  char tmpl[] = "/tmp/mfs-store-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  std::string dir = std::string(tmpl) + "/db";
  {
    auto s = StateStore::Open(dir);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    ASSERT_TRUE((*s)->Put("peer/2", "127.0.0.2:7420").ok());
    ASSERT_TRUE((*s)->Put("peer/3", "127.0.0.3:7420").ok());
    ASSERT_TRUE((*s)->Put("zzz", "other").ok());
    // A second open of the same database is refused with a clear errno.
    auto again = StateStore::Open(dir);
    EXPECT_EQ(again.status().code(), EBUSY) << again.status().ToString();
  }
  auto s = StateStore::Open(dir);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(*(*s)->Get("peer/2"), "127.0.0.2:7420");
  EXPECT_EQ((*s)->Get("peer/9").status().code(), ENOENT);
  int n = 0;
  ASSERT_TRUE((*s)->Scan("peer/", [&](std::string_view, std::string_view) { ++n; return true; }).ok());
  EXPECT_EQ(n, 2);
  ASSERT_TRUE((*s)->Delete("peer/2").ok());
  EXPECT_EQ((*s)->Get("peer/2").status().code(), ENOENT);
  s = Result<std::unique_ptr<StateStore>>(Status::OK());
  std::filesystem::remove_all(tmpl);
}

}  // namespace
}  // namespace mfs::node

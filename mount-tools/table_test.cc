#include "mount-tools/table.h"

#include <gtest/gtest.h>

namespace mfs::tools {
namespace {

TEST(TableTest, AlignsColumns) {
  Table t({"ID", "STATE", "AGE"});
  t.AddRow({"2", "alive", "120ms"});
  t.AddRow({"13", "dead", "4.0s"});
  EXPECT_EQ(t.Render(),
            "ID  STATE  AGE\n"
            " 2  alive  120ms\n"
            "13  dead   4.0s\n");
}

TEST(TableTest, HumanUnits) {
  EXPECT_EQ(HumanBytes(512), "512 B");
  EXPECT_EQ(HumanBytes(1536), "1.5 KiB");
  EXPECT_EQ(HumanBytes(3ull << 30), "3.0 GiB");
  EXPECT_EQ(HumanDuration(850), "850ms");
  EXPECT_EQ(HumanDuration(12'500), "12.5s");
  EXPECT_EQ(HumanDuration(125'000), "2m 5s");
  EXPECT_EQ(HumanDuration(90'000'000), "1d 1h");
}

}  // namespace
}  // namespace mfs::tools

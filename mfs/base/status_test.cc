#include "mfs/base/status.h"

#include <gtest/gtest.h>

namespace mfs {
namespace {

TEST(StatusTest, OkHasNoError) {
  Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.code(), 0);
  EXPECT_EQ(s.ToString(), "OK");
}

TEST(StatusTest, PosixErrorKeepsErrno) {
  Status s = Status::PosixError("open /x", ENOENT);
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), ENOENT);
  EXPECT_NE(s.message().find("open /x"), std::string::npos);
  EXPECT_EQ(s.Annotate("ctx").message().rfind("ctx: ", 0), 0u);
  EXPECT_EQ(s.Annotate("ctx").code(), ENOENT);
}

Result<int> Half(int v) {
  if (v % 2) return Status::InvalidArgument("odd");
  return v / 2;
}

Status UseHalf(int v, int* out) {
  MFS_ASSIGN_OR_RETURN(*out, Half(v));
  return Status::OK();
}

TEST(StatusTest, ResultPropagates) {
  int out = 0;
  EXPECT_TRUE(UseHalf(8, &out).ok());
  EXPECT_EQ(out, 4);
  Status s = UseHalf(3, &out);
  EXPECT_EQ(s.code(), EINVAL);
  Result<int> r(Status::OK());
  EXPECT_FALSE(r.ok());
}

}  // namespace
}  // namespace mfs

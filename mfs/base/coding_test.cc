#include "mfs/base/coding.h"

#include <gtest/gtest.h>

namespace mfs {
namespace {

TEST(CodingTest, RoundTrip) {
  std::string buf;
  Writer w(&buf);
  w.U8(7);
  w.U16(0xBEEF);
  w.U32(0xDEADBEEF);
  w.U64(0x0123456789ABCDEFull);
  w.Bytes("hello");
  EXPECT_EQ(buf.size(), 1u + 2 + 4 + 8 + 4 + 5);
  EXPECT_EQ(static_cast<unsigned char>(buf[1]), 0xEF);  // little-endian
  Reader r(buf);
  EXPECT_EQ(r.U8(), 7);
  EXPECT_EQ(r.U16(), 0xBEEF);
  EXPECT_EQ(r.U32(), 0xDEADBEEFu);
  EXPECT_EQ(r.U64(), 0x0123456789ABCDEFull);
  EXPECT_EQ(r.Bytes(), "hello");
  EXPECT_TRUE(r.done());
}

TEST(CodingTest, ReaderFailsOnOverrun) {
  std::string buf;
  Writer w(&buf);
  w.U32(1000);  // claims 1000 bytes, has none
  Reader r(buf);
  EXPECT_EQ(r.Bytes(), "");
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.U64(), 0u);  // sticky
}

}  // namespace
}  // namespace mfs

#include "migrate/protocol.h"

#include <gtest/gtest.h>

#include <csignal>

#include "migrate/image.h"

namespace mfs::migrate {
namespace {

TEST(Protocol, ReplyWithoutDfsaFileKeepsItsOldEncoding) {
  SyscallReply r;
  r.ret = 7;
  r.buffers.push_back({1, kDirOut, 0, 3, "abc"});
  std::string bytes = EncodeSyscallReply(r);
  auto d = DecodeSyscallReply(bytes);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->ret, 7);
  EXPECT_TRUE(d->dfsa_path.empty());
  EXPECT_EQ(bytes.size(), 8u + 4u + 1u + 4u + 3u);
}

TEST(Protocol, ReplyNamesTheDfsaFileAnOpenReturned) {
  SyscallReply r;
  r.ret = 5;
  r.dfsa_path = "/mfs/3/data/late.bin";
  r.dfsa_flags = 02000002;
  auto d = DecodeSyscallReply(EncodeSyscallReply(r));
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->ret, 5);
  EXPECT_EQ(d->dfsa_path, "/mfs/3/data/late.bin");
  EXPECT_EQ(d->dfsa_flags, 02000002u);
  std::string bytes = EncodeSyscallReply(r);
  for (size_t n = 13; n < bytes.size(); ++n)
    EXPECT_FALSE(DecodeSyscallReply(bytes.substr(0, n)).ok()) << n;
  r.ret = -2;  // a failed open names no file
  EXPECT_EQ(DecodeSyscallReply(EncodeSyscallReply(r)).status().code(), EBADMSG);
  r.ret = 5;
  r.dfsa_path = "relative";
  EXPECT_EQ(DecodeSyscallReply(EncodeSyscallReply(r)).status().code(), EBADMSG);
}

TEST(Protocol, ExitFileTableRoundTripsAndRejectsGarbage) {
  std::vector<FileImage> files = {{1, 1, 02001, false, 4096, "/mfs/1/log"}, {3, 3, 0, true, 10, "/mfs/2/x"}};
  std::string bytes;
  EncodeFiles(files, &bytes);
  std::vector<FileImage> out;
  ASSERT_TRUE(DecodeFiles(bytes, &out).ok());
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].offset, 4096u);
  EXPECT_EQ(out[1].path, "/mfs/2/x");
  EXPECT_TRUE(out[1].cloexec);
  for (size_t n = 0; n < bytes.size(); ++n) {
    out.clear();
    EXPECT_FALSE(DecodeFiles(bytes.substr(0, n), &out).ok()) << n;
  }
  out.clear();
  EXPECT_FALSE(DecodeFiles(bytes + "x", &out).ok());
}

TEST(Protocol, DirectEndRoundTripsAndRejectsGarbage) {
  DirectEnd e;
  e.ran = true;
  e.seq = 7;
  e.ret = -11;
  e.out = std::string("ab\0c", 4);
  std::string bytes = EncodeDirectEnd(e);
  auto d = DecodeDirectEnd(bytes);
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(d->ran);
  EXPECT_EQ(d->seq, 7u);
  EXPECT_EQ(d->ret, -11);
  EXPECT_EQ(d->out, e.out);
  for (size_t n = 0; n < bytes.size(); ++n)
    EXPECT_FALSE(DecodeDirectEnd(bytes.substr(0, n)).ok()) << n;
  EXPECT_FALSE(DecodeDirectEnd(bytes + "x").ok());
  bytes[0] = 2;
  EXPECT_FALSE(DecodeDirectEnd(bytes).ok());
}

TEST(Protocol, SignalFrameRoundTripsAcceptsTheOldFormAndRejectsGarbage) {
  for (bool orphaned : {false, true}) {
    auto s = DecodeSignal(EncodeSignal({SIGTSTP, orphaned}));
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    EXPECT_EQ(s->sig, static_cast<uint32_t>(SIGTSTP));
    EXPECT_EQ(s->orphaned, orphaned);
  }
  auto old = DecodeSignal(EncodeU32(SIGUSR1));  // without flags
  ASSERT_TRUE(old.ok());
  EXPECT_EQ(old->sig, static_cast<uint32_t>(SIGUSR1));
  EXPECT_FALSE(old->orphaned);
  EXPECT_EQ(DecodeSignal("").status().code(), EBADMSG);
  EXPECT_EQ(DecodeSignal("abc").status().code(), EBADMSG);
  EXPECT_EQ(DecodeSignal(EncodeSignal({SIGUSR1, false}) + "x").status().code(), EBADMSG);
  EXPECT_EQ(DecodeSignal(EncodeU32(0)).status().code(), EBADMSG);
  EXPECT_EQ(DecodeSignal(EncodeU32(65)).status().code(), EBADMSG);
}

}  // namespace
}  // namespace mfs::migrate

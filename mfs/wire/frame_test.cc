#include "mfs/wire/frame.h"

#include <gtest/gtest.h>

#include "mfs/base/coding.h"

namespace mfs::wire {
namespace {

TEST(FrameTest, RoundTrip) {
  std::string bytes = EncodeFrame(70, kFlagResponse, 42, "payload");
  ASSERT_EQ(bytes.size(), kHeaderSize + 7);
  auto r = DecodeFrame(bytes);
  ASSERT_EQ(r.state, DecodeState::kFrame) << r.error.ToString();
  EXPECT_EQ(r.consumed, bytes.size());
  EXPECT_EQ(r.frame.type(), 70);
  EXPECT_TRUE(r.frame.is_response());
  EXPECT_EQ(r.frame.header.request_id, 42u);
  EXPECT_EQ(r.frame.payload, "payload");
}

// The connection sends EncodeHeader's bytes and then the payload (a scatter
// write): that must be byte for byte what EncodeFrame produces and decode.
TEST(FrameTest, HeaderThenPayloadIsTheEncodedFrame) {
  std::string payload(3 << 20, '\0');
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<char>(i * 131 + (i >> 12));
  auto h = EncodeHeader(200, kFlagResponse, 7, payload);
  std::string wire(h.data(), h.size());
  wire += payload;
  EXPECT_EQ(wire, EncodeFrame(200, kFlagResponse, 7, payload));
  auto r = DecodeFrame(wire);
  ASSERT_EQ(r.state, DecodeState::kFrame) << r.error.ToString();
  EXPECT_EQ(r.frame.payload, payload);
  wire[kHeaderSize + (2 << 20)] ^= 0x40;  // one bit deep in the payload
  EXPECT_EQ(DecodeFrame(wire).state, DecodeState::kMalformed);
}

TEST(FrameTest, NeedsMoreUntilComplete) {
  std::string bytes = EncodeFrame(70, 0, 1, std::string(100, 'x'));
  for (size_t n = 0; n < bytes.size(); ++n) {
    EXPECT_EQ(DecodeFrame(std::string_view(bytes).substr(0, n)).state, DecodeState::kNeedMore)
        << n;
  }
  std::string two = bytes + EncodeFrame(71, 0, 2, "");
  auto r = DecodeFrame(two);
  ASSERT_EQ(r.state, DecodeState::kFrame);
  auto r2 = DecodeFrame(std::string_view(two).substr(r.consumed));
  ASSERT_EQ(r2.state, DecodeState::kFrame);
  EXPECT_EQ(r2.frame.type(), 71);
}

TEST(FrameTest, RejectsBadMagic) {
  std::string bytes = EncodeFrame(70, 0, 1, "x");
  bytes[0] ^= 1;
  auto r = DecodeFrame(bytes);
  EXPECT_EQ(r.state, DecodeState::kMalformed);
  EXPECT_EQ(r.error.code(), EBADMSG);
  EXPECT_NE(r.error.message().find("magic"), std::string::npos);
}

TEST(FrameTest, RejectsBadVersion) {
  std::string bytes = EncodeFrame(70, 0, 1, "x");
  EncodeFixed16(bytes.data() + 4, 9);
  auto r = DecodeFrame(bytes);
  EXPECT_EQ(r.state, DecodeState::kMalformed);
  EXPECT_EQ(r.error.code(), EPROTONOSUPPORT);
}

TEST(FrameTest, RejectsOversizeLengthBeforeReadingPayload) {
  std::string bytes = EncodeFrame(70, 0, 1, "");
  EncodeFixed32(bytes.data() + 12, kMaxPayload + 1);
  auto r = DecodeFrame(bytes);  // only the header is present
  EXPECT_EQ(r.state, DecodeState::kMalformed);
  EXPECT_EQ(r.error.code(), EMSGSIZE);
}

TEST(FrameTest, RejectsChecksumMismatch) {
  std::string bytes = EncodeFrame(70, 0, 1, "hello");
  bytes.back() ^= 0x20;
  auto r = DecodeFrame(bytes);
  EXPECT_EQ(r.state, DecodeState::kMalformed);
  EXPECT_NE(r.error.message().find("checksum"), std::string::npos);
  // A corrupted header field is caught by the checksum too.
  bytes = EncodeFrame(70, 0, 1, "hello");
  bytes[16] ^= 1;  // request id
  EXPECT_EQ(DecodeFrame(bytes).state, DecodeState::kMalformed);
}

TEST(FrameTest, RejectsUnknownFlagsAndTypeZero) {
  std::string bytes = EncodeFrame(70, 0x80, 1, "");
  EXPECT_EQ(DecodeFrame(bytes).state, DecodeState::kMalformed);
  bytes = EncodeFrame(0, 0, 1, "");
  EXPECT_EQ(DecodeFrame(bytes).state, DecodeState::kMalformed);
}

TEST(FrameTest, ErrorPayloadKeepsErrno) {
  Status s = DecodeError(EncodeError(Status::PosixError("open", ENOTEMPTY)));
  EXPECT_EQ(s.code(), ENOTEMPTY);
  EXPECT_EQ(DecodeError("").code(), EBADMSG);
  EXPECT_EQ(DecodeError(EncodeError(Status::OK())).code(), EBADMSG);  // errno 0 is malformed
}

}  // namespace
}  // namespace mfs::wire

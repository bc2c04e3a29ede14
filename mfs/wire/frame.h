// The node-to-node frame.
//
// Every message between two mfsd daemons (and between a FUSE client and a
// peer's mfsd) is one frame: a fixed 32-byte header followed by `length`
// payload bytes. All fields are little-endian.
//
//   offset size field
//   0      4    magic       0x3153464D ("MFS1" in memory order)
//   4      2    version     kFrameVersion (1)
//   6      2    type        FrameType
//   8      4    flags       kFlagResponse | kFlagError ...
//   12     4    length      payload bytes, <= kMaxPayload
//   16     8    request_id  chosen by the requester, echoed by the response
//   24     8    checksum    XXH64(seed 0) of the header with this field zeroed,
//                           followed by the payload
//
// The decoder does no I/O: it is handed bytes and says whether they hold a
// complete, valid frame, need more bytes, or are malformed (with an errno and
// a message). Malformed input is never trusted further: the connection that
// sent it is closed. docs/wire.md documents the layout and every type.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "mfs/base/status.h"

namespace mfs::wire {

inline constexpr uint32_t kFrameMagic = 0x3153464D;
inline constexpr uint16_t kFrameVersion = 1;
inline constexpr size_t kHeaderSize = 32;
// Large enough for a 1 MiB write plus metadata, and for page batches.
inline constexpr uint32_t kMaxPayload = 16u << 20;

enum FrameFlags : uint32_t {
  kFlagResponse = 1u << 0,  // a reply to request_id
  kFlagError = 1u << 1,     // payload is an error: u32 errno + message
  kFlagsKnown = kFlagResponse | kFlagError,
};

// Frame types. 1-15: session; 16-63: membership and gossip; 64-191: file
// service; 192-255: migration. Unknown types are answered with ENOSYS.
enum class FrameType : uint16_t {
  kAuthHello = 1,      // server -> client: node id, nonce
  kAuthProve = 2,      // client -> server: node id, nonce, HMAC
  kAuthAccept = 3,     // server -> client: HMAC proving the server too
  kPing = 4,
  kHeartbeat = 16,     // membership: node id, address, uptime, known peers
  kGossipLoad = 17,    // balancer load vector
  kLeave = 18,         // membership: the sender is shutting down (u32 node id)
  kFileFirst = 64,
  kFileLast = 191,
  kMigrateFirst = 192,
  kMigrateLast = 255,
};

struct FrameHeader {
  uint16_t version = kFrameVersion;
  uint16_t type = 0;
  uint32_t flags = 0;
  uint32_t length = 0;
  uint64_t request_id = 0;
  uint64_t checksum = 0;
};

struct Frame {
  FrameHeader header;
  std::string payload;

  uint16_t type() const { return header.type; }
  bool is_response() const { return header.flags & kFlagResponse; }
  bool is_error() const { return header.flags & kFlagError; }
};

// The 32 header bytes of a frame carrying `payload`: magic, version, length
// and checksum filled in. Sending these followed by the payload (a scatter
// write) puts the same bytes on the wire as EncodeFrame without copying the
// payload.
std::array<char, kHeaderSize> EncodeHeader(uint16_t type, uint32_t flags, uint64_t request_id,
                                           std::string_view payload);

// Serialises a frame: EncodeHeader followed by a copy of the payload.
std::string EncodeFrame(uint16_t type, uint32_t flags, uint64_t request_id,
                        std::string_view payload);

// Parses and validates the fixed header (magic, version, flags, length). The
// checksum can only be checked once the payload is there: see DecodeFrame.
// REQUIRES: bytes.size() >= kHeaderSize.
Result<FrameHeader> DecodeHeader(std::string_view bytes);

// The outcome of feeding bytes to the decoder.
enum class DecodeState { kFrame, kNeedMore, kMalformed };

struct DecodeResult {
  DecodeState state = DecodeState::kNeedMore;
  Frame frame;            // valid when state == kFrame
  size_t consumed = 0;    // bytes that made up the frame
  Status error;           // set when state == kMalformed
};

// Decodes the first frame in `bytes`, if complete.
DecodeResult DecodeFrame(std::string_view bytes);

// Checks a payload against a decoded header's checksum.
Status VerifyChecksum(std::string_view header_bytes, const FrameHeader& h,
                      std::string_view payload);

// Error payloads: u32 errno + length-prefixed message.
std::string EncodeError(const Status& s);
Status DecodeError(std::string_view payload);

}  // namespace mfs::wire

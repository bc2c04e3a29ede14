#include "mfs/wire/frame.h"

#define XXH_STATIC_LINKING_ONLY  // XXH64_state_t on the stack
#include <xxhash.h>

#include <fmt/format.h>

#include <cstring>

#include "mfs/base/coding.h"

namespace mfs::wire {
namespace {

uint64_t Checksum(const char* header, std::string_view payload) {
  char h[kHeaderSize];
  std::memcpy(h, header, kHeaderSize);
  std::memset(h + 24, 0, 8);
  XXH64_state_t st;
  XXH64_reset(&st, 0);
  XXH64_update(&st, h, kHeaderSize);
  XXH64_update(&st, payload.data(), payload.size());
  return XXH64_digest(&st);
}

}  // namespace

std::array<char, kHeaderSize> EncodeHeader(uint16_t type, uint32_t flags, uint64_t request_id,
                                           std::string_view payload) {
  std::array<char, kHeaderSize> out{};
  char* h = out.data();
  EncodeFixed32(h, kFrameMagic);
  EncodeFixed16(h + 4, kFrameVersion);
  EncodeFixed16(h + 6, type);
  EncodeFixed32(h + 8, flags);
  EncodeFixed32(h + 12, static_cast<uint32_t>(payload.size()));
  EncodeFixed64(h + 16, request_id);
  EncodeFixed64(h + 24, Checksum(h, payload));
  return out;
}

std::string EncodeFrame(uint16_t type, uint32_t flags, uint64_t request_id,
                        std::string_view payload) {
  std::array<char, kHeaderSize> h = EncodeHeader(type, flags, request_id, payload);
  std::string out;
  out.reserve(kHeaderSize + payload.size());
  out.append(h.data(), h.size());
  out.append(payload.data(), payload.size());
  return out;
}

Result<FrameHeader> DecodeHeader(std::string_view bytes) {
  if (bytes.size() < kHeaderSize) return Status::Corruption("frame: truncated header");
  const char* h = bytes.data();
  uint32_t magic = DecodeFixed32(h);
  if (magic != kFrameMagic) {
    return Status::Corruption(fmt::format("frame: bad magic {:#010x}", magic));
  }
  FrameHeader fh;
  fh.version = DecodeFixed16(h + 4);
  if (fh.version != kFrameVersion) {
    return Status::Error(EPROTONOSUPPORT,
                         "frame: unsupported version " + std::to_string(fh.version));
  }
  fh.type = DecodeFixed16(h + 6);
  if (fh.type == 0) return Status::Corruption("frame: type 0");
  fh.flags = DecodeFixed32(h + 8);
  if (fh.flags & ~static_cast<uint32_t>(kFlagsKnown)) {
    return Status::Corruption("frame: unknown flags");
  }
  fh.length = DecodeFixed32(h + 12);
  if (fh.length > kMaxPayload) {
    return Status::Error(EMSGSIZE, "frame: payload of " + std::to_string(fh.length) +
                                       " bytes exceeds the limit of " +
                                       std::to_string(kMaxPayload));
  }
  fh.request_id = DecodeFixed64(h + 16);
  fh.checksum = DecodeFixed64(h + 24);
  return fh;
}

Status VerifyChecksum(std::string_view header_bytes, const FrameHeader& h,
                      std::string_view payload) {
  if (header_bytes.size() < kHeaderSize || payload.size() != h.length) {
    return Status::Corruption("frame: truncated");
  }
  if (Checksum(header_bytes.data(), payload) != h.checksum) {
    return Status::Corruption("frame: checksum mismatch");
  }
  return Status::OK();
}

DecodeResult DecodeFrame(std::string_view bytes) {
  DecodeResult r;
  if (bytes.size() < kHeaderSize) return r;
  auto h = DecodeHeader(bytes);
  if (!h.ok()) {
    r.state = DecodeState::kMalformed;
    r.error = h.status();
    return r;
  }
  size_t total = kHeaderSize + h->length;
  if (bytes.size() < total) return r;
  std::string_view payload = bytes.substr(kHeaderSize, h->length);
  Status s = VerifyChecksum(bytes, *h, payload);
  if (!s.ok()) {
    r.state = DecodeState::kMalformed;
    r.error = s;
    return r;
  }
  r.state = DecodeState::kFrame;
  r.frame.header = *h;
  r.frame.payload.assign(payload.data(), payload.size());
  r.consumed = total;
  return r;
}

std::string EncodeError(const Status& s) {
  std::string out;
  Writer w(&out);
  w.U32(static_cast<uint32_t>(s.code()));
  w.Bytes(s.message());
  return out;
}

Status DecodeError(std::string_view payload) {
  Reader r(payload);
  uint32_t err = r.U32();
  std::string_view msg = r.Bytes();
  if (!r.ok() || err == 0 || err > 4095) return Status::Corruption("frame: malformed error reply");
  return Status::Error(static_cast<int>(err), msg);
}

}  // namespace mfs::wire

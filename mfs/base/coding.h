// Fixed-width little-endian encoding helpers and a bounds-checked reader.
//
// Writer appends to a std::string; Reader consumes a byte span and turns every
// overrun into a sticky failure instead of reading past the end. Neither does
// I/O. Not thread-safe.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace mfs {

inline void EncodeFixed16(char* dst, uint16_t v) {
  dst[0] = static_cast<char>(v);
  dst[1] = static_cast<char>(v >> 8);
}
inline void EncodeFixed32(char* dst, uint32_t v) {
  for (int i = 0; i < 4; ++i) dst[i] = static_cast<char>(v >> (8 * i));
}
inline void EncodeFixed64(char* dst, uint64_t v) {
  for (int i = 0; i < 8; ++i) dst[i] = static_cast<char>(v >> (8 * i));
}
inline uint16_t DecodeFixed16(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return static_cast<uint16_t>(u[0] | (u[1] << 8));
}
inline uint32_t DecodeFixed32(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | u[i];
  return v;
}
inline uint64_t DecodeFixed64(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | u[i];
  return v;
}

class Writer {
 public:
  explicit Writer(std::string* out) : out_(out) {}
  void U8(uint8_t v) { out_->push_back(static_cast<char>(v)); }
  void U16(uint16_t v) {
    char b[2];
    EncodeFixed16(b, v);
    out_->append(b, 2);
  }
  void U32(uint32_t v) {
    char b[4];
    EncodeFixed32(b, v);
    out_->append(b, 4);
  }
  void U64(uint64_t v) {
    char b[8];
    EncodeFixed64(b, v);
    out_->append(b, 8);
  }
  void I64(int64_t v) { U64(static_cast<uint64_t>(v)); }
  // u32 length followed by the bytes.
  void Bytes(std::string_view s) {
    U32(static_cast<uint32_t>(s.size()));
    out_->append(s.data(), s.size());
  }
  void Raw(std::string_view s) { out_->append(s.data(), s.size()); }

 private:
  std::string* out_;
};

class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}
  bool ok() const { return ok_; }
  bool done() const { return ok_ && in_.empty(); }
  size_t remaining() const { return in_.size(); }
  uint8_t U8() { return Take(1) ? static_cast<uint8_t>(last_[0]) : 0; }
  uint16_t U16() { return Take(2) ? DecodeFixed16(last_) : 0; }
  uint32_t U32() { return Take(4) ? DecodeFixed32(last_) : 0; }
  uint64_t U64() { return Take(8) ? DecodeFixed64(last_) : 0; }
  int64_t I64() { return static_cast<int64_t>(U64()); }
  // Length-prefixed bytes; fails if the length exceeds what is left.
  std::string_view Bytes() {
    uint32_t n = U32();
    if (!ok_ || !Take(n)) return {};
    return std::string_view(last_, n);
  }
  std::string_view Raw(size_t n) { return Take(n) ? std::string_view(last_, n) : std::string_view(); }

 private:
  bool Take(size_t n) {
    if (!ok_ || in_.size() < n) {
      ok_ = false;
      return false;
    }
    last_ = in_.data();
    in_.remove_prefix(n);
    return true;
  }
  std::string_view in_;
  const char* last_ = nullptr;
  bool ok_ = true;
};

}  // namespace mfs

#include "mfs/locality/codec.h"

#include <xxhash.h>

#include <cstdio>
#include <cstring>

#include "mfs/base/coding.h"

namespace mfs::locality {
namespace {

constexpr uint16_t kVersion = 1;

void Seal(std::string* out) {
  uint64_t h = XXH64(out->data(), out->size(), 0);
  Writer(out).U64(h);
}

// Checks the trailing checksum and the magic/version; returns a Reader
// positioned after the 8-byte preamble, over the body without the checksum.
Result<std::string_view> Unseal(std::string_view v, uint32_t magic, const char* what) {
  if (v.size() < 16) return Status::Corruption(std::string(what) + " record too short");
  std::string_view body = v.substr(0, v.size() - 8);
  uint64_t want = DecodeFixed64(v.data() + body.size());
  if (XXH64(body.data(), body.size(), 0) != want) {
    return Status::Corruption(std::string(what) + " record checksum mismatch");
  }
  if (DecodeFixed32(body.data()) != magic) {
    return Status::Corruption(std::string(what) + " record has a bad magic");
  }
  uint16_t version = DecodeFixed16(body.data() + 4);
  if (version != kVersion) {
    return Status::Corruption(std::string(what) + " record version " + std::to_string(version) +
                              " is not supported");
  }
  return body.substr(8);
}

uint64_t Bits(double d) {
  uint64_t u;
  std::memcpy(&u, &d, 8);
  return u;
}
double Double(uint64_t u) {
  double d;
  std::memcpy(&d, &u, 8);
  return d;
}

}  // namespace

std::string HistoryKey(int64_t t_ms) {
  char buf[32];
  snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(t_ms));
  return std::string(kHistoryPrefix) + buf;
}

std::string EncodeHistory(const HistoryPoint& h) {
  std::string out;
  Writer w(&out);
  w.U32(kHistoryMagic);
  w.U16(kVersion);
  w.U16(0);
  w.I64(h.t_ms);
  w.I64(h.interval_ms);
  w.U64(h.local_read);
  w.U64(h.local_write);
  w.U64(h.remote_read);
  w.U64(h.remote_write);
  w.U64(h.cached);
  Seal(&out);
  return out;
}

Result<HistoryPoint> DecodeHistory(std::string_view value) {
  MFS_ASSIGN_OR_RETURN(std::string_view body, Unseal(value, kHistoryMagic, "history"));
  Reader r(body);
  HistoryPoint h;
  h.t_ms = r.I64();
  h.interval_ms = r.I64();
  h.local_read = r.U64();
  h.local_write = r.U64();
  h.remote_read = r.U64();
  h.remote_write = r.U64();
  h.cached = r.U64();
  if (!r.done()) return Status::Corruption("history record has a bad length");
  if (h.interval_ms < 0) return Status::Corruption("history record has a negative interval");
  return h;
}

std::string ProfileKey(const std::string& exe) { return std::string(kProfilePrefix) + exe; }

std::string EncodeProfile(const Profile& p, int64_t now_ms, double hl) {
  std::string out;
  Writer w(&out);
  w.U32(kProfileMagic);
  w.U16(kVersion);
  w.U16(0);
  w.U64(p.processes);
  w.I64(p.last_ms);
  w.I64(now_ms);
  w.U32(static_cast<uint32_t>(p.decayed.size()));
  for (const auto& [node, c] : p.decayed) {
    w.U32(node);
    w.U64(Bits(c.read_bytes.At(now_ms, hl)));
    w.U64(Bits(c.write_bytes.At(now_ms, hl)));
    w.U64(Bits(c.ops.At(now_ms, hl)));
    w.U64(Bits(c.cached_bytes.At(now_ms, hl)));
  }
  w.Bytes(p.exe);
  Seal(&out);
  return out;
}

Result<Profile> DecodeProfile(std::string_view value) {
  MFS_ASSIGN_OR_RETURN(std::string_view body, Unseal(value, kProfileMagic, "profile"));
  Reader r(body);
  Profile p;
  p.processes = r.U64();
  p.last_ms = r.I64();
  int64_t t = r.I64();
  uint32_t n = r.U32();
  if (!r.ok() || n > 4096 || static_cast<size_t>(n) * 36 > r.remaining()) {
    return Status::Corruption("profile record has a bad node count");
  }
  for (uint32_t i = 0; i < n; ++i) {
    uint32_t node = r.U32();
    DecayedCounters c;
    c.read_bytes = Decayed{Double(r.U64()), t};
    c.write_bytes = Decayed{Double(r.U64()), t};
    c.ops = Decayed{Double(r.U64()), t};
    c.cached_bytes = Decayed{Double(r.U64()), t};
    for (const Decayed* d : {&c.read_bytes, &c.write_bytes, &c.ops, &c.cached_bytes}) {
      if (!(d->value >= 0) || d->value > 1e30) {
        return Status::Corruption("profile record has an invalid figure");
      }
    }
    if (node == 0 || node > kMaxNodeId)
      return Status::Corruption("profile record has a bad node id");
    p.decayed[node] = c;
  }
  p.exe = std::string(r.Bytes());
  if (!r.done()) return Status::Corruption("profile record has a bad length");
  return p;
}

}  // namespace mfs::locality

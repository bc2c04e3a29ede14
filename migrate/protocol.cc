#include "migrate/protocol.h"

#include "mfs/base/coding.h"

namespace mfs::migrate {

std::string EncodeSyscallRequest(const SyscallRequest& r) {
  std::string out;
  Writer w(&out);
  w.U32(static_cast<uint32_t>(r.nr));
  for (uint64_t a : r.args) w.U64(a);
  w.U32(static_cast<uint32_t>(r.buffers.size()));
  for (const auto& b : r.buffers) {
    w.U8(b.arg);
    w.U8(b.dir);
    w.U8(b.ret_bounded);
    w.U32(b.size);
    if (b.dir & kDirIn) w.Bytes(b.data);
  }
  return out;
}

Result<SyscallRequest> DecodeSyscallRequest(std::string_view payload) {
  Reader rd(payload);
  SyscallRequest r;
  r.nr = static_cast<int32_t>(rd.U32());
  for (auto& a : r.args) a = rd.U64();
  uint32_t n = rd.U32();
  if (!rd.ok() || n > 6) return Status::Corruption("syscall request: bad buffer count");
  uint64_t total = 0;
  for (uint32_t i = 0; i < n; ++i) {
    CallBuffer b;
    b.arg = rd.U8();
    b.dir = rd.U8();
    b.ret_bounded = rd.U8();
    b.size = rd.U32();
    if (!rd.ok() || b.arg > 5 || b.dir == 0 || b.dir > 3)
      return Status::Corruption("syscall request: bad buffer");
    if (b.dir & kDirIn) {
      b.data = std::string(rd.Bytes());
      if (!rd.ok() || b.data.size() != b.size) return Status::Corruption("syscall request: buffer size");
    }
    total += b.size;
    r.buffers.push_back(std::move(b));
  }
  if (total > kMaxCallBytes + 65536) return Status::Corruption("syscall request: buffers too large");
  if (!rd.done()) return Status::Corruption("syscall request: trailing bytes");
  return r;
}

std::string EncodeSyscallReply(const SyscallReply& r) {
  std::string out;
  Writer w(&out);
  w.I64(r.ret);
  w.U32(static_cast<uint32_t>(r.buffers.size()));
  for (const auto& b : r.buffers) {
    w.U8(b.arg);
    w.Bytes(b.data);
  }
  if (!r.dfsa_path.empty()) {
    w.U8(1);
    w.U32(r.dfsa_flags);
    w.Bytes(r.dfsa_path);
  }
  return out;
}

Result<SyscallReply> DecodeSyscallReply(std::string_view payload) {
  Reader rd(payload);
  SyscallReply r;
  r.ret = rd.I64();
  uint32_t n = rd.U32();
  if (!rd.ok() || n > 6) return Status::Corruption("syscall reply: bad buffer count");
  for (uint32_t i = 0; i < n; ++i) {
    CallBuffer b;
    b.arg = rd.U8();
    b.data = std::string(rd.Bytes());
    if (!rd.ok() || b.arg > 5) return Status::Corruption("syscall reply: bad buffer");
    r.buffers.push_back(std::move(b));
  }
  if (rd.ok() && !rd.done()) {
    if (rd.U8() != 1) return Status::Corruption("syscall reply: bad trailer");
    r.dfsa_flags = rd.U32();
    r.dfsa_path = std::string(rd.Bytes());
    if (!rd.ok() || r.dfsa_path.empty() || r.dfsa_path[0] != '/' || r.ret < 0)
      return Status::Corruption("syscall reply: bad DFSA file");
  }
  if (!rd.done()) return Status::Corruption("syscall reply: trailing bytes");
  return r;
}

std::string EncodeU32(uint32_t v) {
  std::string out;
  Writer(&out).U32(v);
  return out;
}

std::string EncodeSignal(const SignalFrame& s) {
  std::string out;
  Writer w(&out);
  w.U32(s.sig);
  w.U8(s.orphaned ? 1 : 0);
  return out;
}

Result<SignalFrame> DecodeSignal(std::string_view payload) {
  Reader rd(payload);
  SignalFrame s;
  s.sig = rd.U32();
  if (rd.ok() && rd.remaining() > 0) s.orphaned = rd.U8() & 1;
  if (!rd.done()) return Status::Corruption("malformed signal frame");
  if (s.sig == 0 || s.sig > 64) return Status::Corruption("signal number out of range");
  return s;
}

Result<uint32_t> DecodeU32(std::string_view payload) {
  Reader rd(payload);
  uint32_t v = rd.U32();
  if (!rd.done()) return Status::Corruption("expected a u32");
  return v;
}

std::string EncodeDirectEnd(const DirectEnd& e) {
  std::string out;
  Writer w(&out);
  w.U8(e.ran ? 1 : 0);
  w.U32(e.seq);
  w.I64(e.ret);
  w.Bytes(e.out);
  return out;
}

Result<DirectEnd> DecodeDirectEnd(std::string_view payload) {
  Reader rd(payload);
  DirectEnd e;
  uint8_t ran = rd.U8();
  e.seq = rd.U32();
  e.ret = static_cast<int64_t>(rd.U64());
  e.out = std::string(rd.Bytes());
  if (!rd.ok() || !rd.done() || ran > 1) return Status::Corruption("direct end: bad payload");
  e.ran = ran == 1;
  return e;
}

}  // namespace mfs::migrate

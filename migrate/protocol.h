// The migration protocol: frames 192..205 of mfs/wire (see docs/wire.md and
// man/mfs-migration.7). Encoders and decoders do no I/O; decoders reject
// malformed payloads with EBADMSG.
//
//   kSpawnGuest   home mfsd -> destination mfsd (Call)
//                 req  u32 home_node, u32 home_pid, bytes comm
//                 resp bytes address ("127.0.0.2"), u16 port of the new guest supervisor
//   kImage        home supervisor -> guest (Call): image header (image.h)
//   kPages        home -> guest (Call): page runs (image.h); resp empty
//   kStart        home -> guest (Call): restore and run; resp u32 remote pid,
//                 u32 restore time in µs
//   kSyscall      guest -> home (Call): a forwarded system call (SyscallRequest)
//                 resp SyscallReply
//   kSignal       home -> guest (Send): u32 signo, to deliver to the remote,
//                 then u8 flags (SignalFrame)
//   kExited       guest -> home (Send): u32 wait status of the remote, then
//                 (optional) its DFSA files as it exited (image.h EncodeFiles)
//   kFetch        home -> guest (Call): freeze the remote and capture it;
//                 resp image header, u32 number of page batches
//   kFetchPages   home -> guest (Call): u32 batch index; resp page runs
//   kResume       home -> guest (Call): resume the frozen remote (move failed)
//   kKill         home -> guest (Call): kill the remote (moved away / deputy died)
//   kWantHome     guest -> home (Send): bytes reason; the remote made a `home`
//                 call and waits, frozen in it, to be brought home
//   kDirect       home -> guest (Call): offer a direct path (deputy.h); resp
//                 u16 port the guest listens on for it (once), 16 bytes
//                 one-time token the deputy's socket must present first
//   kDirectEnd    home -> guest (Send): the direct path is finished (the
//                 home's end is shut down); DirectEnd. The guest reads the
//                 socket to its end, answers the call named (unless already
//                 answered from the socket) and sends every other direct call
//                 in flight home as kSyscall (they did not run)
//   kDirectReply  home -> guest (Send): u32 seq, i64 ret: a direct call cut
//                 by a signal for the home pid, answered after kSignal
//   kPrepare      home -> guest (Call), before the freeze: the memory the
//                 pages will go to (PrepareHint, prepare.h); resp u32 pages
//                 populated, u32 µs. kStart's resp then also carries u32
//                 prepared pieces and u32 prepared pages the restore used.
//   kPrecopy      home -> guest (Call), after kPrepare, before the freeze:
//                 page runs (image.h) of the running process, written into
//                 the prepared memory; resp empty. kImage's resp then lists
//                 the mappings whose prepared memory the restore moved in
//                 (prepare.h EncodeRanges): pages pre-copied there whose hash
//                 is unchanged at the freeze are not sent again.
//   kStopped      guest -> home (Send): u32 signo: the remote entered a
//                 job-control stop with it; the deputy stops too (SIGSTOP),
//                 so that the home's parent sees the process stopped. A
//                 SIGCONT for the home pid continues both.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "mfs/base/status.h"

namespace mfs::migrate {

enum MigrateFrame : uint16_t {
  kSpawnGuest = 192,
  kImage = 193,
  kPages = 194,
  kStart = 195,
  kSyscall = 196,
  kSignal = 197,
  kExited = 198,
  kFetch = 199,
  kFetchPages = 200,
  kResume = 201,
  kKill = 202,
  kWantHome = 203,
  kPrepare = 204,
  kPrecopy = 205,
  kStopped = 206,
  kDirect = 220,
  kDirectEnd = 221,
  kDirectReply = 222,
};

// kDirectEnd's payload: u8 ran, u32 seq, i64 ret, bytes out.
struct DirectEnd {
  bool ran = false;  // call `seq` ran at home, returning `ret`, out-buffers `out`
  uint32_t seq = 0;
  int64_t ret = 0;
  std::string out;
};
std::string EncodeDirectEnd(const DirectEnd& e);
Result<DirectEnd> DecodeDirectEnd(std::string_view payload);

// One buffer argument of a forwarded call.
struct CallBuffer {
  uint8_t arg = 0;          // which argument points at it (0..5)
  uint8_t dir = 0;          // kDirIn | kDirOut
  uint8_t ret_bounded = 0;  // out: only `return value` bytes are meaningful
  uint32_t size = 0;
  std::string data;         // in: the bytes; out (reply): what the kernel wrote
};
inline constexpr uint8_t kDirIn = 1, kDirOut = 2;
// The largest buffer total a forwarded call may carry; read/write ask for
// less (a short read or write, which POSIX allows).
inline constexpr uint32_t kMaxCallBytes = 4u << 20;

struct SyscallRequest {
  int32_t nr = 0;
  uint64_t args[6] = {};
  std::vector<CallBuffer> buffers;
};

struct SyscallReply {
  int64_t ret = 0;
  std::vector<CallBuffer> buffers;  // out buffers only, in request order
  // DFSA: an open/openat/creat that opened fd `ret` on a regular file under
  // /mfs/<node>/ names it here (path, fdinfo flags with O_CLOEXEC), so that
  // the remote opens it where it runs, at the same number. Encoded after
  // the buffers only when set: u8 1, u32 flags, bytes path.
  std::string dfsa_path;
  uint32_t dfsa_flags = 0;
};

std::string EncodeSyscallRequest(const SyscallRequest& r);
Result<SyscallRequest> DecodeSyscallRequest(std::string_view payload);
std::string EncodeSyscallReply(const SyscallReply& r);
Result<SyscallReply> DecodeSyscallReply(std::string_view payload);

std::string EncodeU32(uint32_t v);
Result<uint32_t> DecodeU32(std::string_view payload);

// kSignal's payload: u32 signo, then u8 flags (absent: 0).
struct SignalFrame {
  uint32_t sig = 0;
  // The home's process group is orphaned: a SIGTSTP, SIGTTIN or SIGTTOU
  // whose action is the default is discarded, as the home's kernel would
  // do, rather than a stop (which no one would ever continue).
  bool orphaned = false;
};
std::string EncodeSignal(const SignalFrame& s);
Result<SignalFrame> DecodeSignal(std::string_view payload);

}  // namespace mfs::migrate

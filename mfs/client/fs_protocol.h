// The file-service protocol: frame types 64..191 and their payloads.
//
// Shared by the client (RemoteBackend) and the server (mfs/server
// FileService). Payloads are built with mfs::Writer and parsed with
// mfs::Reader (fixed-width little-endian; strings and byte blobs as u32
// length + bytes); a payload that does not parse to the end is rejected with
// EBADMSG. docs/wire-fs.md lists every message; this header is the source of
// truth for the numbers. Pure functions, no I/O, thread-safe.
#pragma once

#include <sys/stat.h>
#include <sys/statvfs.h>

#include <climits>
#include <cstdint>
#include <string>

#include "mfs/base/coding.h"
#include "mfs/client/caller.h"

namespace mfs::client {

// A stat's change time in ns: the version of a file's state. Every change
// of its data or attributes sets it; on a file system with fine-grained
// change times (multigrain, Linux 6.13+; FileService probes its export) a
// change after a stat always gives a new one.
inline int64_t CtimeNs(const struct stat& st) {
  return static_cast<int64_t>(st.st_ctim.tv_sec) * 1000000000 + st.st_ctim.tv_nsec;
}
inline constexpr int64_t kCtimeUnknown = INT64_MIN;

}  // namespace mfs::client

namespace mfs::client::proto {

enum Type : uint16_t {
  kGetRoot = 64,      // -> handle, stat
  kLookup = 65,       // cred, dir handle, name [, u8 LookupFlags] -> handle, stat | listing
  kGetAttr = 66,      // handle, u64 fh (0 = none) -> stat
  kSetAttr = 67,      // cred, handle, u64 fh, setattr fields -> stat
  kMakeNode = 68,     // cred, dir, name, u32 mode, u64 rdev, link -> handle, stat, gens
  kLink = 69,         // cred, handle, new dir, name -> handle, stat
  kRemove = 70,       // cred, dir, name, u8 is_dir -> [dir stat after, gens]
  kRename = 71,       // cred, dir, name, new dir, new name, u32 flags -> ()
  kReadLink = 72,     // handle -> target
  kAccess = 73,       // cred, handle, u32 mask -> ()
  kOpen = 74,         // cred, handle, u32 flags -> u64 fh
  kCreate = 75,       // cred, dir, name, mode, flags -> handle, stat, fh [dir stat, created, gens]
  kRead = 76,         // u64 fh, i64 off, u32 size -> raw bytes
  kWrite = 77,        // u64 fh, i64 off, data [, u8 kill set-id bits] -> u32 written
  kFlush = 78,        // u64 fh, u64 lock owner -> ()
  kFsync = 79,        // u64 fh, u8 datasync -> ()
  kRelease = 80,      // u64 fh -> ()
  kReadDir = 81,      // cred, handle, u64 off, u32 max, u8 plus -> entries
  kStatFs = 82,       // handle -> statvfs
  kSetXattr = 83,     // cred, handle, name, value, u32 flags -> ()
  kGetXattr = 84,     // cred, handle, name -> value
  kListXattr = 85,    // cred, handle -> names
  kRemoveXattr = 86,  // cred, handle, name -> ()
  kFallocate = 87,    // u64 fh, u32 mode, i64 off, i64 len -> ()
  kCopyRange = 88,    // u64 fh in, i64 off in, u64 fh out, i64 off out, u64 len -> u64 n
  kGetLk = 89,        // u64 fh, lock -> lock
  kSetLk = 90,        // u64 fh, lock, u8 wait -> ()
  kFlock = 91,        // u64 fh, u64 owner, u32 op -> ()
  kCancelWait = 92,   // client -> server (no reply): u64 fh, u64 owner
  kWatch = 96,        // client -> server: u8 all (send me every change) -> ()
  kChanged = 97,      // own mount -> its server: key, name [, u8 ChangedFlags [, i64 ctime]]
  kHold = 98,         // client -> server: u32 n, n x handle (files it still caches) -> u32 held
  kForgetDir = 99,    // client -> server (no reply): handle of a directory it no longer holds
  kInvalidate = 100,  // server -> client: handle, key, name [, i64 ctime] (call: breaks a listing)
};

// kChanged is one-way, or a call (answered empty) when a peer may hold a
// listing of the directory whose entry changed (file_service.h, PutListing).
// Its optional last byte, for a file that just lost a name:
enum ChangedFlags : uint8_t {
  kChangedGone = 1,  // no name left: forget who held it once nobody has it open
  // A removed directory: pushed to peers only while mfsd keeps it open for
  // them (file_service.h, PinnedDir). Otherwise its handle no longer opens
  // on the owner (a directory handle needs a path to it), and a peer told
  // to drop its attributes would get ESTALE on its next stat.
  kChangedDir = 2,
};

// kLookup's optional last byte.
enum LookupFlags : uint8_t {
  // If nothing has the name, answer with a listing instead of ENOENT when
  // the owner can vouch for it: an empty handle, u64 generation, u32 n,
  // n x name (docs/wire-fs.md, "Directory listings"). "gens" in the
  // replies above: the directory's generations before and after the change
  // (0 when the owner keeps none for this connection).
  kLookupListing = 1,
};
// The most names a listing carries (a bigger directory gets ENOENT).
inline constexpr uint32_t kMaxListing = 4096;

// The largest read or write one frame carries.
inline constexpr uint32_t kMaxIo = 1u << 20;
// The most handles one kHold carries.
inline constexpr uint32_t kMaxHold = 4096;

void PutCaller(Writer& w, const Caller& c);
Caller GetCaller(Reader& r);
void PutStat(Writer& w, const struct stat& st);
struct stat GetStat(Reader& r);
void PutStatvfs(Writer& w, const struct statvfs& s);
struct statvfs GetStatvfs(Reader& r);

}  // namespace mfs::client::proto

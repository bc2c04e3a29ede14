// Records LocalityService keeps in the node's state database (RocksDB).
//
// Keys:
//   locality/history/<16 hex digits: end of interval, ms since the epoch>
//   locality/profile/<executable path>
// The hex time keeps history keys in time order, so pruning by age is one
// DeleteRange.
//
// Values are little-endian, framed by a magic and a version, and end with an
// XXH64 (seed 0) of everything before it:
//
//   history (kHistoryMagic "LHS1"), 72 bytes:
//     u32 magic, u16 version (1), u16 reserved (0), i64 t_ms, i64 interval_ms,
//     u64 local_read, u64 local_write, u64 remote_read, u64 remote_write,
//     u64 cached, u64 xxh64
//   profile (kProfileMagic "LPR1"):
//     u32 magic, u16 version (1), u16 reserved (0), u64 processes, i64 last_ms,
//     i64 t_ms (the time the figures below are exact at), u32 n,
//     n x { u32 node, f64 read_bytes, f64 write_bytes, f64 ops, f64 cached_bytes },
//     bytes exe, u64 xxh64
//
// Decoders do no I/O and reject anything malformed with EBADMSG and a
// message; the service skips such a record with a warning. Stateless.
#pragma once

#include <string>
#include <string_view>

#include "mfs/base/status.h"
#include "mfs/locality/model.h"

namespace mfs::locality {

inline constexpr std::string_view kHistoryPrefix = "locality/history/";
inline constexpr std::string_view kProfilePrefix = "locality/profile/";
inline constexpr uint32_t kHistoryMagic = 0x3153484C;  // "LHS1"
inline constexpr uint32_t kProfileMagic = 0x3152504C;  // "LPR1"

std::string HistoryKey(int64_t t_ms);
std::string EncodeHistory(const HistoryPoint& h);
Result<HistoryPoint> DecodeHistory(std::string_view value);

std::string ProfileKey(const std::string& exe);
// Encodes the profile with its figures decayed to now_ms.
std::string EncodeProfile(const Profile& p, int64_t now_ms, double half_life_ms);
Result<Profile> DecodeProfile(std::string_view value);

}  // namespace mfs::locality

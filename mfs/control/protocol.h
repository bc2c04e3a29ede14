// The control protocol between admin tools and the local mfsd.
//
// A Unix stream socket (default /run/mfs/mfsd.sock). The client writes one
// request, a JSON object on one line with an "op" member; the daemon answers
// with one JSON object on one line:
//     {"ok":true, ...op-specific members}
//     {"ok":false, "errno":N, "error":"message"}
// A connection may carry any number of requests, one after the other. A line
// longer than kMaxLine, or one that is not a JSON object with a string "op",
// is answered with EINVAL and the connection is closed. The ops and their
// members are listed in man/mfsd.8 (CONTROL PROTOCOL).
#pragma once

#include <cstddef>

namespace mfs::control {

inline constexpr size_t kMaxLine = 4u << 20;
inline constexpr const char* kDefaultSocket = "/run/mfs/mfsd.sock";

}  // namespace mfs::control

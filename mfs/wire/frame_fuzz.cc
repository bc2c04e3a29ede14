// libFuzzer target: the frame decoder must never crash, hang or read out of
// bounds, whatever bytes arrive; a frame it accepts must re-encode to the
// same bytes.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "mfs/wire/frame.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  while (!in.empty()) {
    auto r = mfs::wire::DecodeFrame(in);
    if (r.state != mfs::wire::DecodeState::kFrame) break;
    std::string again = mfs::wire::EncodeFrame(r.frame.header.type, r.frame.header.flags,
                                               r.frame.header.request_id, r.frame.payload);
    if (again != in.substr(0, r.consumed)) std::abort();
    (void)mfs::wire::DecodeError(r.frame.payload);
    in.remove_prefix(r.consumed);
  }
  return 0;
}

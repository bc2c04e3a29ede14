// libFuzzer target for the locality decoders: stored history and profile
// records (RocksDB values) and locality.report requests. They must reject
// any input with a Status, never crash or read out of bounds.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "mfs/locality/codec.h"
#include "mfs/locality/report.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  auto h = mfs::locality::DecodeHistory(in);
  if (h.ok()) (void)mfs::locality::EncodeHistory(*h);
  auto p = mfs::locality::DecodeProfile(in);
  if (p.ok()) (void)mfs::locality::EncodeProfile(*p, p->last_ms, 1000.0);
  nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!j.is_discarded() && j.is_object()) (void)mfs::locality::DecodeReport(j);
  return 0;
}

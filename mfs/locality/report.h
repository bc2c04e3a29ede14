// The "locality.report" control request: what an IoRecorder sends to mfsd.
//
//   {"op":"locality.report", "entries":[
//      {"pid":4242, "start":123456, "comm":"cat", "exe":"/usr/bin/cat", "node":2,
//       "opens":1, "creates":0, "reads":16, "read_bytes":1048576,
//       "writes":0, "write_bytes":0, "cached_reads":0, "cached_bytes":0}, ...]}
//
// Each entry is a delta since the previous report: the operations process
// `pid` (started at `start`, clock ticks since boot, so a reused pid is a new
// process) did on files owned by node `node`. cached_* count the reads that
// were answered from the client cache; they are included in reads/read_bytes.
// Decoding validates every field and rejects the whole request on error.
// Values; not thread-safe.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "mfs/base/status.h"

namespace mfs::locality {

struct Counters {
  uint64_t opens = 0;
  uint64_t creates = 0;
  uint64_t reads = 0;
  uint64_t read_bytes = 0;
  uint64_t writes = 0;
  uint64_t write_bytes = 0;
  uint64_t cached_reads = 0;
  uint64_t cached_bytes = 0;

  uint64_t bytes() const { return read_bytes + write_bytes; }
  uint64_t ops() const { return opens + creates + reads + writes; }
  void Add(const Counters& o);
  bool empty() const { return ops() == 0 && bytes() == 0; }
};

struct Entry {
  pid_t pid = 0;
  uint64_t start = 0;
  std::string comm;
  std::string exe;
  uint32_t node = 0;
  Counters c;
};

using Batch = std::vector<Entry>;

// Node ids are 1..kMaxNodeId (as mfs::node::kMaxNodeId).
inline constexpr uint32_t kMaxNodeId = 255;

// Upper bound on entries in one request (a bigger batch is split by the
// sender, refused by the receiver).
inline constexpr size_t kMaxEntriesPerReport = 4096;

nlohmann::json EncodeReport(const Batch& batch);
// Parses the request object of a locality.report op.
Result<Batch> DecodeReport(const nlohmann::json& request);

nlohmann::json CountersToJson(const Counters& c);

}  // namespace mfs::locality

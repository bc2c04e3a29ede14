#include "mfs/locality/report.h"

namespace mfs::locality {

using nlohmann::json;

void Counters::Add(const Counters& o) {
  opens += o.opens;
  creates += o.creates;
  reads += o.reads;
  read_bytes += o.read_bytes;
  writes += o.writes;
  write_bytes += o.write_bytes;
  cached_reads += o.cached_reads;
  cached_bytes += o.cached_bytes;
}

json CountersToJson(const Counters& c) {
  return json{{"opens", c.opens},
              {"creates", c.creates},
              {"reads", c.reads},
              {"read_bytes", c.read_bytes},
              {"writes", c.writes},
              {"write_bytes", c.write_bytes},
              {"cached_reads", c.cached_reads},
              {"cached_bytes", c.cached_bytes}};
}

json EncodeReport(const Batch& batch) {
  json entries = json::array();
  for (const Entry& e : batch) {
    json j = CountersToJson(e.c);
    j["pid"] = e.pid;
    j["start"] = e.start;
    j["comm"] = e.comm;
    j["exe"] = e.exe;
    j["node"] = e.node;
    entries.push_back(std::move(j));
  }
  return json{{"op", "locality.report"}, {"entries", std::move(entries)}};
}

namespace {

Status Field(const json& j, const char* key, uint64_t* out, size_t i) {
  auto it = j.find(key);
  if (it == j.end()) {
    *out = 0;
    return Status::OK();
  }
  if (!it->is_number_unsigned() && !(it->is_number_integer() && it->get<int64_t>() >= 0)) {
    return Status::InvalidArgument("locality.report: entries[" + std::to_string(i) + "]." + key +
                                   " must be a non-negative integer");
  }
  *out = it->get<uint64_t>();
  return Status::OK();
}

}  // namespace

Result<Batch> DecodeReport(const json& request) {
  auto it = request.find("entries");
  if (it == request.end() || !it->is_array()) {
    return Status::InvalidArgument("locality.report: \"entries\" must be an array");
  }
  if (it->size() > kMaxEntriesPerReport) {
    return Status::Error(
        E2BIG, "locality.report: more than " + std::to_string(kMaxEntriesPerReport) + " entries");
  }
  Batch batch;
  batch.reserve(it->size());
  size_t i = 0;
  for (const json& j : *it) {
    if (!j.is_object()) {
      return Status::InvalidArgument("locality.report: entries[" + std::to_string(i) +
                                     "] must be an object");
    }
    Entry e;
    uint64_t pid = 0, node = 0;
    MFS_RETURN_IF_ERROR(Field(j, "pid", &pid, i));
    MFS_RETURN_IF_ERROR(Field(j, "node", &node, i));
    if (pid == 0 || pid > (1u << 22)) {
      return Status::InvalidArgument("locality.report: entries[" + std::to_string(i) +
                                     "].pid out of range");
    }
    if (node == 0 || node > kMaxNodeId) {
      return Status::InvalidArgument("locality.report: entries[" + std::to_string(i) +
                                     "].node must be 1.." + std::to_string(kMaxNodeId));
    }
    e.pid = static_cast<pid_t>(pid);
    e.node = static_cast<uint32_t>(node);
    MFS_RETURN_IF_ERROR(Field(j, "start", &e.start, i));
    MFS_RETURN_IF_ERROR(Field(j, "opens", &e.c.opens, i));
    MFS_RETURN_IF_ERROR(Field(j, "creates", &e.c.creates, i));
    MFS_RETURN_IF_ERROR(Field(j, "reads", &e.c.reads, i));
    MFS_RETURN_IF_ERROR(Field(j, "read_bytes", &e.c.read_bytes, i));
    MFS_RETURN_IF_ERROR(Field(j, "writes", &e.c.writes, i));
    MFS_RETURN_IF_ERROR(Field(j, "write_bytes", &e.c.write_bytes, i));
    MFS_RETURN_IF_ERROR(Field(j, "cached_reads", &e.c.cached_reads, i));
    MFS_RETURN_IF_ERROR(Field(j, "cached_bytes", &e.c.cached_bytes, i));
    for (const char* k : {"comm", "exe"}) {
      auto s = j.find(k);
      if (s == j.end()) continue;
      if (!s->is_string() || s->get_ref<const std::string&>().size() > 4096) {
        return Status::InvalidArgument("locality.report: entries[" + std::to_string(i) + "]." + k +
                                       " must be a string of at most 4096 bytes");
      }
      (std::string(k) == "comm" ? e.comm : e.exe) = s->get<std::string>();
    }
    batch.push_back(std::move(e));
    ++i;
  }
  return batch;
}

}  // namespace mfs::locality

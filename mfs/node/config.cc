#include "mfs/node/config.h"

#include <fstream>
#include <sstream>

#include "mfs/wire/connection.h"

namespace mfs::node {
namespace {

Status KeyError(const std::string& origin, std::string_view key, std::string_view why) {
  return Status::InvalidArgument(origin + ": " + std::string(key) + ": " + std::string(why));
}

// Reads an optional string key; wrong type is an error.
Status GetString(const toml::table& t, const std::string& origin, std::string_view section,
                 std::string_view key, std::string* out) {
  const toml::node* n = t.at_path(std::string(section) + "." + std::string(key)).node();
  if (!n) return Status::OK();
  auto v = n->value<std::string>();
  if (!v) return KeyError(origin, std::string(section) + "." + std::string(key), "must be a string");
  *out = *v;
  return Status::OK();
}

Status GetInt(const toml::table& t, const std::string& origin, std::string_view section,
              std::string_view key, int64_t lo, int64_t hi, int64_t* out, bool required) {
  std::string full = std::string(section) + "." + std::string(key);
  const toml::node* n = t.at_path(full).node();
  if (!n) {
    if (required) return KeyError(origin, full, "missing (required)");
    return Status::OK();
  }
  auto v = n->value<int64_t>();
  if (!v || !n->is_integer()) return KeyError(origin, full, "must be an integer");
  if (*v < lo || *v > hi) {
    return KeyError(origin, full,
                    "must be between " + std::to_string(lo) + " and " + std::to_string(hi));
  }
  *out = *v;
  return Status::OK();
}

}  // namespace

Result<Config> ParseConfig(std::string_view text, const std::string& origin) {
  auto table = std::make_shared<toml::table>();
  try {
    *table = toml::parse(text, origin);
  } catch (const toml::parse_error& e) {
    const auto& src = e.source();
    return Status::InvalidArgument(origin + ":" + std::to_string(src.begin.line) + ":" +
                                   std::to_string(src.begin.column) + ": " +
                                   std::string(e.description()));
  }
  static const char* kSections[] = {"node", "membership", "log", "fs", "migrate", "balancer",
                                    "locality"};
  for (auto&& [k, v] : *table) {
    bool known = false;
    for (const char* s : kSections) known |= (k.str() == s);
    if (!known) return KeyError(origin, k.str(), "unknown section");
    if (!v.is_table()) return KeyError(origin, k.str(), "must be a table");
  }
  static const char* kNodeKeys[] = {"id",          "address",        "port",  "export", "state_dir",
                                    "secret_file", "control_socket", "mount", "peers"};
  if (auto* node = (*table)["node"].as_table()) {
    for (auto&& [k, v] : *node) {
      bool known = false;
      for (const char* s : kNodeKeys) known |= (k.str() == s);
      if (!known) return KeyError(origin, "node." + std::string(k.str()), "unknown key");
    }
  } else {
    return KeyError(origin, "node", "missing section [node]");
  }

  Config c;
  c.path = origin;
  int64_t v = 0;
  MFS_RETURN_IF_ERROR(GetInt(*table, origin, "node", "id", 1, kMaxNodeId, &v, true));
  c.id = static_cast<uint32_t>(v);
  MFS_RETURN_IF_ERROR(GetString(*table, origin, "node", "address", &c.address));
  {
    auto ep = wire::ParseEndpoint(c.address, 1);
    if (!ep.ok() || c.address.find(':') != std::string::npos) {
      return KeyError(origin, "node.address", "'" + c.address + "' is not an IPv4 address");
    }
  }
  v = c.port;
  MFS_RETURN_IF_ERROR(GetInt(*table, origin, "node", "port", 1, 65535, &v, false));
  c.port = static_cast<uint16_t>(v);
  MFS_RETURN_IF_ERROR(GetString(*table, origin, "node", "export", &c.export_dir));
  MFS_RETURN_IF_ERROR(GetString(*table, origin, "node", "state_dir", &c.state_dir));
  MFS_RETURN_IF_ERROR(GetString(*table, origin, "node", "secret_file", &c.secret_file));
  MFS_RETURN_IF_ERROR(GetString(*table, origin, "node", "control_socket", &c.control_socket));
  MFS_RETURN_IF_ERROR(GetString(*table, origin, "node", "mount", &c.mount));
  for (const auto* key : {&c.export_dir, &c.state_dir, &c.secret_file, &c.control_socket}) {
    if (key->empty() || (*key)[0] != '/') {
      return KeyError(origin, "node", "paths must be absolute: '" + *key + "'");
    }
  }
  if (!c.mount.empty() && c.mount[0] != '/') {
    return KeyError(origin, "node.mount", "must be an absolute path or empty");
  }
  if (const toml::node* peers = table->at_path("node.peers").node()) {
    const toml::array* arr = peers->as_array();
    if (!arr) return KeyError(origin, "node.peers", "must be an array of \"ip:port\" strings");
    for (const auto& p : *arr) {
      auto s = p.value<std::string>();
      if (!s) return KeyError(origin, "node.peers", "must be an array of \"ip:port\" strings");
      auto ep = wire::ParseEndpoint(*s, c.port);
      if (!ep.ok()) return KeyError(origin, "node.peers", ep.status().message());
      c.peers.push_back(*s);
    }
  }
  v = c.heartbeat.count();
  MFS_RETURN_IF_ERROR(GetInt(*table, origin, "membership", "heartbeat_ms", 10, 60000, &v, false));
  c.heartbeat = std::chrono::milliseconds(v);
  v = c.dead_after.count();
  MFS_RETURN_IF_ERROR(
      GetInt(*table, origin, "membership", "dead_after_ms", 50, 600000, &v, false));
  c.dead_after = std::chrono::milliseconds(v);
  if (c.dead_after < 2 * c.heartbeat) {
    return KeyError(origin, "membership.dead_after_ms", "must be at least twice heartbeat_ms");
  }
  MFS_RETURN_IF_ERROR(GetString(*table, origin, "log", "level", &c.log_level));
  static const char* kLevels[] = {"trace", "debug", "info", "warn", "error"};
  bool level_ok = false;
  for (const char* l : kLevels) level_ok |= (c.log_level == l);
  if (!level_ok) return KeyError(origin, "log.level", "must be trace, debug, info, warn or error");
  MFS_RETURN_IF_ERROR(GetString(*table, origin, "log", "file", &c.log_file));
  c.table = std::move(table);
  return c;
}

Result<Config> LoadConfig(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::FromErrno("config " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ParseConfig(ss.str(), path);
}

}  // namespace mfs::node

// Node configuration: the TOML file given to `mfsd --config FILE`.
//
// The format (every key, its default and meaning) is documented in
// man/mfsd.8 and man/mfsd.toml.5. Services may keep their own sections
// ([fs], [migrate], [balancer] ...) and read them through table().
// Config is an immutable value after loading; safe to share between threads.
#pragma once

#include <toml++/toml.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "mfs/base/status.h"

namespace mfs::node {

struct Config {
  std::string path;  // the file this came from

  uint32_t id = 0;
  std::string address = "127.0.0.1";
  uint16_t port = 7420;
  std::string export_dir = "/";
  std::string state_dir = "/var/lib/mfs";
  std::string secret_file = "/etc/mfs/secret";
  std::string control_socket = "/run/mfs/mfsd.sock";
  std::string mount;  // "" = mfsd does not mount /mfs
  std::vector<std::string> peers;

  std::chrono::milliseconds heartbeat{500};
  std::chrono::milliseconds dead_after{3000};

  std::string log_level = "info";
  std::string log_file;

  // The whole parsed document, for services' own sections.
  std::shared_ptr<const toml::table> table;
};

// Parses and validates a config file. Errors name the file and the key.
Result<Config> LoadConfig(const std::string& path);
// Same, from text (for tests); `origin` names it in errors.
Result<Config> ParseConfig(std::string_view text, const std::string& origin);

inline constexpr uint32_t kMaxNodeId = 255;

}  // namespace mfs::node

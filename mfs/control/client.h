// Control-socket client for admin tools: one blocking request/response.
// Thread-compatible (use one Client per thread).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "mfs/base/status.h"
#include "mfs/base/unique_fd.h"

namespace mfs::control {

// The socket path a tool should use: `flag` if set, else $MFS_SOCKET, else
// the default.
std::string SocketPath(const std::string& flag);

class Client {
 public:
  // Connects; ECONNREFUSED/ENOENT name the socket ("is mfsd running?").
  static Result<Client> Connect(const std::string& socket_path, int timeout_ms = 10000);
  // Sends a request and returns the response object. A {"ok":false} answer
  // becomes a Status with the daemon's errno and message.
  Result<nlohmann::json> Call(const nlohmann::json& request);

 private:
  Client(UniqueFd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)) {}
  UniqueFd fd_;
  std::string path_;
  std::string buffer_;
};

// Connect + Call in one.
Result<nlohmann::json> Call(const std::string& socket_path, const nlohmann::json& request,
                            int timeout_ms = 10000);

}  // namespace mfs::control

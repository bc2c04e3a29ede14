// ControlServer: the daemon side of the control protocol (protocol.h).
//
// Ops are registered by name before Start(). A handler gets the request
// object and the caller's credentials (SO_PEERCRED) and answers exactly once
// through `reply`, possibly later from another thread. Handlers run on the
// io_context threads and must not block. Thread-safe after Start().
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <unordered_map>

#include "mfs/base/asio.h"
#include "mfs/base/status.h"

namespace mfs::control {

struct Caller {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
};

class ControlServer {
 public:
  using Reply = std::function<void(Result<nlohmann::json>)>;
  using Handler = std::function<void(const nlohmann::json& request, const Caller&, Reply)>;
  using SyncHandler = std::function<Result<nlohmann::json>(const nlohmann::json&, const Caller&)>;

  explicit ControlServer(boost::asio::io_context& io);
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  void Register(const std::string& op, Handler handler);
  void RegisterSync(const std::string& op, SyncHandler handler);

  // Binds the socket (mode 0666; ops check Caller where it matters). A stale
  // socket file nobody answers on is replaced; a live one is EADDRINUSE.
  Status Start(const std::string& path);
  void Stop();

  // Runs the op as if it came over the socket (for in-process callers).
  void Dispatch(const nlohmann::json& request, const Caller& caller, Reply reply);

 private:
  class Session;
  void AcceptNext();

  boost::asio::io_context& io_;
  boost::asio::local::stream_protocol::acceptor acceptor_;
  std::string path_;
  std::mutex mu_;  // guards handlers_
  std::unordered_map<std::string, Handler> handlers_;
};

// {"ok":false,"errno":..,"error":..}
nlohmann::json ErrorReply(const Status& s);

}  // namespace mfs::control

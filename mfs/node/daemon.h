// Daemon: the core of mfsd.
//
// Owns the io_context and its threads, the peer listener, outgoing peer
// connections, membership (heartbeats), the control socket and the state
// database. Services (file service, migration, balancer, locality) plug in
// before Run() through RegisterFrameHandler / RegisterControlOp and reach
// peers through PeerConnection.
//
// Start order: secret, export, state database, peer listener, control
// socket, timers. Any failure returns a Status naming the file, key or
// address, and the destructor releases whatever had started.
//
// Thread-safety: Register* must be called before Run(); everything else is
// thread-safe. Lock order: conns_mu_ is a leaf lock; Membership has its own.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "mfs/base/asio.h"
#include "mfs/base/status.h"
#include "mfs/control/server.h"
#include "mfs/node/config.h"
#include "mfs/node/membership.h"
#include "mfs/node/state_store.h"
#include "mfs/wire/connection.h"

namespace mfs::node {

class Daemon {
 public:
  using FrameHandler = std::function<void(const wire::Connection::Ptr&, wire::Frame)>;
  using ConnCallback = std::function<void(Result<wire::Connection::Ptr>)>;

  explicit Daemon(Config config);
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Validates the environment and starts listening. Call once.
  Status Start();
  // Runs the io_context on `threads` threads until Shutdown() or a signal.
  void Run(int threads = 2);
  // Graceful stop: tells peers we leave, closes everything. Thread-safe.
  void Shutdown();
  // Called (on an io thread) when Shutdown begins; services stop here.
  void OnShutdown(std::function<void()> hook);

  // Called (on an io thread) when an accepted peer connection closes, for
  // services that keep per-connection state (open files, locks).
  // REQUIRES: before Run().
  void OnConnectionClosed(std::function<void(const wire::Connection::Ptr&)> hook);

  // Frames of type [first, last] from authenticated peers go to `handler`.
  void RegisterFrameHandler(uint16_t first, uint16_t last, FrameHandler handler);
  void RegisterControlOp(const std::string& op, control::ControlServer::Handler handler);
  void RegisterControlOp(const std::string& op, control::ControlServer::SyncHandler handler);
  // Runs a control op in-process, as if it came over the control socket from
  // mfsd itself (services asking each other, e.g. locality asks proc.where).
  void CallControlOp(const nlohmann::json& request, control::ControlServer::Reply reply);

  // The outgoing connection to node `id`, dialled if needed. EHOSTDOWN if the
  // node is unknown or dead.
  void PeerConnection(uint32_t id, ConnCallback done);

  boost::asio::io_context& io() { return io_; }
  // For disk and database work that must stay off the io threads.
  boost::asio::thread_pool& blocking() { return blocking_; }
  const Config& config() const { return config_; }
  StateStore& store() { return *store_; }
  Membership& membership() { return membership_; }
  const wire::AuthConfig& auth() const { return auth_; }
  uint64_t uptime_ms() const;
  nlohmann::json StatusJson() const;

 private:
  void AcceptNext();
  void OnFrame(const wire::Connection::Ptr& c, wire::Frame f);
  void Tick();
  void Dial(const std::string& address, ConnCallback done);
  void SendHeartbeats();

  Config config_;
  boost::asio::io_context io_;
  boost::asio::thread_pool blocking_{2};
  boost::asio::signal_set signals_;
  boost::asio::ip::tcp::acceptor acceptor_;
  boost::asio::steady_timer tick_timer_;
  control::ControlServer control_;
  wire::AuthConfig auth_;
  Membership membership_;
  std::unique_ptr<StateStore> store_;
  std::chrono::steady_clock::time_point started_;
  std::atomic<bool> stopping_{false};
  std::vector<std::function<void(const wire::Connection::Ptr&)>> close_hooks_;

  struct Range {
    uint16_t first, last;
    FrameHandler handler;
  };
  std::vector<Range> handlers_;  // fixed after Start()
  std::vector<std::function<void()>> shutdown_hooks_;

  std::mutex conns_mu_;
  std::map<std::string, wire::Connection::Ptr> out_;     // GUARDED_BY(conns_mu_), by address
  std::map<std::string, std::vector<ConnCallback>> dialing_;  // GUARDED_BY(conns_mu_)
  std::vector<std::weak_ptr<wire::Connection>> in_;      // GUARDED_BY(conns_mu_)
};

}  // namespace mfs::node

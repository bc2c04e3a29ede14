#include "mfs/node/daemon.h"

#include <sys/stat.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <filesystem>
#include <thread>

#include "mfs/base/coding.h"

namespace mfs::node {

namespace asio = boost::asio;
using asio::ip::tcp;
using nlohmann::json;
using wire::FrameType;

namespace {

std::string AddressOf(const Config& c) { return c.address + ":" + std::to_string(c.port); }

Status CheckDirectory(const std::string& key, const std::string& path, int mode) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return Status::FromErrno(key + " " + path);
  if (!S_ISDIR(st.st_mode)) return Status::Error(ENOTDIR, key + " " + path + ": not a directory");
  if (::access(path.c_str(), mode) != 0) return Status::FromErrno(key + " " + path);
  return Status::OK();
}

}  // namespace

Daemon::Daemon(Config config)
    : config_(std::move(config)),
      signals_(io_),
      acceptor_(io_),
      tick_timer_(io_),
      control_(io_),
      membership_(config_.id, AddressOf(config_), config_.dead_after),
      started_(std::chrono::steady_clock::now()) {}

Daemon::~Daemon() {
  control_.Stop();
  blocking_.join();
}

uint64_t Daemon::uptime_ms() const {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::steady_clock::now() - started_)
                                   .count());
}

void Daemon::RegisterFrameHandler(uint16_t first, uint16_t last, FrameHandler handler) {
  handlers_.push_back(Range{first, last, std::move(handler)});
}

void Daemon::RegisterControlOp(const std::string& op, control::ControlServer::Handler handler) {
  control_.Register(op, std::move(handler));
}

void Daemon::RegisterControlOp(const std::string& op,
                               control::ControlServer::SyncHandler handler) {
  control_.RegisterSync(op, std::move(handler));
}

void Daemon::CallControlOp(const json& request, control::ControlServer::Reply reply) {
  control_.Dispatch(request, control::Caller{::getpid(), ::getuid(), ::getgid()}, std::move(reply));
}

void Daemon::OnShutdown(std::function<void()> hook) { shutdown_hooks_.push_back(std::move(hook)); }

void Daemon::OnConnectionClosed(std::function<void(const wire::Connection::Ptr&)> hook) {
  close_hooks_.push_back(std::move(hook));
}

Status Daemon::Start() {
  auto secret = wire::LoadSecret(config_.secret_file);
  if (!secret.ok()) return secret.status();
  auth_ = wire::AuthConfig{*secret, config_.id, wire::PeerRole::kNode};

  MFS_RETURN_IF_ERROR(CheckDirectory("export", config_.export_dir, R_OK | X_OK));
  std::error_code ec;
  std::filesystem::create_directories(config_.state_dir, ec);
  if (ec) return Status::Error(ec.value(), "state_dir " + config_.state_dir + ": " + ec.message());
  MFS_RETURN_IF_ERROR(CheckDirectory("state_dir", config_.state_dir, R_OK | W_OK | X_OK));
  auto store = StateStore::Open(config_.state_dir + "/db");
  if (!store.ok()) return store.status();
  store_ = std::move(store).value();

  auto ep = wire::ParseEndpoint(AddressOf(config_), config_.port);
  if (!ep.ok()) return ep.status();
  boost::system::error_code bec;
  acceptor_.open(tcp::v4(), bec);
  if (!bec) acceptor_.set_option(tcp::acceptor::reuse_address(true), bec);
  if (!bec) acceptor_.bind(*ep, bec);
  if (!bec) acceptor_.listen(128, bec);
  if (bec) {
    return Status::Error(bec.value(),
                         "listen on " + AddressOf(config_) + ": " + bec.message());
  }

  control_.RegisterSync("status", [this](const json&, const control::Caller&) -> Result<json> {
    return StatusJson();
  });
  control_.RegisterSync("ping", [](const json&, const control::Caller&) -> Result<json> {
    return json::object();
  });
  MFS_RETURN_IF_ERROR(control_.Start(config_.control_socket));

  // The cluster map: configured peers plus every peer heard of before.
  for (const auto& p : config_.peers) {
    auto pe = wire::ParseEndpoint(p, config_.port);
    membership_.AddAddress(pe->address().to_string() + ":" + std::to_string(pe->port()));
  }
  store_
      ->Scan("peer/",
             [this](std::string_view, std::string_view v) {
               membership_.AddAddress(std::string(v));
               return true;
             })
      .IgnoreError();

  signals_.add(SIGINT);
  signals_.add(SIGTERM);
  signals_.async_wait([this](boost::system::error_code e, int sig) {
    if (!e) {
      spdlog::info("signal {}: shutting down", sig);
      Shutdown();
    }
  });
  AcceptNext();
  asio::post(io_, [this] { Tick(); });
  spdlog::info("node {} listening on {}, export {}, state {}", config_.id, AddressOf(config_),
               config_.export_dir, config_.state_dir);
  return Status::OK();
}

void Daemon::Run(int threads) {
  std::vector<std::thread> pool;
  for (int i = 1; i < threads; ++i) pool.emplace_back([this] { io_.run(); });
  io_.run();
  for (auto& t : pool) t.join();
}

void Daemon::Shutdown() {
  if (stopping_.exchange(true)) return;
  asio::post(io_, [this] {
    for (auto& h : shutdown_hooks_) h();
    boost::system::error_code ignored;
    signals_.cancel(ignored);
    tick_timer_.cancel();
    acceptor_.close(ignored);
    control_.Stop();
    std::vector<wire::Connection::Ptr> conns;
    {
      std::lock_guard lock(conns_mu_);
      for (auto& [a, c] : out_) conns.push_back(c);
      for (auto& w : in_) {
        if (auto c = w.lock()) conns.push_back(c);
      }
      out_.clear();
      in_.clear();
    }
    std::string me;
    {
      std::string payload;
      Writer(&payload).U32(config_.id);
      me = payload;
    }
    for (auto& c : conns) c->Send(static_cast<uint16_t>(FrameType::kLeave), me);
    // Give the leave frames a moment to drain, then close and stop.
    auto timer = std::make_shared<asio::steady_timer>(io_, std::chrono::milliseconds(100));
    timer->async_wait([this, timer, conns](boost::system::error_code) {
      for (auto& c : conns) c->Close(Status::Error(ESHUTDOWN, "node shutting down"));
      io_.stop();
    });
  });
}

void Daemon::AcceptNext() {
  acceptor_.async_accept([this](boost::system::error_code e, tcp::socket s) {
    // Shutdown() closes the acceptor on one io_ thread while this handler
    // may already run on another: never accept again once stopping.
    if (stopping_ || e == asio::error::operation_aborted) return;
    if (e) {
      // Out of descriptors and the like: retry later instead of spinning.
      spdlog::warn("accept: {}", e.message());
      auto retry = std::make_shared<asio::steady_timer>(io_, std::chrono::milliseconds(100));
      retry->async_wait([this, retry](boost::system::error_code) {
        if (!stopping_) AcceptNext();
      });
      return;
    }
    {
      std::string from;
      boost::system::error_code ec;
      auto rep = s.remote_endpoint(ec);
      if (!ec) from = rep.address().to_string() + ":" + std::to_string(rep.port());
      wire::Connection::Accept(
          std::move(s), auth_,
          [this](const wire::Connection::Ptr& c, wire::Frame f) { OnFrame(c, std::move(f)); },
          [this](const wire::Connection::Ptr& c, const Status&) {
            for (auto& h : close_hooks_) h(c);
          },
          [this, from](Result<wire::Connection::Ptr> c) {
            if (!c.ok()) {
              spdlog::warn("refused connection from {}: {}", from, c.status().ToString());
              return;
            }
            std::lock_guard lock(conns_mu_);
            std::erase_if(in_, [](const auto& w) { return w.expired(); });
            in_.push_back(*c);
          });
    }
    AcceptNext();
  });
}

void Daemon::OnFrame(const wire::Connection::Ptr& c, wire::Frame f) {
  uint16_t type = f.type();
  if (type == static_cast<uint16_t>(FrameType::kHeartbeat)) {
    if (c->peer_role() != wire::PeerRole::kNode) return;
    auto hb = DecodeHeartbeat(f.payload);
    if (!hb.ok() || hb->node_id != c->peer_id()) {
      c->Close(hb.ok() ? Status::Error(EPROTO, "heartbeat with a foreign node id")
                       : hb.status());
      return;
    }
    bool was_known = membership_.Find(hb->node_id).has_value() &&
                     membership_.Find(hb->node_id)->state == PeerState::kAlive;
    membership_.OnHeartbeat(*hb, std::chrono::steady_clock::now());
    if (!was_known) {
      std::string key = "peer/" + std::to_string(hb->node_id);
      std::string addr = hb->address;
      asio::post(blocking_, [this, key, addr] { store_->Put(key, addr).IgnoreError(); });
    }
    return;
  }
  if (type == static_cast<uint16_t>(FrameType::kLeave)) {
    if (c->peer_role() == wire::PeerRole::kNode) membership_.OnLeave(c->peer_id());
    return;
  }
  if (type == static_cast<uint16_t>(FrameType::kPing)) {
    if (f.header.request_id) c->Reply(f, f.payload);
    return;
  }
  for (const auto& r : handlers_) {
    if (type >= r.first && type <= r.last) {
      r.handler(c, std::move(f));
      return;
    }
  }
  if (f.header.request_id) {
    c->ReplyError(f, Status::Error(ENOSYS, "frame type " + std::to_string(type) +
                                               " not served by node " +
                                               std::to_string(config_.id)));
  }
}

void Daemon::Tick() {
  if (stopping_) return;
  membership_.Sweep(std::chrono::steady_clock::now());
  SendHeartbeats();
  tick_timer_.expires_after(config_.heartbeat);
  tick_timer_.async_wait([this](boost::system::error_code e) {
    if (!e) Tick();
  });
}

void Daemon::SendHeartbeats() {
  Heartbeat hb;
  hb.node_id = config_.id;
  hb.address = AddressOf(config_);
  hb.uptime_ms = uptime_ms();
  hb.peers = membership_.AlivePeers();
  std::string payload = EncodeHeartbeat(hb);
  for (const auto& addr : membership_.Addresses()) {
    wire::Connection::Ptr c;
    bool dialing = false;
    {
      std::lock_guard lock(conns_mu_);
      auto it = out_.find(addr);
      if (it != out_.end() && !it->second->closed()) c = it->second;
      dialing = dialing_.count(addr) > 0;
    }
    if (c) {
      c->Send(static_cast<uint16_t>(FrameType::kHeartbeat), payload);
    } else if (!dialing) {
      Dial(addr, [this, addr, payload](Result<wire::Connection::Ptr> r) {
        if (r.ok()) (*r)->Send(static_cast<uint16_t>(FrameType::kHeartbeat), payload);
      });
    }
  }
}

void Daemon::Dial(const std::string& address, ConnCallback done) {
  {
    std::lock_guard lock(conns_mu_);
    auto it = out_.find(address);
    if (it != out_.end() && !it->second->closed()) {
      auto c = it->second;
      asio::post(io_, [c, done = std::move(done)] { done(c); });
      return;
    }
    auto& waiters = dialing_[address];
    waiters.push_back(std::move(done));
    if (waiters.size() > 1) return;  // a dial is already under way
  }
  auto remote = wire::ParseEndpoint(address, config_.port);
  auto local = wire::ParseEndpoint(config_.address, 0);
  auto finish = [this, address](Result<wire::Connection::Ptr> r) {
    std::vector<ConnCallback> waiters;
    {
      std::lock_guard lock(conns_mu_);
      waiters = std::move(dialing_[address]);
      dialing_.erase(address);
      if (r.ok() && !stopping_) out_[address] = *r;
    }
    if (!r.ok()) membership_.OnDialFailed(address, r.status().ToString());
    for (auto& w : waiters) w(r);
  };
  if (!remote.ok() || !local.ok()) {
    finish(remote.ok() ? local.status() : remote.status());
    return;
  }
  wire::Connection::Connect(
      io_, *local, *remote, auth_,
      [this](const wire::Connection::Ptr& c, wire::Frame f) { OnFrame(c, std::move(f)); },
      [this, address](const wire::Connection::Ptr& c, const Status&) {
        std::lock_guard lock(conns_mu_);
        auto it = out_.find(address);
        if (it != out_.end() && it->second == c) out_.erase(it);
      },
      finish);
}

void Daemon::PeerConnection(uint32_t id, ConnCallback done) {
  auto peer = membership_.Find(id);
  if (!peer || peer->state == PeerState::kDead || peer->state == PeerState::kLeft) {
    std::string why = !peer ? "is unknown" : std::string("is ") + PeerStateName(peer->state);
    asio::post(io_, [done = std::move(done), id, why] {
      done(Status::Error(EHOSTDOWN, "node " + std::to_string(id) + " " + why));
    });
    return;
  }
  Dial(peer->address, std::move(done));
}

json Daemon::StatusJson() const {
  auto now = std::chrono::steady_clock::now();
  json peers = json::array();
  for (const auto& p : membership_.Snapshot()) {
    json j{{"id", p.id},
           {"address", p.address},
           {"state", PeerStateName(p.state)},
           {"uptime_ms", p.uptime_ms}};
    if (p.last_heard.time_since_epoch().count() != 0) {
      j["last_heard_ms"] =
          std::chrono::duration_cast<std::chrono::milliseconds>(now - p.last_heard).count();
    } else {
      j["last_heard_ms"] = nullptr;
    }
    if (!p.last_error.empty()) j["error"] = p.last_error;
    peers.push_back(std::move(j));
  }
  return json{{"node",
               {{"id", config_.id},
                {"address", AddressOf(config_)},
                {"uptime_ms", uptime_ms()},
                {"export", config_.export_dir},
                {"state_dir", config_.state_dir},
                {"mount", config_.mount},
                {"pid", ::getpid()},
                {"heartbeat_ms", config_.heartbeat.count()},
                {"dead_after_ms", config_.dead_after.count()}}},
              {"peers", std::move(peers)}};
}

}  // namespace mfs::node

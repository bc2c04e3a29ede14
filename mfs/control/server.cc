#include "mfs/control/server.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <filesystem>

#include "mfs/control/protocol.h"

namespace mfs::control {

namespace asio = boost::asio;
using stream = asio::local::stream_protocol;
using nlohmann::json;

json ErrorReply(const Status& s) {
  return json{{"ok", false}, {"errno", s.code()}, {"error", s.message()}};
}

class ControlServer::Session : public std::enable_shared_from_this<Session> {
 public:
  Session(ControlServer* server, stream::socket socket)
      : server_(server), socket_(std::move(socket)), strand_(asio::make_strand(io_exec())) {
    ucred cred{};
    socklen_t len = sizeof cred;
    if (::getsockopt(socket_.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
      caller_ = Caller{cred.pid, cred.uid, cred.gid};
    }
  }
  void Start() { ReadNext(); }

 private:
  asio::any_io_executor io_exec() { return socket_.get_executor(); }

  void ReadNext() {
    auto self = shared_from_this();
    asio::async_read_until(
        socket_, asio::dynamic_buffer(buffer_, kMaxLine), '\n',
        asio::bind_executor(strand_, [self](boost::system::error_code e, size_t n) {
          if (e) {
            if (e == asio::error::not_found) {
              self->Write(ErrorReply(Status::Error(EMSGSIZE, "request line too long")), true);
            }
            return;
          }
          std::string line = self->buffer_.substr(0, n - 1);
          self->buffer_.erase(0, n);
          json req = json::parse(line, nullptr, false);
          if (req.is_discarded() || !req.is_object() || !req.contains("op") ||
              !req["op"].is_string()) {
            self->Write(ErrorReply(Status::InvalidArgument(
                            "request must be a JSON object with a string \"op\"")),
                        true);
            return;
          }
          self->server_->Dispatch(req, self->caller_, [self](Result<json> r) {
            json out;
            if (r.ok()) {
              out = std::move(r).value();
              if (!out.is_object()) out = json{{"result", out}};
              out["ok"] = true;
            } else {
              out = ErrorReply(r.status());
            }
            asio::dispatch(self->strand_, [self, out = std::move(out)]() {
              self->Write(out, false);
            });
          });
        }));
  }

  void Write(const json& j, bool then_close) {
    auto self = shared_from_this();
    auto data = std::make_shared<std::string>(
        j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n");
    asio::async_write(socket_, asio::buffer(*data),
                      asio::bind_executor(strand_, [self, data, then_close](
                                                       boost::system::error_code e, size_t) {
                        if (e || then_close) {
                          boost::system::error_code ignored;
                          self->socket_.close(ignored);
                          return;
                        }
                        self->ReadNext();
                      }));
  }

  ControlServer* server_;
  stream::socket socket_;
  asio::strand<asio::any_io_executor> strand_;
  std::string buffer_;
  Caller caller_;
};

ControlServer::ControlServer(asio::io_context& io) : io_(io), acceptor_(io) {}

ControlServer::~ControlServer() { Stop(); }

void ControlServer::Register(const std::string& op, Handler handler) {
  std::lock_guard lock(mu_);
  handlers_[op] = std::move(handler);
}

void ControlServer::RegisterSync(const std::string& op, SyncHandler handler) {
  Register(op, [h = std::move(handler)](const json& req, const Caller& c, Reply reply) {
    reply(h(req, c));
  });
}

void ControlServer::Dispatch(const json& request, const Caller& caller, Reply reply) {
  std::string op = request.value("op", "");
  Handler h;
  {
    std::lock_guard lock(mu_);
    auto it = handlers_.find(op);
    if (it != handlers_.end()) h = it->second;
  }
  if (!h) {
    reply(Status::Error(EOPNOTSUPP, "unknown op '" + op + "'"));
    return;
  }
  try {
    h(request, caller, std::move(reply));
  } catch (const std::exception& e) {
    // A handler bug (e.g. a json type error on bad input) must not kill the
    // daemon; the reply callback may already be moved-from, so only log.
    spdlog::error("control op '{}' threw: {}", op, e.what());
  }
}

Status ControlServer::Start(const std::string& path) {
  std::error_code fec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), fec);
  // Refuse to steal a live socket; replace a stale one.
  {
    stream::socket probe(io_);
    boost::system::error_code ec;
    probe.connect(stream::endpoint(path), ec);
    if (!ec) return Status::Error(EADDRINUSE, "control socket " + path + " is in use by another mfsd");
  }
  ::unlink(path.c_str());
  boost::system::error_code ec;
  acceptor_.open(stream(), ec);
  if (!ec) acceptor_.bind(stream::endpoint(path), ec);
  if (!ec) acceptor_.listen(64, ec);
  if (ec) return Status::Error(ec.value(), "control socket " + path + ": " + ec.message());
  ::chmod(path.c_str(), 0666);
  path_ = path;
  AcceptNext();
  return Status::OK();
}

void ControlServer::Stop() {
  boost::system::error_code ignored;
  if (acceptor_.is_open()) {
    acceptor_.close(ignored);
    ::unlink(path_.c_str());
  }
}

void ControlServer::AcceptNext() {
  acceptor_.async_accept([this](boost::system::error_code e, stream::socket s) {
    if (e) {
      if (e != asio::error::operation_aborted) spdlog::warn("control accept: {}", e.message());
      if (!acceptor_.is_open()) return;
    } else {
      std::make_shared<Session>(this, std::move(s))->Start();
    }
    AcceptNext();
  });
}

}  // namespace mfs::control

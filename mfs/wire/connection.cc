#include "mfs/wire/connection.h"

#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>

namespace mfs::wire {

Connection::Connection(tcp::socket socket, AuthConfig auth, RequestHandler on_request,
                       CloseHandler on_close)
    : socket_(std::move(socket)),
      strand_(asio::make_strand(socket_.get_executor())),
      auth_(std::move(auth)),
      on_request_(std::move(on_request)),
      on_close_(std::move(on_close)),
      handshake_timer_(strand_) {
  boost::system::error_code ec;
  auto ep = socket_.remote_endpoint(ec);
  if (!ec) remote_ = ep.address().to_string() + ":" + std::to_string(ep.port());
  socket_.set_option(tcp::no_delay(true), ec);
}

Connection::~Connection() = default;

void Connection::Accept(tcp::socket socket, const AuthConfig& auth, RequestHandler on_request,
                        CloseHandler on_close, ReadyCallback ready) {
  Ptr c(new Connection(std::move(socket), auth, std::move(on_request), std::move(on_close)));
  asio::dispatch(c->strand_, [c, ready = std::move(ready)]() mutable {
    c->StartServerHandshake(std::move(ready));
  });
}

void Connection::Connect(asio::io_context& io, const tcp::endpoint& local,
                         const tcp::endpoint& remote, const AuthConfig& auth,
                         RequestHandler on_request, CloseHandler on_close, ReadyCallback ready) {
  tcp::socket sock(io);
  boost::system::error_code ec;
  sock.open(remote.protocol(), ec);
  if (!ec && !local.address().is_unspecified()) sock.bind(local, ec);
  if (ec) {
    Status s = Status::Error(ec.value(), "connect " + remote.address().to_string() + ": bind " +
                                             local.address().to_string() + ": " + ec.message());
    asio::post(io, [ready = std::move(ready), s]() { ready(s); });
    return;
  }
  auto holder = std::make_shared<tcp::socket>(std::move(sock));
  auto timer = std::make_shared<asio::steady_timer>(io, auth.handshake_timeout);
  timer->async_wait([holder](boost::system::error_code e) {
    if (!e) {
      boost::system::error_code ignored;
      holder->close(ignored);
    }
  });
  holder->async_connect(remote, [holder, timer, auth, remote, on_request = std::move(on_request),
                                 on_close = std::move(on_close),
                                 ready = std::move(ready)](boost::system::error_code e) mutable {
    timer->cancel();
    if (e) {
      int err = e == asio::error::operation_aborted ? ETIMEDOUT : e.value();
      ready(Status::Error(err, "connect " + remote.address().to_string() + ":" +
                                   std::to_string(remote.port()) + ": " +
                                   (err == ETIMEDOUT ? std::string("timed out") : e.message())));
      return;
    }
    Ptr c(new Connection(std::move(*holder), auth, std::move(on_request), std::move(on_close)));
    asio::dispatch(c->strand_, [c, ready = std::move(ready)]() mutable {
      c->StartClientHandshake(std::move(ready));
    });
  });
}

void Connection::StartServerHandshake(ReadyCallback ready) {
  auto self = shared_from_this();
  handshake_timer_.expires_after(auth_.handshake_timeout);
  handshake_timer_.async_wait([self](boost::system::error_code e) {
    if (!e) self->Close(Status::TimedOut("auth: handshake timed out"));
  });
  auto hs = std::make_shared<ServerHandshake>(auth_.secret, auth_.self_id);
  QueueFrame(static_cast<uint16_t>(FrameType::kAuthHello), 0, 0, hs->Hello());
  ReadFrame([self, hs, ready = std::move(ready)](Result<Frame> f) mutable {
    if (!f.ok()) {
      self->handshake_timer_.cancel();
      ready(f.status());
      return;
    }
    if (f->type() != static_cast<uint16_t>(FrameType::kAuthProve)) {
      Status s = Status::Error(EPROTO, "auth: expected a proof from " + self->remote_);
      self->QueueFrame(f->type(), kFlagResponse | kFlagError, 0, EncodeError(s));
      self->Close(s);
      ready(s);
      return;
    }
    auto accept = hs->Verify(f->payload);
    if (!accept.ok()) {
      Status s = accept.status().Annotate(self->remote_);
      // Tell the peer why, then close once the write has drained.
      self->QueueFrame(static_cast<uint16_t>(FrameType::kAuthAccept), kFlagResponse | kFlagError, 0,
                       EncodeError(accept.status()));
      self->CloseWhenDrained();
      self->handshake_timer_.cancel();
      ready(s);
      return;
    }
    self->peer_id_ = hs->peer_id();
    self->peer_role_ = hs->peer_role();
    self->QueueFrame(static_cast<uint16_t>(FrameType::kAuthAccept), kFlagResponse, 0, *accept);
    self->handshake_timer_.cancel();
    ready(self);
    self->ReadLoop();
  });
}

void Connection::StartClientHandshake(ReadyCallback ready) {
  auto self = shared_from_this();
  handshake_timer_.expires_after(auth_.handshake_timeout);
  handshake_timer_.async_wait([self](boost::system::error_code e) {
    if (!e) self->Close(Status::TimedOut("auth: handshake timed out"));
  });
  auto hs = std::make_shared<ClientHandshake>(auth_.secret, auth_.self_id, auth_.role);
  ReadFrame([self, hs, ready = std::move(ready)](Result<Frame> hello) mutable {
    if (!hello.ok()) {
      self->handshake_timer_.cancel();
      ready(hello.status());
      return;
    }
    if (hello->type() != static_cast<uint16_t>(FrameType::kAuthHello)) {
      Status s = Status::Error(EPROTO, "auth: expected hello from " + self->remote_);
      self->Close(s);
      ready(s);
      return;
    }
    auto prove = hs->Prove(hello->payload);
    if (!prove.ok()) {
      self->Close(prove.status());
      ready(prove.status());
      return;
    }
    self->QueueFrame(static_cast<uint16_t>(FrameType::kAuthProve), 0, 0, *prove);
    self->ReadFrame([self, hs, ready = std::move(ready)](Result<Frame> acc) mutable {
      self->handshake_timer_.cancel();
      Status s;
      if (!acc.ok()) {
        s = acc.status();
      } else if (acc->is_error()) {
        s = DecodeError(acc->payload).Annotate("refused by " + self->remote_);
      } else if (acc->type() != static_cast<uint16_t>(FrameType::kAuthAccept)) {
        s = Status::Error(EPROTO, "auth: expected accept from " + self->remote_);
      } else {
        s = hs->Finish(acc->payload);
      }
      if (!s.ok()) {
        self->Close(s);
        ready(s);
        return;
      }
      self->peer_id_ = hs->server_id();
      self->peer_role_ = PeerRole::kNode;
      ready(self);
      self->ReadLoop();
    });
  });
}

void Connection::ReadFrame(std::function<void(Result<Frame>)> next) {
  auto self = shared_from_this();
  asio::async_read(
      socket_, asio::buffer(header_buf_, kHeaderSize),
      asio::bind_executor(strand_, [self, next = std::move(next)](boost::system::error_code e,
                                                                  size_t) mutable {
        if (e) {
          next(Status::Error(e == asio::error::eof ? ECONNRESET : e.value(),
                             "read from " + self->remote_ + ": " + e.message()));
          return;
        }
        auto h = DecodeHeader(std::string_view(self->header_buf_, kHeaderSize));
        if (!h.ok()) {
          next(h.status().Annotate("frame from " + self->remote_));
          return;
        }
        self->payload_buf_.resize(h->length);
        asio::async_read(
            self->socket_, asio::buffer(self->payload_buf_),
            asio::bind_executor(self->strand_, [self, hdr = *h, next = std::move(next)](
                                                   boost::system::error_code e2, size_t) {
              if (e2) {
                next(Status::Error(ECONNRESET, "read from " + self->remote_ +
                                                   ": truncated frame: " + e2.message()));
                return;
              }
              Status s = VerifyChecksum(std::string_view(self->header_buf_, kHeaderSize), hdr,
                                        self->payload_buf_);
              if (!s.ok()) {
                next(s.Annotate("frame from " + self->remote_));
                return;
              }
              Frame f;
              f.header = hdr;
              f.payload = std::move(self->payload_buf_);
              self->payload_buf_.clear();
              next(std::move(f));
            }));
      }));
}

void Connection::ReadLoop() {
  if (closed_) return;
  auto self = shared_from_this();
  ReadFrame([self](Result<Frame> f) {
    if (!f.ok()) {
      if (f.status().code() != ECONNRESET && f.status().code() != ECANCELED &&
          f.status().code() != EBADF) {
        spdlog::warn("closing connection: {}", f.status().ToString());
      }
      self->Close(f.status());
      return;
    }
    self->Dispatch(std::move(f).value());
    self->ReadLoop();
  });
}

void Connection::Dispatch(Frame frame) {
  if (frame.is_response()) {
    Pending p;
    {
      std::lock_guard<std::mutex> l(mu_);
      auto it = pending_.find(frame.header.request_id);
      if (it == pending_.end()) return;  // late reply after a timeout
      p = std::move(it->second);
      pending_.erase(it);
    }
    if (p.timer) p.timer->cancel();
    if (frame.is_error()) {
      p.done(DecodeError(frame.payload));
    } else {
      p.done(std::move(frame));
    }
    return;
  }
  if (on_request_) {
    on_request_(shared_from_this(), std::move(frame));
  } else if (frame.header.request_id != 0) {
    ReplyError(frame, Status::Error(ENOSYS, "no handler"));
  }
}

void Connection::Call(uint16_t type, std::string payload, ReplyCallback done,
                      std::chrono::milliseconds timeout) {
  auto self = shared_from_this();
  // Registered and sent from the calling thread: handing the call to the
  // strand first would cost a thread wake-up per request.
  auto timer = std::make_unique<asio::steady_timer>(strand_, timeout);
  uint64_t id;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (closed_) {
      asio::post(strand_, [self, done = std::move(done)]() {
        done(Status::Error(ENOTCONN, "connection to " + self->remote_ + " is closed"));
      });
      return;
    }
    id = next_request_id_++;
    timer->async_wait([self, id](boost::system::error_code e) {
      if (e) return;
      ReplyCallback cb;
      {
        std::lock_guard<std::mutex> l(self->mu_);
        auto it = self->pending_.find(id);
        if (it == self->pending_.end()) return;
        cb = std::move(it->second.done);
        self->pending_.erase(it);
      }
      cb(Status::TimedOut("request to " + self->remote_ + " timed out"));
    });
    pending_.emplace(id, Pending{std::move(done), std::move(timer)});
  }
  QueueFrame(type, 0, id, std::move(payload));
}

void Connection::Send(uint16_t type, std::string payload) {
  if (!closed_) QueueFrame(type, 0, 0, std::move(payload));
}

void Connection::Reply(const Frame& request, std::string payload) {
  if (!closed_) QueueFrame(request.type(), kFlagResponse, request.header.request_id,
                           std::move(payload));
}

void Connection::ReplyError(const Frame& request, const Status& status) {
  if (!closed_) QueueFrame(request.type(), kFlagResponse | kFlagError,
                           request.header.request_id, EncodeError(status));
}

void Connection::QueueFrame(uint16_t type, uint32_t flags, uint64_t request_id,
                            std::string payload) {
  OutFrame out;
  out.header = EncodeHeader(type, flags, request_id, payload);
  out.payload = std::move(payload);
  std::unique_lock<std::mutex> l(mu_);
  if (!socket_open_) return;
  if (writing_) {
    write_queue_.push_back(std::move(out));
    return;
  }
  // Nothing queued: write from this thread, now. Only what the socket does
  // not take at once goes to the strand's async write.
  const size_t total = out.header.size() + out.payload.size();
  iovec iov[2] = {{out.header.data(), out.header.size()}, {out.payload.data(), out.payload.size()}};
  msghdr msg{};
  msg.msg_iov = iov;
  msg.msg_iovlen = out.payload.empty() ? 1 : 2;
  ssize_t n;
  do {
    n = ::sendmsg(socket_.native_handle(), &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n == static_cast<ssize_t>(total)) return;
  if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
    Status why = Status::FromErrno("write to " + remote_);
    l.unlock();
    // Never inline: the caller may hold locks the close callbacks take.
    auto self = shared_from_this();
    asio::post(strand_, [self, why] { self->Close(why); });
    return;
  }
  out.sent = n < 0 ? 0 : static_cast<size_t>(n);
  write_queue_.push_back(std::move(out));
  writing_ = true;
  l.unlock();
  auto self = shared_from_this();
  asio::post(strand_, [self] { self->WriteNext(); });
}

void Connection::WriteNext() {
  auto self = shared_from_this();
  // Header and payload in one scatter write: the payload is never copied.
  // The front frame stays in the queue (so its buffers stay put) until
  // written; only the strand pops it.
  std::array<asio::const_buffer, 2> bufs;
  {
    std::lock_guard<std::mutex> l(mu_);
    const OutFrame& out = write_queue_.front();
    size_t skip = out.sent;
    size_t h = std::min(skip, out.header.size());
    bufs[0] = asio::buffer(out.header.data() + h, out.header.size() - h);
    skip -= h;
    bufs[1] = asio::buffer(out.payload.data() + skip, out.payload.size() - skip);
  }
  asio::async_write(socket_, bufs,
                    asio::bind_executor(strand_, [self](boost::system::error_code e, size_t) {
                      if (e) {
                        self->Close(Status::Error(e.value(), "write to " + self->remote_ +
                                                                 ": " + e.message()));
                        return;
                      }
                      bool more;
                      {
                        std::lock_guard<std::mutex> l(self->mu_);
                        self->write_queue_.pop_front();
                        more = !self->write_queue_.empty();
                        if (!more) self->writing_ = false;
                      }
                      if (more) {
                        self->WriteNext();
                      } else if (self->closed_) {
                        self->CloseSocket();
                      }
                    }));
}

void Connection::CloseSocket() {
  std::lock_guard<std::mutex> l(mu_);
  if (!socket_open_) return;
  socket_open_ = false;
  boost::system::error_code ignored;
  socket_.shutdown(tcp::socket::shutdown_both, ignored);
  socket_.close(ignored);
}

void Connection::CloseWhenDrained() {
  closed_ = true;
  bool idle;
  {
    std::lock_guard<std::mutex> l(mu_);
    idle = !writing_;
  }
  if (idle) CloseSocket();
}

void Connection::Close(const Status& why) {
  auto self = shared_from_this();
  asio::dispatch(strand_, [self, why]() {
    bool was_closed;
    {
      std::lock_guard<std::mutex> l(self->mu_);
      was_closed = self->closed_.exchange(true);
    }
    self->handshake_timer_.cancel();
    self->CloseSocket();
    self->FailAll(why);
    if (!was_closed && self->on_close_) {
      auto cb = std::move(self->on_close_);
      self->on_close_ = nullptr;
      cb(self, why);
    }
    self->on_request_ = nullptr;  // break cycles through captured owners
  });
}

void Connection::FailAll(const Status& why) {
  std::unordered_map<uint64_t, Pending> pending;
  {
    std::lock_guard<std::mutex> l(mu_);
    pending.swap(pending_);
  }
  for (auto& [id, p] : pending) {
    if (p.timer) p.timer->cancel();
    p.done(Status::Error(why.ok() ? ECONNRESET : why.code(),
                         "connection to " + remote_ + " closed: " + why.message()));
  }
}

Result<tcp::endpoint> ParseEndpoint(const std::string& text, uint16_t default_port) {
  std::string host = text;
  uint16_t port = default_port;
  auto colon = text.rfind(':');
  if (colon != std::string::npos) {
    host = text.substr(0, colon);
    std::string p = text.substr(colon + 1);
    char* end = nullptr;
    long v = std::strtol(p.c_str(), &end, 10);
    if (p.empty() || *end != '\0' || v <= 0 || v > 65535) {
      return Status::InvalidArgument("bad port in address '" + text + "'");
    }
    port = static_cast<uint16_t>(v);
  }
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(host, ec);
  if (ec) return Status::InvalidArgument("bad IP address '" + host + "' in '" + text + "'");
  return tcp::endpoint(addr, port);
}

}  // namespace mfs::wire

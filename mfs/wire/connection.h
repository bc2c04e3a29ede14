// Connection: one authenticated, framed TCP connection to a peer.
//
// Both ends run the handshake of auth.h before any other frame is read or
// written; until it completes, anything but the expected auth frame closes
// the connection. After it, frames flow both ways: requests (handled by the
// owner's RequestHandler, answered with Reply/ReplyError) and responses to
// our own Calls (matched by request_id and delivered to the ReplyCallback,
// or failed with ETIMEDOUT / the close reason).
//
// Thread-safety: every public method may be called from any thread. A frame
// is written by the calling thread when nothing is queued before it (one
// sendmsg, no thread hand-off); what the socket does not take at once, and
// everything queued behind it, is written by the connection's strand, as
// are all reads. Callbacks run on the strand; they must not block. The connection keeps itself alive with
// shared_from_this while I/O is pending.
#pragma once

#include "mfs/base/asio.h"
#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "mfs/base/status.h"
#include "mfs/wire/auth.h"
#include "mfs/wire/frame.h"

namespace mfs::wire {

namespace asio = boost::asio;
using asio::ip::tcp;

struct AuthConfig {
  std::string secret;
  uint32_t self_id = 0;
  PeerRole role = PeerRole::kNode;  // our role when we dial out
  std::chrono::milliseconds handshake_timeout{5000};
};

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  using Ptr = std::shared_ptr<Connection>;
  using RequestHandler = std::function<void(const Ptr&, Frame)>;
  using CloseHandler = std::function<void(const Ptr&, const Status&)>;
  using ReplyCallback = std::function<void(Result<Frame>)>;
  using ReadyCallback = std::function<void(Result<Ptr>)>;

  // Server side: takes an accepted socket, runs the handshake, then calls
  // `ready` with the connection (or the failure) and starts reading.
  static void Accept(tcp::socket socket, const AuthConfig& auth, RequestHandler on_request,
                     CloseHandler on_close, ReadyCallback ready);

  // Client side: binds to `local` (port 0) so peers see our node address,
  // connects to `remote`, runs the handshake, calls `ready`.
  static void Connect(asio::io_context& io, const tcp::endpoint& local,
                      const tcp::endpoint& remote, const AuthConfig& auth,
                      RequestHandler on_request, CloseHandler on_close, ReadyCallback ready);

  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Sends a request and calls `done` exactly once with the response frame, an
  // error reply decoded into a Status, or a timeout/close Status.
  void Call(uint16_t type, std::string payload, ReplyCallback done,
            std::chrono::milliseconds timeout = std::chrono::milliseconds(10000));
  // Fire-and-forget message (request_id 0, no reply expected).
  void Send(uint16_t type, std::string payload);
  void Reply(const Frame& request, std::string payload);
  void ReplyError(const Frame& request, const Status& status);
  // Closes the socket; pending calls fail with `why`.
  void Close(const Status& why);

  uint32_t peer_id() const { return peer_id_; }
  PeerRole peer_role() const { return peer_role_; }
  std::string remote_address() const { return remote_; }
  bool closed() const { return closed_.load(); }

 private:
  Connection(tcp::socket socket, AuthConfig auth, RequestHandler on_request, CloseHandler on_close);

  void StartServerHandshake(ReadyCallback ready);
  void StartClientHandshake(ReadyCallback ready);
  // Reads one frame, then calls `next` on the strand.
  void ReadFrame(std::function<void(Result<Frame>)> next);
  void ReadLoop();
  void Dispatch(Frame frame);
  // Queues header + payload; the payload is moved, never copied.
  void QueueFrame(uint16_t type, uint32_t flags, uint64_t request_id, std::string payload);
  void WriteNext();
  // Shuts the socket and closes it; under mu_, so that no thread writes to
  // a descriptor number being reused.
  void CloseSocket();
  // Marks the connection closed, closes the socket once the queue drained.
  void CloseWhenDrained();
  void FailAll(const Status& why);

  tcp::socket socket_;
  asio::strand<asio::any_io_executor> strand_;
  AuthConfig auth_;
  RequestHandler on_request_;
  CloseHandler on_close_;
  asio::steady_timer handshake_timer_;
  std::string remote_;
  uint32_t peer_id_ = 0;
  PeerRole peer_role_ = PeerRole::kNode;
  std::atomic<bool> closed_{false};

  // Strand-only state.
  char header_buf_[kHeaderSize];
  std::string payload_buf_;

  // Shared by the callers' threads and the strand.
  struct OutFrame {
    std::array<char, kHeaderSize> header;
    std::string payload;
    size_t sent = 0;  // bytes the calling thread already wrote
  };
  struct Pending {
    ReplyCallback done;
    std::unique_ptr<asio::steady_timer> timer;
  };
  std::mutex mu_;
  std::deque<OutFrame> write_queue_;  // front: being written by the strand
  bool writing_ = false;              // the strand owns the writes
  bool socket_open_ = true;
  std::unordered_map<uint64_t, Pending> pending_;
  uint64_t next_request_id_ = 1;
};

// Parses "A.B.C.D:PORT" or "A.B.C.D" (with default_port).
Result<tcp::endpoint> ParseEndpoint(const std::string& text, uint16_t default_port);

}  // namespace mfs::wire

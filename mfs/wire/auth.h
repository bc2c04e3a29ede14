// Peer authentication: challenge-response over the cluster secret.
//
// The secret never crosses the wire. On connection:
//
//   server -> client  kAuthHello   u32 server_id, 32-byte nonce_s
//   client -> server  kAuthProve   u32 client_id, u8 role, 32-byte nonce_c,
//                                  32-byte HMAC-SHA256(secret, "mfs-auth-v1/client" |
//                                  nonce_s | nonce_c | client_id | server_id | role)
//   server -> client  kAuthAccept  32-byte HMAC-SHA256(secret, "mfs-auth-v1/server" |
//                                  nonce_c | nonce_s | server_id | client_id | role)
//
// Both sides prove knowledge of the secret over fresh nonces, so neither a
// replayed proof nor a server without the secret is accepted. A failure is
// answered with an error frame (EACCES) and the connection is closed; no
// other frame is processed before kAuthAccept.
//
// ServerHandshake and ClientHandshake do no I/O: they consume and produce
// frame payloads, so they are tested without sockets. Not thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "mfs/base/status.h"

namespace mfs::wire {

inline constexpr size_t kNonceSize = 32;
inline constexpr size_t kMacSize = 32;
inline constexpr size_t kMinSecretSize = 16;

enum class PeerRole : uint8_t { kNode = 1, kClient = 2, kTool = 3 };

// Loads the cluster secret from a file: at least kMinSecretSize bytes after
// trailing whitespace is removed, and not readable by group or others.
Result<std::string> LoadSecret(const std::string& path);

std::string RandomBytes(size_t n);

class ServerHandshake {
 public:
  ServerHandshake(std::string secret, uint32_t server_id);
  // The kAuthHello payload to send first.
  std::string Hello();
  // Checks a kAuthProve payload. On success returns the kAuthAccept payload
  // and records the peer's id and role.
  Result<std::string> Verify(std::string_view prove);
  uint32_t peer_id() const { return peer_id_; }
  PeerRole peer_role() const { return peer_role_; }

 private:
  std::string secret_;
  uint32_t server_id_;
  std::string nonce_s_;
  uint32_t peer_id_ = 0;
  PeerRole peer_role_ = PeerRole::kNode;
};

class ClientHandshake {
 public:
  ClientHandshake(std::string secret, uint32_t client_id, PeerRole role);
  // Answers a kAuthHello payload with the kAuthProve payload.
  Result<std::string> Prove(std::string_view hello);
  // Checks the server's kAuthAccept payload.
  Status Finish(std::string_view accept);
  uint32_t server_id() const { return server_id_; }

 private:
  std::string secret_;
  uint32_t client_id_;
  PeerRole role_;
  std::string nonce_s_;
  std::string nonce_c_;
  uint32_t server_id_ = 0;
};

}  // namespace mfs::wire

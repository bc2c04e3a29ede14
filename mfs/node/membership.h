// Membership: which nodes exist and which are alive.
//
// Every heartbeat interval each node sends a kHeartbeat frame to every peer
// it knows over its outgoing authenticated connection, and (re)dials peers it
// has no connection to. A peer is alive while heartbeats keep arriving; it is
// dead when none came for dead_after; a kLeave frame marks it left at once.
// Heartbeats carry the sender's known peers, so a node learns the cluster
// from any one member (no master, no full configuration needed).
//
// Heartbeat payload (little-endian, see docs/wire.md):
//   u32 node_id, bytes address "ip:port", u64 uptime_ms,
//   u32 n, n x { u32 node_id, bytes address }
//
// Thread-safety: all methods lock mu_; callbacks are not called under it.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "mfs/base/status.h"
#include "mfs/wire/connection.h"

namespace mfs::node {

enum class PeerState { kUnknown, kAlive, kDead, kLeft };
const char* PeerStateName(PeerState s);

struct PeerInfo {
  uint32_t id = 0;             // 0 until the peer has authenticated
  std::string address;         // "ip:port"
  PeerState state = PeerState::kUnknown;
  std::chrono::steady_clock::time_point last_heard{};
  uint64_t uptime_ms = 0;      // as reported by the peer
  std::string last_error;      // why the last dial failed, if it did
};

struct Heartbeat {
  uint32_t node_id = 0;
  std::string address;
  uint64_t uptime_ms = 0;
  std::vector<std::pair<uint32_t, std::string>> peers;
};
std::string EncodeHeartbeat(const Heartbeat& h);
Result<Heartbeat> DecodeHeartbeat(std::string_view payload);

class Membership {
 public:
  using Clock = std::chrono::steady_clock;
  Membership(uint32_t self_id, std::string self_address, std::chrono::milliseconds dead_after);

  // Adds an address to dial (from config or gossip); no-op if known.
  void AddAddress(const std::string& address);
  // A heartbeat arrived from an authenticated peer.
  void OnHeartbeat(const Heartbeat& h, Clock::time_point now);
  void OnLeave(uint32_t node_id);
  void OnDialFailed(const std::string& address, const std::string& why);
  // Marks peers dead whose last heartbeat is older than dead_after; returns
  // the ids that changed state (for logging).
  std::vector<uint32_t> Sweep(Clock::time_point now);

  std::vector<PeerInfo> Snapshot() const;
  std::vector<std::string> Addresses() const;
  std::optional<PeerInfo> Find(uint32_t node_id) const;
  // Known alive peers, for the heartbeat's gossip list.
  std::vector<std::pair<uint32_t, std::string>> AlivePeers() const;

 private:
  uint32_t self_id_;
  std::string self_address_;
  std::chrono::milliseconds dead_after_;
  mutable std::mutex mu_;
  std::map<std::string, PeerInfo> by_address_;  // GUARDED_BY(mu_)
};

}  // namespace mfs::node

#include "mfs/node/membership.h"

#include <spdlog/spdlog.h>

#include "mfs/base/coding.h"

namespace mfs::node {

const char* PeerStateName(PeerState s) {
  switch (s) {
    case PeerState::kUnknown: return "unknown";
    case PeerState::kAlive: return "alive";
    case PeerState::kDead: return "dead";
    case PeerState::kLeft: return "left";
  }
  return "?";
}

std::string EncodeHeartbeat(const Heartbeat& h) {
  std::string out;
  Writer w(&out);
  w.U32(h.node_id);
  w.Bytes(h.address);
  w.U64(h.uptime_ms);
  w.U32(static_cast<uint32_t>(h.peers.size()));
  for (const auto& [id, addr] : h.peers) {
    w.U32(id);
    w.Bytes(addr);
  }
  return out;
}

Result<Heartbeat> DecodeHeartbeat(std::string_view payload) {
  Reader r(payload);
  Heartbeat h;
  h.node_id = r.U32();
  h.address = std::string(r.Bytes());
  h.uptime_ms = r.U64();
  uint32_t n = r.U32();
  if (!r.ok() || n > 4096) return Status::Corruption("heartbeat: malformed");
  for (uint32_t i = 0; i < n && r.ok(); ++i) {
    uint32_t id = r.U32();
    std::string addr(r.Bytes());
    h.peers.emplace_back(id, std::move(addr));
  }
  if (!r.done()) return Status::Corruption("heartbeat: malformed");
  return h;
}

Membership::Membership(uint32_t self_id, std::string self_address,
                       std::chrono::milliseconds dead_after)
    : self_id_(self_id), self_address_(std::move(self_address)), dead_after_(dead_after) {}

void Membership::AddAddress(const std::string& address) {
  if (address == self_address_) return;
  std::lock_guard lock(mu_);
  by_address_.try_emplace(address, PeerInfo{0, address});
}

void Membership::OnHeartbeat(const Heartbeat& h, Clock::time_point now) {
  if (h.node_id == self_id_) return;
  std::vector<std::string> learnt;
  {
    std::lock_guard lock(mu_);
    // A node that restarted on another address replaces its old entry.
    for (auto it = by_address_.begin(); it != by_address_.end();) {
      if (it->second.id == h.node_id && it->first != h.address) {
        it = by_address_.erase(it);
      } else {
        ++it;
      }
    }
    PeerInfo& p = by_address_[h.address];
    PeerState old = p.state;
    p.id = h.node_id;
    p.address = h.address;
    p.state = PeerState::kAlive;
    p.last_heard = now;
    p.uptime_ms = h.uptime_ms;
    p.last_error.clear();
    if (old != PeerState::kAlive) {
      spdlog::info("peer {} at {} is alive{}", h.node_id, h.address,
                   old == PeerState::kUnknown ? " (joined)" : " again");
    }
    for (const auto& [id, addr] : h.peers) {
      if (id != self_id_ && addr != self_address_ && !by_address_.count(addr)) {
        by_address_.emplace(addr, PeerInfo{0, addr});
        learnt.push_back(addr);
      }
    }
  }
  for (const auto& a : learnt) spdlog::info("learnt of peer at {} from node {}", a, h.node_id);
}

void Membership::OnLeave(uint32_t node_id) {
  std::lock_guard lock(mu_);
  for (auto& [addr, p] : by_address_) {
    if (p.id == node_id && p.state != PeerState::kLeft) {
      p.state = PeerState::kLeft;
      spdlog::info("peer {} at {} left", node_id, addr);
    }
  }
}

void Membership::OnDialFailed(const std::string& address, const std::string& why) {
  std::lock_guard lock(mu_);
  auto it = by_address_.find(address);
  if (it == by_address_.end()) return;
  if (it->second.last_error != why) {
    spdlog::warn("peer at {}: {}", address, why);
  }
  it->second.last_error = why;
}

std::vector<uint32_t> Membership::Sweep(Clock::time_point now) {
  std::vector<uint32_t> changed;
  std::lock_guard lock(mu_);
  for (auto& [addr, p] : by_address_) {
    if (p.state == PeerState::kAlive && now - p.last_heard > dead_after_) {
      p.state = PeerState::kDead;
      changed.push_back(p.id);
      spdlog::warn("peer {} at {} is dead (no heartbeat for {} ms)", p.id, addr,
                   std::chrono::duration_cast<std::chrono::milliseconds>(now - p.last_heard)
                       .count());
    }
  }
  return changed;
}

std::vector<PeerInfo> Membership::Snapshot() const {
  std::lock_guard lock(mu_);
  std::vector<PeerInfo> out;
  for (const auto& [addr, p] : by_address_) out.push_back(p);
  return out;
}

std::vector<std::string> Membership::Addresses() const {
  std::lock_guard lock(mu_);
  std::vector<std::string> out;
  for (const auto& [addr, p] : by_address_) out.push_back(addr);
  return out;
}

std::optional<PeerInfo> Membership::Find(uint32_t node_id) const {
  std::lock_guard lock(mu_);
  for (const auto& [addr, p] : by_address_) {
    if (p.id == node_id) return p;
  }
  return std::nullopt;
}

std::vector<std::pair<uint32_t, std::string>> Membership::AlivePeers() const {
  std::lock_guard lock(mu_);
  std::vector<std::pair<uint32_t, std::string>> out;
  for (const auto& [addr, p] : by_address_) {
    if (p.state == PeerState::kAlive) out.emplace_back(p.id, addr);
  }
  return out;
}

}  // namespace mfs::node

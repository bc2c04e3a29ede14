#include "mfs/node/membership.h"

#include <gtest/gtest.h>

namespace mfs::node {
namespace {

using namespace std::chrono_literals;

TEST(MembershipTest, HeartbeatCodecRoundTrip) {
  Heartbeat h{2, "127.0.0.2:7420", 1234, {{3, "127.0.0.3:7420"}}};
  auto d = DecodeHeartbeat(EncodeHeartbeat(h));
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->node_id, 2u);
  EXPECT_EQ(d->address, "127.0.0.2:7420");
  EXPECT_EQ(d->uptime_ms, 1234u);
  ASSERT_EQ(d->peers.size(), 1u);
  EXPECT_EQ(d->peers[0].second, "127.0.0.3:7420");
  std::string bytes = EncodeHeartbeat(h);
  EXPECT_FALSE(DecodeHeartbeat(bytes.substr(0, bytes.size() - 1)).ok());
  EXPECT_FALSE(DecodeHeartbeat(bytes + "x").ok());
}

TEST(MembershipTest, AliveDeadAndBack) {
  Membership m(1, "127.0.0.1:7420", 1000ms);
  m.AddAddress("127.0.0.2:7420");
  m.AddAddress("127.0.0.1:7420");  // self is ignored
  ASSERT_EQ(m.Snapshot().size(), 1u);
  EXPECT_EQ(m.Snapshot()[0].state, PeerState::kUnknown);
  auto t0 = std::chrono::steady_clock::now();
  m.OnHeartbeat(Heartbeat{2, "127.0.0.2:7420", 5, {{3, "127.0.0.3:7420"}}}, t0);
  EXPECT_EQ(m.Find(2)->state, PeerState::kAlive);
  // Gossip taught us node 3's address.
  EXPECT_EQ(m.Addresses().size(), 2u);
  EXPECT_TRUE(m.Sweep(t0 + 900ms).empty());
  EXPECT_EQ(m.Sweep(t0 + 1100ms), std::vector<uint32_t>{2});
  EXPECT_EQ(m.Find(2)->state, PeerState::kDead);
  m.OnHeartbeat(Heartbeat{2, "127.0.0.2:7420", 1, {}}, t0 + 2000ms);
  EXPECT_EQ(m.Find(2)->state, PeerState::kAlive);
  m.OnLeave(2);
  EXPECT_EQ(m.Find(2)->state, PeerState::kLeft);
  EXPECT_TRUE(m.Sweep(t0 + 9000ms).empty());  // left is not "dead"
}

}  // namespace
}  // namespace mfs::node

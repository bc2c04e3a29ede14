#include "mfs/wire/auth.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

namespace mfs::wire {
namespace {

const std::string kSecret = "correct horse battery staple";

TEST(AuthTest, MutualProofSucceeds) {
  ServerHandshake server(kSecret, 1);
  ClientHandshake client(kSecret, 2, PeerRole::kNode);
  auto prove = client.Prove(server.Hello());
  ASSERT_TRUE(prove.ok());
  auto accept = server.Verify(*prove);
  ASSERT_TRUE(accept.ok()) << accept.status().ToString();
  EXPECT_EQ(server.peer_id(), 2u);
  EXPECT_TRUE(client.Finish(*accept).ok());
  EXPECT_EQ(client.server_id(), 1u);
  // The secret itself never appears in what was sent.
  EXPECT_EQ(prove->find(kSecret), std::string::npos);
}

TEST(AuthTest, WrongSecretIsRefused) {
  ServerHandshake server(kSecret, 1);
  ClientHandshake client("a different secret entirely", 2, PeerRole::kNode);
  auto prove = client.Prove(server.Hello());
  ASSERT_TRUE(prove.ok());
  auto accept = server.Verify(*prove);
  EXPECT_EQ(accept.status().code(), EACCES);
}

TEST(AuthTest, ServerWithoutSecretIsRefusedByClient) {
  ServerHandshake real(kSecret, 1);
  ServerHandshake fake("not the cluster secret!!", 1);
  ClientHandshake client(kSecret, 2, PeerRole::kNode);
  auto prove = client.Prove(fake.Hello());
  ASSERT_TRUE(prove.ok());
  // The fake cannot verify, and cannot forge an accept either.
  EXPECT_FALSE(fake.Verify(*prove).ok());
  EXPECT_EQ(client.Finish(std::string(kMacSize, 'x')).code(), EACCES);
}

TEST(AuthTest, ReplayedProofIsRefused) {
  ServerHandshake server(kSecret, 1);
  ClientHandshake client(kSecret, 2, PeerRole::kNode);
  auto prove = client.Prove(server.Hello());
  ASSERT_TRUE(server.Verify(*prove).ok());
  // Same proof against a new hello (new nonce).
  ServerHandshake server2(kSecret, 1);
  server2.Hello();
  EXPECT_EQ(server2.Verify(*prove).status().code(), EACCES);
  // And not twice against the same hello.
  EXPECT_FALSE(server.Verify(*prove).ok());
}

TEST(AuthTest, MalformedProofIsRejected) {
  ServerHandshake server(kSecret, 1);
  server.Hello();
  EXPECT_EQ(server.Verify("short").status().code(), EBADMSG);
  ClientHandshake client(kSecret, 2, PeerRole::kNode);
  EXPECT_EQ(client.Prove("x").status().code(), EBADMSG);
}

TEST(AuthTest, LoadSecretChecksModeAndLength) {
  char dir[] = "/tmp/mfs-auth-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  std::string path = std::string(dir) + "/secret";
  {
    std::ofstream(path) << kSecret << "\n";
  }
  chmod(path.c_str(), 0644);
  EXPECT_EQ(LoadSecret(path).status().code(), EACCES);
  chmod(path.c_str(), 0600);
  auto s = LoadSecret(path);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(*s, kSecret);
  {
    std::ofstream(path) << "short";
  }
  EXPECT_EQ(LoadSecret(path).status().code(), EINVAL);
  EXPECT_EQ(LoadSecret(std::string(dir) + "/missing").status().code(), ENOENT);
  unlink(path.c_str());
  rmdir(dir);
}

}  // namespace
}  // namespace mfs::wire

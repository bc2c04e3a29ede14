#include "mfs/node/config.h"

#include <gtest/gtest.h>

namespace mfs::node {
namespace {

TEST(ConfigTest, FullFileParses) {
  auto c = ParseConfig(R"(
[node]
id = 3
address = "127.0.0.3"
port = 7421
export = "/srv/x"
state_dir = "/var/lib/x"
secret_file = "/etc/x/secret"
control_socket = "/run/x.sock"
mount = "/mfs"
peers = ["127.0.0.1:7421", "127.0.0.2"]
[membership]
heartbeat_ms = 200
dead_after_ms = 1000
[log]
level = "debug"
[fs]
anything = 1
)",
                       "t.toml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->id, 3u);
  EXPECT_EQ(c->port, 7421);
  EXPECT_EQ(c->export_dir, "/srv/x");
  EXPECT_EQ(c->peers.size(), 2u);
  EXPECT_EQ(c->heartbeat.count(), 200);
  EXPECT_EQ(c->dead_after.count(), 1000);
  EXPECT_EQ(c->log_level, "debug");
  EXPECT_EQ(c->table->at_path("fs.anything").value<int64_t>(), 1);
}

TEST(ConfigTest, DefaultsNeedOnlyAnId) {
  auto c = ParseConfig("[node]\nid = 1\n", "t.toml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->export_dir, "/");
  EXPECT_EQ(c->control_socket, "/run/mfs/mfsd.sock");
}

void ExpectError(const std::string& text, const std::string& needle) {
  auto c = ParseConfig(text, "bad.toml");
  ASSERT_FALSE(c.ok()) << text;
  EXPECT_EQ(c.status().code(), EINVAL);
  EXPECT_NE(c.status().message().find(needle), std::string::npos) << c.status().message();
  EXPECT_EQ(c.status().message().rfind("bad.toml", 0), 0u) << "names the file";
}

TEST(ConfigTest, ErrorsNameTheKey) {
  ExpectError("[node]\n", "node.id");
  ExpectError("[node]\nid = 0\n", "node.id");
  ExpectError("[node]\nid = \"one\"\n", "node.id");
  ExpectError("[node]\nid = 1\nport = 70000\n", "node.port");
  ExpectError("[node]\nid = 1\naddress = \"nohost\"\n", "node.address");
  ExpectError("[node]\nid = 1\npeers = [\"1.2.3\"]\n", "node.peers");
  ExpectError("[node]\nid = 1\npeers = \"x\"\n", "node.peers");
  ExpectError("[node]\nid = 1\nexport = \"rel\"\n", "absolute");
  ExpectError("[node]\nid = 1\nexprot = \"/x\"\n", "node.exprot");
  ExpectError("[nod]\nid = 1\n", "nod");
  ExpectError("[node]\nid = 1\n[membership]\nheartbeat_ms = 1000\ndead_after_ms = 1500\n",
              "dead_after_ms");
  ExpectError("[node]\nid = 1\n[log]\nlevel = \"loud\"\n", "log.level");
  ExpectError("[node\nid = 1\n", "bad.toml:");
}

TEST(ConfigTest, MissingFile) {
  auto c = LoadConfig("/nonexistent/mfsd.toml");
  EXPECT_EQ(c.status().code(), ENOENT);
  EXPECT_NE(c.status().message().find("/nonexistent/mfsd.toml"), std::string::npos);
}

}  // namespace
}  // namespace mfs::node

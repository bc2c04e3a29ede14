// The control protocol over a real Unix socket.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cstring>
#include <filesystem>
#include <mutex>
#include <thread>
#include <vector>

#include "mfs/control/client.h"
#include "mfs/control/server.h"

namespace mfs::control {
namespace {

using nlohmann::json;

class ControlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/mfs-control-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/sock";
    server_ = std::make_unique<ControlServer>(io_);
    server_->RegisterSync("echo", [](const json& req, const Caller& c) -> Result<json> {
      return json{{"echo", req.value("text", "")}, {"pid", c.pid}};
    });
    server_->RegisterSync("fail", [](const json&, const Caller&) -> Result<json> {
      return Status::Error(ESRCH, "no such process 42");
    });
    server_->Register("later", [this](const json&, const Caller&, ControlServer::Reply reply) {
      // Answer from another thread, later.
      std::lock_guard lock(later_mu_);
      later_.emplace_back([reply] {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        reply(json{{"late", true}});
      });
    });
    ASSERT_TRUE(server_->Start(path_).ok());
    work_.emplace(io_.get_executor());
    thread_ = std::thread([this] { io_.run(); });
  }
  void TearDown() override {
    {
      // Late replies hold their session: finish them before the io_context goes.
      std::lock_guard lock(later_mu_);
      for (auto& t : later_) t.join();
    }
    boost::asio::post(io_, [this] { server_->Stop(); });
    work_.reset();
    io_.stop();
    thread_.join();
    server_.reset();
    std::filesystem::remove_all(dir_);
  }

  boost::asio::io_context io_;
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work_;
  std::unique_ptr<ControlServer> server_;
  std::thread thread_;
  std::string dir_, path_;
  std::mutex later_mu_;
  std::vector<std::thread> later_;
};

TEST_F(ControlTest, RequestsAndErrorsKeepErrno) {
  auto c = Client::Connect(path_);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  auto r = c->Call(json{{"op", "echo"}, {"text", "hi"}});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ((*r)["echo"], "hi");
  EXPECT_EQ((*r)["pid"], getpid());  // SO_PEERCRED
  auto f = c->Call(json{{"op", "fail"}});
  EXPECT_EQ(f.status().code(), ESRCH);
  EXPECT_EQ(f.status().message(), "no such process 42");
  auto u = c->Call(json{{"op", "nope"}});
  EXPECT_EQ(u.status().code(), EOPNOTSUPP);
  auto l = c->Call(json{{"op", "later"}});
  ASSERT_TRUE(l.ok());
  EXPECT_EQ((*l)["late"], true);
}

TEST_F(ControlTest, MalformedRequestGetsEinval) {
  for (const char* bad : {"not json\n", "[1,2]\n", "{\"op\":3}\n"}) {
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    strcpy(a.sun_path, path_.c_str());
    ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    ASSERT_EQ(write(fd, bad, strlen(bad)), static_cast<ssize_t>(strlen(bad)));
    char buf[512] = {};
    ssize_t n = read(fd, buf, sizeof buf - 1);
    ASSERT_GT(n, 0);
    json j = json::parse(std::string(buf, n));
    EXPECT_EQ(j["ok"], false);
    EXPECT_EQ(j["errno"], EINVAL) << bad;
    close(fd);
  }
}

TEST_F(ControlTest, LiveSocketIsNotStolen) {
  boost::asio::io_context other;
  ControlServer second(other);
  EXPECT_EQ(second.Start(path_).code(), EADDRINUSE);
}

TEST(ControlClientTest, MissingDaemonIsAClearError) {
  auto r = Call("/tmp/mfs-no-such-dir/sock", json{{"op", "status"}});
  EXPECT_EQ(r.status().code(), ENOENT);
  EXPECT_NE(r.status().message().find("is mfsd running"), std::string::npos);
}

}  // namespace
}  // namespace mfs::control

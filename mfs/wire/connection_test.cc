// Real sockets on loopback: handshake, calls, error replies, refusal of a
// wrong secret, and malformed bytes closing the connection.
#include "mfs/wire/connection.h"

#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <thread>

namespace mfs::wire {
namespace {

class ConnectionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    acceptor_.open(tcp::v4());
    acceptor_.bind(tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    acceptor_.listen();
    port_ = acceptor_.local_endpoint().port();
    work_.emplace(io_.get_executor());
    thread_ = std::thread([this] { io_.run(); });
  }
  void TearDown() override {
    asio::post(io_, [this] { acceptor_.close(); });
    work_.reset();
    io_.stop();
    thread_.join();
  }

  // Accepts one connection with `secret`; echoes requests, errors on type 99.
  std::future<Status> Serve(const std::string& secret) {
    auto result = std::make_shared<std::promise<Status>>();
    auto fut = result->get_future();
    acceptor_.async_accept([this, secret, result](boost::system::error_code e, tcp::socket s) {
      if (e) return result->set_value(Status::Error(e.value(), e.message()));
      AuthConfig auth{secret, 1};
      Connection::Accept(
          std::move(s), auth,
          [](const Connection::Ptr& c, Frame f) {
            if (f.type() == 99) {
              c->ReplyError(f, Status::Error(ENOTDIR, "no such thing"));
            } else {
              c->Reply(f, "echo:" + f.payload);
            }
          },
          nullptr,
          [this, result](Result<Connection::Ptr> c) {
            if (c.ok()) server_conn_ = *c;
            result->set_value(c.ok() ? Status::OK() : c.status());
          });
    });
    return fut;
  }

  Result<Connection::Ptr> Dial(const std::string& secret) {
    std::promise<Result<Connection::Ptr>> p;
    Connection::Connect(io_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0),
                        tcp::endpoint(asio::ip::make_address("127.0.0.1"), port_),
                        AuthConfig{secret, 2}, nullptr, nullptr,
                        [&](Result<Connection::Ptr> c) { p.set_value(std::move(c)); });
    return p.get_future().get();
  }

  Result<Frame> CallSync(const Connection::Ptr& c, uint16_t type, std::string payload) {
    std::promise<Result<Frame>> p;
    c->Call(type, std::move(payload), [&](Result<Frame> f) { p.set_value(std::move(f)); },
            std::chrono::milliseconds(2000));
    return p.get_future().get();
  }

  asio::io_context io_;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_;
  tcp::acceptor acceptor_{io_};
  uint16_t port_ = 0;
  std::thread thread_;
  Connection::Ptr server_conn_;
};

const std::string kSecret = "the cluster secret, long enough";

TEST_F(ConnectionTest, CallsAndErrorReplies) {
  auto served = Serve(kSecret);
  auto c = Dial(kSecret);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  ASSERT_TRUE(served.get().ok());
  EXPECT_EQ((*c)->peer_id(), 1u);
  auto r = CallSync(*c, 70, "hi");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->payload, "echo:hi");
  auto e = CallSync(*c, 99, "");
  EXPECT_EQ(e.status().code(), ENOTDIR);
  // Many concurrent calls are matched to their replies.
  std::vector<std::future<Result<Frame>>> futs;
  std::vector<std::shared_ptr<std::promise<Result<Frame>>>> ps;
  for (int i = 0; i < 100; ++i) {
    auto p = std::make_shared<std::promise<Result<Frame>>>();
    futs.push_back(p->get_future());
    (*c)->Call(70, std::to_string(i), [p](Result<Frame> f) { p->set_value(std::move(f)); });
    ps.push_back(p);
  }
  for (int i = 0; i < 100; ++i) {
    auto f = futs[i].get();
    ASSERT_TRUE(f.ok());
    EXPECT_EQ(f->payload, "echo:" + std::to_string(i));
  }
  (*c)->Close(Status::OK());
}

// Frames are written by the calling thread when nothing is queued, by the
// strand otherwise: several threads calling at once, with payloads from 0
// bytes to more than the socket takes at once, still get every reply,
// intact and matched to its call.
TEST_F(ConnectionTest, CallsFromManyThreadsWithLargePayloadsStayIntact) {
  auto served = Serve(kSecret);
  auto c = Dial(kSecret);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  ASSERT_TRUE(served.get().ok());
  constexpr int kThreads = 4, kCalls = 30;
  const size_t sizes[] = {0, 1, 4096, 65536, 3u << 20};
  std::atomic<int> good{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<std::future<Result<Frame>>> futs;
      std::vector<std::string> sent;
      for (int i = 0; i < kCalls; ++i) {
        std::string payload(sizes[(t + i) % 5], static_cast<char>('a' + (t * kCalls + i) % 26));
        if (!payload.empty()) payload[0] = static_cast<char>(t), payload.back() = static_cast<char>(i);
        sent.push_back(payload);
        auto p = std::make_shared<std::promise<Result<Frame>>>();
        futs.push_back(p->get_future());
        (*c)->Call(70, std::move(payload), [p](Result<Frame> f) { p->set_value(std::move(f)); },
                   std::chrono::milliseconds(20000));
      }
      for (int i = 0; i < kCalls; ++i) {
        auto f = futs[i].get();
        if (f.ok() && f->payload == "echo:" + sent[i]) ++good;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(good.load(), kThreads * kCalls);
  (*c)->Close(Status::OK());
}

TEST_F(ConnectionTest, WrongSecretIsRefusedAndGetsNoData) {
  auto served = Serve(kSecret);
  auto c = Dial("this is not the cluster secret");
  EXPECT_EQ(c.status().code(), EACCES) << c.status().ToString();
  EXPECT_EQ(served.get().code(), EACCES);
  EXPECT_EQ(server_conn_, nullptr);
}

TEST_F(ConnectionTest, MalformedBytesCloseTheConnection) {
  auto served = Serve(kSecret);
  tcp::socket raw(io_);
  raw.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port_));
  char hello[256];
  raw.read_some(asio::buffer(hello));  // the server's hello
  std::string junk(64, 'Z');
  asio::write(raw, asio::buffer(junk));
  // The server closes: we read EOF, not a hang.
  boost::system::error_code ec;
  char buf[64];
  raw.read_some(asio::buffer(buf), ec);
  EXPECT_TRUE(ec == asio::error::eof || ec == asio::error::connection_reset) << ec.message();
  EXPECT_FALSE(served.get().ok());
}

TEST_F(ConnectionTest, PendingCallsFailWhenPeerCloses) {
  auto served = Serve(kSecret);
  auto c = Dial(kSecret);
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(served.get().ok());
  std::promise<Result<Frame>> p;
  // Type 98: the server handler replies, but we close the server side first.
  server_conn_->Close(Status::Error(ESHUTDOWN, "test"));
  (*c)->Call(70, "x", [&](Result<Frame> f) { p.set_value(std::move(f)); },
             std::chrono::milliseconds(3000));
  auto r = p.get_future().get();
  EXPECT_FALSE(r.ok());
}

}  // namespace
}  // namespace mfs::wire

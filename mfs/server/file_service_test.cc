// FileService over real loopback connections: escape attempts, forged and
// malformed requests, handles surviving a service restart, credentials.
#include "mfs/server/file_service.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <future>
#include <iostream>
#include <optional>
#include <thread>
#include <vector>

#include "mfs/base/coding.h"
#include "mfs/client/fs_protocol.h"

namespace mfs::server {
namespace {

namespace proto = client::proto;
using wire::Connection;
using wire::Frame;
using wire::tcp;
namespace asio = boost::asio;

const std::string kSecret = "file service test secret, long enough";

class FileServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root (CAP_DAC_READ_SEARCH for file handles)";
    char tmpl[] = "/tmp/mfs-fs-service-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    base_ = tmpl;
    export_ = base_ + "/export";
    std::filesystem::create_directories(export_ + "/sub");
    std::ofstream(base_ + "/outside") << "secret outside the export";
    std::ofstream(export_ + "/sub/file") << "inside";
    StartService();
    acceptor_.open(tcp::v4());
    acceptor_.bind(tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    acceptor_.listen();
    port_ = acceptor_.local_endpoint().port();
    work_.emplace(io_.get_executor());
    thread_ = std::thread([this] { io_.run(); });
    Accept();
    conn_ = Dial();
    ASSERT_TRUE(conn_);
  }
  void TearDown() override {
    if (!thread_.joinable()) return;
    if (conn_) conn_->Close(Status::OK());
    asio::post(io_, [this] { acceptor_.close(); });
    work_.reset();
    io_.stop();
    thread_.join();
    if (service_) service_->Stop();
    std::filesystem::remove_all(base_);
  }

  void StartService(size_t max_pinned_dirs = 4096) {
    FileServiceOptions o;
    o.max_pinned_dirs = max_pinned_dirs;
    o.self_id = 2;
    o.export_path = export_;
    o.secret = kSecret;
    o.threads = 2;
    auto s = FileService::Create(o);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    std::lock_guard<std::mutex> l(mu_);
    if (service_) service_->Stop();
    service_ = std::move(*s);
  }

  void Accept() {
    acceptor_.async_accept([this](boost::system::error_code e, tcp::socket s) {
      if (e) return;
      Connection::Accept(
          std::move(s), wire::AuthConfig{kSecret, 2},
          [this](const Connection::Ptr& c, Frame f) {
            std::lock_guard<std::mutex> l(mu_);
            service_->Handle(c, std::move(f));
          },
          nullptr, [](Result<Connection::Ptr>) {});
      Accept();
    });
  }

  // `on_push`: what the service sends this connection unasked.
  Connection::Ptr Dial(Connection::RequestHandler on_push = nullptr) {
    std::promise<Result<Connection::Ptr>> p;
    wire::AuthConfig auth{kSecret, 1, wire::PeerRole::kClient};
    Connection::Connect(io_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0),
                        tcp::endpoint(asio::ip::make_address("127.0.0.1"), port_), auth,
                        std::move(on_push), nullptr,
                        [&](Result<Connection::Ptr> c) { p.set_value(std::move(c)); });
    auto r = p.get_future().get();
    return r.ok() ? *r : nullptr;
  }

  // On `via` (default: the fixture's connection).
  Result<Frame> Call(uint16_t type, std::string payload, const Connection::Ptr& via = nullptr) {
    std::promise<Result<Frame>> p;
    (via ? via : conn_)->Call(type, std::move(payload), [&](Result<Frame> f) { p.set_value(std::move(f)); },
                std::chrono::milliseconds(5000));
    return p.get_future().get();
  }

  std::string Root() {
    auto f = Call(proto::kGetRoot, "");
    EXPECT_TRUE(f.ok()) << f.status().ToString();
    if (!f.ok()) return "";
    Reader r(f->payload);
    return std::string(r.Bytes());
  }

  Result<std::string> Lookup(const std::string& dir, const std::string& name,
                             client::Caller c = {}, const Connection::Ptr& via = nullptr) {
    std::string p;
    Writer w(&p);
    proto::PutCaller(w, c);
    w.Bytes(dir);
    w.Bytes(name);
    auto f = Call(proto::kLookup, p, via);
    if (!f.ok()) return f.status();
    Reader r(f->payload);
    return std::string(r.Bytes());
  }

  // kOpen of the file `handle` names, as the fixture's caller.
  Result<Frame> Open(const std::string& handle, int flags) {
    std::string p;
    Writer w(&p);
    proto::PutCaller(w, {});
    w.Bytes(handle);
    w.U32(static_cast<uint32_t>(flags));
    return Call(proto::kOpen, p);
  }

  std::string base_, export_;
  std::mutex mu_;
  std::unique_ptr<FileService> service_;
  asio::io_context io_;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_;
  tcp::acceptor acceptor_{io_};
  uint16_t port_ = 0;
  std::thread thread_;
  Connection::Ptr conn_;
};

TEST_F(FileServiceTest, NamesCannotLeaveTheExport) {
  std::string root = Root();
  ASSERT_FALSE(root.empty());
  for (const char* bad : {"..", ".", "../outside", "sub/../../outside", ""}) {
    auto h = Lookup(root, bad);
    ASSERT_FALSE(h.ok()) << bad;
    EXPECT_EQ(h.status().code(), EINVAL) << bad;
  }
  auto h = Lookup(root, std::string(300, 'x'));
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.status().code(), ENAMETOOLONG);
  // A symlink pointing out is returned as a symlink, never followed.
  ASSERT_EQ(symlink((base_ + "/outside").c_str(), (export_ + "/escape").c_str()), 0);
  auto link = Lookup(root, "escape");
  ASSERT_TRUE(link.ok());
  auto open = Open(*link, O_RDONLY);
  ASSERT_FALSE(open.ok());
  EXPECT_EQ(open.status().code(), ELOOP);
}

TEST_F(FileServiceTest, ForgedAndMalformedRequestsAreRefused) {
  std::string root = Root();
  std::string forged = root;
  forged[forged.size() - 1] ^= 1;  // break the MAC
  auto h = Lookup(forged, "sub");
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.status().code(), ESTALE);
  auto junk = Lookup("short", "sub");
  ASSERT_FALSE(junk.ok());
  EXPECT_EQ(junk.status().code(), EBADMSG);
  auto truncated = Call(proto::kLookup, std::string("\x01\x00", 2));
  ASSERT_FALSE(truncated.ok());
  EXPECT_EQ(truncated.status().code(), EBADMSG);
  auto unknown = Call(150, "");
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().code(), ENOSYS);
  std::string p;
  Writer w(&p);
  w.U64(12345);
  w.I64(0);
  w.U32(10);
  auto badfh = Call(proto::kRead, p);
  ASSERT_FALSE(badfh.ok());
  EXPECT_EQ(badfh.status().code(), EBADF);
  std::string big;
  Writer bw(&big);
  bw.U64(1);
  bw.I64(0);
  bw.U32(proto::kMaxIo + 1);
  auto oversize = Call(proto::kRead, big);
  ASSERT_FALSE(oversize.ok());
  EXPECT_EQ(oversize.status().code(), EBADMSG);
}

// A client that reconnected names the files it still caches (kHold): the
// ones that still exist are watched again; a malformed list changes nothing.
TEST_F(FileServiceTest, HoldWatchesTheFilesAClientStillCaches) {
  std::string root = Root();
  auto sub = Lookup(root, "sub");
  ASSERT_TRUE(sub.ok()) << sub.status().ToString();
  std::string forged = *sub;
  forged[forged.size() - 1] ^= 1;
  auto hold = [&](const std::vector<std::string>& handles, uint32_t n, const std::string& tail) {
    std::string p;
    Writer w(&p);
    w.U32(n);
    for (const auto& h : handles) w.Bytes(h);
    p += tail;
    return Call(proto::kHold, p);
  };
  auto r = hold({root, *sub, forged}, 3, "");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  Reader rd(r->payload);
  EXPECT_EQ(rd.U32(), 2u);  // the forged handle opens nothing
  EXPECT_TRUE(rd.done());
  EXPECT_GE(service_->interest_size(), 2u);
  for (auto [n, tail] : {std::pair<uint32_t, std::string>{proto::kMaxHold + 1, ""},
                         {3, ""} /* one handle short */, {2, std::string("x")}}) {
    auto bad = hold({root, *sub}, n, tail);
    ASSERT_FALSE(bad.ok()) << n;
    EXPECT_EQ(bad.status().code(), EBADMSG) << n;
  }
  auto empty = hold({}, 0, "");
  ASSERT_TRUE(empty.ok()) << empty.status().ToString();
}

// Who held a file is forgotten once it is removed for good, but not while
// it is still open.
TEST_F(FileServiceTest, InterestInARemovedFileIsDropped) {
  std::string root = Root();
  for (const char* n : {"gone", "open"}) std::ofstream(export_ + "/" + n) << "x";
  auto gone = Lookup(root, "gone");
  auto open = Lookup(root, "open");
  ASSERT_TRUE(gone.ok() && open.ok());
  ASSERT_TRUE(Open(*open, O_RDONLY).ok());
  const size_t before = service_->interest_size();
  for (const char* n : {"gone", "open"}) {
    std::string p;
    Writer w(&p);
    proto::PutCaller(w, {});
    w.Bytes(root);
    w.Bytes(n);
    w.U8(0);
    auto r = Call(proto::kRemove, p);
    ASSERT_TRUE(r.ok()) << n << ": " << r.status().ToString();
  }
  EXPECT_EQ(service_->interest_size(), before - 1);  // "open" is still held
}

// A write through one connection is pushed to another that holds the
// file, with the file's change time after the write when the export has
// fine-grained change times (the receiver skips it if an open there saw
// that change already), and without one otherwise.
TEST_F(FileServiceTest, PushedChangesCarryTheChangeTimeAfterThem) {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::string> pushes;
  Connection::Ptr holder = Dial([&](const Connection::Ptr&, Frame f) {
    if (f.type() != proto::kInvalidate) return;
    std::lock_guard<std::mutex> l(mu);
    pushes.push_back(f.payload);
    cv.notify_all();
  });
  ASSERT_TRUE(holder);
  auto sub = Lookup(Root(), "sub");
  ASSERT_TRUE(sub.ok());
  auto file = Lookup(*sub, "file");
  ASSERT_TRUE(file.ok());
  // The holder looks the file up too: it is told of its changes.
  ASSERT_TRUE(Lookup(*sub, "file", {}, holder).ok());
  auto opened = Open(*file, O_WRONLY);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  uint64_t fh = Reader(opened->payload).U64();
  std::string wp;
  Writer ww(&wp);
  ww.U64(fh);
  ww.I64(0);
  ww.Bytes("written");
  auto wrote = Call(proto::kWrite, wp);
  ASSERT_TRUE(wrote.ok()) << wrote.status().ToString();
  Reader wr(wrote->payload);
  ASSERT_EQ(wr.U32(), 7u);
  struct stat after = proto::GetStat(wr);
  ASSERT_TRUE(wr.done());

  std::unique_lock<std::mutex> l(mu);
  ASSERT_TRUE(cv.wait_for(l, std::chrono::seconds(5), [&] { return !pushes.empty(); }))
      << "no push for the write";
  Reader r(pushes.back());
  EXPECT_EQ(std::string(r.Bytes()), *file);  // the handle the holder was given
  r.Bytes();                                 // the file key
  EXPECT_EQ(std::string(r.Bytes()), "");
  if (service_->fine_change_times()) {
    EXPECT_EQ(r.I64(), client::CtimeNs(after));
  } else {
    std::cout << "[ NOTE     ] this export has coarse change times: pushes carry none\n";
  }
  EXPECT_TRUE(r.done());
  holder->Close(Status::OK());
}

// A directory handed out stays reachable by its handle after it is
// removed (a peer may have it open or as its cwd): it stats with no links
// and lists with ENOENT, as a native one does. At most max_pinned_dirs are kept, the
// least recently handed out going first; an unpinned one is stale.
TEST_F(FileServiceTest, RemovedDirectoriesPeersHoldStayReachableWithinTheBound) {
  StartService(/*max_pinned_dirs=*/2);
  std::string root = Root();
  std::vector<std::string> h;
  for (const char* n : {"d0", "d1", "d2"}) {
    ASSERT_EQ(mkdir((export_ + "/" + n).c_str(), 0755), 0);
    auto d = Lookup(root, n);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    h.push_back(*d);
  }
  EXPECT_EQ(service_->pinned_dirs(), 2u);  // d0 went first
  for (const char* n : {"d0", "d1", "d2"}) ASSERT_EQ(rmdir((export_ + "/" + n).c_str()), 0);
  auto getattr = [&](const std::string& handle) {
    std::string p;
    Writer w(&p);
    w.Bytes(handle);
    w.U64(0);
    return Call(proto::kGetAttr, p);
  };
  auto readdir = [&](const std::string& handle) {
    std::string p;
    Writer w(&p);
    proto::PutCaller(w, {});
    w.Bytes(handle);
    w.U64(0);
    w.U32(64);
    w.U8(0);
    return Call(proto::kReadDir, p);
  };
  for (int i : {1, 2}) {
    auto r = getattr(h[i]);
    ASSERT_TRUE(r.ok()) << "d" << i << ": " << r.status().ToString();
    Reader rd(r->payload);
    struct stat st = proto::GetStat(rd);
    EXPECT_EQ(st.st_nlink, 0u) << "d" << i;
    EXPECT_TRUE(S_ISDIR(st.st_mode));
    EXPECT_EQ(readdir(h[i]).status().code(), ENOENT) << "d" << i;  // as getdents(2) there
  }
  EXPECT_EQ(getattr(h[0]).status().code(), ESTALE);
  EXPECT_EQ(readdir(h[0]).status().code(), ESTALE);
}

TEST_F(FileServiceTest, HandlesSurviveARestartOfTheService) {
  std::string root = Root();
  auto sub = Lookup(root, "sub");
  ASSERT_TRUE(sub.ok());
  auto file = Lookup(*sub, "file");
  ASSERT_TRUE(file.ok());
  StartService();  // a new instance: no state but the secret and the export
  auto open = Open(*file, O_RDONLY);
  ASSERT_TRUE(open.ok()) << open.status().ToString();
  Reader r(open->payload);
  uint64_t fh = r.U64();
  std::string rp;
  Writer rw(&rp);
  rw.U64(fh);
  rw.I64(0);
  rw.U32(100);
  auto data = Call(proto::kRead, rp);
  ASSERT_TRUE(data.ok());
  EXPECT_EQ(data->payload, "inside");
}

TEST_F(FileServiceTest, CallerCredentialsApply) {
  std::string root = Root();
  ASSERT_EQ(chmod(export_.c_str(), 0755), 0);
  client::Caller nobody{0, 65534, 65534, {65534}};
  std::string p;
  Writer w(&p);
  proto::PutCaller(w, nobody);
  w.Bytes(root);
  w.Bytes("denied");
  w.U32(S_IFREG | 0666);  // the caller's kernel applied its umask already
  w.U32(O_WRONLY);
  auto f = Call(proto::kCreate, p);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), EACCES);
  ASSERT_EQ(chmod(export_.c_str(), 0777), 0);
  auto ok = Call(proto::kCreate, p);
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  struct stat st;
  ASSERT_EQ(stat((export_ + "/denied").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 65534u);
  EXPECT_EQ(st.st_gid, 65534u);
  EXPECT_EQ(st.st_mode & 07777, 0666u) << "mfsd's own umask must not apply";
}

}  // namespace
}  // namespace mfs::server

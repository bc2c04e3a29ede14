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
#include <set>
#include <thread>
#include <vector>

#include "mfs/base/coding.h"
#include "mfs/client/fs_protocol.h"
#include "mfs/client/local_ops.h"

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
  // `id`: the node it says it is (2: the service's own node, i.e. its mount).
  Connection::Ptr Dial(Connection::RequestHandler on_push = nullptr, uint32_t id = 1) {
    std::promise<Result<Connection::Ptr>> p;
    wire::AuthConfig auth{kSecret, id, wire::PeerRole::kClient};
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

  // The start of a request about `name` in `dir`: caller, dir, name.
  static std::string NameRequest(const std::string& dir, const std::string& name,
                                 const client::Caller& c = {}) {
    std::string p;
    Writer w(&p);
    proto::PutCaller(w, c);
    w.Bytes(dir);
    w.Bytes(name);
    return p;
  }

  Result<std::string> Lookup(const std::string& dir, const std::string& name, client::Caller c = {},
                             const Connection::Ptr& via = nullptr) {
    auto f = Call(proto::kLookup, NameRequest(dir, name, c), via);
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

// What a lookup with kLookupListing that finds nothing carries: the
// directory's names and generation, for a connection that holds the
// directory (so that every later change of its names is pushed to it).
struct Listing {
  uint64_t gen = 0;
  std::set<std::string> names;
};

class FileServiceListingTest : public FileServiceTest {
 public:  // for ListingHolder
  using FileServiceTest::Dial;
  using FileServiceTest::Lookup;
  using FileServiceTest::Root;

  Result<Listing> LookupListing(const std::string& dir, const std::string& name,
                                const Connection::Ptr& via = nullptr) {
    std::string p = NameRequest(dir, name);
    Writer(&p).U8(proto::kLookupListing);
    auto f = Call(proto::kLookup, p, via);
    if (!f.ok()) return f.status();
    Reader r(f->payload);
    if (!r.Bytes().empty()) return Status::Error(EEXIST, "an entry, not a listing");
    Listing l;
    l.gen = r.U64();
    uint32_t n = r.U32();
    for (uint32_t i = 0; i < n && r.ok(); ++i) l.names.emplace(r.Bytes());
    if (!r.done()) return Status::Error(EBADMSG, "malformed listing");
    return l;
  }
  // The directory generations that end a changing reply.
  static std::pair<uint64_t, uint64_t> Gens(const std::string& payload) {
    EXPECT_GE(payload.size(), 16u);
    if (payload.size() < 16) return {0, 0};
    const char* end = payload.data() + payload.size();
    return {DecodeFixed64(end - 16), DecodeFixed64(end - 8)};
  }
  Result<Frame> MakeNode(const std::string& dir, const std::string& name,
                         const Connection::Ptr& via = nullptr) {
    std::string p = NameRequest(dir, name);
    Writer w(&p);
    w.U32(S_IFREG | 0644);
    w.U64(0);
    w.Bytes("");
    return Call(proto::kMakeNode, p, via);
  }
};

TEST_F(FileServiceListingTest, AMissCarriesTheNamesOfADirectoryTheConnectionHolds) {
  auto sub = Lookup(Root(), "sub");
  ASSERT_TRUE(sub.ok()) << sub.status().ToString();
  auto l = LookupListing(*sub, "missing");
  ASSERT_TRUE(l.ok()) << l.status().ToString();
  EXPECT_NE(l->gen, 0u);
  EXPECT_EQ(l->names, (std::set<std::string>{"file"}));
  // Without the flag a miss is ENOENT, and a name found is an entry either way.
  auto plain = Lookup(*sub, "missing");
  ASSERT_FALSE(plain.ok());
  EXPECT_EQ(plain.status().code(), ENOENT);
  EXPECT_EQ(LookupListing(*sub, "file").status().code(), EEXIST);

  // Our own change: its reply says the generation went from the one we
  // know to the next, so nothing else came between.
  auto made = MakeNode(*sub, "mine");
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  auto [before, after] = Gens(made->payload);
  EXPECT_EQ(before, l->gen);
  EXPECT_EQ(after, l->gen + 1);
  std::string rp = NameRequest(*sub, "mine");
  Writer(&rp).U8(0);  // not a directory
  auto removed = Call(proto::kRemove, rp);
  ASSERT_TRUE(removed.ok()) << removed.status().ToString();
  EXPECT_EQ(Gens(removed->payload), std::make_pair(l->gen + 1, l->gen + 2));

  // Another connection's change in between shows as a gap.
  Connection::Ptr other = Dial();
  ASSERT_TRUE(other);
  ASSERT_TRUE(Lookup(Root(), "sub", {}, other).ok());
  ASSERT_TRUE(MakeNode(*sub, "theirs", other).ok());
  auto again = MakeNode(*sub, "mine2");
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(Gens(again->payload), std::make_pair(l->gen + 3, l->gen + 4));
  auto now = LookupListing(*sub, "missing");
  ASSERT_TRUE(now.ok()) << now.status().ToString();
  EXPECT_EQ(now->gen, l->gen + 4);
  EXPECT_EQ(now->names, (std::set<std::string>{"file", "theirs", "mine2"}));
  other->Close(Status::OK());
}

// Another connection's change of a name breaks the listing: it is pushed to
// the holder as a call, and the change is answered only once the holder
// answers (it dropped the listing). After that break the holder holds no
// listing, so changes are pushed one-way again, until it asks for one anew.
// A connection holding a listing of "sub": the pushes it gets, answering
// those sent as calls (listing breaks) only when told to.
class ListingHolder {
 public:
  explicit ListingHolder(FileServiceListingTest* t) : t_(t) {
    conn_ = t->Dial([this](const Connection::Ptr&, Frame f) {
      if (f.type() != proto::kInvalidate) return;
      std::lock_guard<std::mutex> l(mu_);
      if (f.header.request_id != 0) {
        calls_.push_back(std::move(f));
      } else {
        ++one_way_;
      }
      cv_.notify_all();
    });
  }
  ~ListingHolder() {
    if (conn_) conn_->Close(Status::OK());
  }
  // Looks "sub" up and takes a listing of it; its handle.
  std::string Hold() {
    auto sub = t_->Lookup(t_->Root(), "sub", {}, conn_);
    EXPECT_TRUE(sub.ok());
    if (!sub.ok()) return "";
    EXPECT_TRUE(t_->LookupListing(*sub, "missing", conn_).ok());
    return *sub;
  }
  // That `reply` comes only once the first break is answered; returns
  // that break's payload.
  std::string ExpectHeldUntilAnswered(std::future<Result<Frame>>& reply) {
    std::string payload;
    {
      std::unique_lock<std::mutex> l(mu_);
      EXPECT_TRUE(cv_.wait_for(l, std::chrono::seconds(5), [&] { return !calls_.empty(); }))
          << "no listing was broken";
      if (calls_.empty()) return "";
      payload = calls_.front().payload;
    }
    EXPECT_EQ(reply.wait_for(std::chrono::milliseconds(300)), std::future_status::timeout)
        << "answered before the holder dropped its listing";
    {
      std::lock_guard<std::mutex> l(mu_);
      conn_->Reply(calls_.front(), "");
    }
    EXPECT_EQ(reply.wait_for(std::chrono::seconds(5)), std::future_status::ready);
    return payload;
  }
  bool WaitOneWay() {
    std::unique_lock<std::mutex> l(mu_);
    return cv_.wait_for(l, std::chrono::seconds(5), [&] { return one_way_ > 0; });
  }
  size_t calls() {
    std::lock_guard<std::mutex> l(mu_);
    return calls_.size();
  }
  const Connection::Ptr& conn() const { return conn_; }

 private:
  FileServiceListingTest* t_;
  Connection::Ptr conn_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Frame> calls_;
  int one_way_ = 0;
};

// `call` on `via` without waiting for the answer.
std::future<Result<Frame>> Start(const Connection::Ptr& via, uint16_t type, std::string payload) {
  auto done = std::make_shared<std::promise<Result<Frame>>>();
  auto f = done->get_future();
  via->Call(type, std::move(payload), [done](Result<Frame> r) { done->set_value(std::move(r)); });
  return f;
}

// Another connection's change of a name breaks the listing: it is pushed to
// the holder as a call, and the change is answered only once the holder
// answers (it dropped the listing). After that break the holder holds no
// listing, so changes are pushed one-way again, until it asks for one anew.
TEST_F(FileServiceListingTest, AChangeByAnotherIsAnsweredOnlyOnceTheListingIsBroken) {
  ListingHolder holder(this);
  ASSERT_TRUE(holder.conn());
  const std::string sub = holder.Hold();
  std::string p = NameRequest(sub, "new");
  Writer w(&p);
  w.U32(S_IFREG | 0644);
  w.U64(0);
  w.Bytes("");
  auto reply = Start(conn_, proto::kMakeNode, p);
  const std::string pushed = holder.ExpectHeldUntilAnswered(reply);
  Reader r(pushed);
  EXPECT_EQ(std::string(r.Bytes()), sub);
  r.Bytes();
  EXPECT_EQ(std::string(r.Bytes()), "new");
  ASSERT_TRUE(reply.get().ok());

  // Broken: the next change is pushed one-way and answered at once.
  ASSERT_TRUE(MakeNode(sub, "next").ok());
  ASSERT_TRUE(holder.WaitOneWay());
  EXPECT_EQ(holder.calls(), 1u);
}

// The owner's own mount changes the export itself and reports afterwards:
// a report sent as a call is answered only once the listings it breaks are.
TEST_F(FileServiceListingTest, AnOwnMountReportIsAnsweredOnlyOnceTheListingIsBroken) {
  ListingHolder holder(this);
  Connection::Ptr mount = Dial(nullptr, /*id=*/2);
  ASSERT_TRUE(holder.conn() && mount);
  holder.Hold();
  ASSERT_TRUE(std::ofstream(export_ + "/sub/local") << "made on the owner");
  struct stat st;
  ASSERT_EQ(stat((export_ + "/sub").c_str(), &st), 0);
  std::string p;
  Writer w(&p);
  w.Bytes(client::ops::FileKey(st));
  w.Bytes("local");
  auto reply = Start(mount, proto::kChanged, p);
  holder.ExpectHeldUntilAnswered(reply);
  EXPECT_TRUE(reply.get().ok());
  // With no listing held, a report as a call is answered at once.
  auto again = Start(mount, proto::kChanged, p);
  ASSERT_EQ(again.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  EXPECT_TRUE(again.get().ok());
  // A peer that is not the owner may not report.
  auto forged = Call(proto::kChanged, p, holder.conn());
  ASSERT_FALSE(forged.ok());
  EXPECT_EQ(forged.status().code(), EACCES);
  mount->Close(Status::OK());
}

TEST_F(FileServiceListingTest, NoListingWhereTheOwnerCannotVouchForIt) {
  auto sub = Lookup(Root(), "sub");
  ASSERT_TRUE(sub.ok());
  // A connection that never looked the directory up is not told of its
  // changes: its miss is a plain ENOENT, and its changes carry no generations.
  Connection::Ptr stranger = Dial();
  ASSERT_TRUE(stranger);
  auto l = LookupListing(*sub, "missing", stranger);
  ASSERT_FALSE(l.ok());
  EXPECT_EQ(l.status().code(), ENOENT);
  auto made = MakeNode(*sub, "x", stranger);
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  EXPECT_EQ(Gens(made->payload), std::make_pair(uint64_t{0}, uint64_t{0}));
  stranger->Close(Status::OK());

  // Too many names: ENOENT.
  const std::string big = export_ + "/big";
  ASSERT_EQ(mkdir(big.c_str(), 0755), 0);
  for (uint32_t i = 0; i <= proto::kMaxListing; ++i) {
    UniqueFd fd(open((big + "/f" + std::to_string(i)).c_str(), O_CREAT | O_WRONLY, 0644));
    ASSERT_TRUE(fd.valid());
  }
  auto bigh = Lookup(Root(), "big");
  ASSERT_TRUE(bigh.ok());
  auto lb = LookupListing(*bigh, "missing");
  ASSERT_FALSE(lb.ok());
  EXPECT_EQ(lb.status().code(), ENOENT);
  // One name fewer and it fits.
  ASSERT_EQ(unlink((big + "/f0").c_str()), 0);
  auto fits = LookupListing(*bigh, "missing");
  ASSERT_TRUE(fits.ok()) << fits.status().ToString();
  EXPECT_EQ(fits->names.size(), proto::kMaxListing);
}

}  // namespace
}  // namespace mfs::server

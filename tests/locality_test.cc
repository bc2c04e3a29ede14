// Integration tests of I/O locality (issue 5) with real mfsd daemons, the
// real control socket, the real IoRecorder and the real mfsstat / mfsmon
// binaries. The end-to-end test through /mfs needs the FUSE client and the
// cluster harness; it is skipped, with the reason, where they are missing.
#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <thread>

#include "mfs/locality/codec.h"
#include "mfs/locality/recorder.h"
#include "tests/locality_harness.h"

namespace mfs::testing {
namespace {

namespace fs = std::filesystem;
using locality::IoOp;
using locality::IoRecorder;
using nlohmann::json;

// A child process standing for a job (`sleep 60`), killed at the end.
class Job {
 public:
  Job() {
    pid_ = ::fork();
    if (pid_ == 0) {
      ::execlp("sleep", "sleep", "60", nullptr);
      ::_exit(127);
    }
    // Wait until it is `sleep` (exec done), so the recorder sees its exe.
    WaitFor(
        [&] {
          std::ifstream in("/proc/" + std::to_string(pid_) + "/comm");
          std::string c;
          in >> c;
          return c == "sleep";
        },
        5s);
  }
  ~Job() {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
};

std::unique_ptr<IoRecorder> RecorderFor(const Mfsd& d) {
  locality::RecorderOptions o;
  o.control_socket = d.socket();
  o.flush_interval = 100ms;
  auto r = std::make_unique<IoRecorder>(o);
  r->Start();
  return r;
}

CmdResult Mfsstat(const Mfsd& d, std::vector<std::string> args) {
  std::vector<std::string> argv{BinDir() + "/mfsstat", "--socket", d.socket()};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCmd(argv, 30s);
}

// The process entry for pid in `mfsstat --json -p pid` (single node).
json ProcessOf(const Mfsd& d, pid_t pid, bool all = false) {
  std::vector<std::string> args{"--json", "-p", std::to_string(pid)};
  if (all) args.push_back("-a");
  CmdResult r = Mfsstat(d, args);
  if (r.exit_code != 0) return json();
  json j = json::parse(r.out, nullptr, false);
  if (j.is_discarded()) return json();
  for (const auto& n : j["nodes"]) {
    for (const auto& p : n["processes"]) {
      if (p["pid"] == pid) return p;
    }
  }
  return json();
}

class LocalityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    port_ = FreePort();
    ASSERT_NE(port_, 0) << "no free port on 127.0.0.1-3";
  }
  void TearDown() override {
    if (HasFailure()) {
      for (auto& n : nodes_) std::cerr << "---- mfsd log\n" << n->Log().substr(0, 20000) << "\n";
    }
    nodes_.clear();
  }
  Mfsd& Node(uint32_t id, std::vector<uint32_t> peers = {},
             std::string toml = "half_life_s = 60\nhistory_interval_s = 0.5\n") {
    nodes_.push_back(std::make_unique<Mfsd>(dir_.path(), id, port_, peers, toml));
    return *nodes_.back();
  }

  TempDir dir_;
  uint16_t port_ = 0;
  std::vector<std::unique_ptr<Mfsd>> nodes_;
};

// The recorder's reports reach mfsd and mfsstat shows the job's bytes per
// node in the proportions it read them (1:2:3 of 6 MiB), within 1 %.
TEST_F(LocalityTest, ReportedInTheProportionsRead) {
  Mfsd& d = Node(1);
  ASSERT_TRUE(d.Start().ok());
  Job job;
  {
    auto rec = RecorderFor(d);
    rec->Record(job.pid(), 1, IoOp::kOpen, 0);
    // Interleaved 64 KiB reads of three files on nodes 1, 2 and 3.
    for (int i = 0; i < 96; ++i) {
      uint32_t node = i % 6 == 0 ? 1 : (i % 6 <= 2 ? 2 : 3);
      rec->Record(job.pid(), node, IoOp::kRead, 64 << 10);
    }
  }  // the destructor flushes
  json p;
  ASSERT_TRUE(WaitFor([&] { return !(p = ProcessOf(d, job.pid())).is_null(); }, 10s));
  double b1 = p["nodes"]["1"]["bytes"], b2 = p["nodes"]["2"]["bytes"],
         b3 = p["nodes"]["3"]["bytes"];
  double total = b1 + b2 + b3;
  ASSERT_GT(total, 0);
  EXPECT_NEAR(b1 / total, 1.0 / 6, 0.01);
  EXPECT_NEAR(b2 / total, 2.0 / 6, 0.01);
  EXPECT_NEAR(b3 / total, 3.0 / 6, 0.01);
  EXPECT_EQ(p["totals"]["3"]["read_bytes"], 48u * 64 * 1024);
  EXPECT_EQ(p["comm"], "sleep");
  EXPECT_EQ(p["where"], 1);
  EXPECT_EQ(p["main_node"], 3);
  EXPECT_NEAR(p["local_pct"].get<double>(), 100.0 / 6, 1.0);
  EXPECT_TRUE(p["alive"].get<bool>());

  // The human table shows it too, within 80 columns.
  CmdResult t = Mfsstat(d, {"--width", "80"});
  ASSERT_EQ(t.exit_code, 0) << t.Describe();
  EXPECT_NE(t.out.find(std::to_string(job.pid())), std::string::npos) << t.out;
  EXPECT_NE(t.out.find("17%"), std::string::npos) << t.out;
  std::istringstream lines(t.out);
  for (std::string l; std::getline(lines, l);) EXPECT_LE(l.size(), 80u) << l;
}

TEST_F(LocalityTest, FiguresHalveAfterOneHalfLife) {
  Mfsd& d = Node(1, {}, "half_life_s = 1.5\nhistory_interval_s = 0.5\n");
  ASSERT_TRUE(d.Start().ok());
  Job job;
  {
    auto rec = RecorderFor(d);
    rec->Record(job.pid(), 2, IoOp::kRead, 10 << 20);
  }
  json a;
  ASSERT_TRUE(WaitFor([&] { return !(a = ProcessOf(d, job.pid())).is_null(); }, 10s));
  auto snap = [&] { return d.Control({{"op", "locality.snapshot"}, {"pid", job.pid()}}); };
  auto s0 = snap();
  ASSERT_TRUE(s0.ok()) << s0.status().ToString();
  std::this_thread::sleep_for(1500ms);
  auto s1 = snap();
  ASSERT_TRUE(s1.ok()) << s1.status().ToString();
  double b0 = (*s0)["processes"][0]["bytes"], b1 = (*s1)["processes"][0]["bytes"];
  double dt = (*s1)["now_ms"].get<double>() - (*s0)["now_ms"].get<double>();
  // Exactly the documented law, and about one half after one half-life.
  EXPECT_NEAR(b1 / b0, std::exp2(-dt / 1500.0), 1e-6);
  EXPECT_NEAR(b1 / b0, 0.5, 0.1) << "dt " << dt << " ms";
  // Raw totals do not decay.
  EXPECT_EQ((*s1)["processes"][0]["total_bytes"], 10u << 20);
}

TEST_F(LocalityTest, ProcessReadingOnlyCachedDataIsShown) {
  Mfsd& d = Node(1);
  ASSERT_TRUE(d.Start().ok());
  Job job;
  {
    auto rec = RecorderFor(d);
    for (int i = 0; i < 10; ++i) rec->Record(job.pid(), 2, IoOp::kRead, 4096, /*from_cache=*/true);
  }
  json p;
  ASSERT_TRUE(WaitFor([&] { return !(p = ProcessOf(d, job.pid())).is_null(); }, 10s));
  EXPECT_NEAR(p["nodes"]["2"]["cached_bytes"].get<double>(), 40960, 50);
  EXPECT_EQ(p["totals"]["2"]["cached_reads"], 10u);
  CmdResult t = Mfsstat(d, {"-P"});
  EXPECT_NE(t.out.find(std::to_string(job.pid())), std::string::npos) << t.out;
  // With the kernel's page cache the client sees only the open: the
  // process is still listed, with its operations and no bytes.
  Job opener;
  {
    auto rec = RecorderFor(d);
    rec->Record(opener.pid(), 3, IoOp::kOpen, 0);
  }
  json o;
  ASSERT_TRUE(WaitFor([&] { return !(o = ProcessOf(d, opener.pid())).is_null(); }, 10s));
  EXPECT_EQ(o["totals"]["3"]["opens"], 1u);
  EXPECT_EQ(o["bytes"], 0.0);
  t = Mfsstat(d, {"-P"});
  EXPECT_NE(t.out.find(std::to_string(opener.pid())), std::string::npos) << t.out;
}

TEST_F(LocalityTest, ProfileAndHistorySurviveARestart) {
  Mfsd& d = Node(1);
  ASSERT_TRUE(d.Start().ok());
  {
    Job job;
    auto rec = RecorderFor(d);
    rec->Record(job.pid(), 1, IoOp::kRead, 3 << 20);
    rec->Record(job.pid(), 2, IoOp::kWrite, 1 << 20);
  }
  auto has_profile = [&](json* out) {
    auto r = d.Control({{"op", "locality.snapshot"}, {"history", true}});
    if (!r.ok()) return false;
    for (const auto& p : (*r)["profiles"]) {
      if (p["exe"].get<std::string>().find("sleep") != std::string::npos && p["bytes"] > 0) {
        *out = *r;
        return true;
      }
    }
    return false;
  };
  json before;
  ASSERT_TRUE(WaitFor([&] { return has_profile(&before); }, 10s));
  // Let at least one history point with the bytes be written.
  ASSERT_TRUE(WaitFor(
      [&] {
        auto r = d.Control({{"op", "locality.snapshot"}, {"history", true}});
        if (!r.ok()) return false;
        for (const auto& h : (*r)["history"]) {
          if (h["local_bytes"] == 3u << 20 && h["remote_bytes"] == 1u << 20) return true;
        }
        return false;
      },
      10s));
  EXPECT_EQ(d.Stop(), 0);
  ASSERT_TRUE(d.Start().ok());
  json after;
  ASSERT_TRUE(has_profile(&after)) << "profile lost across the restart";
  bool found = false;
  for (const auto& p : after["profiles"]) {
    if (p["exe"].get<std::string>().find("sleep") == std::string::npos) continue;
    found = true;
    EXPECT_EQ(p["processes"], 1u);
    EXPECT_EQ(p["main_node"], 1u);
    EXPECT_GT(p["nodes"]["1"]["read_bytes"].get<double>(), 2.9 * (1 << 20));
    EXPECT_GT(p["nodes"]["2"]["write_bytes"].get<double>(), 0.9 * (1 << 20));
  }
  EXPECT_TRUE(found);
  bool point = false;
  for (const auto& h : after["history"]) {
    point |= h["local_bytes"] == 3u << 20 && h["remote_bytes"] == 1u << 20;
  }
  EXPECT_TRUE(point) << "history lost across the restart: " << after["history"].dump();
  // mfsstat's profile table names it.
  CmdResult t = Mfsstat(d, {"-F"});
  EXPECT_NE(t.out.find("sleep"), std::string::npos) << t.out;
}

TEST_F(LocalityTest, CorruptHistoryRecordIsSkippedWithAWarning) {
  Mfsd& d = Node(1);
  ASSERT_TRUE(d.Start().ok());
  ASSERT_TRUE(WaitFor(
      [&] {
        auto r = d.Control({{"op", "locality.snapshot"}, {"history", true}});
        return r.ok() && (*r)["history"].size() >= 2;
      },
      10s));
  EXPECT_EQ(d.Stop(), 0);
  {
    // Plant garbage between valid points, with RocksDB directly.
    rocksdb::DB* raw = nullptr;
    rocksdb::Options o;
    ASSERT_TRUE(rocksdb::DB::Open(o, d.state_dir() + "/db", &raw).ok());
    std::unique_ptr<rocksdb::DB> db(raw);
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), locality::HistoryKey(1000), "not a record").ok());
    std::string v = locality::EncodeHistory(locality::HistoryPoint{2000, 10, 1, 1, 1, 1, 0});
    v[20] ^= 1;
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), locality::HistoryKey(2000), v).ok());
    ASSERT_TRUE(
        db->Put(rocksdb::WriteOptions(), std::string(locality::kProfilePrefix) + "/bad", "xx")
            .ok());
  }
  ASSERT_TRUE(d.Start().ok()) << "a corrupt record must not stop mfsd";
  auto r = d.Control({{"op", "locality.snapshot"}, {"history", true}});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ((*r)["history_skipped"], 2u);
  EXPECT_GE((*r)["history"].size(), 2u);
  EXPECT_NE(d.Log().find("skipping corrupt history record"), std::string::npos);
  EXPECT_NE(d.Log().find("skipping corrupt profile record"), std::string::npos);
  CmdResult html = Mfsstat(d, {"--html", dir_.path() + "/r.html"});
  EXPECT_EQ(html.exit_code, 0) << html.Describe();
}

TEST_F(LocalityTest, HistoryIsBounded) {
  Mfsd& d = Node(1, {}, "history_interval_s = 0.1\nhistory_max_points = 5\n");
  ASSERT_TRUE(d.Start().ok());
  std::this_thread::sleep_for(1500ms);
  auto r = d.Control({{"op", "locality.snapshot"}, {"history", true}, {"history_limit", 1000}});
  ASSERT_TRUE(r.ok());
  EXPECT_GE((*r)["history"].size(), 3u);
  EXPECT_LE((*r)["history"].size(), 5u);
}

TEST_F(LocalityTest, BadInputGetsClearErrors) {
  Mfsd& d = Node(1);
  ASSERT_TRUE(d.Start().ok());
  CmdResult r = Mfsstat(d, {"-p", "4000000"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("no I/O on /mfs recorded for pid 4000000"), std::string::npos) << r.err;
  r = Mfsstat(d, {"-n", "77"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("node 77 is not known"), std::string::npos) << r.err;
  r = Mfsstat(d, {"-n", "300"});
  EXPECT_NE(r.exit_code, 0);
  r = Mfsstat(d, {"--sort", "size"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("unknown sort key"), std::string::npos);
  r = RunCmd({BinDir() + "/mfsstat", "--socket", dir_.path() + "/none.sock"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("is mfsd running?"), std::string::npos) << r.err;
  // Malformed reports are refused, and the daemon stays up.
  auto bad = d.Control({{"op", "locality.report"}, {"entries", {{{"pid", 1}, {"node", 999}}}}});
  EXPECT_EQ(bad.status().code(), EINVAL);
  bad = d.Control({{"op", "locality.snapshot"}, {"pid", "x"}});
  EXPECT_EQ(bad.status().code(), EINVAL);
  EXPECT_TRUE(d.Control({{"op", "ping"}}).ok());
  // Only root (or mfsd's user) may report: another user gets EACCES.
  // (Needs root to switch user, and python3 as the other user's client.)
  if (::geteuid() == 0 && ::access("/usr/bin/python3", X_OK) == 0 &&
      ::access("/usr/bin/setpriv", X_OK) == 0) {
    ::chmod(dir_.path().c_str(), 0711);  // let `nobody` reach the socket
    ::chmod((dir_.path() + "/node1").c_str(), 0711);
    std::string req = R"({"op":"locality.report","entries":[{"pid":1,"node":1,"reads":1}]})";
    CmdResult nobody = RunCmd({"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                               "/usr/bin/python3", "-c",
                               "import socket,sys;s=socket.socket(socket.AF_UNIX);"
                               "s.connect(sys.argv[1]);s.sendall(sys.argv[2].encode()+b'\\n');"
                               "print(s.recv(4096).decode())",
                               d.socket(), req});
    ASSERT_EQ(nobody.exit_code, 0) << nobody.Describe();
    EXPECT_NE(nobody.out.find("\"errno\":13"), std::string::npos) << nobody.out;
  }
}

// Three nodes: -a shows every node's processes; a node that stops answering
// is reported and the others are still shown.
TEST_F(LocalityTest, ClusterWideViewReportsANodeThatDoesNotAnswer) {
  Mfsd& n1 = Node(1, {2, 3});
  Mfsd& n2 = Node(2, {1, 3});
  Mfsd& n3 = Node(3, {1, 2});
  ASSERT_TRUE(n1.Start().ok());
  ASSERT_TRUE(n2.Start().ok());
  ASSERT_TRUE(n3.Start().ok());
  auto alive = [&](const Mfsd& n, int want) {
    auto s = n.Control({{"op", "status"}});
    if (!s.ok()) return false;
    int a = 0;
    for (const auto& p : (*s)["peers"]) a += p["state"] == "alive";
    return a == want;
  };
  ASSERT_TRUE(WaitFor([&] { return alive(n1, 2); }, 15s)) << "nodes did not see each other";
  Job job;
  {
    auto r1 = RecorderFor(n1);
    auto r2 = RecorderFor(n2);
    r1->Record(job.pid(), 2, IoOp::kRead, 2 << 20);
    r2->Record(job.pid(), 1, IoOp::kRead, 1 << 20);  // the same pid, seen from node 2
  }
  CmdResult r;
  ASSERT_TRUE(WaitFor(
      [&] {
        r = Mfsstat(n1, {"-a", "--json"});
        json j = json::parse(r.out, nullptr, false);
        return !j.is_discarded() && j["nodes"].size() == 3 && !j["nodes"][0]["processes"].empty() &&
               !j["nodes"][1]["processes"].empty();
      },
      10s))
      << r.Describe() << r.out;
  r = Mfsstat(n1, {"-a", "-N"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_NE(r.out.find("node 2 served: sleep[" + std::to_string(job.pid()) + "]@1 2.0M"),
            std::string::npos)
      << r.out;

  n3.Kill();
  ASSERT_TRUE(WaitFor([&] { return alive(n1, 1); }, 15s));
  r = Mfsstat(n1, {"-a"});
  EXPECT_EQ(r.exit_code, 2) << "a missing node is reported in the exit status";
  EXPECT_NE(r.out.find("node 3 did not answer"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(std::to_string(job.pid())), std::string::npos) << r.out;
  json j = json::parse(Mfsstat(n1, {"-a", "--json"}).out, nullptr, false);
  ASSERT_FALSE(j.is_discarded());
  EXPECT_EQ(j["nodes"].size(), 2u);
  ASSERT_EQ(j["unreachable"].size(), 1u);
  EXPECT_EQ(j["unreachable"][0]["node"], 3);
}

std::optional<std::string> Missing(const char* tool) {
  CmdResult r = RunCmd({"sh", "-c", std::string("command -v ") + tool}, 10s);
  if (r.exit_code != 0) return std::string(tool) + " is not installed";
  return std::nullopt;
}

// mfsmon in a real terminal (tmux): draws every node, says when the
// terminal is too small, and q / Ctrl-C exit cleanly, restoring the screen.
TEST_F(LocalityTest, MfsmonInARealTerminal) {
  if (auto why = Missing("tmux")) GTEST_SKIP() << *why;
  Mfsd& n1 = Node(1, {2});
  Mfsd& n2 = Node(2, {1});
  ASSERT_TRUE(n1.Start().ok());
  ASSERT_TRUE(n2.Start().ok());
  std::string server = "mfs-loc-" + std::to_string(::getpid());
  auto tmux = [&](std::vector<std::string> args) {
    std::vector<std::string> argv{"tmux", "-L", server, "-f", "/dev/null"};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunCmd(argv, 20s);
  };
  struct KillServer {
    std::function<void()> f;
    ~KillServer() { f(); }
  } cleanup{[&] { tmux({"kill-server"}); }};
  auto capture = [&] { return tmux({"capture-pane", "-p", "-t", "mon"}).out; };
  for (const char* key : {"q", "C-c"}) {
    std::string cmd = "LANG=C.UTF-8 " + BinDir() + "/mfsmon --socket " + n1.socket() +
                      " -d 0.3; echo mfsmon-exit=$?; sleep 60";
    CmdResult s = tmux({"new-session", "-d", "-s", "mon", "-x", "100", "-y", "30", cmd});
    ASSERT_EQ(s.exit_code, 0) << s.Describe();
    std::string screen;
    ASSERT_TRUE(WaitFor(
        [&] {
          screen = capture();
          return screen.find("mfsmon") != std::string::npos &&
                 screen.find("   2 ") != std::string::npos;
        },
        10s))
        << screen;
    EXPECT_NE(screen.find("   1 "), std::string::npos) << screen;
    EXPECT_NE(screen.find("LOAD/CPU"), std::string::npos) << screen;
    if (std::string(key) == "q") {
      // Shrink the window: it must say so instead of drawing garbage.
      tmux({"resize-window", "-t", "mon", "-x", "40", "-y", "10"});
      EXPECT_TRUE(WaitFor([&] { return capture().find("too small") != std::string::npos; }, 5s))
          << capture();
      tmux({"resize-window", "-t", "mon", "-x", "100", "-y", "30"});
      // Node 2 goes away: shown as not answering.
      n2.Kill();
      EXPECT_TRUE(
          WaitFor([&] { return capture().find("2 not answering") != std::string::npos; }, 10s))
          << capture();
    }
    tmux({"send-keys", "-t", "mon", key});
    ASSERT_TRUE(WaitFor(
        [&] {
          screen = capture();
          return screen.find("mfsmon-exit=0") != std::string::npos;
        },
        5s))
        << "mfsmon did not exit on " << key << ":\n"
        << screen;
    // The alternate screen is gone: the monitor's lines no longer show.
    EXPECT_EQ(screen.find("LOAD/CPU"), std::string::npos) << screen;
    // The terminal is back in canonical echo mode.
    CmdResult stty = tmux({"send-keys", "-t", "mon", "C-c", ""});
    (void)stty;
    tmux({"kill-session", "-t", "mon"});
  }
}

// The HTML report rendered by headless Chromium: both charts are in the DOM.
TEST_F(LocalityTest, HtmlReportRendersInChromium) {
  std::string chromium;
  for (const char* c : {"chromium", "chromium-browser", "google-chrome"}) {
    if (!Missing(c)) {
      chromium = c;
      break;
    }
  }
  if (chromium.empty()) GTEST_SKIP() << "chromium is not installed (apt-get install chromium)";
  Mfsd& d = Node(1, {}, "history_interval_s = 0.2\n");
  ASSERT_TRUE(d.Start().ok());
  Job job;
  {
    auto rec = RecorderFor(d);
    rec->Record(job.pid(), 1, IoOp::kRead, 1 << 20);
    rec->Record(job.pid(), 2, IoOp::kRead, 3 << 20);
  }
  ASSERT_TRUE(WaitFor(
      [&] {
        auto r = d.Control({{"op", "locality.snapshot"}, {"history", true}});
        return r.ok() && (*r)["history"].size() >= 6 && !(*r)["processes"].empty();
      },
      10s));
  std::string page = dir_.path() + "/report.html";
  CmdResult m = Mfsstat(d, {"--html", page});
  ASSERT_EQ(m.exit_code, 0) << m.Describe();
  std::string profile = dir_.path() + "/chromium-profile";
  std::vector<std::string> base{chromium,
                                "--headless",
                                "--no-sandbox",
                                "--disable-gpu",
                                "--disable-background-networking",
                                "--disable-component-update",
                                "--disable-sync",
                                "--no-first-run",
                                "--user-data-dir=" + profile};
  auto dom_args = base;
  dom_args.push_back("--dump-dom");
  dom_args.push_back("file://" + page);
  CmdResult dom = RunCmd(dom_args, 90s);
  ASSERT_EQ(dom.exit_code, 0) << dom.Describe();
  EXPECT_NE(dom.out.find("<svg id=\"heatmap\""), std::string::npos) << dom.out.substr(0, 2000);
  EXPECT_NE(dom.out.find("class=\"cell\""), std::string::npos);
  EXPECT_NE(dom.out.find("<polyline id=\"local-line\""), std::string::npos);
  EXPECT_NE(dom.out.find("sleep [" + std::to_string(job.pid()) + "]"), std::string::npos);
  auto shot_args = base;
  std::string shot = dir_.path() + "/report.png";
  shot_args.push_back("--screenshot=" + shot);
  shot_args.push_back("--window-size=1000,900");
  shot_args.push_back("file://" + page);
  CmdResult s = RunCmd(shot_args, 90s);
  ASSERT_EQ(s.exit_code, 0) << s.Describe();
  std::error_code ec;
  EXPECT_GT(fs::file_size(shot, ec), 10000u) << "screenshot missing or blank";
  if (const char* keep = getenv("MFS_KEEP_SCREENSHOT"))
    fs::copy_file(shot, keep, fs::copy_options::overwrite_existing, ec);
}

}  // namespace
}  // namespace mfs::testing

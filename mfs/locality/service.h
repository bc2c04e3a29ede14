// LocalityService: mfsd's keeper of I/O locality (issue 5).
//
// Receives the deltas that the /mfs client's IoRecorder sends
// ("locality.report"), keeps per-process and per-program figures with
// exponential decay (LocalityModel), writes a bounded history of local vs
// remote bytes to the state database and answers "locality.snapshot" for
// mfsstat and mfsmon — for this node, or for the whole cluster by asking
// every peer with a kLocalityQuery frame (docs/wire.md).
//
// Control ops (one JSON line each way, see man/mfsstat.1):
//   locality.report   {"entries":[...]}               -> {"accepted":N, "accounting":bool}
//   locality.accounting {"enable":bool?}     -> {"accounting":bool, "client":bool|null}
//     "client": what the /mfs client said it did at its last report (null
//     before the first report).
//     The run-time switch of I/O accounting on this node's /mfs client (the
//     client learns it from the reply to its next report, within one flush
//     interval). Changing it needs root or mfsd's user.
//   locality.snapshot {"pid":N?, "history":bool?, "history_limit":N?,
//                      "all":bool?}
//     this node:  {"node":id, "half_life_s":h, "now_ms":t, "host":{...},
//                  "processes":[...], "by_node":{...}, "profiles":[...],
//                  "history":[...], "history_skipped":n}
//     all:        {"nodes":[<this node's reply>...], "unreachable":[{"node":id,
//                  "address":a, "error":msg}...]}
//   An unknown pid is ENOENT.
//
// Where a process runs comes from the daemon's "proc.where" op (the
// migration service); an mfsd without it answers EOPNOTSUPP and every
// process then runs here.
//
// Configuration, section [locality] of mfsd.toml (see man/mfsd.toml.5):
//   half_life_s         60     decay half-life of every figure (> 0, may be fractional)
//   history_interval_s  10     one history point per interval
//   history_max_points  8640   oldest points beyond this are deleted
//   history_ttl_s       604800 points older than this are deleted
//   rate_window_s       5      window of the "current MB/s" figure
//   max_processes       4096   processes kept in memory (oldest dropped)
//   accounting          true   whether the /mfs client counts I/O at start
//
// Threads: control ops and frames arrive on io threads and only touch the
// in-memory model under mu_; every database access runs on the daemon's
// blocking() pool. Thread-safe. Lock order: mu_ is a leaf.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <vector>

#include "mfs/base/asio.h"
#include "mfs/base/status.h"
#include "mfs/locality/model.h"
#include "mfs/node/config.h"

namespace mfs::node {
class Daemon;
}

namespace mfs::locality {

// Peer-to-peer query: payload is a locality.snapshot request (JSON text,
// without "all"); the reply payload is that node's snapshot (JSON text).
inline constexpr uint16_t kFrameLocalityQuery = 40;

struct LocalityOptions {
  double half_life_s = 60;
  double history_interval_s = 10;
  uint64_t history_max_points = 8640;
  uint64_t history_ttl_s = 7 * 86400;
  double rate_window_s = 5;
  uint64_t max_processes = 4096;
  bool accounting = true;
  std::chrono::milliseconds peer_timeout{3000};
};

// Reads [locality] from the daemon's config; errors name the key.
Result<LocalityOptions> LoadLocalityOptions(const node::Config& config);

class LocalityService {
 public:
  // Loads profiles and the history index from the state database and
  // registers the ops, the frame handler and a shutdown hook on `daemon`.
  // REQUIRES: daemon.Start() succeeded and daemon.Run() has not begun.
  static Result<std::unique_ptr<LocalityService>> Create(node::Daemon& daemon);
  // Waits for its database work, then saves the profiles and the last
  // history point.
  ~LocalityService();
  LocalityService(const LocalityService&) = delete;
  LocalityService& operator=(const LocalityService&) = delete;

  const LocalityOptions& options() const { return o_; }

 private:
  using Reply = std::function<void(Result<nlohmann::json>)>;

  LocalityService(node::Daemon& daemon, LocalityOptions o);
  Status Load();
  void Register();

  Result<nlohmann::json> OnReport(const nlohmann::json& req);
  void OnSnapshot(const nlohmann::json& req, Reply reply);
  // This node's snapshot.
  void LocalSnapshot(const nlohmann::json& req, Reply reply);
  void ClusterSnapshot(const nlohmann::json& req, Reply reply);
  // Asks proc.where for each pid, then calls done (on some thread).
  void RefreshWhere(std::vector<pid_t> pids, std::function<void()> done);
  void ScheduleTick();
  void Tick();
  // Writes a history point, prunes, saves dirty profiles. Runs on blocking().
  void Persist(const HistoryPoint& h, std::vector<std::pair<std::string, std::string>> profiles);
  nlohmann::json ReadHistory(size_t limit, uint64_t* skipped);
  // Posts fn to blocking(), counted so the destructor can wait for it.
  void Post(std::function<void()> fn);
  int64_t NowMs() const;

  node::Daemon& daemon_;
  LocalityOptions o_;
  std::atomic<bool> accounting_;
  std::atomic<int> client_accounting_{-1};  // -1 unknown, else 0/1
  boost::asio::steady_timer timer_;

  std::mutex mu_;
  LocalityModel model_;                    // GUARDED_BY(mu_)
  uint64_t history_count_ = 0;             // GUARDED_BY(mu_)
  uint64_t deleted_since_compaction_ = 0;  // GUARDED_BY(mu_)
  bool stopping_ = false;                  // GUARDED_BY(mu_)

  std::mutex inflight_mu_;
  std::condition_variable inflight_cv_;
  int inflight_ = 0;  // GUARDED_BY(inflight_mu_)
};

}  // namespace mfs::locality

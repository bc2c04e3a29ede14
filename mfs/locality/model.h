// LocalityModel: the figures LocalityService keeps, without any I/O.
//
// For every process that did I/O on /mfs from this node, and for every node
// owning files it touched: bytes read and written, operations and cached
// reads, both as raw totals since the process was first seen and as
// exponentially decayed figures. A decayed figure loses half its value every
// half-life (value(t) = value(t0) * 2^-((t - t0) / half_life)), so it shows
// what a process does lately rather than over its whole life. The same
// decayed figures are kept per program (executable) as its profile, which
// outlives the processes and survives restarts (see codec.h).
//
// Every call takes `now_ms` (wall-clock milliseconds), so tests control time.
// Not thread-safe: LocalityService guards it with its mutex.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "mfs/locality/report.h"

namespace mfs::locality {

// One exponentially decayed quantity.
struct Decayed {
  double value = 0;
  int64_t t_ms = 0;  // when `value` was exact

  double At(int64_t now_ms, double half_life_ms) const;
  void Add(double x, int64_t now_ms, double half_life_ms);
};

struct DecayedCounters {
  Decayed read_bytes, write_bytes, ops, cached_bytes;

  void Add(const Counters& c, int64_t now_ms, double half_life_ms);
  nlohmann::json ToJson(int64_t now_ms, double half_life_ms) const;
  double Bytes(int64_t now_ms, double half_life_ms) const {
    return read_bytes.At(now_ms, half_life_ms) + write_bytes.At(now_ms, half_life_ms);
  }
};

struct ProcessState {
  pid_t pid = 0;
  uint64_t start = 0;
  std::string comm, exe;
  uint32_t where = 0;  // node where it runs, last known (0 = this node)
  // Its identity for the user: a migrated process (a guest here) is its
  // home node's pid. 0: this node / its own pid.
  uint32_t home = 0;
  pid_t home_pid = 0;
  int64_t first_ms = 0, last_ms = 0;
  std::map<uint32_t, DecayedCounters> decayed;      // by owner node
  std::map<uint32_t, Counters> totals;              // by owner node, raw
  std::deque<std::pair<int64_t, uint64_t>> recent;  // (time, bytes) for the rate
};

struct Profile {
  std::string exe;
  uint64_t processes = 0;  // distinct processes seen running it
  int64_t last_ms = 0;
  std::map<uint32_t, DecayedCounters> decayed;  // by owner node
  bool dirty = false;                           // changed since last saved
};

// Bytes moved in one history interval, split by whether the file was on the
// node where the process runs.
struct HistoryPoint {
  int64_t t_ms = 0;  // end of the interval
  int64_t interval_ms = 0;
  uint64_t local_read = 0, local_write = 0, remote_read = 0, remote_write = 0;
  uint64_t cached = 0;
  uint64_t local() const { return local_read + local_write; }
  uint64_t remote() const { return remote_read + remote_write; }
};

inline constexpr uint32_t kKeepHome = UINT32_MAX;

struct ModelOptions {
  uint32_t self = 0;  // this node's id
  double half_life_ms = 60'000;
  int64_t rate_window_ms = 5'000;
  size_t max_processes = 4096;
};

class LocalityModel {
 public:
  explicit LocalityModel(ModelOptions o) : o_(std::move(o)) {}

  // Adds a report's deltas, received at now_ms.
  void Apply(const Batch& batch, int64_t now_ms);
  // Sets where process `pid` runs and its home identity (from proc.where;
  // home 0 / home_pid 0: this node, its own pid; home kKeepHome: keep the
  // identity known so far).
  void SetWhere(pid_t pid, uint32_t node, uint32_t home = 0, pid_t home_pid = 0);
  // Process `pid` started at `start` is a migrated process: home node
  // `home`, home pid `home_pid` (told by its guest supervisor before it
  // runs). Applied now if the process is known, else when it first shows.
  void SetIdentity(pid_t pid, uint64_t start, uint32_t home, pid_t home_pid);
  // Pids of processes seen in the last `window_ms`.
  std::vector<pid_t> ActivePids(int64_t now_ms, int64_t window_ms) const;

  // Takes the bytes accumulated since the previous call as a history point.
  HistoryPoint TakeHistoryPoint(int64_t now_ms);

  // Drops processes whose decayed figures are negligible and that were not
  // seen for 20 half-lives, then the oldest beyond max_processes.
  void Expire(int64_t now_ms);

  // JSON views (see LocalityService for the reply layout).
  nlohmann::json ProcessJson(const ProcessState& p, int64_t now_ms) const;
  nlohmann::json ProfileJson(const Profile& p, int64_t now_ms) const;
  nlohmann::json ByNodeJson(int64_t now_ms) const;

  const std::map<pid_t, ProcessState>& processes() const { return procs_; }
  std::map<std::string, Profile>& profiles() { return profiles_; }
  const ModelOptions& options() const { return o_; }
  uint32_t WhereOf(const ProcessState& p) const { return p.where ? p.where : o_.self; }

 private:
  ModelOptions o_;
  std::map<pid_t, ProcessState> procs_;
  std::map<std::string, Profile> profiles_;
  struct Identity {
    uint64_t start;
    uint32_t home;
    pid_t home_pid;
  };
  std::map<pid_t, Identity> identities_;  // at most max_processes
  HistoryPoint current_;
  int64_t interval_start_ms_ = 0;
};

// Which node holds most of the bytes in `per_node`, and the share (0..100)
// of bytes on node `local`.
struct Split {
  uint32_t main_node = 0;
  double local_pct = 0;
  double total = 0;
};
Split SplitOf(const std::map<uint32_t, DecayedCounters>& per_node, uint32_t local, int64_t now_ms,
              double half_life_ms);

}  // namespace mfs::locality

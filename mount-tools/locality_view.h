// The locality view shared by mfsstat and mfsmon: fetches snapshots from
// the local mfsd ("locality.snapshot", one node or the whole cluster) and
// turns them into tables, the HTML report and mfsmon's screen. Rendering
// does no I/O, so it is tested on canned snapshots. Values; not thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "mfs/base/status.h"

namespace mfs::tools {

struct ClusterView {
  std::vector<nlohmann::json> nodes;        // one locality.snapshot reply per node
  std::vector<nlohmann::json> unreachable;  // {"node","address","error"}
  nlohmann::json ToJson() const;
};

struct FetchOptions {
  std::string socket;
  bool all = false;
  std::optional<uint32_t> pid;
  bool history = false;
  uint32_t history_limit = 360;
};
Result<ClusterView> FetchView(const FetchOptions& o);

enum class SortKey { kBytes, kLocal, kRate, kPid, kCommand, kNode };
Result<SortKey> ParseSortKey(const std::string& s);

struct Filter {
  std::optional<uint32_t> node;  // processes running on, and nodes equal to, this node
  std::string command;           // substring of comm or exe
  double min_bytes = 0;
  SortKey sort = SortKey::kBytes;
  bool reverse = false;
  size_t top = 0;  // 0 = all
  int width = 80;
};

// A process row, flattened from a node snapshot.
struct ProcRow {
  uint32_t reporter = 0;  // the node whose mfsd keeps it
  uint32_t pid = 0;       // its home pid (a migrated process is known by it)
  uint32_t home = 0;      // its home node (0: unknown, taken as `reporter`)
  std::string comm, exe;
  uint32_t where = 0, main_node = 0;
  double bytes = 0, local_pct = 0, rate_bps = 0, cached = 0;
  bool alive = false;
  std::map<uint32_t, double> per_node;  // decayed bytes by owner node
};
std::vector<ProcRow> Processes(const ClusterView& v, const Filter& f);

// Every node id the view knows of (answering, unreachable, or holding data).
std::vector<uint32_t> KnownNodes(const ClusterView& v);

std::string RenderProcesses(const ClusterView& v, const Filter& f);
std::string RenderNodes(const ClusterView& v, const Filter& f);
std::string RenderProfiles(const ClusterView& v, const Filter& f);
std::string RenderUnreachable(const ClusterView& v);
// The self-contained HTML page (inline CSS and SVG, no external resources).
std::string RenderHtml(const ClusterView& v, const Filter& f);
// mfsmon's screen for a terminal of cols x rows (lines joined by "\r\n").
std::string RenderMonitor(const ClusterView& v, int cols, int rows, double interval_s);

// "1.5M": short human size for tight columns.
std::string ShortBytes(double bytes);

}  // namespace mfs::tools

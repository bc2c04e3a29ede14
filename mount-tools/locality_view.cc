#include "mount-tools/locality_view.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <set>

#include "mfs/control/client.h"
#include "mount-tools/table.h"

namespace mfs::tools {

using nlohmann::json;

namespace {

double Num(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number()) return 0;
  return it->get<double>();
}

uint32_t U32(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number_integer()) return 0;
  int64_t v = it->get<int64_t>();
  return v < 0 || v > UINT32_MAX ? 0 : static_cast<uint32_t>(v);
}

std::string Str(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) return "";
  return it->get<std::string>();
}

std::string Pct(double p) {
  char buf[16];
  snprintf(buf, sizeof buf, "%.0f%%", p);
  return buf;
}

std::string Rate(double bps) {
  char buf[32];
  double mb = bps / 1e6;
  if (mb == 0) return "0";
  if (mb < 0.05) return "<0.1";
  snprintf(buf, sizeof buf, mb < 100 ? "%.1f" : "%.0f", mb);
  return buf;
}

// "cat[4242]" truncated to n characters.
std::string Fit(std::string s, size_t n) {
  if (s.size() <= n) return s;
  if (n <= 1) return s.substr(0, n);
  return s.substr(0, n - 1) + "~";
}

// Keeps the tail of a path ("~/bin/long/prog").
std::string FitLeft(const std::string& s, size_t n) {
  if (s.size() <= n) return s;
  return "~" + s.substr(s.size() - (n - 1));
}

// "1:1.0M 2:3.0M ..." within `budget` characters.
std::string PerNode(const std::map<uint32_t, double>& m, size_t budget) {
  std::string out;
  size_t shown = 0;
  for (const auto& [node, b] : m) {
    std::string item = std::to_string(node) + ":" + ShortBytes(b);
    std::string more = " +" + std::to_string(m.size() - shown);
    if (out.size() + 1 + item.size() > budget) {
      if (out.size() + more.size() <= budget) out += more;
      break;
    }
    if (!out.empty()) out += " ";
    out += item;
    ++shown;
  }
  return out;
}

std::string HtmlEscape(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '<':
        o += "&lt;";
        break;
      case '>':
        o += "&gt;";
        break;
      case '&':
        o += "&amp;";
        break;
      case '"':
        o += "&quot;";
        break;
      case '\'':
        o += "&#39;";
        break;
      default:
        o += c;
    }
  }
  return o;
}

std::string Fmt(const char* f, double v) {
  char buf[64];
  snprintf(buf, sizeof buf, f, v);
  return buf;
}

// Display columns of a UTF-8 string (every code point counts one).
size_t Columns(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

}  // namespace

std::string ShortBytes(double b) {
  static const char* kUnits[] = {"B", "K", "M", "G", "T", "P"};
  int u = 0;
  // 1000 and up goes to the next unit, so a value never takes 5 digits.
  while (b >= 1000 && u < 5) {
    b /= 1024;
    ++u;
  }
  char buf[32];
  if (u == 0) {
    snprintf(buf, sizeof buf, "%.0fB", b);
  } else {
    snprintf(buf, sizeof buf, b < 10 ? "%.1f%s" : "%.0f%s", b, kUnits[u]);
  }
  return buf;
}

json ClusterView::ToJson() const { return json{{"nodes", nodes}, {"unreachable", unreachable}}; }

Result<ClusterView> FetchView(const FetchOptions& o) {
  json req{{"op", "locality.snapshot"}, {"history", o.history}, {"history_limit", o.history_limit}};
  if (o.all) req["all"] = true;
  if (o.pid) req["pid"] = *o.pid;
  MFS_ASSIGN_OR_RETURN(json r, control::Call(control::SocketPath(o.socket), req, 15000));
  ClusterView v;
  if (o.all) {
    if (!r.contains("nodes") || !r["nodes"].is_array()) {
      return Status::Corruption("mfsd answered locality.snapshot without \"nodes\"");
    }
    for (auto& n : r["nodes"]) v.nodes.push_back(n);
    if (r.contains("unreachable") && r["unreachable"].is_array()) {
      for (auto& u : r["unreachable"]) v.unreachable.push_back(u);
    }
  } else {
    r.erase("ok");
    v.nodes.push_back(std::move(r));
  }
  return v;
}

Result<SortKey> ParseSortKey(const std::string& s) {
  if (s == "bytes") return SortKey::kBytes;
  if (s == "local") return SortKey::kLocal;
  if (s == "rate") return SortKey::kRate;
  if (s == "pid") return SortKey::kPid;
  if (s == "command" || s == "cmd") return SortKey::kCommand;
  if (s == "node") return SortKey::kNode;
  return Status::InvalidArgument("unknown sort key '" + s +
                                 "' (use bytes, local, rate, pid, command or node)");
}

std::vector<ProcRow> Processes(const ClusterView& v, const Filter& f) {
  std::vector<ProcRow> rows;
  for (const json& n : v.nodes) {
    uint32_t reporter = U32(n, "node");
    if (!n.contains("processes") || !n["processes"].is_array()) continue;
    for (const json& p : n["processes"]) {
      ProcRow r;
      r.reporter = reporter;
      r.pid = p.contains("home_pid") ? U32(p, "home_pid") : U32(p, "pid");
      r.home = U32(p, "home");
      r.comm = Str(p, "comm");
      r.exe = Str(p, "exe");
      r.where = U32(p, "where");
      r.main_node = U32(p, "main_node");
      r.bytes = Num(p, "bytes");
      r.local_pct = Num(p, "local_pct");
      r.rate_bps = Num(p, "rate_bps");
      r.alive = p.value("alive", false);
      if (p.contains("nodes") && p["nodes"].is_object()) {
        for (auto it = p["nodes"].begin(); it != p["nodes"].end(); ++it) {
          uint32_t id = static_cast<uint32_t>(std::strtoul(it.key().c_str(), nullptr, 10));
          r.per_node[id] = Num(it.value(), "bytes");
          r.cached += Num(it.value(), "cached_bytes");
        }
      }
      if (f.node && r.where != *f.node) continue;
      if (!f.command.empty() && r.comm.find(f.command) == std::string::npos &&
          r.exe.find(f.command) == std::string::npos) {
        continue;
      }
      if (r.bytes < f.min_bytes) continue;
      rows.push_back(std::move(r));
    }
  }
  auto key_less = [&](const ProcRow& a, const ProcRow& b) {
    switch (f.sort) {
      case SortKey::kBytes:
        return a.bytes > b.bytes;
      case SortKey::kLocal:
        return a.local_pct > b.local_pct;
      case SortKey::kRate:
        return a.rate_bps > b.rate_bps;
      case SortKey::kPid:
        return std::tie(a.pid, a.reporter) < std::tie(b.pid, b.reporter);
      case SortKey::kCommand:
        return a.comm < b.comm;
      case SortKey::kNode:
        return std::tie(a.where, a.pid) < std::tie(b.where, b.pid);
    }
    return false;
  };
  std::stable_sort(rows.begin(), rows.end(), key_less);
  if (f.reverse) std::reverse(rows.begin(), rows.end());
  if (f.top && rows.size() > f.top) rows.resize(f.top);
  return rows;
}

std::vector<uint32_t> KnownNodes(const ClusterView& v) {
  std::set<uint32_t> ids;
  for (const json& n : v.nodes) {
    ids.insert(U32(n, "node"));
    if (n.contains("by_node") && n["by_node"].is_object()) {
      for (auto it = n["by_node"].begin(); it != n["by_node"].end(); ++it) {
        ids.insert(static_cast<uint32_t>(std::strtoul(it.key().c_str(), nullptr, 10)));
      }
    }
  }
  for (const json& u : v.unreachable) ids.insert(U32(u, "node"));
  ids.erase(0);
  return {ids.begin(), ids.end()};
}

std::string RenderProcesses(const ClusterView& v, const Filter& f) {
  auto rows = Processes(v, f);
  if (rows.empty()) return "no processes with I/O on /mfs\n";
  // Fixed columns take about 52 characters; the per-node list gets the rest.
  Table t({"PID", "COMMAND", "ON", "DATA", "LOCAL", "MB/S", "BYTES", "PER NODE"});
  size_t budget = f.width > 60 ? static_cast<size_t>(f.width) - 55 : 8;
  bool exited = false;
  for (const auto& r : rows) {
    exited |= !r.alive;
    std::string cmd = Fit(r.comm, 12) + (r.alive ? "" : "*");
    // A migrated process: "HOME:PID", its identity on its home node.
    std::string pid = r.home && r.home != r.reporter
                          ? std::to_string(r.home) + ":" + std::to_string(r.pid)
                          : std::to_string(r.pid);
    t.AddRow({pid, cmd, std::to_string(r.where), r.main_node ? std::to_string(r.main_node) : "-",
              Pct(r.local_pct), Rate(r.rate_bps), ShortBytes(r.bytes),
              PerNode(r.per_node, budget)});
  }
  return t.Render() + (exited ? "* the process has exited\n" : "");
}

std::string RenderNodes(const ClusterView& v, const Filter& f) {
  // For each node: I/O issued by processes running there, and bytes its
  // files served, to which nodes and processes.
  struct NodeRow {
    double issued = 0, issued_local = 0, rate = 0, served = 0;
    std::map<uint32_t, double> served_to;                      // by the reader's node
    std::vector<std::pair<double, std::string>> served_procs;  // (bytes, "cmd[pid]@n")
  };
  std::map<uint32_t, NodeRow> nodes;
  for (uint32_t id : KnownNodes(v)) nodes[id];
  Filter all;
  for (const auto& p : Processes(v, all)) {
    NodeRow& on = nodes[p.where];
    on.issued += p.bytes;
    on.rate += p.rate_bps;
    for (const auto& [owner, b] : p.per_node) {
      if (owner == p.where) on.issued_local += b;
      NodeRow& o = nodes[owner];
      o.served += b;
      o.served_to[p.where] += b;
      if (b > 0) {
        o.served_procs.emplace_back(
            b, Fit(p.comm, 10) + "[" + std::to_string(p.pid) + "]@" + std::to_string(p.where));
      }
    }
  }
  std::set<uint32_t> unreachable;
  for (const json& u : v.unreachable) unreachable.insert(U32(u, "node"));
  Table t({"NODE", "ISSUED", "LOCAL", "MB/S", "SERVED", "SERVED TO NODES"});
  std::vector<std::string> tops;
  size_t budget = f.width > 50 ? static_cast<size_t>(f.width) - 44 : 8;
  for (auto& [id, n] : nodes) {
    if (f.node && id != *f.node) continue;
    std::string name = std::to_string(id) + (unreachable.count(id) ? "?" : "");
    t.AddRow({name, ShortBytes(n.issued), n.issued > 0 ? Pct(100 * n.issued_local / n.issued) : "-",
              Rate(n.rate), ShortBytes(n.served), PerNode(n.served_to, budget)});
    std::sort(n.served_procs.rbegin(), n.served_procs.rend());
    std::string top;
    for (const auto& [b, who] : n.served_procs) {
      std::string item = who + " " + ShortBytes(b);
      if (top.size() + item.size() + 2 > static_cast<size_t>(std::max(20, f.width - 12))) break;
      top += (top.empty() ? "" : ", ") + item;
    }
    if (!top.empty()) tops.push_back("  node " + std::to_string(id) + " served: " + top);
  }
  std::string out = t.Render();
  for (const auto& l : tops) out += l + "\n";
  return out;
}

std::string RenderProfiles(const ClusterView& v, const Filter& f) {
  struct Prof {
    double bytes = 0, processes = 0;
    std::map<uint32_t, double> per_node;
  };
  std::map<std::string, Prof> profs;
  for (const json& n : v.nodes) {
    if (!n.contains("profiles") || !n["profiles"].is_array()) continue;
    for (const json& p : n["profiles"]) {
      std::string exe = Str(p, "exe");
      if (!f.command.empty() && exe.find(f.command) == std::string::npos) continue;
      Prof& pr = profs[exe];
      pr.bytes += Num(p, "bytes");
      pr.processes += Num(p, "processes");
      if (p.contains("nodes") && p["nodes"].is_object()) {
        for (auto it = p["nodes"].begin(); it != p["nodes"].end(); ++it) {
          pr.per_node[static_cast<uint32_t>(std::strtoul(it.key().c_str(), nullptr, 10))] +=
              Num(it.value(), "bytes");
        }
      }
    }
  }
  if (profs.empty()) return "no program profiles\n";
  std::vector<std::pair<std::string, Prof>> rows(profs.begin(), profs.end());
  std::stable_sort(rows.begin(), rows.end(),
                   [](const auto& a, const auto& b) { return a.second.bytes > b.second.bytes; });
  if (f.top && rows.size() > f.top) rows.resize(f.top);
  Table t({"PROGRAM", "PROCS", "BYTES", "MAIN", "PER NODE"});
  size_t budget = f.width > 60 ? static_cast<size_t>(f.width) - 50 : 8;
  for (const auto& [exe, p] : rows) {
    uint32_t main = 0;
    double best = -1;
    for (const auto& [n, b] : p.per_node) {
      if (b > best) {
        best = b;
        main = n;
      }
    }
    t.AddRow({FitLeft(exe, 26), Fmt("%.0f", p.processes), ShortBytes(p.bytes),
              main ? std::to_string(main) : "-", PerNode(p.per_node, budget)});
  }
  return t.Render();
}

std::string RenderUnreachable(const ClusterView& v) {
  std::string out;
  for (const json& u : v.unreachable) {
    uint32_t id = U32(u, "node");
    out += "node " + (id ? std::to_string(id) : Str(u, "address")) +
           " did not answer: " + Str(u, "error") + "\n";
  }
  return out;
}

namespace {

struct SeriesPoint {
  double t_s = 0;  // seconds since the epoch
  double local_bps = 0, remote_bps = 0;
};

std::vector<SeriesPoint> ClusterSeries(const ClusterView& v) {
  // Points of different nodes are summed per history interval.
  double bucket_ms = 0;
  for (const json& n : v.nodes)
    bucket_ms = std::max(bucket_ms, 1000 * Num(n, "history_interval_s"));
  if (bucket_ms <= 0) bucket_ms = 10000;
  std::map<int64_t, std::pair<double, double>> sum;  // bucket -> (local, remote) bytes
  for (const json& n : v.nodes) {
    if (!n.contains("history") || !n["history"].is_array()) continue;
    for (const json& h : n["history"]) {
      int64_t b = static_cast<int64_t>(std::llround(Num(h, "t_ms") / bucket_ms));
      sum[b].first += Num(h, "local_bytes");
      sum[b].second += Num(h, "remote_bytes");
    }
  }
  std::vector<SeriesPoint> out;
  for (const auto& [b, lr] : sum) {
    out.push_back(SeriesPoint{static_cast<double>(b) * bucket_ms / 1000.0,
                              lr.first * 1000 / bucket_ms, lr.second * 1000 / bucket_ms});
  }
  return out;
}

std::string TimeOfDay(double t_s) {
  time_t t = static_cast<time_t>(t_s);
  struct tm tm;
  gmtime_r(&t, &tm);
  char buf[32];
  strftime(buf, sizeof buf, "%H:%M:%S", &tm);
  return buf;
}

}  // namespace

std::string RenderHtml(const ClusterView& v, const Filter& f) {
  Filter pf = f;
  if (!pf.top) pf.top = 40;
  auto procs = Processes(v, pf);
  auto nodes = KnownNodes(v);
  std::string h;
  h += "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n";
  h += "<title>mfs I/O locality</title>\n<style>\n"
       "body{font-family:sans-serif;margin:1.5em;color:#222}\n"
       "h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.5em}\n"
       "table{border-collapse:collapse}td,th{padding:2px 8px;border:1px solid #ccc;"
       "font-size:.85em}th{background:#eee}td.n{text-align:right}\n"
       ".warn{color:#a00}.legend span{display:inline-block;width:1em;height:1em;"
       "vertical-align:middle;margin:0 .3em}\n"
       "</style></head><body>\n";
  time_t now = time(nullptr);
  h += "<h1>mfs I/O locality</h1>\n<p>Generated by mfsstat at " +
       TimeOfDay(static_cast<double>(now)) + " UTC from " + std::to_string(v.nodes.size()) +
       " node(s). Figures decay with a half-life of " +
       (v.nodes.empty() ? std::string("?") : Fmt("%g", Num(v.nodes[0], "half_life_s"))) +
       " s.</p>\n";
  for (const json& u : v.unreachable) {
    h += "<p class=\"warn\">node " + std::to_string(U32(u, "node")) +
         " did not answer: " + HtmlEscape(Str(u, "error")) + "</p>\n";
  }

  // Heat map: processes x nodes, colour = share of the row maximum (log).
  h += "<h2>Bytes per process and node</h2>\n";
  if (procs.empty() || nodes.empty()) {
    h += "<p id=\"heatmap-empty\">No processes with I/O on /mfs.</p>\n";
  } else {
    const int label_w = 220, cell_w = 70, cell_h = 22, top = 30;
    int width = label_w + cell_w * static_cast<int>(nodes.size()) + 10;
    int height = top + cell_h * static_cast<int>(procs.size()) + 10;
    double maxb = 1;
    for (const auto& p : procs) {
      for (const auto& [n, b] : p.per_node) maxb = std::max(maxb, b);
    }
    h += "<svg id=\"heatmap\" xmlns=\"http://www.w3.org/2000/svg\" width=\"" +
         std::to_string(width) + "\" height=\"" + std::to_string(height) + "\">\n";
    for (size_t c = 0; c < nodes.size(); ++c) {
      h += "<text x=\"" + std::to_string(label_w + cell_w * static_cast<int>(c) + cell_w / 2) +
           "\" y=\"20\" text-anchor=\"middle\" font-size=\"12\">node " + std::to_string(nodes[c]) +
           "</text>\n";
    }
    for (size_t r = 0; r < procs.size(); ++r) {
      const auto& p = procs[r];
      int y = top + cell_h * static_cast<int>(r);
      std::string label = p.comm + " [" + std::to_string(p.pid) + "] on " + std::to_string(p.where);
      h += "<text x=\"4\" y=\"" + std::to_string(y + 15) + "\" font-size=\"12\">" +
           HtmlEscape(Fit(label, 32)) + "</text>\n";
      for (size_t c = 0; c < nodes.size(); ++c) {
        double b = p.per_node.count(nodes[c]) ? p.per_node.at(nodes[c]) : 0;
        double x = b > 0 ? std::log1p(b) / std::log1p(maxb) : 0;
        int light = static_cast<int>(std::lround(97 - 62 * x));
        h += "<rect class=\"cell\" x=\"" + std::to_string(label_w + cell_w * static_cast<int>(c)) +
             "\" y=\"" + std::to_string(y) + "\" width=\"" + std::to_string(cell_w - 2) +
             "\" height=\"" + std::to_string(cell_h - 2) + "\" fill=\"hsl(215,70%," +
             std::to_string(light) + "%)\"><title>" + HtmlEscape(p.comm) + " [" +
             std::to_string(p.pid) + "] on node " + std::to_string(nodes[c]) + ": " +
             ShortBytes(b) + "</title></rect>\n";
        h += "<text x=\"" +
             std::to_string(label_w + cell_w * static_cast<int>(c) + cell_w / 2 - 1) + "\" y=\"" +
             std::to_string(y + 15) + "\" text-anchor=\"middle\" font-size=\"11\" fill=\"" +
             (light < 60 ? "#fff" : "#222") + "\">" + (b > 0 ? ShortBytes(b) : "") + "</text>\n";
      }
    }
    h += "</svg>\n";
  }

  // Time series: local vs remote bytes per second, whole cluster.
  h += "<h2>Local and remote I/O over time</h2>\n";
  auto series = ClusterSeries(v);
  if (series.size() < 2) {
    h += "<p id=\"series-empty\">Not enough history yet (" + std::to_string(series.size()) +
         " point(s)).</p>\n";
  } else {
    const int W = 720, H = 240, L = 70, B = 30, T = 10, R = 10;
    double t0 = series.front().t_s, t1 = series.back().t_s;
    double ymax = 1;
    for (const auto& p : series) ymax = std::max({ymax, p.local_bps, p.remote_bps});
    auto X = [&](double t) { return L + (W - L - R) * (t - t0) / std::max(1.0, t1 - t0); };
    auto Y = [&](double y) { return T + (H - T - B) * (1 - y / ymax); };
    auto line = [&](bool local) {
      std::string pts;
      for (const auto& p : series) {
        pts +=
            Fmt("%.1f", X(p.t_s)) + "," + Fmt("%.1f", Y(local ? p.local_bps : p.remote_bps)) + " ";
      }
      return pts;
    };
    h += "<svg id=\"timeseries\" xmlns=\"http://www.w3.org/2000/svg\" width=\"" +
         std::to_string(W) + "\" height=\"" + std::to_string(H) + "\">\n";
    h += "<rect x=\"" + std::to_string(L) + "\" y=\"" + std::to_string(T) + "\" width=\"" +
         std::to_string(W - L - R) + "\" height=\"" + std::to_string(H - T - B) +
         "\" fill=\"#fafafa\" stroke=\"#ccc\"/>\n";
    for (int i = 0; i <= 4; ++i) {
      double y = ymax * i / 4;
      h += "<text x=\"" + std::to_string(L - 4) + "\" y=\"" + Fmt("%.1f", Y(y) + 4) +
           "\" text-anchor=\"end\" font-size=\"11\">" + ShortBytes(y) + "/s</text>\n";
    }
    h += "<text x=\"" + std::to_string(L) + "\" y=\"" + std::to_string(H - 8) +
         "\" font-size=\"11\">" + TimeOfDay(t0) + "</text>\n";
    h += "<text x=\"" + std::to_string(W - R) + "\" y=\"" + std::to_string(H - 8) +
         "\" text-anchor=\"end\" font-size=\"11\">" + TimeOfDay(t1) + " UTC</text>\n";
    h += "<polyline id=\"local-line\" fill=\"none\" stroke=\"#2a7\" stroke-width=\"2\" points=\"" +
         line(true) + "\"/>\n";
    h += "<polyline id=\"remote-line\" fill=\"none\" stroke=\"#d52\" stroke-width=\"2\" points=\"" +
         line(false) + "\"/>\n";
    h += "</svg>\n<p class=\"legend\"><span style=\"background:#2a7\"></span>local "
         "<span style=\"background:#d52\"></span>remote</p>\n";
  }

  h += "<h2>Processes</h2>\n<table id=\"processes\"><tr><th>pid</th><th>command</th>"
       "<th>runs on</th><th>data on</th><th>local</th><th>MB/s</th><th>bytes</th></tr>\n";
  for (const auto& p : procs) {
    h += "<tr><td class=\"n\">" + std::to_string(p.pid) + "</td><td>" + HtmlEscape(p.comm) +
         "</td><td class=\"n\">" + std::to_string(p.where) + "</td><td class=\"n\">" +
         std::to_string(p.main_node) + "</td><td class=\"n\">" + Pct(p.local_pct) +
         "</td><td class=\"n\">" + Rate(p.rate_bps) + "</td><td class=\"n\">" +
         ShortBytes(p.bytes) + "</td></tr>\n";
  }
  h += "</table>\n";
  h += "<h2>Nodes</h2>\n<pre>" + HtmlEscape(RenderNodes(v, f)) + "</pre>\n";
  h += "<h2>Program profiles</h2>\n<pre>" + HtmlEscape(RenderProfiles(v, f)) + "</pre>\n";
  h += "</body></html>\n";
  return h;
}

namespace {

// A bar of exactly `width` columns; UTF-8 eighth blocks or ASCII '#'.
std::string Bar(double fraction, int width, bool utf8) {
  fraction = std::clamp(fraction, 0.0, 1.0);
  if (width <= 0) return "";
  std::string out;
  if (!utf8) {
    int n = static_cast<int>(std::lround(fraction * width));
    return std::string(static_cast<size_t>(n), '#') +
           std::string(static_cast<size_t>(width - n), '.');
  }
  static const char* kEighths[] = {"", "▏", "▎", "▍", "▌", "▋", "▊", "▉"};
  int eighths = static_cast<int>(std::lround(fraction * width * 8));
  int full = eighths / 8, rest = eighths % 8;
  for (int i = 0; i < full; ++i) out += "█";
  int used = full;
  if (rest && used < width) {
    out += kEighths[rest];
    ++used;
  }
  out += std::string(static_cast<size_t>(width - used), ' ');
  return out;
}

std::string Pad(std::string s, size_t n) {
  size_t c = Columns(s);
  if (c < n) s += std::string(n - c, ' ');
  return s;
}

}  // namespace

std::string RenderMonitor(const ClusterView& v, int cols, int rows, double interval_s) {
  constexpr int kMinCols = 60, kMinRows = 6;
  bool utf8 = false;
  for (const char* var : {"LC_ALL", "LC_CTYPE", "LANG"}) {
    const char* val = getenv(var);
    if (val && *val) {
      std::string s(val);
      utf8 = s.find("UTF-8") != std::string::npos || s.find("utf8") != std::string::npos ||
             s.find("UTF8") != std::string::npos || s.find("utf-8") != std::string::npos;
      break;
    }
  }
  std::vector<std::string> lines;
  if (cols < kMinCols || rows < kMinRows) {
    lines.push_back("terminal too small (" + std::to_string(cols) + "x" + std::to_string(rows) +
                    "): mfsmon needs at least " + std::to_string(kMinCols) + "x" +
                    std::to_string(kMinRows));
    lines.push_back("enlarge the window or press q to quit");
    std::string out;
    for (auto& l : lines) {
      if (!out.empty()) out += "\r\n";
      out += l.substr(0, static_cast<size_t>(std::max(cols, 1))) + "\033[K";
    }
    return out;
  }
  struct Row {
    uint32_t id;
    bool up;
    std::string error;
    double load = 0, cpus = 1, mem_total = 0, mem_avail = 0, rate = 0, bytes = 0, local = 0;
  };
  std::map<uint32_t, Row> by_id;
  double max_rate = 1;
  for (const json& n : v.nodes) {
    Row r{U32(n, "node"), true, ""};
    const json& host = n.contains("host") ? n["host"] : json::object();
    r.load = Num(host, "load1");
    r.cpus = std::max(1.0, Num(host, "cpus"));
    r.mem_total = Num(host, "mem_total");
    r.mem_avail = Num(host, "mem_available");
    uint32_t self = r.id;
    if (n.contains("processes") && n["processes"].is_array()) {
      for (const json& p : n["processes"]) {
        r.rate += Num(p, "rate_bps");
        uint32_t where = U32(p, "where");
        if (!p.contains("nodes") || !p["nodes"].is_object()) continue;
        for (auto it = p["nodes"].begin(); it != p["nodes"].end(); ++it) {
          double b = Num(it.value(), "bytes");
          r.bytes += b;
          if (std::strtoul(it.key().c_str(), nullptr, 10) == (where ? where : self)) r.local += b;
        }
      }
    }
    max_rate = std::max(max_rate, r.rate);
    by_id[r.id] = r;
  }
  for (const json& u : v.unreachable) {
    Row r{U32(u, "node"), false, Str(u, "error")};
    if (!by_id.count(r.id)) by_id[r.id] = r;
  }
  char head[256];
  time_t now = time(nullptr);
  struct tm tm;
  localtime_r(&now, &tm);
  char clock[16];
  strftime(clock, sizeof clock, "%H:%M:%S", &tm);
  snprintf(head, sizeof head, "mfsmon  %zu node(s)  every %.1fs  q quits", by_id.size(),
           interval_s);
  std::string title = head;
  title +=
      std::string(static_cast<size_t>(std::max(1, cols - static_cast<int>(title.size()) - 8)), ' ');
  title += clock;
  lines.push_back(title);
  // NODE(4) + 4 gauges, each: bar + space + value(9) + 2 spaces.
  int gauge = (cols - 5) / 4;
  int bar = std::max(4, gauge - 12);
  auto head_cell = [&](const std::string& s) { return Pad(s, static_cast<size_t>(gauge)); };
  lines.push_back("NODE " + head_cell("LOAD/CPU") + head_cell("FREE MEMORY") + head_cell("I/O") +
                  head_cell("LOCAL I/O"));
  auto cell = [&](double frac, const std::string& value) {
    std::string v9 = value;
    if (v9.size() < 9) v9 = std::string(9 - v9.size(), ' ') + v9;
    return Pad(Bar(frac, bar, utf8) + " " + v9, static_cast<size_t>(gauge));
  };
  int shown = 0;
  int room = rows - 3;  // title, header, legend
  for (const auto& [id, r] : by_id) {
    if (shown == room - 1 && static_cast<int>(by_id.size()) > room) {
      lines.push_back("... " + std::to_string(by_id.size() - static_cast<size_t>(shown)) +
                      " more node(s): enlarge the terminal");
      break;
    }
    char idbuf[8];
    snprintf(idbuf, sizeof idbuf, "%4u ", id);
    if (!r.up) {
      lines.push_back(std::string(idbuf) + "not answering: " + r.error);
    } else {
      std::string l = idbuf;
      l += cell(r.load / r.cpus, Fmt("%.2f", r.load));
      l += cell(r.mem_total > 0 ? r.mem_avail / r.mem_total : 0, ShortBytes(r.mem_avail));
      l += cell(r.rate / max_rate, Rate(r.rate) + "MB/s");
      l += cell(r.bytes > 0 ? r.local / r.bytes : 0,
                r.bytes > 0 ? Pct(100 * r.local / r.bytes) : "-");
      lines.push_back(l);
    }
    ++shown;
  }
  while (static_cast<int>(lines.size()) < rows - 1) lines.push_back("");
  lines.push_back(
      "load per CPU; free memory of total; I/O of the busiest node; local share of "
      "decayed bytes");
  std::string out;
  for (auto& l : lines) {
    // Cut to the width in columns (bars are multi-byte).
    std::string cut;
    size_t c = 0;
    for (size_t i = 0; i < l.size(); ++i) {
      unsigned char ch = static_cast<unsigned char>(l[i]);
      if ((ch & 0xC0) != 0x80) {
        if (c == static_cast<size_t>(cols)) break;
        ++c;
      }
      cut += l[i];
    }
    if (!out.empty()) out += "\r\n";
    out += cut + "\033[K";
  }
  return out;
}

}  // namespace mfs::tools

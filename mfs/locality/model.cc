#include "mfs/locality/model.h"

#include <algorithm>
#include <cmath>

namespace mfs::locality {

using nlohmann::json;

double Decayed::At(int64_t now_ms, double half_life_ms) const {
  if (value == 0) return 0;
  if (now_ms <= t_ms) return value;
  return value * std::exp2(-static_cast<double>(now_ms - t_ms) / half_life_ms);
}

void Decayed::Add(double x, int64_t now_ms, double half_life_ms) {
  value = At(now_ms, half_life_ms) + x;
  t_ms = std::max(t_ms, now_ms);
}

void DecayedCounters::Add(const Counters& c, int64_t now_ms, double hl) {
  read_bytes.Add(static_cast<double>(c.read_bytes), now_ms, hl);
  write_bytes.Add(static_cast<double>(c.write_bytes), now_ms, hl);
  ops.Add(static_cast<double>(c.ops()), now_ms, hl);
  cached_bytes.Add(static_cast<double>(c.cached_bytes), now_ms, hl);
}

json DecayedCounters::ToJson(int64_t now_ms, double hl) const {
  double r = read_bytes.At(now_ms, hl), w = write_bytes.At(now_ms, hl);
  return json{{"bytes", r + w},
              {"read_bytes", r},
              {"write_bytes", w},
              {"ops", ops.At(now_ms, hl)},
              {"cached_bytes", cached_bytes.At(now_ms, hl)}};
}

Split SplitOf(const std::map<uint32_t, DecayedCounters>& per_node, uint32_t local, int64_t now_ms,
              double hl) {
  Split s;
  double best = -1, local_bytes = 0;
  for (const auto& [node, c] : per_node) {
    double b = c.Bytes(now_ms, hl);
    s.total += b;
    if (b > best) {
      best = b;
      s.main_node = node;
    }
    if (node == local) local_bytes = b;
  }
  s.local_pct = s.total > 0 ? 100.0 * local_bytes / s.total : 0;
  return s;
}

void LocalityModel::Apply(const Batch& batch, int64_t now_ms) {
  if (interval_start_ms_ == 0) interval_start_ms_ = now_ms;
  const double hl = o_.half_life_ms;
  for (const Entry& e : batch) {
    auto it = procs_.find(e.pid);
    if (it != procs_.end() && it->second.start != e.start && e.start != 0) {
      procs_.erase(it);  // the pid was reused by a new process
      it = procs_.end();
    }
    if (it == procs_.end()) {
      ProcessState p;
      p.pid = e.pid;
      p.start = e.start;
      p.comm = e.comm.empty() ? "?" : e.comm;
      p.exe = e.exe.empty() ? p.comm : e.exe;
      p.first_ms = now_ms;
      if (auto id = identities_.find(e.pid);
          id != identities_.end() && id->second.start == e.start) {
        p.home = id->second.home == o_.self ? 0 : id->second.home;
        p.home_pid = id->second.home_pid == e.pid ? 0 : id->second.home_pid;
        // Restored from its home's file (/mfs/<home>/usr/bin/x where the
        // path is not local): the program is /usr/bin/x, one profile.
        const std::string via = "/mfs/" + std::to_string(id->second.home) + "/";
        if (p.home && p.exe.rfind(via, 0) == 0) p.exe = p.exe.substr(via.size() - 1);
      }
      it = procs_.emplace(e.pid, std::move(p)).first;
      Profile& prof = profiles_[it->second.exe];
      prof.exe = it->second.exe;
      ++prof.processes;
      prof.dirty = true;
    }
    ProcessState& p = it->second;
    p.last_ms = now_ms;
    p.decayed[e.node].Add(e.c, now_ms, hl);
    p.totals[e.node].Add(e.c);
    uint64_t bytes = e.c.bytes();
    if (!p.recent.empty() && p.recent.back().first == now_ms) {
      p.recent.back().second += bytes;
    } else {
      p.recent.emplace_back(now_ms, bytes);
    }
    while (!p.recent.empty() && p.recent.front().first < now_ms - o_.rate_window_ms) {
      p.recent.pop_front();
    }
    Profile& prof = profiles_[p.exe];
    prof.exe = p.exe;
    prof.decayed[e.node].Add(e.c, now_ms, hl);
    prof.last_ms = now_ms;
    prof.dirty = true;

    bool local = e.node == WhereOf(p);
    (local ? current_.local_read : current_.remote_read) += e.c.read_bytes;
    (local ? current_.local_write : current_.remote_write) += e.c.write_bytes;
    current_.cached += e.c.cached_bytes;
  }
}

void LocalityModel::SetWhere(pid_t pid, uint32_t node, uint32_t home, pid_t home_pid) {
  auto it = procs_.find(pid);
  if (it == procs_.end()) return;
  it->second.where = node;
  if (home == kKeepHome) return;
  it->second.home = home == o_.self ? 0 : home;
  it->second.home_pid = home_pid == pid ? 0 : home_pid;
}

void LocalityModel::SetIdentity(pid_t pid, uint64_t start, uint32_t home, pid_t home_pid) {
  if (identities_.size() >= o_.max_processes && !identities_.count(pid))
    identities_.erase(identities_.begin());
  identities_[pid] = Identity{start, home, home_pid};
  auto it = procs_.find(pid);
  if (it != procs_.end() && it->second.start == start) {
    it->second.home = home == o_.self ? 0 : home;
    it->second.home_pid = home_pid == pid ? 0 : home_pid;
  }
}

std::vector<pid_t> LocalityModel::ActivePids(int64_t now_ms, int64_t window_ms) const {
  std::vector<pid_t> out;
  for (const auto& [pid, p] : procs_) {
    if (now_ms - p.last_ms <= window_ms) out.push_back(pid);
  }
  return out;
}

HistoryPoint LocalityModel::TakeHistoryPoint(int64_t now_ms) {
  HistoryPoint h = current_;
  h.t_ms = now_ms;
  h.interval_ms = interval_start_ms_ ? now_ms - interval_start_ms_ : 0;
  current_ = HistoryPoint{};
  interval_start_ms_ = now_ms;
  return h;
}

void LocalityModel::Expire(int64_t now_ms) {
  const double hl = o_.half_life_ms;
  std::erase_if(procs_, [&](const auto& kv) {
    const ProcessState& p = kv.second;
    if (now_ms - p.last_ms < 20 * hl) return false;
    for (const auto& [n, c] : p.decayed) {
      if (c.Bytes(now_ms, hl) >= 1 || c.ops.At(now_ms, hl) >= 0.5) return false;
    }
    return true;
  });
  if (procs_.size() > o_.max_processes) {
    std::vector<std::pair<int64_t, pid_t>> by_age;
    for (const auto& [pid, p] : procs_) by_age.emplace_back(p.last_ms, pid);
    std::sort(by_age.begin(), by_age.end());
    for (size_t i = 0; i < procs_.size() - o_.max_processes && i < by_age.size(); ++i) {
      procs_.erase(by_age[i].second);
    }
  }
}

json LocalityModel::ProcessJson(const ProcessState& p, int64_t now_ms) const {
  const double hl = o_.half_life_ms;
  uint32_t where = WhereOf(p);
  Split s = SplitOf(p.decayed, where, now_ms, hl);
  json nodes = json::object();
  for (const auto& [n, c] : p.decayed) nodes[std::to_string(n)] = c.ToJson(now_ms, hl);
  json totals = json::object();
  uint64_t total_bytes = 0;
  for (const auto& [n, c] : p.totals) {
    totals[std::to_string(n)] = CountersToJson(c);
    total_bytes += c.bytes();
  }
  uint64_t window_bytes = 0;
  for (const auto& [t, b] : p.recent) {
    if (t >= now_ms - o_.rate_window_ms) window_bytes += b;
  }
  double rate = static_cast<double>(window_bytes) * 1000.0 / static_cast<double>(o_.rate_window_ms);
  return json{{"pid", p.pid},
              {"home", p.home ? p.home : o_.self},
              {"home_pid", p.home_pid ? p.home_pid : p.pid},
              {"start", p.start},
              {"comm", p.comm},
              {"exe", p.exe},
              {"node", o_.self},
              {"where", where},
              {"main_node", s.main_node},
              {"bytes", s.total},
              {"local_pct", s.local_pct},
              {"rate_bps", rate},
              {"first_ms", p.first_ms},
              {"last_ms", p.last_ms},
              {"nodes", std::move(nodes)},
              {"total_bytes", total_bytes},
              {"totals", std::move(totals)}};
}

json LocalityModel::ProfileJson(const Profile& p, int64_t now_ms) const {
  const double hl = o_.half_life_ms;
  Split s = SplitOf(p.decayed, o_.self, now_ms, hl);
  json nodes = json::object();
  for (const auto& [n, c] : p.decayed) nodes[std::to_string(n)] = c.ToJson(now_ms, hl);
  return json{{"exe", p.exe},     {"processes", p.processes}, {"last_ms", p.last_ms},
              {"bytes", s.total}, {"main_node", s.main_node}, {"nodes", std::move(nodes)}};
}

json LocalityModel::ByNodeJson(int64_t now_ms) const {
  const double hl = o_.half_life_ms;
  json out = json::object();
  std::map<uint32_t, json> acc;
  for (const auto& [pid, p] : procs_) {
    for (const auto& [n, c] : p.decayed) {
      json& j = acc[n];
      if (j.is_null())
        j = json{{"bytes", 0.0}, {"read_bytes", 0.0},   {"write_bytes", 0.0},
                 {"ops", 0.0},   {"cached_bytes", 0.0}, {"processes", 0}};
      json cj = c.ToJson(now_ms, hl);
      for (const char* k : {"bytes", "read_bytes", "write_bytes", "ops", "cached_bytes"}) {
        j[k] = j[k].get<double>() + cj[k].get<double>();
      }
      j["processes"] = j["processes"].get<int>() + 1;
    }
  }
  for (auto& [n, j] : acc) out[std::to_string(n)] = std::move(j);
  return out;
}

}  // namespace mfs::locality

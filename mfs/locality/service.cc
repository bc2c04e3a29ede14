#include "mfs/locality/service.h"

#include <rocksdb/db.h>
#include <sched.h>
#include <spdlog/spdlog.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <deque>
#include <fstream>
#include <optional>
#include <sstream>

#include "mfs/locality/codec.h"
#include "mfs/node/daemon.h"

namespace mfs::locality {

namespace asio = boost::asio;
using nlohmann::json;

namespace {

Status GetNumber(const toml::table& t, const std::string& origin, const char* key, double lo,
                 double hi, double* out) {
  const toml::node* n = t.at_path(std::string("locality.") + key).node();
  if (!n) return Status::OK();
  std::optional<double> v;
  if (n->is_integer()) v = static_cast<double>(*n->value<int64_t>());
  if (n->is_floating_point()) v = *n->value<double>();
  if (!v || !(*v >= lo && *v <= hi)) {
    return Status::InvalidArgument(origin + ": locality." + key + ": must be a number between " +
                                   fmt::format("{}", lo) + " and " + fmt::format("{}", hi));
  }
  *out = *v;
  return Status::OK();
}

// The first line of a file, or "" (cgroup control files are one line).
std::string ReadLine(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

// Where this process sits in a cgroup v1 controller's hierarchy (or the v2
// hierarchy with controller ""), as a path under /sys/fs/cgroup; "" when
// not found.
std::string CgroupDir(const std::string& controller) {
  std::ifstream in("/proc/self/cgroup");
  std::string line;
  while (std::getline(in, line)) {
    auto a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    std::string ctrls = line.substr(a + 1, b - a - 1), path = line.substr(b + 1);
    if (controller.empty() ? ctrls.empty() && line.compare(0, a, "0") == 0
                           : ("," + ctrls + ",").find("," + controller + ",") != std::string::npos) {
      std::string dir = "/sys/fs/cgroup" + (controller.empty() ? "" : "/" + controller) + path;
      return access(dir.c_str(), R_OK) == 0 ? dir : "";
    }
  }
  return "";
}

std::optional<double> Number(const std::string& text) {
  if (text.empty() || text == "max") return std::nullopt;
  char* end = nullptr;
  double v = std::strtod(text.c_str(), &end);
  if (end == text.c_str()) return std::nullopt;
  return v;
}

// This node's size: the host's CPUs and memory, narrowed by the cgroup mfsd
// runs in (mfs-cluster gives each node its own cpuset, CPU quota and memory
// limit), so that nodes sharing one machine report what each may use.
json HostJson() {
  json h = json::object();
  double load[3] = {0, 0, 0};
  if (::getloadavg(load, 3) == 3) {
    h["load1"] = load[0];
    h["load5"] = load[1];
    h["load15"] = load[2];
  }
  double cpus = static_cast<double>(::sysconf(_SC_NPROCESSORS_ONLN));
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) cpus = CPU_COUNT(&set);  // cpuset
  std::optional<double> quota, period;
  if (std::string v1 = CgroupDir("cpu"); !v1.empty()) {
    quota = Number(ReadLine(v1 + "/cpu.cfs_quota_us"));
    period = Number(ReadLine(v1 + "/cpu.cfs_period_us"));
  } else if (std::string v2 = CgroupDir(""); !v2.empty()) {
    std::istringstream max(ReadLine(v2 + "/cpu.max"));
    std::string q, per;
    max >> q >> per;
    quota = Number(q);
    period = Number(per);
  }
  bool limited = false;
  if (quota && period && *quota > 0 && *period > 0 && *quota / *period < cpus) {
    cpus = *quota / *period;
    limited = true;
  }
  h["cpus"] = cpus;
  std::ifstream in("/proc/meminfo");
  std::string key;
  uint64_t kib = 0;
  std::string unit;
  double total = 0, available = 0;
  while (in >> key >> kib) {
    std::getline(in, unit);
    if (key == "MemTotal:") total = static_cast<double>(kib) * 1024;
    if (key == "MemAvailable:") available = static_cast<double>(kib) * 1024;
  }
  std::optional<double> limit, usage;
  std::string stat_file, inactive_key;
  if (std::string v1 = CgroupDir("memory"); !v1.empty()) {
    limit = Number(ReadLine(v1 + "/memory.limit_in_bytes"));
    usage = Number(ReadLine(v1 + "/memory.usage_in_bytes"));
    stat_file = v1 + "/memory.stat";
    inactive_key = "total_inactive_file";
  } else if (std::string v2 = CgroupDir(""); !v2.empty()) {
    limit = Number(ReadLine(v2 + "/memory.max"));
    usage = Number(ReadLine(v2 + "/memory.current"));
    stat_file = v2 + "/memory.stat";
    inactive_key = "inactive_file";
  }
  if (usage && !stat_file.empty()) {  // page cache the kernel reclaims first
    std::ifstream st(stat_file);
    std::string k;
    uint64_t v = 0;
    while (st >> k >> v) {
      if (k == inactive_key) {
        usage = std::max(0.0, *usage - static_cast<double>(v));
        break;
      }
    }
  }
  if (limit && usage && *limit > 0 && *limit < total) {
    total = *limit;
    available = std::clamp(*limit - *usage, 0.0, std::min(available, *limit));
    limited = true;
  }
  h["mem_total"] = static_cast<uint64_t>(total);
  h["mem_available"] = static_cast<uint64_t>(available);
  h["cgroup_limited"] = limited;
  return h;
}

// Start time (clock ticks since boot, /proc/PID/stat field 22) of `pid`,
// the key that tells a reused pid from the process it names.
Result<uint64_t> ProcessStart(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t close = text.rfind(')');
  if (text.empty() || close == std::string::npos)
    return Status::NotFound("no process " + std::to_string(pid));
  std::istringstream f(text.substr(close + 2));
  std::string tok;
  for (int field = 3; field < 22 && (f >> tok); ++field) {
  }
  uint64_t start = 0;
  if (!(f >> start)) return Status::Corruption("/proc/" + std::to_string(pid) + "/stat");
  return start;
}

}  // namespace

Result<LocalityOptions> LoadLocalityOptions(const node::Config& config) {
  LocalityOptions o;
  if (!config.table) return o;
  const toml::table& t = *config.table;
  const std::string& origin = config.path.empty() ? std::string("config") : config.path;
  double max_points = static_cast<double>(o.history_max_points);
  double ttl = static_cast<double>(o.history_ttl_s);
  double max_procs = static_cast<double>(o.max_processes);
  MFS_RETURN_IF_ERROR(GetNumber(t, origin, "half_life_s", 0.01, 1e9, &o.half_life_s));
  MFS_RETURN_IF_ERROR(
      GetNumber(t, origin, "history_interval_s", 0.1, 86400, &o.history_interval_s));
  MFS_RETURN_IF_ERROR(GetNumber(t, origin, "history_max_points", 1, 1e8, &max_points));
  MFS_RETURN_IF_ERROR(GetNumber(t, origin, "history_ttl_s", 1, 1e10, &ttl));
  MFS_RETURN_IF_ERROR(GetNumber(t, origin, "rate_window_s", 0.1, 3600, &o.rate_window_s));
  MFS_RETURN_IF_ERROR(GetNumber(t, origin, "max_processes", 1, 1e7, &max_procs));
  if (const toml::node* n = t.at_path("locality.accounting").node()) {
    if (!n->is_boolean())
      return Status::InvalidArgument(origin + ": locality.accounting: must be true or false");
    o.accounting = *n->value<bool>();
  }
  o.history_max_points = static_cast<uint64_t>(max_points);
  o.history_ttl_s = static_cast<uint64_t>(ttl);
  o.max_processes = static_cast<uint64_t>(max_procs);
  return o;
}

LocalityService::LocalityService(node::Daemon& daemon, LocalityOptions o)
    : daemon_(daemon),
      o_(o),
      accounting_(o.accounting),
      timer_(daemon.io()),
      model_(ModelOptions{daemon.config().id, o.half_life_s * 1000.0,
                          static_cast<int64_t>(o.rate_window_s * 1000.0),
                          static_cast<size_t>(o.max_processes)}) {}

Result<std::unique_ptr<LocalityService>> LocalityService::Create(node::Daemon& daemon) {
  MFS_ASSIGN_OR_RETURN(LocalityOptions o, LoadLocalityOptions(daemon.config()));
  std::unique_ptr<LocalityService> s(new LocalityService(daemon, o));
  MFS_RETURN_IF_ERROR(s->Load());
  s->Register();
  spdlog::info("locality: half-life {}s, history every {}s (at most {} points, {}s)", o.half_life_s,
               o.history_interval_s, o.history_max_points, o.history_ttl_s);
  return s;
}

LocalityService::~LocalityService() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  boost::system::error_code ignored;
  timer_.cancel();
  {
    std::unique_lock lock(inflight_mu_);
    inflight_cv_.wait(lock, [this] { return inflight_ == 0; });
  }
  // The io threads have stopped: save what the last interval gathered.
  HistoryPoint h;
  std::vector<std::pair<std::string, std::string>> profiles;
  {
    std::lock_guard lock(mu_);
    int64_t now = NowMs();
    h = model_.TakeHistoryPoint(now);
    for (auto& [exe, p] : model_.profiles()) {
      if (!p.dirty) continue;
      profiles.emplace_back(ProfileKey(exe), EncodeProfile(p, now, o_.half_life_s * 1000.0));
      p.dirty = false;
    }
  }
  Persist(h, std::move(profiles));
}

int64_t LocalityService::NowMs() const {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void LocalityService::Post(std::function<void()> fn) {
  {
    std::lock_guard lock(inflight_mu_);
    ++inflight_;
  }
  asio::post(daemon_.blocking(), [this, fn = std::move(fn)] {
    fn();
    std::lock_guard lock(inflight_mu_);
    if (--inflight_ == 0) inflight_cv_.notify_all();
  });
}

Status LocalityService::Load() {
  // Runs before the io threads start, so the database may be used here.
  uint64_t loaded = 0, skipped = 0;
  Status s = daemon_.store().Scan(kProfilePrefix, [&](std::string_view key, std::string_view v) {
    auto p = DecodeProfile(v);
    if (!p.ok()) {
      spdlog::warn("locality: skipping corrupt profile record '{}': {}", key,
                   p.status().ToString());
      ++skipped;
      return true;
    }
    std::lock_guard lock(mu_);
    model_.profiles()[p->exe] = std::move(p).value();
    ++loaded;
    return true;
  });
  if (!s.ok()) return s.Annotate("locality: load profiles");
  uint64_t points = 0;
  s = daemon_.store().Scan(kHistoryPrefix, [&](std::string_view, std::string_view) {
    ++points;
    return true;
  });
  if (!s.ok()) return s.Annotate("locality: load history");
  std::lock_guard lock(mu_);
  history_count_ = points;
  spdlog::info("locality: {} program profiles loaded ({} corrupt skipped), {} history points",
               loaded, skipped, points);
  return Status::OK();
}

void LocalityService::Register() {
  daemon_.RegisterControlOp(
      "locality.report", [this](const json& req, const control::Caller& caller) -> Result<json> {
        // The socket is open to every local user; only the /mfs client
        // (root, or mfsd's own user) may feed the figures.
        if (caller.uid != 0 && caller.uid != ::geteuid()) {
          return Status::PermissionDenied("locality.report: only root or mfsd's user may report");
        }
        return OnReport(req);
      });
  daemon_.RegisterControlOp(
      "locality.identity", [this](const json& req, const control::Caller& caller) -> Result<json> {
        // A guest supervisor names the migrated process it runs here.
        if (caller.uid != 0 && caller.uid != ::geteuid())
          return Status::PermissionDenied(
              "locality.identity: only supervisors (root) may say who a process is");
        for (const char* k : {"pid", "home", "home_pid"})
          if (!req.contains(k) || !req[k].is_number_unsigned() || req[k].get<uint64_t>() == 0 ||
              req[k].get<uint64_t>() > (std::string(k) == "home" ? kMaxNodeId : INT32_MAX))
            return Status::InvalidArgument(std::string("locality.identity: \"") + k +
                                           "\" must be a positive id");
        pid_t pid = req["pid"].get<pid_t>();
        auto start = ProcessStart(pid);
        if (!start.ok()) return start.status();
        std::lock_guard lock(mu_);
        model_.SetIdentity(pid, *start, req["home"].get<uint32_t>(), req["home_pid"].get<pid_t>());
        return json{{"pid", pid}};
      });
  daemon_.RegisterControlOp(
      "locality.accounting",
      [this](const json& req, const control::Caller& caller) -> Result<json> {
        if (req.contains("enable")) {
          if (!req["enable"].is_boolean())
            return Status::InvalidArgument("locality.accounting: \"enable\" must be true or false");
          if (caller.uid != 0 && caller.uid != ::geteuid())
            return Status::PermissionDenied("locality.accounting: only root may switch accounting");
          bool want = req["enable"].get<bool>();
          if (accounting_.exchange(want) != want)
            spdlog::info("locality: accounting switched {} (uid {})", want ? "on" : "off", caller.uid);
        }
        json out{{"accounting", accounting_.load()}, {"client", nullptr}};
        if (int c = client_accounting_.load(); c >= 0) out["client"] = c == 1;
        return out;
      });
  daemon_.RegisterControlOp("locality.snapshot", [this](const json& req, const control::Caller&,
                                                        control::ControlServer::Reply reply) {
    OnSnapshot(req, std::move(reply));
  });
  daemon_.RegisterFrameHandler(
      kFrameLocalityQuery, kFrameLocalityQuery,
      [this](const wire::Connection::Ptr& c, wire::Frame f) {
        if (!f.header.request_id) return;
        if (c->peer_role() != wire::PeerRole::kNode) {
          c->ReplyError(f, Status::PermissionDenied("locality query from a non-node peer"));
          return;
        }
        json req = json::parse(f.payload, nullptr, false);
        if (req.is_discarded() || !req.is_object()) {
          c->ReplyError(f, Status::InvalidArgument("locality query: payload is not a JSON object"));
          return;
        }
        req.erase("all");  // a peer answers for itself only
        auto frame = std::make_shared<wire::Frame>(std::move(f));
        LocalSnapshot(req, [c, frame](Result<json> r) {
          if (r.ok()) {
            c->Reply(*frame, r->dump(-1, ' ', false, json::error_handler_t::replace));
          } else {
            c->ReplyError(*frame, r.status());
          }
        });
      });
  daemon_.OnShutdown([this] {
    std::lock_guard lock(mu_);
    stopping_ = true;
    timer_.cancel();
  });
  ScheduleTick();
}

Result<json> LocalityService::OnReport(const json& req) {
  MFS_ASSIGN_OR_RETURN(Batch batch, DecodeReport(req));
  if (auto it = req.find("accounting"); it != req.end() && it->is_boolean())
    client_accounting_ = it->get<bool>() ? 1 : 0;
  std::vector<pid_t> fresh;
  {
    std::lock_guard lock(mu_);
    for (const Entry& e : batch)
      if (!model_.processes().count(e.pid) && (fresh.empty() || fresh.back() != e.pid))
        fresh.push_back(e.pid);
    model_.Apply(batch, NowMs());
  }
  // Where a process first seen runs, and who it is (a migrated process is
  // its home's pid), while it still runs: a short-lived guest would be gone
  // by the next tick.
  if (!fresh.empty()) RefreshWhere(std::move(fresh), [] {});
  return json{{"accepted", batch.size()}, {"accounting", accounting_.load()}};
}

void LocalityService::OnSnapshot(const json& req, Reply reply) {
  for (const char* k : {"pid", "history_limit"}) {
    if (req.contains(k) && !(req[k].is_number_integer() && req[k].get<int64_t>() >= 0)) {
      reply(Status::InvalidArgument(std::string("locality.snapshot: \"") + k +
                                    "\" must be a non-negative integer"));
      return;
    }
  }
  for (const char* k : {"all", "history", "lenient"}) {
    if (req.contains(k) && !req[k].is_boolean()) {
      reply(Status::InvalidArgument(std::string("locality.snapshot: \"") + k +
                                    "\" must be true or false"));
      return;
    }
  }
  if (req.value("all", false)) {
    ClusterSnapshot(req, std::move(reply));
  } else {
    LocalSnapshot(req, std::move(reply));
  }
}

void LocalityService::RefreshWhere(std::vector<pid_t> pids, std::function<void()> done) {
  if (pids.empty()) {
    done();
    return;
  }
  struct State {
    std::atomic<size_t> left;
    std::function<void()> done;
  };
  auto st = std::make_shared<State>();
  st->left = pids.size();
  st->done = std::move(done);
  for (pid_t pid : pids) {
    daemon_.CallControlOp(
        json{{"op", "proc.where"}, {"pid", pid}}, [this, st, pid](Result<json> r) {
          // No answer (no migration service, or a pid it does not know) means
          // the process runs here.
          auto field = [&r](const char* k, int64_t max) -> int64_t {
            if (!r.ok() || !r->contains(k) || !(*r)[k].is_number_integer()) return 0;
            int64_t v = (*r)[k].get<int64_t>();
            return v > 0 && v <= max ? v : 0;
          };
          uint32_t where = static_cast<uint32_t>(field("where", kMaxNodeId));
          // Only a supervised process has a home identity; a process that
          // is gone (or was never supervised) keeps the one learnt before.
          const bool supervised = r.ok() && r->value("migratable", false);
          uint32_t home = supervised ? static_cast<uint32_t>(field("home", kMaxNodeId)) : kKeepHome;
          pid_t home_pid = supervised ? static_cast<pid_t>(field("home_pid", INT32_MAX)) : 0;
          {
            std::lock_guard lock(mu_);
            model_.SetWhere(pid, where, home, home_pid);
          }
          if (--st->left == 0) st->done();
        });
  }
}

void LocalityService::LocalSnapshot(const json& req, Reply reply) {
  std::vector<pid_t> pids;
  bool want_pid = req.contains("pid");
  pid_t only = want_pid ? static_cast<pid_t>(req["pid"].get<uint64_t>()) : 0;
  {
    std::lock_guard lock(mu_);
    for (const auto& [pid, p] : model_.processes()) {
      if (!want_pid || pid == only || p.home_pid == only) pids.push_back(pid);
    }
    // A migrated process is also found by its home pid, which proc.where
    // tells: ask for every process unless the pid is known here.
    if (want_pid && pids.empty())
      for (const auto& [pid, p] : model_.processes()) pids.push_back(pid);
  }
  if (want_pid && pids.empty() && !req.value("lenient", false)) {
    reply(Status::NotFound("no I/O on /mfs recorded for pid " + std::to_string(only) + " on node " +
                           std::to_string(daemon_.config().id)));
    return;
  }
  RefreshWhere(pids, [this, req, want_pid, only, reply = std::move(reply)]() mutable {
    Post([this, req, want_pid, only, reply = std::move(reply)] {
      int64_t now = NowMs();
      json out{{"node", daemon_.config().id},
               {"half_life_s", o_.half_life_s},
               {"rate_window_s", o_.rate_window_s},
               {"history_interval_s", o_.history_interval_s},
               {"accounting", accounting_.load()},
               {"now_ms", now},
               {"host", HostJson()}};
      json procs = json::array();
      json profiles = json::array();
      {
        std::lock_guard lock(mu_);
        for (const auto& [pid, p] : model_.processes()) {
          if (want_pid && pid != only && p.home_pid != only) continue;
          json j = model_.ProcessJson(p, now);
          char path[64];
          snprintf(path, sizeof path, "/proc/%d", pid);
          j["alive"] = ::access(path, F_OK) == 0;
          procs.push_back(std::move(j));
        }
        out["by_node"] = model_.ByNodeJson(now);
        for (const auto& [exe, p] : model_.profiles())
          profiles.push_back(model_.ProfileJson(p, now));
      }
      if (want_pid && procs.empty() && !req.value("lenient", false)) {
        reply(Status::NotFound("no I/O on /mfs recorded for pid " + std::to_string(only) +
                               " on node " + std::to_string(daemon_.config().id)));
        return;
      }
      out["processes"] = std::move(procs);
      out["profiles"] = std::move(profiles);
      if (req.value("history", false)) {
        uint64_t skipped = 0;
        size_t limit = req.value("history_limit", static_cast<uint64_t>(360));
        out["history"] = ReadHistory(limit, &skipped);
        out["history_skipped"] = skipped;
      }
      reply(std::move(out));
    });
  });
}

void LocalityService::ClusterSnapshot(const json& req, Reply reply) {
  struct Gather {
    std::mutex mu;
    json nodes = json::array();
    json unreachable = json::array();
    size_t left = 1;
    Reply reply;
    bool want_pid = false;
    uint64_t pid = 0;
  };
  auto g = std::make_shared<Gather>();
  g->reply = std::move(reply);
  g->want_pid = req.contains("pid");
  if (g->want_pid) g->pid = req["pid"].get<uint64_t>();
  auto finish_one = [g] {
    std::lock_guard lock(g->mu);
    if (--g->left != 0) return;
    auto by_node = [](const json& a, const json& b) {
      return a.value("node", 0u) < b.value("node", 0u);
    };
    std::sort(g->nodes.begin(), g->nodes.end(), by_node);
    std::sort(g->unreachable.begin(), g->unreachable.end(), by_node);
    if (g->want_pid) {
      bool found = false;
      for (const auto& n : g->nodes) found |= !n["processes"].empty();
      if (!found) {
        g->reply(Status::NotFound("no I/O on /mfs recorded for pid " + std::to_string(g->pid) +
                                  " on any node that answered"));
        return;
      }
    }
    g->reply(json{{"nodes", std::move(g->nodes)}, {"unreachable", std::move(g->unreachable)}});
  };
  json peer_req = req;
  peer_req.erase("all");
  peer_req["lenient"] = true;
  std::vector<node::PeerInfo> peers = daemon_.membership().Snapshot();
  uint32_t self = daemon_.config().id;
  std::vector<uint32_t> ask;
  {
    std::lock_guard lock(g->mu);
    for (const auto& p : peers) {
      if (p.id == self) continue;
      if (p.id == 0 || p.state == node::PeerState::kDead || p.state == node::PeerState::kLeft) {
        std::string why =
            p.id == 0 ? "has never answered" : std::string("is ") + node::PeerStateName(p.state);
        if (!p.last_error.empty()) why += " (" + p.last_error + ")";
        json u{{"node", p.id}, {"address", p.address}, {"error", "node " + why}};
        g->unreachable.push_back(std::move(u));
        continue;
      }
      ask.push_back(p.id);
      ++g->left;
    }
  }
  std::string payload = peer_req.dump();
  for (uint32_t id : ask) {
    std::string address;
    for (const auto& p : peers) {
      if (p.id == id) address = p.address;
    }
    auto fail = [g, id, address, finish_one](const Status& s) {
      {
        std::lock_guard lock(g->mu);
        g->unreachable.push_back(json{{"node", id}, {"address", address}, {"error", s.ToString()}});
      }
      finish_one();
    };
    daemon_.PeerConnection(
        id, [this, g, id, payload, fail, finish_one](Result<wire::Connection::Ptr> c) {
          if (!c.ok()) {
            fail(c.status());
            return;
          }
          (*c)->Call(
              kFrameLocalityQuery, payload,
              [g, id, fail, finish_one](Result<wire::Frame> f) {
                if (!f.ok()) {
                  fail(f.status());
                  return;
                }
                json j = json::parse(f->payload, nullptr, false);
                if (j.is_discarded() || !j.is_object() || j.value("node", 0u) != id) {
                  fail(Status::Error(EPROTO,
                                     "malformed locality reply from node " + std::to_string(id)));
                  return;
                }
                {
                  std::lock_guard lock(g->mu);
                  g->nodes.push_back(std::move(j));
                }
                finish_one();
              },
              o_.peer_timeout);
        });
  }
  json local_req = peer_req;
  LocalSnapshot(local_req, [g, finish_one, self](Result<json> r) {
    {
      std::lock_guard lock(g->mu);
      if (r.ok()) {
        g->nodes.push_back(std::move(r).value());
      } else {
        g->unreachable.push_back(json{{"node", self}, {"error", r.status().ToString()}});
      }
    }
    finish_one();
  });
}

void LocalityService::ScheduleTick() {
  timer_.expires_after(std::chrono::milliseconds(
      static_cast<int64_t>(std::max(100.0, o_.history_interval_s * 1000.0))));
  timer_.async_wait([this](boost::system::error_code e) {
    if (!e) Tick();
  });
}

void LocalityService::Tick() {
  std::vector<pid_t> active;
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    active = model_.ActivePids(NowMs(), static_cast<int64_t>(2 * o_.history_interval_s * 1000));
  }
  // Classify the interval's bytes against where the processes run now.
  RefreshWhere(std::move(active), [this] {
    Post([this] {
      HistoryPoint h;
      std::vector<std::pair<std::string, std::string>> profiles;
      {
        std::lock_guard lock(mu_);
        if (stopping_) return;
        int64_t now = NowMs();
        h = model_.TakeHistoryPoint(now);
        model_.Expire(now);
        for (auto& [exe, p] : model_.profiles()) {
          if (!p.dirty) continue;
          profiles.emplace_back(ProfileKey(exe), EncodeProfile(p, now, o_.half_life_s * 1000.0));
          p.dirty = false;
        }
      }
      Persist(h, std::move(profiles));
    });
  });
  ScheduleTick();
}

void LocalityService::Persist(const HistoryPoint& h,
                              std::vector<std::pair<std::string, std::string>> profiles) {
  node::StateStore& store = daemon_.store();
  for (const auto& [k, v] : profiles) {
    Status s = store.Put(k, v);
    if (!s.ok()) spdlog::warn("locality: save profile {}: {}", k, s.ToString());
  }
  if (h.t_ms == 0) return;
  Status s = store.Put(HistoryKey(h.t_ms), EncodeHistory(h));
  if (!s.ok()) {
    spdlog::warn("locality: save history point: {}", s.ToString());
    return;
  }
  uint64_t count, excess;
  {
    std::lock_guard lock(mu_);
    count = ++history_count_;
  }
  excess = count > o_.history_max_points ? count - o_.history_max_points : 0;
  std::string cutoff = HistoryKey(h.t_ms - static_cast<int64_t>(o_.history_ttl_s) * 1000);
  // Delete the oldest points: those beyond the count bound and those past
  // their time to live.
  uint64_t n = 0;
  std::string last;
  s = store.Scan(kHistoryPrefix, [&](std::string_view key, std::string_view) {
    if (n >= excess && std::string_view(key) >= cutoff) return false;
    last = std::string(key);
    ++n;
    return true;
  });
  if (!s.ok() || n == 0) return;
  s = store.DeleteRange(kHistoryPrefix, last + '\0');
  if (!s.ok()) {
    spdlog::warn("locality: prune history: {}", s.ToString());
    return;
  }
  bool compact = false;
  {
    std::lock_guard lock(mu_);
    history_count_ -= std::min(history_count_, n);
    deleted_since_compaction_ += n;
    if (deleted_since_compaction_ >= 1024) {
      deleted_since_compaction_ = 0;
      compact = true;
    }
  }
  if (compact) {
    // Range tombstones cost reads until compacted away.
    std::string begin(kHistoryPrefix), end = HistoryKey(h.t_ms);
    rocksdb::Slice b(begin), e(end);
    store.db()->CompactRange(rocksdb::CompactRangeOptions(), &b, &e).PermitUncheckedError();
  }
}

json LocalityService::ReadHistory(size_t limit, uint64_t* skipped) {
  std::deque<json> points;
  Status s = daemon_.store().Scan(kHistoryPrefix, [&](std::string_view key, std::string_view v) {
    auto h = DecodeHistory(v);
    if (!h.ok()) {
      spdlog::warn("locality: skipping corrupt history record '{}': {}", key,
                   h.status().ToString());
      ++*skipped;
      return true;
    }
    points.push_back(json{{"t_ms", h->t_ms},
                          {"interval_ms", h->interval_ms},
                          {"local_bytes", h->local()},
                          {"remote_bytes", h->remote()},
                          {"local_read", h->local_read},
                          {"local_write", h->local_write},
                          {"remote_read", h->remote_read},
                          {"remote_write", h->remote_write},
                          {"cached_bytes", h->cached}});
    if (points.size() > limit) points.pop_front();
    return true;
  });
  if (!s.ok()) spdlog::warn("locality: read history: {}", s.ToString());
  return json(std::vector<json>(points.begin(), points.end()));
}

}  // namespace mfs::locality

#include "mfs/client/client.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <fstream>

#include "mfs/client/control_query.h"
#include "mfs/client/local_ops.h"

namespace mfs::client {

namespace {
constexpr auto kLiveTtl = std::chrono::milliseconds(1000);
constexpr auto kWhereTtl = std::chrono::milliseconds(500);
constexpr auto kControlTimeout = std::chrono::milliseconds(300);
constexpr size_t kWhereCacheMax = 4096;
}  // namespace

const char* MagicName(Magic m) {
  switch (m) {
    case Magic::kHere: return "here";
    case Magic::kHome: return "home";
    case Magic::kMagic: return "magic";
    case Magic::kLastExec: return "lastexec";
    case Magic::kSelected: return "selected";
    default: return "";
  }
}

Client::Client(const ClientOptions& opts) : opts_(opts) {
  clock_gettime(CLOCK_REALTIME, &started_);
}
Client::~Client() = default;

Result<std::unique_ptr<Client>> Client::Create(const ClientOptions& opts) {
  if (opts.self_id == 0 || opts.self_id > 255)
    return Status::InvalidArgument("node id must be 1..255");
  MFS_ASSIGN_OR_RETURN(UniqueFd root, ops::OpenRoot(opts.export_path));
  std::unique_ptr<Client> c(new Client(opts));
  c->local_ =
      std::make_unique<LocalBackend>(&c->table_, opts.self_id, std::move(root), 0, opts.path_fds);
  c->root_ = std::make_shared<Inode>(kRootIno, InodeKind::kRoot, opts.self_id);
  c->root_->type = S_IFDIR;
  for (int i = 0; i < static_cast<int>(Magic::kCount); ++i) {
    c->magic_[i] = std::make_shared<Inode>(kFirstMagicIno + i, InodeKind::kMagic, opts.self_id);
    c->magic_[i]->type = S_IFLNK;
  }
  return c;
}

InodePtr Client::Get(uint64_t ino) const {
  if (ino == kRootIno) return root_;
  if (ino >= kFirstMagicIno && ino < kFirstMagicIno + static_cast<int>(Magic::kCount))
    return magic_[ino - kFirstMagicIno];
  return table_.Get(ino);
}

Backend* Client::BackendFor(const Inode& inode) {
  if (inode.kind == InodeKind::kLocal) return local_.get();
  if (inode.kind == InodeKind::kRemote) return remote_.get();
  return nullptr;
}

void Client::SetRemote(std::unique_ptr<Backend> remote,
                       std::function<void(uint32_t, Cb<EntryOut>)> root) {
  remote_ = std::move(remote);
  remote_root_ = std::move(root);
  table_.SetOnRemove([this](const InodePtr& i) {
    if (i->kind == InodeKind::kRemote && remote_) remote_->Forgotten(i);
  });
}

struct stat Client::RootAttr() const {
  struct stat st {};
  st.st_atim = st.st_mtim = st.st_ctim = started_;
  st.st_ino = kRootIno;
  st.st_mode = S_IFDIR | 0755;
  st.st_nlink = 2;
  return st;
}

struct stat Client::MagicAttr(Magic m) const {
  struct stat st {};
  st.st_ino = kFirstMagicIno + static_cast<int>(m);
  st.st_mode = S_IFLNK | 0777;
  st.st_atim = st.st_mtim = st.st_ctim = started_;
  st.st_nlink = 1;
  st.st_size = 3;
  return st;
}

static std::optional<uint32_t> ParseNodeId(const std::string& s) {
  uint32_t v = 0;
  if (s.empty() || s.size() > 3 || s[0] == '0') return std::nullopt;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || v == 0 || v > 255) return std::nullopt;
  return v;
}

void Client::LookupRoot(const Caller& c, const std::string& name, Cb<EntryOut> cb) {
  for (int i = 0; i < static_cast<int>(Magic::kCount); ++i) {
    if (name == MagicName(static_cast<Magic>(i))) {
      // Magic entries are fixed inodes outside the table: no lookup count.
      return cb(EntryOut{magic_[i], MagicAttr(static_cast<Magic>(i))});
    }
  }
  (void)c;
  auto id = ParseNodeId(name);
  if (!id) return cb(Status::NotFound("/mfs/" + name + ": no such node"));
  if (*id == self()) return cb(local_->RootEntry());
  if (IsKnownDown(*id))
    return cb(Status::Error(EHOSTDOWN, "/mfs/" + name + ": node is down"));
  if (!IsLive(*id) || !remote_root_)
    return cb(Status::NotFound("/mfs/" + name + ": no such node"));
  remote_root_(*id, std::move(cb));
}

std::vector<uint32_t> Client::LiveNodes() {
  auto fresh = [this] {
    return !live_.empty() && std::chrono::steady_clock::now() - live_at_ < kLiveTtl;
  };
  {
    std::lock_guard<std::mutex> l(mu_);
    if (fresh()) return live_;
  }
  std::unique_lock<std::mutex> refresh(refresh_mu_, std::try_to_lock);
  if (!refresh.owns_lock()) {
    // Another thread is asking mfsd: a stale answer beats waiting for it.
    {
      std::lock_guard<std::mutex> l(mu_);
      if (!live_.empty()) return live_;
    }
    refresh.lock();
    std::lock_guard<std::mutex> l(mu_);
    if (fresh()) return live_;
  }
  std::vector<uint32_t> nodes{self()};
  std::map<uint32_t, std::string> addresses;
  std::vector<uint32_t> seen;
  if (!opts_.control_socket.empty()) {
    auto r = ControlQuery(opts_.control_socket, {{"op", "status"}}, kControlTimeout);
    if (r.ok() && r->value("ok", false) && r->contains("peers") && (*r)["peers"].is_array()) {
      for (const auto& p : (*r)["peers"]) {
        if (!p.is_object()) continue;
        uint32_t id = 0;
        for (const char* k : {"id", "node", "node_id"})
          if (p.contains(k) && p[k].is_number_unsigned()) id = p[k].get<uint32_t>();
        if (id < 1 || id > 255) continue;
        std::string state = p.value("state", std::string("alive"));
        if (p.contains("address") && p["address"].is_string())
          addresses[id] = p["address"].get<std::string>();
        if (state == "alive" || state == "up") nodes.push_back(id);
        seen.push_back(id);
      }
    }
  }
  std::sort(nodes.begin(), nodes.end());
  nodes.erase(std::unique(nodes.begin(), nodes.end()), nodes.end());
  std::lock_guard<std::mutex> l(mu_);
  for (auto& [id, a] : addresses) addresses_[id] = std::move(a);
  for (uint32_t id : seen)
    if (std::find(known_.begin(), known_.end(), id) == known_.end()) known_.push_back(id);
  live_ = nodes;
  live_at_ = std::chrono::steady_clock::now();
  return nodes;
}

std::optional<std::string> Client::AddressOf(uint32_t node) {
  LiveNodes();
  std::lock_guard<std::mutex> l(mu_);
  auto it = addresses_.find(node);
  if (it == addresses_.end()) return std::nullopt;
  return it->second;
}

bool Client::IsKnownDown(uint32_t node) {
  if (IsLive(node)) return false;
  std::lock_guard<std::mutex> l(mu_);
  return std::find(known_.begin(), known_.end(), node) != known_.end();
}

bool Client::IsLive(uint32_t node) {
  auto nodes = LiveNodes();
  return std::find(nodes.begin(), nodes.end(), node) != nodes.end();
}

std::vector<DirEntryOut> Client::ListRoot() {
  std::vector<DirEntryOut> out;
  uint64_t off = 0;
  auto add = [&](std::string name, mode_t type, uint64_t ino) {
    DirEntryOut e;
    e.name = std::move(name);
    e.type = type;
    e.ino = ino;
    e.next_off = ++off;
    out.push_back(std::move(e));
  };
  add(".", S_IFDIR, kRootIno);
  add("..", S_IFDIR, kRootIno);
  for (uint32_t n : LiveNodes()) add(std::to_string(n), S_IFDIR, ShownIno(n, 2));
  for (int i = 0; i < static_cast<int>(Magic::kCount); ++i)
    add(MagicName(static_cast<Magic>(i)), S_IFLNK, kFirstMagicIno + i);
  return out;
}

pid_t Client::ProcessOf(pid_t tid) {
  std::ifstream in("/proc/" + std::to_string(tid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("Tgid:", 0) == 0) return static_cast<pid_t>(std::atoi(line.c_str() + 5));
  }
  return tid;  // gone already: the best we can say
}

ProcPlace Client::Where(pid_t tid) {
  pid_t pid = ProcessOf(tid);
  ProcPlace self_place{self(), self(), self(), self(), self()};
  if (opts_.control_socket.empty()) return self_place;
  auto now = std::chrono::steady_clock::now();
  {
    std::lock_guard<std::mutex> l(mu_);
    if (where_unsupported_) return self_place;
    auto it = where_.find(pid);
    if (it != where_.end() && now - it->second.at < kWhereTtl) return it->second.place;
  }
  auto r = ControlQuery(opts_.control_socket, {{"op", "proc.where"}, {"pid", pid}}, kControlTimeout);
  ProcPlace place = self_place;
  bool unsupported = false;
  if (r.ok() && r->value("ok", false)) {
    auto get = [&](const char* k, uint32_t dflt) {
      return r->contains(k) && (*r)[k].is_number_unsigned() ? (*r)[k].get<uint32_t>() : dflt;
    };
    place.home = get("home", self());
    place.here = get("where", self());
    place.magic = get("magic", place.here);
    place.lastexec = get("lastexec", place.here);
    place.selected = get("selected", place.here);
  } else if (r.ok() && r->value("errno", 0) == ENOSYS) {
    unsupported = true;  // an mfsd without the op: here = home = this node
  }
  std::lock_guard<std::mutex> l(mu_);
  if (unsupported) where_unsupported_ = true;
  if (where_.size() > kWhereCacheMax) where_.clear();
  where_[pid] = {place, now};
  return place;
}

std::string Client::ReadMagic(const Caller& c, Magic m) {
  ProcPlace p = Where(c.pid);
  uint32_t n = self();
  switch (m) {
    case Magic::kHere: n = p.here; break;
    case Magic::kHome: n = p.home; break;
    case Magic::kMagic: n = p.magic; break;
    case Magic::kLastExec: n = p.lastexec; break;
    case Magic::kSelected: n = p.selected; break;
    default: break;
  }
  return std::to_string(n);
}

void Client::SetIoObserver(std::shared_ptr<IoObserver> o) { observer_ = std::move(o); }

void Client::AccountIo(pid_t tid, uint32_t node, IoOp op, uint64_t bytes) {
  if (observer_) observer_->OnIo(tid, node, op, bytes);
}

}  // namespace mfs::client

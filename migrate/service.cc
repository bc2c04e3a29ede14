#include "migrate/service.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

#include "mfs/base/coding.h"
#include "mfs/base/log.h"
#include "mfs/control/client.h"
#include "mfs/node/daemon.h"
#include "migrate/fault.h"
#include "migrate/protocol.h"
#include "migrate/supervisor.h"

namespace mfs::migrate {
namespace {

using json = nlohmann::json;
using Reply = control::ControlServer::Reply;

std::string RunDir(const node::Config& c) {
  return std::filesystem::path(c.control_socket).parent_path().string();
}

// Starts `argv` detached from mfsd (double fork, new session) so that an mfsd
// restart leaves it alone. Returns the read end of a pipe whose write end the
// program gets as --ready-fd.
Result<UniqueFd> SpawnDetached(std::vector<std::string> argv) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return Status::FromErrno("pipe2");
  // The child keeps only stdio and the ready pipe (as fd 3): mfsd's
  // listening socket, peer connections and control socket must not live on
  // in a supervisor that outlives mfsd (a restarted mfsd could not bind).
  argv.push_back("--ready-fd");
  argv.push_back("3");
  std::vector<char*> a;
  for (auto& s : argv) a.push_back(s.data());
  a.push_back(nullptr);
  pid_t pid = fork();
  if (pid < 0) {
    close(p[0]);
    close(p[1]);
    return Status::FromErrno("fork");
  }
  if (pid == 0) {
    setsid();
    if (fork() != 0) _exit(0);
    if (p[1] == 3) {
      fcntl(3, F_SETFD, 0);
    } else if (dup2(p[1], 3) < 0) {  // the copy is not close-on-exec
      _exit(127);
    }
    syscall(SYS_close_range, 4u, ~0u, 0u);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execv(a[0], a.data());
    _exit(127);
  }
  close(p[1]);
  int status;
  waitpid(pid, &status, 0);
  return UniqueFd(p[0]);
}

// Reads exactly n bytes (blocking, bounded by `timeout_ms`).
Status ReadReady(int fd, void* buf, size_t n, int timeout_ms) {
  size_t got = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (got < n) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) return Status::TimedOut("supervisor did not start in time");
    pollfd pfd{fd, POLLIN, 0};
    int r = poll(&pfd, 1, static_cast<int>(left));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) continue;
    ssize_t k = read(fd, static_cast<char*>(buf) + got, n - got);
    if (k == 0) return Status::Error(ECHILD, "supervisor exited before it was ready (see the node log)");
    if (k < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno("read supervisor ready pipe");
    }
    got += static_cast<size_t>(k);
  }
  return Status::OK();
}

std::vector<std::string> CommonArgs(const std::string& bin, const node::Config& c) {
  return {bin, "--node-id", std::to_string(c.id), "--address", c.address, "--secret", c.secret_file,
          "--run-dir", RunDir(c), "--mfsd-socket", c.control_socket, "--log-level", c.log_level,
          "--log-file", c.log_file};
}

bool Exists(const std::string& p) { return access(p.c_str(), F_OK) == 0; }

}  // namespace

std::string DefaultSupervisorBinary() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return "mfs-supervisor";
  return (std::filesystem::path(std::string(buf, static_cast<size_t>(n))).parent_path() / "mfs-supervisor").string();
}

void RegisterMigrationService(node::Daemon& d, const std::string& bin) {
  node::Daemon* daemon = &d;
  const std::string run_dir = RunDir(d.config());

  // mfsrun: start a home supervisor for the caller's process.
  d.RegisterControlOp("migrate.run", [daemon, bin, run_dir](const json& req, const control::Caller& caller, Reply reply) {
    int pid = req.value("pid", 0);
    if (pid <= 0) return reply(Status::InvalidArgument("migrate.run: \"pid\" required"));
    struct stat st;
    if (stat(("/proc/" + std::to_string(pid)).c_str(), &st) != 0)
      return reply(Status::NotFound("no process " + std::to_string(pid)));
    if (caller.uid != 0 && caller.uid != st.st_uid)
      return reply(Status::PermissionDenied("process " + std::to_string(pid) + " is not yours"));
    if (Exists(HomeSocketPath(run_dir, pid))) return reply(Status::Error(EEXIST, "already supervised"));
    auto args = CommonArgs(bin, daemon->config());
    args.insert(args.begin() + 1, "home");
    args.push_back("--pid");
    args.push_back(std::to_string(pid));
    if (req.contains("node") && req["node"].is_number_unsigned()) {
      args.push_back("--initial-node");
      args.push_back(std::to_string(req["node"].get<uint32_t>()));
    }
    boost::asio::post(daemon->blocking(), [args, reply, pid] {
      auto fd = SpawnDetached(args);
      if (!fd.ok()) return reply(fd.status());
      char c;
      Status s = ReadReady(fd->get(), &c, 1, 10000);
      if (!s.ok()) return reply(s.Annotate("supervisor for " + std::to_string(pid)));
      reply(json{{"pid", pid}});
    });
  });

  // A home supervisor here wants a guest on `node`.
  d.RegisterControlOp("migrate.spawn_guest", [daemon](const json& req, const control::Caller& caller, Reply reply) {
    if (caller.uid != 0) return reply(Status::PermissionDenied("supervisors only"));
    uint32_t node = req.value("node", 0u);
    if (node == daemon->config().id) return reply(Status::InvalidArgument("that is this node"));
    auto info = daemon->membership().Find(node);
    if (!info || info->state != node::PeerState::kAlive)
      return reply(Status::Unavailable("node " + std::to_string(node) + " is unknown or dead"));
    std::string payload;
    Writer w(&payload);
    w.U32(daemon->config().id);
    w.U32(req.value("home_pid", 0u));
    w.Bytes(req.value("comm", std::string()));
    daemon->PeerConnection(node, [payload, reply, node](Result<wire::Connection::Ptr> c) {
      if (!c.ok()) return reply(c.status().Annotate("node " + std::to_string(node)));
      (*c)->Call(kSpawnGuest, payload, [reply](Result<wire::Frame> r) {
        if (!r.ok()) return reply(r.status());
        Reader rd(r->payload);
        std::string address(rd.Bytes());
        uint16_t port = rd.U16();
        if (!rd.done()) return reply(Status::Corruption("spawn_guest reply"));
        reply(json{{"address", address}, {"port", port}});
      }, std::chrono::seconds(15));
    });
  });

  d.RegisterFrameHandler(kSpawnGuest, kSpawnGuest, [daemon, bin](const wire::Connection::Ptr& c, wire::Frame f) {
    Reader rd(f.payload);
    uint32_t home_node = rd.U32();
    uint32_t home_pid = rd.U32();
    std::string comm(rd.Bytes());
    if (!rd.done() || home_node != c->peer_id())
      return c->ReplyError(f, Status::Corruption("spawn request"));
    FaultPoint("spawn");
    if (daemon->config().table) {
      auto accept = (*daemon->config().table)["migrate"]["accept_guests"].value<bool>();
      if (accept && !*accept) return c->ReplyError(f, Status::PermissionDenied("node refuses guests"));
    }
    auto args = CommonArgs(bin, daemon->config());
    args.insert(args.begin() + 1, "guest");
    args.insert(args.end(), {"--home-node", std::to_string(home_node), "--home-pid", std::to_string(home_pid)});
    std::string address = daemon->config().address;
    boost::asio::post(daemon->blocking(), [c, f, args, address] {
      auto fd = SpawnDetached(args);
      if (!fd.ok()) return c->ReplyError(f, fd.status());
      uint16_t port = 0;
      Status s = ReadReady(fd->get(), &port, 2, 10000);
      if (!s.ok()) return c->ReplyError(f, s.Annotate("guest supervisor"));
      std::string out;
      Writer w(&out);
      w.Bytes(address);
      w.U16(port);
      c->Reply(f, out);
    });
  });

  d.RegisterControlOp("migrate.move", [daemon, run_dir](const json& req, const control::Caller& caller, Reply reply) {
    int pid = req.value("pid", 0);
    std::string sock = HomeSocketPath(run_dir, pid);
    if (pid <= 0 || !Exists(sock))
      return reply(Status::NotFound("process " + std::to_string(pid) + " was not started with mfsrun on this node"));
    json fwd{{"op", "move"}};
    if (req.contains("node") && req["node"] == "home") {
      fwd["node"] = "home";
    } else if (req.contains("node") && req["node"].is_number_unsigned()) {
      uint32_t node = req["node"].get<uint32_t>();
      if (node != daemon->config().id) {
        auto info = daemon->membership().Find(node);
        if (!info || info->state != node::PeerState::kAlive)
          return reply(Status::Unavailable("node " + std::to_string(node) + " is unknown or dead"));
      }
      fwd["node"] = node;
    } else {
      return reply(Status::InvalidArgument("migrate.move: \"node\" must be a node id or \"home\""));
    }
    struct stat st;
    if (caller.uid != 0 && (stat(("/proc/" + std::to_string(pid)).c_str(), &st) != 0 || st.st_uid != caller.uid))
      return reply(Status::PermissionDenied("process " + std::to_string(pid) + " is not yours"));
    if (FaultArmed("move"))  // mfsd dies while its supervisor moves the process
      std::thread([] {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        FaultPoint("move");
      }).detach();
    boost::asio::post(daemon->blocking(), [sock, fwd, reply] { reply(control::Call(sock, fwd, 120000)); });
  });

  d.RegisterControlOp("migrate.ps", [daemon, run_dir](const json&, const control::Caller&, Reply reply) {
    boost::asio::post(daemon->blocking(), [run_dir, reply] {
      json list = json::array();
      std::error_code ec;
      for (const auto& e : std::filesystem::directory_iterator(run_dir + "/sup", ec)) {
        if (e.path().extension() != ".sock") continue;
        auto r = control::Call(e.path().string(), json{{"op", "info"}}, 2000);
        if (!r.ok()) {
          // A supervisor that died leaves its socket: remove it.
          if (r.status().code() == ECONNREFUSED) std::filesystem::remove(e.path(), ec);
          continue;
        }
        r->erase("ok");
        list.push_back(*r);
      }
      reply(json{{"processes", list}});
    });
  });

  d.RegisterControlOp("proc.where", [daemon, run_dir](const json& req, const control::Caller&, Reply reply) {
    int pid = req.value("pid", 0);
    if (pid <= 0) return reply(Status::InvalidArgument("proc.where: \"pid\" required"));
    uint32_t self = daemon->config().id;
    std::string home = HomeSocketPath(run_dir, pid), guest = GuestSocketPath(run_dir, pid);
    if (!Exists(home) && !Exists(guest))
      return reply(json{{"home", self}, {"where", self}, {"migratable", false}});
    boost::asio::post(daemon->blocking(), [home, guest, self, reply] {
      bool is_home = access(home.c_str(), F_OK) == 0;
      auto r = control::Call(is_home ? home : guest, json{{"op", "info"}}, 2000);
      if (!r.ok()) return reply(json{{"home", self}, {"where", self}, {"migratable", false}});
      // A guest's process is known by its home identity (home node, home
      // pid): locality figures gathered here are attributed to it.
      json out{{"home", (*r)["home"]}, {"where", (*r)["where"]}, {"migratable", true}};
      out["home_pid"] = r->contains("home_pid") ? (*r)["home_pid"] : (*r)["pid"];
      reply(out);
    });
  });
}

}  // namespace mfs::migrate

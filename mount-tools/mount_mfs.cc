// mount.mfs — mounts /mfs, the cluster filesystem.
//
//   mount.mfs cluster /mfs -o config=/etc/mfs/mfsd.toml[,opts]   (mount -t mfs)
//   mount.mfs cluster /mnt -o id=1,export=/srv/mfs/1 -f          (standalone)
//
// Reads the node's config file ([node] id, address, export, secret_file,
// control_socket, peers; [fs] attr_timeout, threads), builds the client,
// mounts, daemonizes unless -f, and serves until unmounted. See
// man/mount.mfs.8.
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <memory>
#include <sstream>
#include <toml++/toml.h>

#include "mfs/base/log.h"
#include "mfs/base/rlimit.h"
#include "mfs/client/client.h"
#include "mfs/client/remote_backend.h"
#include "mfs/locality/client_observer.h"
#include "mfs/fuse/fuse_fs.h"
#include "mfs/wire/auth.h"

namespace {

struct MountConfig {
  mfs::client::ClientOptions client;
  mfs::client::RemoteOptions remote;
  unsigned threads = 16;
  unsigned read_ahead_kb = 4096;
  std::string passthrough = "auto";
  std::string io_uring = "auto";
  std::string log_level = "info";
  std::string log_file;
  std::vector<std::string> kernel_opts;
};

// An "auto" | "on" | "off" setting of [fs], or a boolean for on/off.
mfs::Status AutoOnOff(toml::node_view<toml::node> fs, const char* key, const std::string& path,
                      std::string* out) {
  const toml::node* n = fs[key].node();
  if (!n) return mfs::Status::OK();
  if (n->is_boolean())
    *out = *n->value<bool>() ? "on" : "off";
  else if (n->is_string())
    *out = *n->value<std::string>();
  else
    return mfs::Status::InvalidArgument(path + ": [fs] " + key +
                                        " must be \"auto\", \"on\" or \"off\"");
  return mfs::Status::OK();
}

mfs::Status LoadToml(const std::string& path, MountConfig* mc) {
  toml::table t;
  try {
    t = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    std::ostringstream os;
    os << path << ": " << e.description() << " at " << e.source().begin;
    return mfs::Status::InvalidArgument(os.str());
  }
  auto node = t["node"];
  if (auto v = node["id"].value<int64_t>()) mc->client.self_id = static_cast<uint32_t>(*v);
  mc->client.export_path = node["export"].value_or(std::string("/"));
  mc->client.control_socket = node["control_socket"].value_or(std::string("/run/mfs/mfsd.sock"));
  mc->remote.address = node["address"].value_or(std::string("127.0.0.1"));
  mc->remote.port = static_cast<uint16_t>(node["port"].value_or(int64_t{7420}));
  mc->remote.secret_file = node["secret_file"].value_or(std::string("/etc/mfs/secret"));
  if (auto arr = node["peers"].as_array())
    for (auto& p : *arr)
      if (auto s = p.value<std::string>()) mc->remote.peers.push_back(*s);
  auto fs = t["fs"];
  mc->client.attr_timeout = fs["attr_timeout"].value_or(mc->client.attr_timeout);
  mc->client.entry_timeout = fs["entry_timeout"].value_or(mc->client.entry_timeout);
  mc->client.path_fds = fs["path_fds"].value_or(mc->client.path_fds);
  mc->threads = static_cast<unsigned>(fs["threads"].value_or(int64_t{16}));
  mc->read_ahead_kb = static_cast<unsigned>(fs["read_ahead_kb"].value_or(int64_t{4096}));
  MFS_RETURN_IF_ERROR(AutoOnOff(fs, "passthrough", path, &mc->passthrough));
  MFS_RETURN_IF_ERROR(AutoOnOff(fs, "io_uring", path, &mc->io_uring));
  mc->log_level = t["log"]["level"].value_or(std::string("info"));
  mc->log_file = t["log"]["file"].value_or(std::string());
  return mfs::Status::OK();
}

// -o options: ours are consumed, the rest go to the kernel mount.
mfs::Status ParseOptions(const std::vector<std::string>& groups, MountConfig* mc) {
  std::vector<std::pair<std::string, std::string>> kv;
  for (const auto& g : groups) {
    std::stringstream ss(g);
    std::string item;
    while (std::getline(ss, item, ',')) {
      if (item.empty()) continue;
      auto eq = item.find('=');
      kv.emplace_back(item.substr(0, eq), eq == std::string::npos ? "" : item.substr(eq + 1));
    }
  }
  for (auto& [k, v] : kv)  // the config file first, so explicit options win
    if (k == "config") MFS_RETURN_IF_ERROR(LoadToml(v, mc));
  for (auto& [k, v] : kv) {
    try {
      if (k == "config") continue;
      if (k == "id") mc->client.self_id = static_cast<uint32_t>(std::stoul(v));
      else if (k == "export") mc->client.export_path = v;
      else if (k == "control_socket") mc->client.control_socket = v;
      else if (k == "secret_file") mc->remote.secret_file = v;
      else if (k == "address") mc->remote.address = v;
      else if (k == "attr_timeout") mc->client.attr_timeout = std::stod(v);
      else if (k == "entry_timeout") mc->client.entry_timeout = std::stod(v);
      else if (k == "path_fds")
        mc->client.path_fds = std::stoll(v);
      else if (k == "threads") mc->threads = static_cast<unsigned>(std::stoul(v));
      else if (k == "read_ahead_kb") mc->read_ahead_kb = static_cast<unsigned>(std::stoul(v));
      else if (k == "passthrough")
        mc->passthrough = v;
      else if (k == "io_uring")
        mc->io_uring = v;
      else if (k == "log_level") mc->log_level = v;
      else if (k == "log_file") mc->log_file = v;
      else if (k == "rw" || k == "defaults" || k == "auto" || k == "noauto" || k == "_netdev" ||
               k == "nofail" || k == "user" || k == "users")
        continue;
      else mc->kernel_opts.push_back(v.empty() ? k : k + "=" + v);
    } catch (const std::exception&) {
      return mfs::Status::InvalidArgument("bad value for option " + k + ": '" + v + "'");
    }
  }
  return mfs::Status::OK();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mount.mfs: mount /mfs, the mfs cluster filesystem"};
  std::string spec, mountpoint;
  std::vector<std::string> opts;
  bool foreground = false, debug = false, sloppy = false, fake = false, verbose = false;
  app.add_option("spec", spec, "mount source (any word, e.g. cluster)")->required();
  app.add_option("mountpoint", mountpoint, "where to mount (e.g. /mfs)")->required();
  app.add_option("-o", opts, "options: config=FILE, id=N, export=DIR, ... (see mount.mfs(8))");
  app.add_flag("-f,--foreground", foreground, "stay in the foreground");
  app.add_flag("-d,--debug", debug, "FUSE debug output (implies -f)");
  app.add_flag("-s", sloppy, "ignored (mount(8) compatibility)");
  app.add_flag("-n", fake, "ignored (mount(8) compatibility)");
  app.add_flag("-v", verbose, "ignored (mount(8) compatibility)");
  CLI11_PARSE(app, argc, argv);

  MountConfig mc;
  if (mfs::Status s = ParseOptions(opts, &mc); !s.ok()) {
    std::fprintf(stderr, "mount.mfs: %s\n", s.ToString().c_str());
    return 1;
  }
  if (mc.client.self_id == 0) {
    std::fprintf(stderr, "mount.mfs: no node id: give -o config=FILE or -o id=N\n");
    return 1;
  }
  mfs::InitLogging("mount.mfs", mc.log_level, mc.log_file);
  umask(0);  // the caller's umask was applied by the kernel already
  mfs::RaiseFdLimit();

  auto client = mfs::client::Client::Create(mc.client);
  if (!client.ok()) {
    std::fprintf(stderr, "mount.mfs: %s\n", client.status().ToString().c_str());
    return 1;
  }
  mc.remote.self_id = mc.client.self_id;
  if (!mc.client.control_socket.empty())
    mc.remote.interest_map = mfs::client::InterestMap::PathFor(mc.client.control_socket);
  mfs::client::RemoteBackend* remote = nullptr;
  if (auto rb = mfs::client::RemoteBackend::Create(client->get(), mc.remote); rb.ok()) {
    remote = rb->get();
    (*client)->SetRemote(std::move(*rb),
                         [remote](uint32_t node, mfs::client::Cb<mfs::client::EntryOut> cb) {
                           remote->RootEntry(node, std::move(cb));
                         });
    (*client)->local().SetChangeHook(
        [remote](const std::string& key, const std::string& name, uint8_t flags, int fd) {
          remote->LocalChanged(key, name, flags, fd);
        });
  } else {
    std::fprintf(stderr, "mount.mfs: other nodes are not reachable: %s\n",
                 rb.status().ToString().c_str());
  }

  // Locality accounting (issue 5): every read/write/open/create on /mfs is
  // attributed to its process and owning node and reported to the local mfsd.
  auto observer = mfs::locality::MakeClientObserver(mc.client.control_socket);
  (*client)->SetIoObserver(observer);

  mfs::fuse::FuseOptions fo;
  fo.mountpoint = mountpoint;
  if (auto p = mfs::fuse::ParsePassthrough(mc.passthrough); p.ok()) {
    fo.passthrough = *p;
  } else {
    std::fprintf(stderr, "mount.mfs: %s\n", p.status().ToString().c_str());
    return 1;
  }
  if (auto u = mfs::fuse::ParseIoUring(mc.io_uring); u.ok()) {
    fo.io_uring = *u;
  } else {
    std::fprintf(stderr, "mount.mfs: %s\n", u.status().ToString().c_str());
    return 1;
  }
  fo.max_threads = mc.threads;
  fo.debug = debug;
  for (auto& o : mc.kernel_opts) fo.extra_options += (fo.extra_options.empty() ? "" : ",") + o;
  mfs::fuse::FuseFs fs(client->get(), fo);
  if (mfs::Status s = fs.Mount(); !s.ok()) {
    std::fprintf(stderr, "mount.mfs: %s\n", s.ToString().c_str());
    return 1;
  }
  if (auto dev = mfs::fuse::MountDev(mountpoint); dev.ok()) {
    (*client)->local().set_hidden_dev(*dev);
    // The kernel caps a FUSE mount's readahead at 128 KiB; sequential reads
    // need more to keep the 1 MiB requests flowing.
    std::string ra = "/sys/class/bdi/" + std::to_string(major(*dev)) + ":" +
                     std::to_string(minor(*dev)) + "/read_ahead_kb";
    if (FILE* f = std::fopen(ra.c_str(), "w")) {
      std::fprintf(f, "%u\n", mc.read_ahead_kb);
      std::fclose(f);
    }
  }
  fs.Daemonize(foreground || debug);
  // Which files of the export our kernel holds, for mfsd to push only
  // those peers' changes (interest_map.h); after the fork, named by our pid.
  std::shared_ptr<mfs::client::InterestMap> held;
  if (remote && !mc.remote.interest_map.empty()) {
    mfs::client::InterestMap::RemoveDeadMountMaps(mc.remote.interest_map);
    uint32_t pid = static_cast<uint32_t>(getpid());
    auto m = mfs::client::InterestMap::Create(
        mfs::client::InterestMap::MountPathFor(mc.remote.interest_map, pid), true);
    if (m.ok()) {
      held = std::make_shared<mfs::client::InterestMap>(std::move(*m));
      (*client)->local().SetHeldMap(held);
      remote->SetHeldMap(pid, held->id());
    } else {
      spdlog::warn("{}: mfsd will push every change of the export", m.status().ToString());
    }
  }
  // Threads only after the fork of Daemonize.
  if (remote) {
    if (mfs::Status s = remote->Start(&fs); !s.ok())
      spdlog::error("remote nodes disabled: {}", s.ToString());
  }
  // Reports from the start, so mfsd's accounting switch reaches an idle
  // client too.
  observer->recorder().Start();
  spdlog::info("node {} serving {} on {}", mc.client.self_id, mc.client.export_path, mountpoint);
  mfs::Status s = fs.Run();
  if (remote) remote->Stop();
  fs.Unmount();
  if (!s.ok()) {
    spdlog::error("{}", s.ToString());
    return 1;
  }
  return 0;
}

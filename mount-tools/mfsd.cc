// mfsd — the mfs node daemon. See man/mfsd.8.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <cstdio>

#include "mfs/base/log.h"
#include "mfs/base/rlimit.h"
#include "mfs/locality/service.h"
#include "mfs/node/config.h"
#include "mfs/node/daemon.h"
#include "mfs/server/file_service.h"
#include "mfs/server/mount_spawner.h"
#include "migrate/service.h"

int main(int argc, char** argv) {
  CLI::App app{"mfsd — mfs node daemon: serves this node's export, tracks peers, runs services"};
  std::string config_path = "/etc/mfs/mfsd.toml";
  bool check = false;
  app.add_option("-c,--config", config_path, "configuration file (TOML)");
  app.add_flag("--check-config", check, "validate the configuration file and exit");
  CLI11_PARSE(app, argc, argv);
  mfs::RaiseFdLimit();  // files peers have open, directories they hold

  auto config = mfs::node::LoadConfig(config_path);
  if (!config.ok()) {
    fprintf(stderr, "mfsd: %s\n", config.status().ToString().c_str());
    return 2;
  }
  if (check) {
    printf("%s: ok (node %u)\n", config_path.c_str(), config->id);
    return 0;
  }
  ::signal(SIGPIPE, SIG_IGN);
  mfs::InitLogging("mfsd." + std::to_string(config->id), config->log_level, config->log_file);

  mfs::node::Daemon daemon(*config);
  mfs::migrate::RegisterMigrationService(daemon, mfs::migrate::DefaultSupervisorBinary());
  mfs::Status s = daemon.Start();
  if (!s.ok()) {
    fprintf(stderr, "mfsd: %s\n", s.ToString().c_str());
    spdlog::error("start failed: {}", s.ToString());
    return 1;
  }
  // --- issue 5: locality accounting, before /mfs is mounted so that the
  // client's first reports are accepted.
  auto locality = mfs::locality::LocalityService::Create(daemon);
  if (!locality.ok()) {
    fprintf(stderr, "mfsd: %s\n", locality.status().ToString().c_str());
    spdlog::error("start failed: {}", locality.status().ToString());
    return 1;
  }

  // --- issue 4 (fs): the file service for this node's export, and the
  // /mfs mount ([node].mount) as a child process.
  mfs::server::FileServiceOptions fso;
  fso.self_id = config->id;
  fso.export_path = config->export_dir;
  fso.secret = daemon.auth().secret;
  fso.interest_map = mfs::client::InterestMap::PathFor(config->control_socket);
  auto files = mfs::server::FileService::Create(fso);
  if (!files.ok()) {
    fprintf(stderr, "mfsd: %s\n", files.status().ToString().c_str());
    spdlog::error("file service: {}", files.status().ToString());
    return 1;
  }
  mfs::server::FileService* fs = files->get();
  daemon.RegisterFrameHandler(static_cast<uint16_t>(mfs::wire::FrameType::kFileFirst),
                              static_cast<uint16_t>(mfs::wire::FrameType::kFileLast),
                              [fs](const mfs::wire::Connection::Ptr& c, mfs::wire::Frame f) {
                                fs->Handle(c, std::move(f));
                              });
  daemon.OnConnectionClosed([fs](const mfs::wire::Connection::Ptr& c) { fs->OnClose(c); });
  mfs::server::MountSpawner mount;
  if (!config->mount.empty()) {
    if (mfs::Status ms = mount.Start(config->mount, config->path); !ms.ok())
      spdlog::error("mount {}: {}", config->mount, ms.ToString());
  }
  daemon.RegisterControlOp(
      "fs.status",
      [fs](const nlohmann::json&, const mfs::control::Caller&) -> mfs::Result<nlohmann::json> {
        return nlohmann::json{{"open_files", fs->open_files()},
                              {"interest", fs->interest_size()},
                              {"pinned_dirs", fs->pinned_dirs()},
                              {"changes_reported", fs->changes_reported()},
                              {"own_mount_pushes", fs->own_mount_pushes()},
                              {"listings_sent", fs->listings_sent()},
                              {"listing_breaks", fs->listing_breaks()}};
      });
  daemon.OnShutdown([fs] { fs->Stop(); });
  // --- end fs

  daemon.Run(1);
  mount.Stop();
  spdlog::info("stopped");
  return 0;
}

// mfsd — the mfs node daemon. See man/mfsd.8.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <cstdio>

#include "mfs/base/log.h"
#include "mfs/node/config.h"
#include "mfs/node/daemon.h"
#include "migrate/service.h"

int main(int argc, char** argv) {
  CLI::App app{"mfsd — mfs node daemon: serves this node's export, tracks peers, runs services"};
  std::string config_path = "/etc/mfs/mfsd.toml";
  bool check = false;
  app.add_option("-c,--config", config_path, "configuration file (TOML)");
  app.add_flag("--check-config", check, "validate the configuration file and exit");
  CLI11_PARSE(app, argc, argv);

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
  daemon.Run(2);
  spdlog::info("stopped");
  return 0;
}

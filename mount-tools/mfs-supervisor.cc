// mfs-supervisor — one per migratable process; started by mfsd, never by hand.
// See man/mfs-migration.7.
#include <malloc.h>
#include <signal.h>

#include <CLI/CLI.hpp>

#include "mfs/base/log.h"
#include "migrate/supervisor.h"

int main(int argc, char** argv) {
  CLI::App app{"mfs-supervisor — ptrace supervisor of one migratable process (started by mfsd)"};
  app.require_subcommand(1);
  mfs::migrate::SupervisorConfig cfg;
  std::string level = "info", log_file;
  int ready_fd = -1;
  auto common = [&](CLI::App* s) {
    s->add_option("--node-id", cfg.node_id)->required();
    s->add_option("--address", cfg.address);
    s->add_option("--secret", cfg.secret_file)->required();
    s->add_option("--run-dir", cfg.run_dir);
    s->add_option("--mfsd-socket", cfg.mfsd_socket);
    s->add_option("--log-level", level);
    s->add_option("--log-file", log_file);
    s->add_option("--ready-fd", ready_fd);
  };
  int pid = 0, home_pid = 0;
  uint32_t initial_node = 0, home_node = 0;
  auto* home = app.add_subcommand("home", "supervise process PID on its home node");
  common(home);
  home->add_option("--pid", pid)->required();
  home->add_option("--initial-node", initial_node);
  auto* guest = app.add_subcommand("guest", "receive and run a migrated process on this node");
  common(guest);
  guest->add_option("--home-node", home_node)->required();
  guest->add_option("--home-pid", home_pid)->required();
  CLI11_PARSE(app, argc, argv);

  ::signal(SIGPIPE, SIG_IGN);
  // A move allocates and frees buffers of megabytes (page batches, frames)
  // many times: from the heap and kept there, they are not page-faulted in
  // afresh each time (that cost more than the copies themselves). The
  // supervisors give the memory back after each move (malloc_trim).
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  std::string who = home->parsed() ? "sup." + std::to_string(pid) : "guest." + std::to_string(home_node) + "." + std::to_string(home_pid);
  mfs::InitLogging(who, level, log_file);
  if (home->parsed()) return mfs::migrate::RunHomeSupervisor(cfg, pid, initial_node, ready_fd);
  return mfs::migrate::RunGuestSupervisor(cfg, home_node, home_pid, ready_fd);
}

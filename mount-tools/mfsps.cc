// mfsps — list migratable processes. See man/mfsps.1.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "mfs/control/client.h"
#include "migrate/kernel_probe.h"
#include "migrate/syscall_table.h"
#include "mount-tools/table.h"

int main(int argc, char** argv) {
  CLI::App app{"mfsps — list migratable processes of this node"};
  std::string socket;
  bool json_out = false, check = false, syscalls = false;
  app.add_option("--socket", socket, "mfsd control socket (default $MFS_SOCKET or /run/mfs/mfsd.sock)");
  app.add_flag("--json", json_out, "JSON output");
  app.add_flag("--check", check, "print the kernel features migration relies on, and exit");
  app.add_flag("--syscalls", syscalls, "print the system call classes of a remote, and exit");
  CLI11_PARSE(app, argc, argv);
  if (check) {
    printf("%s\n", mfs::migrate::ProbeKernel().ToJson().dump(2).c_str());
    return 0;
  }
  if (syscalls) {
    printf("%s", mfs::migrate::SyscallTableText().c_str());
    return 0;
  }
  auto r = mfs::control::Call(mfs::control::SocketPath(socket), {{"op", "migrate.ps"}});
  if (!r.ok()) {
    fprintf(stderr, "mfsps: %s\n", r.status().ToString().c_str());
    return 1;
  }
  if (json_out) {
    printf("%s\n", (*r)["processes"].dump().c_str());
    return 0;
  }
  mfs::tools::Table t({"PID", "HOME", "WHERE", "MOVES", "DOWNTIME", "STATE", "COMMAND", "CANNOT MOVE"});
  for (const auto& p : (*r)["processes"]) {
    char dt[32] = "-";
    if (p.contains("last_downtime_ms")) snprintf(dt, sizeof dt, "%.1fms", p["last_downtime_ms"].get<double>());
    std::string role = p.value("role", "");
    t.AddRow({std::to_string(p.value(role == "guest" ? "home_pid" : "pid", 0)), std::to_string(p.value("home", 0)),
              std::to_string(p.value("where", 0)), std::to_string(p.value("moves", 0)), dt,
              role == "guest" ? "guest" : p.value("state", ""), p.value("command", ""), p.value("why_not", "")});
  }
  printf("%s", t.Render().c_str());
  return 0;
}

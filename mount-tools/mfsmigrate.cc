// mfsmigrate — move a migratable process. See man/mfsmigrate.1.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "mfs/control/client.h"

int main(int argc, char** argv) {
  CLI::App app{"mfsmigrate — move process PID to node NODE (or home)"};
  std::string socket, target;
  int pid = 0;
  bool json_out = false;
  app.add_option("--socket", socket, "mfsd control socket (default $MFS_SOCKET or /run/mfs/mfsd.sock)");
  app.add_flag("--json", json_out, "print the result as JSON");
  app.add_option("pid", pid, "process id (on its home node)")->required();
  app.add_option("node", target, "node id, or 'home'")->required();
  CLI11_PARSE(app, argc, argv);

  nlohmann::json req{{"op", "migrate.move"}, {"pid", pid}};
  if (target == "home") {
    req["node"] = "home";
  } else {
    char* end = nullptr;
    unsigned long n = strtoul(target.c_str(), &end, 10);
    if (target.empty() || *end || n == 0 || n > 255) {
      fprintf(stderr, "mfsmigrate: NODE must be a node id (1..255) or 'home', not '%s'\n", target.c_str());
      return 2;
    }
    req["node"] = n;
  }
  auto r = mfs::control::Call(mfs::control::SocketPath(socket), req, 130000);
  if (!r.ok()) {
    fprintf(stderr, "mfsmigrate: %s\n", r.status().ToString().c_str());
    return 1;
  }
  if (json_out) {
    printf("%s\n", r->dump().c_str());
  } else {
    printf("%d: now on node %u (downtime %.1f ms)\n", pid, (*r)["where"].get<unsigned>(),
           (*r).value("downtime_ms", 0.0));
  }
  return 0;
}

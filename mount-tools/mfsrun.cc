// mfsrun — run a command as a migratable process. See man/mfsrun.1.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>

#include "mfs/control/client.h"

int main(int argc, char** argv) {
  CLI::App app{"mfsrun — run COMMAND as a migratable process"};
  std::string socket;
  int node = 0;
  std::vector<std::string> command;
  app.add_option("--socket", socket, "mfsd control socket (default $MFS_SOCKET or /run/mfs/mfsd.sock)");
  app.add_option("-n,--node", node, "start the process on node N (it is moved there right after it starts)");
  app.add_option("command", command, "COMMAND [ARGS...]")->required();
  app.prefix_command();
  CLI11_PARSE(app, argc, argv);

  nlohmann::json req{{"op", "migrate.run"}, {"pid", getpid()}};
  if (node > 0) req["node"] = node;
  auto r = mfs::control::Call(mfs::control::SocketPath(socket), req);
  if (!r.ok()) {
    fprintf(stderr, "mfsrun: %s\n", r.status().ToString().c_str());
    return 127;
  }
  std::vector<char*> a;
  for (auto& s : command) a.push_back(s.data());
  a.push_back(nullptr);
  execvp(a[0], a.data());
  fprintf(stderr, "mfsrun: %s: %s\n", a[0], strerror(errno));
  return 127;
}

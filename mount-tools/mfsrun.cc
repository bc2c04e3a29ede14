// mfsrun — run a command as a migratable process. See man/mfsrun.1.
//
// The options are parsed by hand: everything from the first argument that
// is not an mfsrun option on belongs to COMMAND, untouched (a generic parser
// would take COMMAND's own options, e.g. `xz -c`, for ours).
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "mfs/control/client.h"

namespace {
void Usage(FILE* f) {
  fprintf(f,
          "usage: mfsrun [--node N] [--socket PATH] [--] COMMAND [ARGS...]\n"
          "  -n, --node N     start the process on node N (moved there right after it starts)\n"
          "  --socket PATH    mfsd control socket (default $MFS_SOCKET or /run/mfs/mfsd.sock)\n");
}

bool ParseNode(const std::string& v, long* node) {
  char* end = nullptr;
  errno = 0;
  long n = strtol(v.c_str(), &end, 10);
  if (v.empty() || *end || errno || n < 1 || n > 255) {
    fprintf(stderr, "mfsrun: --node wants a node id (1..255), not '%s'\n", v.c_str());
    return false;
  }
  *node = n;
  return true;
}
}  // namespace

int main(int argc, char** argv) {
  std::string socket;
  long node = 0;
  int i = 1;
  for (; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--") {
      ++i;
      break;
    }
    if (a == "-h" || a == "--help") {
      Usage(stdout);
      return 0;
    }
    if ((a == "-n" || a == "--node" || a == "--socket") && i + 1 < argc) {
      std::string v = argv[++i];
      if (a == "--socket") socket = v;
      else if (!ParseNode(v, &node)) return 2;
      continue;
    }
    if (a.rfind("--node=", 0) == 0 || a.rfind("--socket=", 0) == 0) {
      std::string v = a.substr(a.find('=') + 1);
      if (a[2] == 's') socket = v;
      else if (!ParseNode(v, &node)) return 2;
      continue;
    }
    if (!a.empty() && a[0] == '-') {
      fprintf(stderr, "mfsrun: unknown option '%s'\n", a.c_str());
      Usage(stderr);
      return 2;
    }
    break;
  }
  if (i >= argc) {
    Usage(stderr);
    return 2;
  }
  nlohmann::json req{{"op", "migrate.run"}, {"pid", getpid()}};
  if (node > 0) req["node"] = node;
  auto r = mfs::control::Call(mfs::control::SocketPath(socket), req);
  if (!r.ok()) {
    fprintf(stderr, "mfsrun: %s\n", r.status().ToString().c_str());
    return 127;
  }
  execvp(argv[i], argv + i);
  fprintf(stderr, "mfsrun: %s: %s\n", argv[i], strerror(errno));
  return 127;
}

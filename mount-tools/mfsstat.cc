// mfsstat — the I/O locality report. See man/mfsstat.1.
#include <signal.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <thread>

#include "mount-tools/locality_view.h"

using nlohmann::json;
using namespace mfs::tools;

namespace {

std::atomic<bool> g_stop{false};  // set by SIGINT/SIGTERM during --watch

void OnSignal(int) { g_stop = true; }

int Fail(const std::string& msg) {
  fprintf(stderr, "mfsstat: %s\n", msg.c_str());
  return 1;
}

int TerminalWidth() {
  winsize ws{};
  if (::isatty(STDOUT_FILENO) && ::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) {
    return ws.ws_col;
  }
  if (const char* c = getenv("COLUMNS")) {
    int n = atoi(c);
    if (n > 0) return n;
  }
  return 80;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mfsstat — I/O locality: which nodes hold the data of which processes"};
  FetchOptions fo;
  Filter filter;
  bool as_json = false, procs = false, nodes = false, profiles = false;
  std::string html, sort = "bytes";
  double watch = 0;
  uint32_t pid = 0, node = 0;
  int width = 0;
  app.add_option("--socket", fo.socket,
                 "control socket (default $MFS_SOCKET or /run/mfs/mfsd.sock)");
  app.add_flag("-a,--all", fo.all, "the whole cluster: ask every node");
  app.add_flag("--json", as_json, "print JSON instead of tables");
  auto* watch_opt = app.add_option("-w,--watch", watch, "refresh every SECS seconds (default 2)")
                        ->expected(0, 1)
                        ->default_str("2")
                        ->type_name("[SECS]");
  app.add_option("--html", html, "write a self-contained HTML report to FILE")->type_name("FILE");
  auto* pid_opt = app.add_option("-p,--pid", pid, "only this process")->check(CLI::PositiveNumber);
  auto* node_opt =
      app.add_option("-n,--node", node, "only processes running on NODE, and NODE's row")
          ->check(CLI::Range(1, 255));
  app.add_option("-c,--command", filter.command, "only commands/programs containing TEXT");
  app.add_option("--min-bytes", filter.min_bytes, "hide processes with fewer decayed bytes");
  app.add_option("-s,--sort", sort, "bytes (default), local, rate, pid, command, node");
  app.add_flag("-r,--reverse", filter.reverse, "reverse the sort order");
  app.add_option("-t,--top", filter.top, "show at most N rows per table");
  app.add_flag("-P,--processes", procs, "show the process table");
  app.add_flag("-N,--nodes", nodes, "show the node table");
  app.add_flag("-F,--profiles", profiles, "show the program profiles");
  app.add_option("--width", width, "columns to fit (default: the terminal's, or 80)");
  CLI11_PARSE(app, argc, argv);

  auto key = ParseSortKey(sort);
  if (!key.ok()) return Fail(key.status().message());
  filter.sort = *key;
  filter.width = width > 0 ? width : TerminalWidth();
  if (*pid_opt) fo.pid = pid;
  if (*node_opt) filter.node = node;
  if (!procs && !nodes && !profiles) procs = nodes = profiles = true;
  bool watching = watch_opt->count() > 0;
  if (watching && !(watch > 0)) watch = 2;
  if (watching && !html.empty()) return Fail("--watch and --html cannot be combined");
  fo.history = !html.empty() || as_json;

  ::signal(SIGINT, OnSignal);
  ::signal(SIGTERM, OnSignal);
  for (int round = 0;; ++round) {
    auto view = FetchView(fo);
    if (!view.ok()) return Fail(view.status().ToString());
    if (filter.node) {
      bool known = false;
      for (uint32_t n : KnownNodes(*view)) known |= n == *filter.node;
      if (!known) {
        return Fail("node " + std::to_string(*filter.node) + " is not known" +
                    (fo.all ? " to the cluster" : " to this node (try -a)"));
      }
    }
    if (!html.empty()) {
      std::string page = RenderHtml(*view, filter);
      std::ofstream out(html, std::ios::trunc);
      if (!out || !(out << page) || !(out.flush())) return Fail("cannot write " + html);
      fprintf(stderr, "mfsstat: wrote %s (%zu bytes)\n", html.c_str(), page.size());
      std::cerr << RenderUnreachable(*view);
      return 0;
    }
    std::string text;
    if (as_json) {
      text = view->ToJson().dump(watching ? -1 : 2) + "\n";
    } else {
      if (watching) text += "\033[H\033[2J";
      if (fo.all || watching) {
        const json& first = view->nodes.empty() ? json::object() : view->nodes.front();
        char head[160];
        snprintf(head, sizeof head, "mfsstat: %zu node(s) answered; decay half-life %gs\n",
                 view->nodes.size(), first.value("half_life_s", 0.0));
        text += head;
      }
      std::string unreachable = RenderUnreachable(*view);
      if (procs)
        text += (text.empty() ? "" : "\n") + std::string("PROCESSES\n") +
                RenderProcesses(*view, filter);
      if (nodes) text += "\nNODES\n" + RenderNodes(*view, filter);
      if (profiles && !fo.pid) text += "\nPROGRAM PROFILES\n" + RenderProfiles(*view, filter);
      if (!unreachable.empty()) text += "\n" + unreachable;
    }
    fwrite(text.data(), 1, text.size(), stdout);
    fflush(stdout);
    if (!watching) return view->unreachable.empty() ? 0 : 2;
    auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(watch);
    while (!g_stop && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (g_stop) return 0;
  }
}

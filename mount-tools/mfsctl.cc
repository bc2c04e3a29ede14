// mfsctl — administer the local mfs node. See man/mfsctl.8.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>

#include "mfs/control/client.h"
#include "mount-tools/table.h"

using nlohmann::json;

namespace {

int Fail(const mfs::Status& s) {
  fprintf(stderr, "mfsctl: %s\n", s.ToString().c_str());
  return 1;
}

void PrintStatus(const json& r) {
  const json& n = r["node"];
  printf("node %u  %s  up %s\n", n.value("id", 0u), n.value("address", "").c_str(),
         mfs::tools::HumanDuration(n.value("uptime_ms", 0ull)).c_str());
  printf("export %s  state %s  mount %s\n", n.value("export", "").c_str(),
         n.value("state_dir", "").c_str(),
         n.value("mount", "").empty() ? "-" : n.value("mount", "").c_str());
  mfs::tools::Table t({"PEER", "ADDRESS", "STATE", "LAST HEARD", "UPTIME"});
  for (const auto& p : r["peers"]) {
    std::string heard = p["last_heard_ms"].is_null()
                            ? "never"
                            : mfs::tools::HumanDuration(p["last_heard_ms"].get<uint64_t>()) + " ago";
    uint32_t id = p.value("id", 0u);
    t.AddRow({id ? std::to_string(id) : "?", p.value("address", ""), p.value("state", ""), heard,
              id ? mfs::tools::HumanDuration(p.value("uptime_ms", 0ull)) : "-"});
  }
  if (t.empty()) {
    printf("no peers known\n");
  } else {
    printf("\n%s", t.Render().c_str());
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mfsctl — administer the local mfs node"};
  app.require_subcommand(1);
  std::string socket;
  bool as_json = false;
  app.add_option("--socket", socket, "control socket (default $MFS_SOCKET or /run/mfs/mfsd.sock)");
  app.add_flag("--json", as_json, "print JSON instead of a table");
  auto* status = app.add_subcommand("status", "this node and the peers it sees");
  status->add_flag("--json", as_json, "print JSON");
  auto* accounting = app.add_subcommand(
      "accounting", "show or switch I/O locality accounting of this node's /mfs client");
  std::string switch_to;
  accounting->add_option("STATE", switch_to, "on or off (omit to show)")
      ->check(CLI::IsMember({"on", "off"}));
  accounting->add_flag("--json", as_json, "print JSON");
  CLI11_PARSE(app, argc, argv);

  std::string path = mfs::control::SocketPath(socket);
  if (status->parsed()) {
    auto r = mfs::control::Call(path, json{{"op", "status"}});
    if (!r.ok()) return Fail(r.status());
    if (as_json) {
      r->erase("ok");
      std::cout << r->dump(2) << "\n";
    } else {
      PrintStatus(*r);
    }
  }
  if (accounting->parsed()) {
    json req{{"op", "locality.accounting"}};
    if (!switch_to.empty()) req["enable"] = switch_to == "on";
    auto r = mfs::control::Call(path, req);
    if (!r.ok()) return Fail(r.status());
    bool on = r->value("accounting", false);
    json client = r->contains("client") ? (*r)["client"] : json();
    if (as_json) {
      std::cout << json{{"accounting", on}, {"client", client}}.dump() << "\n";
    } else {
      std::string c = client.is_boolean() ? (client.get<bool>() ? "on" : "off") : "not reported yet";
      printf("accounting %s (the /mfs client: %s)\n", on ? "on" : "off", c.c_str());
    }
  }
  return 0;
}

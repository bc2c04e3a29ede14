#include "mount-tools/locality_view.h"

#include <gtest/gtest.h>

#include <sstream>

namespace mfs::tools {
namespace {

using nlohmann::json;

json Proc(uint32_t pid, const char* comm, uint32_t where, json nodes, double rate = 0) {
  double total = 0, local = 0, best = -1;
  uint32_t main = 0;
  for (auto it = nodes.begin(); it != nodes.end(); ++it) {
    double b = it.value()["bytes"].get<double>();
    total += b;
    if (std::stoul(it.key()) == where) local = b;
    if (b > best) {
      best = b;
      main = static_cast<uint32_t>(std::stoul(it.key()));
    }
  }
  return json{{"pid", pid},
              {"comm", comm},
              {"exe", std::string("/usr/bin/") + comm},
              {"where", where},
              {"main_node", main},
              {"bytes", total},
              {"local_pct", total ? 100 * local / total : 0},
              {"rate_bps", rate},
              {"alive", true},
              {"nodes", nodes}};
}

json B(double b) { return json{{"bytes", b}, {"cached_bytes", 0}}; }

ClusterView Sample() {
  ClusterView v;
  v.nodes.push_back(json{
      {"node", 1},
      {"half_life_s", 60},
      {"history_interval_s", 10},
      {"host", {{"load1", 0.5}, {"cpus", 2}, {"mem_total", 8e9}, {"mem_available", 4e9}}},
      {"processes",
       {Proc(4242, "averyveryverylongcommandname", 1,
             {{"1", B(1 << 20)}, {"2", B(2 << 20)}, {"3", B(7 << 20)}}, 3e6),
        Proc(17, "cat", 1, {{"1", B(4096)}})}},
      {"by_node", {{"1", B(1)}, {"2", B(1)}, {"3", B(1)}}},
      {"profiles",
       {{{"exe", "/usr/bin/cat"}, {"processes", 3}, {"bytes", 4096}, {"nodes", {{"1", B(4096)}}}}}},
      {"history",
       {{{"t_ms", 1'700'000'000'000}, {"local_bytes", 100}, {"remote_bytes", 900}},
        {{"t_ms", 1'700'000'010'000}, {"local_bytes", 500}, {"remote_bytes", 500}}}}});
  v.nodes.push_back(json{{"node", 2},
                         {"processes", {Proc(99, "dd", 2, {{"1", B(5 << 20)}})}},
                         {"host", {{"load1", 1.5}, {"cpus", 2}}}});
  v.unreachable.push_back(json{{"node", 3}, {"error", "connection refused"}});
  return v;
}

size_t MaxLineLength(const std::string& s) {
  std::istringstream in(s);
  std::string l;
  size_t m = 0;
  while (std::getline(in, l)) m = std::max(m, l.size());
  return m;
}

TEST(LocalityViewTest, ProcessTableFitsIn80Columns) {
  Filter f;
  std::string t = RenderProcesses(Sample(), f);
  EXPECT_LE(MaxLineLength(t), 80u) << t;
  EXPECT_NE(t.find("4242"), std::string::npos);
  EXPECT_NE(t.find("10%"), std::string::npos);  // 1 MiB of 10 MiB local
  EXPECT_NE(t.find("1:1.0M 2:2.0M 3:7.0M"), std::string::npos) << t;
  // Sorted by bytes: dd (5M) before cat (4K), after 4242 (10M).
  EXPECT_LT(t.find("4242"), t.find(" dd"));
  EXPECT_LT(t.find(" dd"), t.find("cat"));
}

TEST(LocalityViewTest, SortAndFilters) {
  Filter f;
  f.sort = SortKey::kPid;
  auto rows = Processes(Sample(), f);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].pid, 17u);
  f.node = 2;
  rows = Processes(Sample(), f);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].pid, 99u);
  Filter g;
  g.command = "cat";
  EXPECT_EQ(Processes(Sample(), g).size(), 1u);
  EXPECT_FALSE(ParseSortKey("size").ok());
}

TEST(LocalityViewTest, NodesShowWhatEachNodeServedToWhom) {
  Filter f;
  std::string t = RenderNodes(Sample(), f);
  EXPECT_LE(MaxLineLength(t), 80u) << t;
  // Node 1 served 1M + 4K to node 1 and 5M to node 2.
  EXPECT_NE(t.find("node 1 served: dd[99]@2 5.0M"), std::string::npos) << t;
  EXPECT_NE(t.find("3?"), std::string::npos) << t;  // unreachable marked
  EXPECT_EQ(KnownNodes(Sample()), (std::vector<uint32_t>{1, 2, 3}));
}

TEST(LocalityViewTest, HtmlIsSelfContained) {
  Filter f;
  std::string h = RenderHtml(Sample(), f);
  EXPECT_NE(h.find("<svg id=\"heatmap\""), std::string::npos);
  EXPECT_NE(h.find("<polyline id=\"local-line\""), std::string::npos);
  EXPECT_EQ(h.find("http://"), h.find("http://www.w3.org/2000/svg"));  // only the SVG namespace
  EXPECT_EQ(h.find("https://"), std::string::npos);
  EXPECT_EQ(h.find("<script"), std::string::npos);
  EXPECT_NE(h.find("node 3 did not answer"), std::string::npos);
  ClusterView evil = Sample();
  evil.nodes[0]["processes"][1]["comm"] = "<script>x</script>";
  EXPECT_EQ(RenderHtml(evil, f).find("<script>"), std::string::npos);
}

TEST(LocalityViewTest, MonitorSaysWhenTheTerminalIsTooSmall) {
  std::string s = RenderMonitor(Sample(), 40, 10, 1);
  EXPECT_NE(s.find("terminal too small (40x10)"), std::string::npos);
  s = RenderMonitor(Sample(), 100, 5, 1);
  EXPECT_NE(s.find("too small"), std::string::npos);
}

TEST(LocalityViewTest, MonitorShowsEveryNodeWithinTheWidth) {
  setenv("LANG", "C", 1);
  std::string s = RenderMonitor(Sample(), 80, 24, 1);
  EXPECT_EQ(s.find("too small"), std::string::npos);
  std::istringstream in(s);
  std::string l;
  int lines = 0;
  while (std::getline(in, l)) {
    ++lines;
    auto esc = l.find("\033[K");
    if (esc != std::string::npos) l = l.substr(0, esc);
    EXPECT_LE(l.size(), 80u) << l;
  }
  EXPECT_EQ(lines, 24);
  EXPECT_NE(s.find("   3 not answering: connection refused"), std::string::npos) << s;
  EXPECT_NE(s.find("   2 "), std::string::npos);
}

TEST(LocalityViewTest, ShortBytes) {
  EXPECT_EQ(ShortBytes(0), "0B");
  EXPECT_EQ(ShortBytes(1536), "1.5K");
  EXPECT_EQ(ShortBytes(100.0 * (1 << 20)), "100M");
}

}  // namespace
}  // namespace mfs::tools
